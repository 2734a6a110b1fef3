"""Device meshes and logical-axis shardings.

Parameters and activations carry *logical* axis names (``batch``, ``embed``, ``conv_out``...). A short rule list
from the config maps them onto the mesh axes ``data``, ``fsdp`` and ``tensor``, so data parallelism or FSDP is a
config change, not a code change. (The presets keep ``tensor`` at size 1: activations are not split by heads.)

We shard explicitly through ``jax.jit(in_shardings=..., out_shardings=...)``; Flax's eager sharding of variables at
creation time is switched off so modules can be built abstractly (``nnx.eval_shape``) without a mesh in context.
"""

from flax import nnx

from vdm_jax.parallel.logical import (
    DATA_PARALLEL_RULES,
    FSDP_RULES,
    RULE_PRESETS,
    call_padded,
    constrain,
    current_layout,
    current_mesh,
    logical_to_spec,
    pad_rows,
    padded_batch,
    state_shardings,
    use_mesh,
)
from vdm_jax.parallel.mesh import MESH_AXES, make_mesh

nnx.use_eager_sharding(False)

__all__ = [
    "DATA_PARALLEL_RULES",
    "FSDP_RULES",
    "MESH_AXES",
    "RULE_PRESETS",
    "call_padded",
    "constrain",
    "current_layout",
    "current_mesh",
    "logical_to_spec",
    "make_mesh",
    "pad_rows",
    "padded_batch",
    "state_shardings",
    "use_mesh",
]
