"""Building blocks of the video U-Net: space-only convolutions, GroupNorm, ResNet blocks, resampling, embeddings.

Every convolution is a 1x3x3 kernel (VDM §3, Ho et al. 2022): it runs as a 2-D convolution on the frames folded into
the batch, ``[B*T, H, W, C]``, so frames never mix outside temporal attention and an image model (T = 1) shares its
weights with the video model. GroupNorm statistics are per frame, in float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdm_jax.parallel import constrain

VIDEO_AXES = ("batch", "time", "height", "width", "embed")
default_init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")
zeros_init = nnx.initializers.zeros_init()


def num_groups(channels: int, max_groups: int = 32, min_group_size: int = 4) -> int:
    """GroupNorm groups: 32 as in DDPM for wide layers, fewer for narrow ones so a group keeps >= 4 channels.

    The largest divisor of ``channels`` not above ``min(max_groups, channels // min_group_size)`` (at least 1).
    """
    cap = max(1, min(max_groups, channels // min_group_size))
    return max(g for g in range(1, cap + 1) if channels % g == 0)


def conv(in_ch: int, out_ch: int, *, kernel: int = 3, stride: int = 1, zero: bool = False, dtype, rngs) -> nnx.Conv:
    """A space-only ``k x k`` convolution; kernel ``[k, k, in, out]`` named (None, None, conv_in, conv_out)."""
    return nnx.Conv(
        in_ch,
        out_ch,
        (kernel, kernel),
        strides=stride,
        padding="SAME",
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nnx.with_partitioning(zeros_init if zero else default_init, (None, None, "conv_in", "conv_out")),
        bias_init=nnx.with_partitioning(zeros_init, ("conv_out",)),
        rngs=rngs,
    )


def dense(in_dim: int, out_dim: int, names: tuple[str, str], *, zero: bool = False, dtype, rngs) -> nnx.Linear:
    """A dense layer with kernel ``[in, out]`` named ``names`` and bias named ``names[1]``."""
    return nnx.Linear(
        in_dim,
        out_dim,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nnx.with_partitioning(zeros_init if zero else default_init, names),
        bias_init=nnx.with_partitioning(zeros_init, (names[1],)),
        rngs=rngs,
    )


def group_norm(channels: int, *, rngs) -> nnx.GroupNorm:
    """GroupNorm over (H, W, channel group) of each frame of ``[N, H, W, C]``, computed in float32."""
    return nnx.GroupNorm(
        channels,
        num_groups=num_groups(channels),
        epsilon=1e-5,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("norm",)),
        bias_init=nnx.with_partitioning(zeros_init, ("norm",)),
        rngs=rngs,
    )


def frames(x: jax.Array) -> jax.Array:
    """``[B, T, H, W, C] -> [B*T, H, W, C]`` (a free reshape)."""
    return x.reshape((-1, *x.shape[2:]))


def videos(x: jax.Array, batch: int) -> jax.Array:
    """``[B*T, H, W, C] -> [B, T, H, W, C]``, constrained to the video logical axes."""
    return constrain(x.reshape((batch, -1, *x.shape[1:])), VIDEO_AXES)


def norm_frames(norm: nnx.GroupNorm, x: jax.Array, dtype) -> jax.Array:
    """Per-frame GroupNorm of ``x: [B, T, H, W, C]`` (float32 statistics) -> ``[B*T, H, W, C]`` in ``dtype``."""
    return norm(frames(x).astype(jnp.float32)).astype(dtype)


class ResBlock(nnx.Module):
    """GroupNorm -> SiLU -> conv -> GroupNorm -> FiLM -> SiLU -> dropout -> conv, plus a (1x1-projected) skip.

    The FiLM scale and shift come from the noise-level + conditioning embedding (as in Ho et al. 2020/2022; the
    ``h * (1 + scale) + shift`` form of Dhariwal & Nichol 2021). The second convolution starts at zero, so every
    block starts as the identity on its skip path.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, *, dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.norm1 = group_norm(in_ch, rngs=rngs)
        self.conv1 = conv(in_ch, out_ch, dtype=dtype, rngs=rngs)
        self.film = dense(emb_dim, 2 * out_ch, ("embed", "conv_out"), dtype=dtype, rngs=rngs)
        self.norm2 = group_norm(out_ch, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.conv2 = conv(out_ch, out_ch, zero=True, dtype=dtype, rngs=rngs)
        self.skip = conv(in_ch, out_ch, kernel=1, dtype=dtype, rngs=rngs) if in_ch != out_ch else None

    def __call__(self, x: jax.Array, emb: jax.Array, *, train: bool = False, rngs: nnx.Rngs | None = None) -> jax.Array:
        """``x: [B, T, H, W, C_in]``, ``emb: [B, E]`` (already SiLU-activated) -> ``[B, T, H, W, C_out]``."""
        b, t = x.shape[:2]
        h = self.conv1(jax.nn.silu(norm_frames(self.norm1, x, self.dtype)))
        scale, shift = jnp.split(self.film(emb).astype(jnp.float32), 2, axis=-1)  # [B, C_out] each
        h = self.norm2(h.astype(jnp.float32)).reshape((b, t, *h.shape[1:]))
        h = h * (1.0 + scale[:, None, None, None, :]) + shift[:, None, None, None, :]
        h = jax.nn.silu(frames(h).astype(self.dtype))
        h = self.dropout(h, deterministic=not train, rngs=rngs)
        h = self.conv2(h)
        skip = frames(x).astype(self.dtype)
        if self.skip is not None:
            skip = self.skip(skip)
        return videos(skip + h, b)


class Downsample(nnx.Module):
    """Halves H and W with a stride-2 3x3 convolution (space only; T is kept)."""

    def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
        self.conv = conv(channels, channels, stride=2, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, T, H, W, C] -> [B, T, H/2, W/2, C]``."""
        return videos(self.conv(frames(x)), x.shape[0])


class Upsample(nnx.Module):
    """Doubles H and W by nearest-neighbour repetition followed by a 3x3 convolution (space only)."""

    def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs):
        self.conv = conv(channels, channels, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``[B, T, H, W, C] -> [B, T, 2H, 2W, C]``."""
        h = frames(x)
        n, hh, ww, c = h.shape
        h = jnp.broadcast_to(h[:, :, None, :, None, :], (n, hh, 2, ww, 2, c)).reshape((n, 2 * hh, 2 * ww, c))
        return videos(self.conv(h), x.shape[0])


def sinusoidal_embedding(x: jax.Array, dim: int, min_period: float = 0.5, max_period: float = 2000.0) -> jax.Array:
    """Fourier features ``[sin(w_k x), cos(w_k x)]`` of a scalar per example, ``x: [B] -> [B, dim]``.

    The periods are geometric from ``min_period`` to ``max_period``, as in the transformer's position embedding
    (Vaswani et al. 2017) used for the diffusion time in Ho et al. 2020. For the log-SNR, whose useful range is about
    [-20, 20], the shortest period resolves differences of ~0.1 and the longest never wraps over that range.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal_embedding: dim={dim} must be even")
    half = dim // 2
    periods = np.geomspace(min_period, max_period, half) if half > 1 else np.array([max_period])
    freqs = jnp.asarray(2.0 * math.pi / periods, jnp.float32)
    angles = x.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
