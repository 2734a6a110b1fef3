"""Lowering and compiling the real train step on abstract inputs: parameters, FLOPs and bytes per device without
allocating the model (used by the full-size compile check and the throughput benchmark)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vdm_jax.models import UNet3D, make_rngs
from vdm_jax.parallel import use_mesh
from vdm_jax.train.sharding import train_state_shardings, with_shardings
from vdm_jax.train.state import init_state, learning_rate_schedule, make_optimizer
from vdm_jax.train.step import make_train_step


def new_model(cfg) -> UNet3D:
    """The configured U-Net with freshly initialised parameters (seeded by `config.seed`)."""
    return UNet3D(cfg.model, resolution=cfg.data.resolution, rngs=make_rngs(cfg.seed))


def build_abstract(cfg, tx):
    """(graphdef, abstract TrainState) of an ExperimentConfig, without allocating any parameter: one trace of the
    model's initialisation (the graphdef, static structure only, is taken from inside it)."""
    graphdefs = []

    def init():
        graphdef, state = init_state(new_model(cfg), tx)
        graphdefs.append(graphdef)
        return state

    abstract = jax.eval_shape(init)
    return graphdefs[0], abstract


def abstract_batch(cfg, batch_size: int, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes, dtypes and shardings of one global training batch for an ExperimentConfig."""
    frames = cfg.data.num_frames + cfg.data.num_image_frames
    res, ch = cfg.data.resolution, cfg.model.channels
    batch_sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    spec = {
        "video": jax.ShapeDtypeStruct((batch_size, frames, res, res, ch), jnp.float32, sharding=batch_sharding),
        "segment_ids": jax.ShapeDtypeStruct((batch_size, frames), jnp.int32, sharding=batch_sharding),
    }
    if cfg.model.num_classes > 0:
        spec["label"] = jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=batch_sharding)
    if cfg.model.text_conditioning == "builtin":
        spec["text_tokens"] = jax.ShapeDtypeStruct(
            (batch_size, cfg.data.text_max_length), jnp.int32, sharding=batch_sharding
        )
    if cfg.data.long_range_prob > 0:  # Frames need not be consecutive; long-range windows bring their own mask.
        spec["frame_times"] = jax.ShapeDtypeStruct((batch_size, frames), jnp.int32, sharding=batch_sharding)
    if cfg.train.context_pool or cfg.data.long_range_prob > 0:  # Rows that bring their own known-frame mask.
        spec["known_mask"] = jax.ShapeDtypeStruct((batch_size, frames), jnp.float32, sharding=batch_sharding)
        spec["use_known_mask"] = jax.ShapeDtypeStruct((batch_size,), jnp.bool_, sharding=batch_sharding)
    return spec


@dataclasses.dataclass(frozen=True)
class CompiledStep:
    compiled: object
    state_shardings: object  # TrainState of NamedShardings (the step's input and output state layout)
    num_params: int
    # XLA cost analysis of the lowered program (the whole step, before partitioning and backend passes): the
    # same count on every backend and mesh. The compiled programs' counts are backend-specific: XLA GPU leaves out
    # the convolutions it hands to cuDNN (4.6 of the default step's 25 GFLOP on an H100, against 25.2 on CPU).
    flops: float
    flops_per_device: float  # XLA cost analysis of the compiled, partitioned (per-device) program.
    num_devices: int
    bytes_per_device: int  # Arguments + outputs + temporaries - aliased (donated) buffers.
    memory: dict


def _cost(stage) -> dict:  # A dict, or a list of one dict in older jax versions.
    analysis = stage.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else {}
    return dict(analysis or {})


def compile_train_step(cfg, mesh: Mesh, batch_size: int | None = None, *, tx=None, built=None) -> CompiledStep:
    """Lowers and compiles `train_step` for `cfg` on `mesh` from abstract values only.

    `tx` and `built` (the `(graphdef, abstract_state)` of `build_abstract`) may be passed when the caller has them.
    """
    batch_size = batch_size or cfg.train.batch_size
    tx = tx or make_optimizer(cfg.train)
    graphdef, abstract = built or build_abstract(cfg, tx)
    shardings = train_state_shardings(abstract, mesh, cfg.parallel.rule_list)
    state = with_shardings(abstract, shardings)
    batch = abstract_batch(cfg, batch_size, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
    step = make_train_step(graphdef, cfg, tx, learning_rate_schedule(cfg.train))
    with use_mesh(mesh, cfg.parallel.rule_list):
        lowered = jax.jit(
            step,
            in_shardings=(shardings, jax.tree.map(lambda x: x.sharding, batch), replicated),
            out_shardings=(shardings, replicated),
            donate_argnums=(0,),
        ).lower(state, batch, rng)
        compiled = lowered.compile()
    mem = compiled.memory_analysis()
    memory = {
        k: int(getattr(mem, k, 0) or 0)
        for k in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes")
    }
    per_device = (
        memory["argument_size_in_bytes"]
        + memory["output_size_in_bytes"]
        + memory["temp_size_in_bytes"]
        - memory["alias_size_in_bytes"]
    )
    return CompiledStep(
        compiled=compiled,
        state_shardings=shardings,
        num_params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params)),
        flops=float(_cost(lowered).get("flops", 0.0)),
        flops_per_device=float(_cost(compiled).get("flops", 0.0)),
        num_devices=mesh.size,
        bytes_per_device=per_device,
        memory=memory,
    )
