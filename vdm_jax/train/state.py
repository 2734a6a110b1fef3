"""The functional train state and its optimizer.

The NNX model is split once into a static graph definition and pytrees of arrays; training only ever touches the
pytrees, so the step is a pure function that `jax.jit` can shard and donate.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vdm_jax.train.config import TrainConfig


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes. `params` and `ema_params` are `nnx.State`s of the model's `nnx.Param`s;
    `rest` holds any other model state (kept, never trained)."""

    step: jax.Array
    params: nnx.State
    ema_params: nnx.State
    opt_state: Any
    rest: nnx.State


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, then constant or cosine decay to 0 at `num_steps`."""
    warmup = optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1))
    if cfg.lr_schedule == "constant":
        after = optax.constant_schedule(cfg.learning_rate)
    else:
        after = optax.cosine_decay_schedule(cfg.learning_rate, max(cfg.num_steps - cfg.warmup_steps, 1))
    return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; weight decay only on matrices and kernels (not biases or norm scales)."""
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    chain = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    chain.append(
        optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay, mask=decay_mask)
    )
    return optax.chain(*chain)


def init_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
    """Splits a (possibly abstract) model into its graph definition and the initial train state."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        rest=rest,
    )
    return graphdef, state


def ema_update(ema: nnx.State, params: nnx.State, decay: float, step: jax.Array, *, warmup: bool = True) -> nnx.State:
    """EMA of the parameters. With the usual warm-up the effective decay is min(decay, (1 + step) / (10 + step)), so
    that the early EMA tracks the fast-moving weights; without it (the paper configs, as VDM gives one decay) `decay`
    from step 0."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step)) if warmup else jnp.asarray(decay, jnp.float32)
    return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
