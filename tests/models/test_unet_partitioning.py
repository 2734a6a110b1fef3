"""Every parameter carries logical axis names that the lead's rules can shard."""

import jax
from flax import nnx
from jax.sharding import PartitionSpec
from unet_helpers import RES, tiny_config

from vdm_jax.models import UNet3D, make_rngs
from vdm_jax.parallel import FSDP_RULES, make_mesh, state_shardings

VOCABULARY = {None, "conv_in", "conv_out", "embed", "mlp", "heads", "kv", "vocab", "norm", "rel_pos"}


def test_every_parameter_has_logical_names_of_its_rank():
    cfg = tiny_config(num_classes=4, text_conditioning="builtin", frame_conditioning=True)
    model = nnx.eval_shape(lambda: UNet3D(cfg, resolution=RES, rngs=make_rngs(0)))
    state = nnx.state(model, nnx.Param)
    specs = nnx.get_partition_spec(state)
    pairs = jax.tree.leaves(
        jax.tree.map(lambda s, v: (s, v.shape), specs, state, is_leaf=lambda x: isinstance(x, PartitionSpec)),
        is_leaf=lambda x: isinstance(x, tuple),
    )
    assert len(pairs) > 50
    for spec, shape in pairs:
        names = tuple(spec)
        assert len(names) == len(shape), (names, shape)
        assert set(names) <= VOCABULARY, names
    shardings = state_shardings(state, make_mesh((1, 1, 1), jax.devices()[:1]), FSDP_RULES)
    assert len(jax.tree.leaves(shardings)) == len(pairs)
