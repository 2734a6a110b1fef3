"""Shared helpers for the U-Net tests (imported by name; pytest puts this folder on sys.path): a tiny config,
models with random parameters, a jitted call."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdm_jax.models import ModelConfig, UNet3D, make_rngs

RES = 16


def tiny_config(**overrides) -> ModelConfig:
    """16x16 frames, two levels (16, 8), attention at 8 only: compiles in a few seconds on a CPU."""
    base = dict(
        channels=3,
        base_channels=16,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        head_dim=8,
        emb_dim=32,
        text_embed_dim=16,
        text_encoder_layers=1,
    )
    base.update(overrides)
    return ModelConfig(**base)


def _random_value(path: tuple, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random parameter of sensible scale: unit-variance outputs for kernels, ~1 for norm scales, ~0 for biases."""
    name = str(path[-1])
    noise = rng.standard_normal(shape).astype(np.float32)
    if name == "scale":
        return 1.0 + 0.1 * noise
    if len(shape) == 1 or name == "rel_bias":
        return 0.3 * noise
    if name in ("embedding", "null_token"):
        return noise
    fan_in = {"qkv": shape[1], "kv": shape[1], "q": shape[0], "out_kernel": shape[0] * shape[1]}
    fan_in["out"] = fan_in["out_kernel"]
    return noise / math.sqrt(fan_in.get(name, math.prod(shape[:-1])))


def build(cfg: ModelConfig, seed: int = 0) -> UNet3D:
    """A UNet3D with random parameters, built without running any initialiser (abstract init, then numpy values)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: UNet3D(cfg, resolution=RES, rngs=make_rngs(0))))
    rng = np.random.default_rng(seed)
    values = jax.tree.map_with_path(lambda p, x: jnp.asarray(_random_value(p, x.shape, rng)), state)
    return nnx.merge(graphdef, values)


@nnx.jit(static_argnames=("train",))
def apply(model, z, logsnr, cond=None, segment_ids=None, train=False, rngs=None):
    """The model call, jitted (retraces per shape)."""
    return model(z, logsnr, cond, segment_ids=segment_ids, train=train, rngs=rngs)


def video(key: int, shape=(2, 4, RES, RES, 3)) -> jax.Array:
    return jnp.asarray(np.random.default_rng(key).standard_normal(shape), jnp.float32)
