"""A denoiser of T-frame windows run over a longer video: every window denoised in one batch, the overlaps averaged.

This is temporal co-denoising (the MultiDiffusion fusion of Bar-Tal et al. 2023 applied along time, as in
Gen-L-Video, Wang et al. 2023): at every sampler step the L-frame z_t is cut into windows of the model's T frames
starting every `hop` frames, the network denoises all of them at the same λ, and each frame's prediction is the mean
over the windows that hold it. Unlike autoregressive extension nothing is frozen until the last step: every frame of
the video stays noisy, and keeps being revised by each window that holds it, until all of them are clean.

The average is exact in every parameterization: for a fixed (z_t, λ) each of ε̂, x̂, v̂ is an affine function
a(z, λ) + b(λ)·x̂ of x̂, and every window sees the same z_t and λ for a shared frame, so averaging the network outputs
equals averaging the x̂ and converting. With a denoiser that treats frames independently the windowed one is the
denoiser itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.diffusion.guidance import FRAME_KEYS, DenoiseFn


def window_starts(total_frames: int, chunk: int, hop: int) -> np.ndarray:
    """First frames of the windows of `chunk` frames that cover `total_frames`: 0, hop, 2·hop, ..., the last moved
    back to total_frames − chunk where the hops do not land there."""
    if total_frames < chunk:
        raise ValueError(f"total_frames={total_frames} must be >= the model's {chunk} frames")
    if not 1 <= hop <= chunk:
        raise ValueError(f"hop={hop} must be in 1 .. chunk = {chunk} (frames between the starts of two windows)")
    starts = list(range(0, total_frames - chunk + 1, hop))
    if starts[-1] != total_frames - chunk:
        starts.append(total_frames - chunk)
    return np.asarray(starts)


def windowed_denoiser(denoise_fn: DenoiseFn, chunk: int, hop: int, temporal_keys=FRAME_KEYS) -> DenoiseFn:
    """denoise_fn of [B, chunk, ...] videos -> the co-denoising fn of [B, L, ...] videos (L >= chunk, any L).

    The wrapped network sees one batch of W·B windows (window-major), W = len(window_starts(L, chunk, hop)), each
    with the λ of its video. Conditioning: the `temporal_keys` entries of a dict cond ([B, L, ...]: a
    frame-conditioned model's known frames and mask) are cut into the same windows; every other leaf (labels,
    captions: [B, ...]) is repeated for each window.
    """

    def fn(z: jax.Array, logsnr: jax.Array, cond):
        b, total = z.shape[:2]
        starts = window_starts(total, chunk, hop)
        index = starts[:, None] + np.arange(chunk)  # [W, chunk]
        w = len(starts)
        coverage = np.bincount(index.ravel(), minlength=total).astype(np.float32)  # windows holding each frame

        def cut(a):  # [B, L, ...] -> [W·B, chunk, ...]
            a = jnp.moveaxis(jnp.take(a, index, axis=1), 1, 0)
            return a.reshape(w * b, *a.shape[2:])

        def repeat(a):  # [B, ...] -> [W·B, ...]
            return jnp.concatenate([a] * w, axis=0)

        if isinstance(cond, Mapping):
            window_cond = {k: cut(v) if k in temporal_keys else jax.tree.map(repeat, v) for k, v in cond.items()}
        else:
            window_cond = None if cond is None else jax.tree.map(repeat, cond)
        out = denoise_fn(cut(z), repeat(logsnr), window_cond)  # [W·B, chunk, ...]
        out = jnp.moveaxis(out.reshape(w, b, *out.shape[1:]), 0, 1)  # [B, W, chunk, ...]
        summed = jnp.zeros((b, total, *out.shape[3:]), out.dtype).at[:, index].add(out)
        return summed / coverage.reshape(1, total, *([1] * (z.ndim - 2)))

    return fn
