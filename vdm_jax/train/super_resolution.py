"""Guidance by a linear observation y = A(x), and spatial super-resolution with A = average pooling (VDM §3.1).

Reconstruction guidance (Ho et al. 2022, eq. 7) generalises from known frames (A = a frame mask) to any
differentiable observation operator A:
    x̃ = x̂ − (w α_t / 2) ∇_{z_t} ‖y − A(x̂(z_t))‖²,
the gradient through the network by one vector-Jacobian product. Tweedie's formula gives ∂x̂/∂z = (α/σ²) Cov(x | z_t),
so for linear A the correction is w (α²/σ²) Cov(x | z_t) Aᵀ (y − A x̂), while the exact E[x | z_t, y] for Gaussian data
needs Cov(x | z_t) Aᵀ (A Cov(x | z_t) Aᵀ)⁻¹ (y − A x̂): a scalar w(λ) = (σ²/α²) / c_t is exact when
A Cov(x | z_t) Aᵀ = c_t I (tested), and a constant w is the paper's approximation Cov(x^a | z_t) ≈ σ²/α².

The guidance is packaged as a *denoiser* (its output is the guided x̃ in the network's parameterization), so every
sampler of `vdm_jax.diffusion.sample` runs it unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from vdm_jax.diffusion import alpha_sigma, expand_to, from_x, predict_x, sample
from vdm_jax.diffusion.guidance import DenoiseFn
from vdm_jax.parallel import call_padded, current_layout

Observe = Callable[[jax.Array], jax.Array]


def avgpool_frames(x: jax.Array, factor: int) -> jax.Array:
    """Spatial average pooling of each frame: x [B, T, H, W, C] -> [B, T, H/f, W/f, C] (the low-resolution view)."""
    b, t, h, w, c = x.shape
    if h % factor or w % factor:
        raise ValueError(f"frame size {h}x{w} is not divisible by the super-resolution factor {factor}")
    return x.reshape(b, t, h // factor, factor, w // factor, factor, c).mean(axis=(3, 5))


def upsample_nearest(y: jax.Array, factor: int) -> jax.Array:
    """y [B, T, h, w, C] -> [B, T, h·f, w·f, C], each pixel repeated f x f (a right inverse of `avgpool_frames`)."""
    return jnp.repeat(jnp.repeat(y, factor, axis=2), factor, axis=3)


def observation_guided(
    denoise_fn: DenoiseFn,
    parameterization: str,
    observe: Observe,
    observation: jax.Array,
    weight: float | Callable[[jax.Array], jax.Array],
) -> DenoiseFn:
    """Wraps denoise_fn so that its x̂ carries reconstruction guidance towards `observation` = observe(x).

    Args:
      denoise_fn: (z [B, ...], logsnr [B], cond) -> the network output in `parameterization`.
      observe: the observation operator A, [B, ...] -> [B, ...obs] (differentiable; linear for the theory above).
      observation: y [B, ...obs].
      weight: w >= 0, or a function logsnr [B] -> w [B].
    Returns:
      (z, logsnr, cond) -> the output in `parameterization` whose x̂ is x̃ = x̂ − (w α/2) ∇_z ‖y − A(x̂(z))‖².
    """

    def guided(z: jax.Array, logsnr: jax.Array, cond: Any) -> jax.Array:
        def model_x(zz):
            return predict_x(denoise_fn(zz, logsnr, cond).astype(jnp.float32), zz, logsnr, parameterization)

        x_hat, vjp = jax.vjp(model_x, z)
        residual_fn = lambda x: observe(x) - observation  # noqa: E731
        residual, obs_vjp = jax.vjp(residual_fn, x_hat)
        (grad_x,) = obs_vjp(2.0 * residual)  # ∇_x̂ ‖A x̂ − y‖²
        (grad,) = vjp(grad_x)  # chained through the network: ∇_z
        alpha, _ = alpha_sigma(expand_to(logsnr, z))
        w = weight(logsnr) if callable(weight) else jnp.full(logsnr.shape, weight, jnp.float32)
        x_tilde = x_hat - 0.5 * expand_to(jnp.asarray(w, jnp.float32), z) * alpha * grad
        return from_x(x_tilde, z, logsnr, parameterization)

    return guided


def sample_observed(
    denoise_fn: DenoiseFn,
    shape: tuple[int, ...],
    rng: jax.Array,
    diffusion_cfg,
    sampler_cfg,
    *,
    resolution: int,
    observe: Observe,
    observation: jax.Array,
    weight: float | Callable[[jax.Array], jax.Array],
    cond: Any = None,
) -> jax.Array:
    """Samples x: `shape` given y = observe(x) by observation guidance, with any sampler; jittable end to end."""
    guided = observation_guided(denoise_fn, diffusion_cfg.parameterization, observe, observation, weight)
    return sample(guided, shape, rng, diffusion_cfg, sampler_cfg, resolution=resolution, cond=cond)


@functools.lru_cache(maxsize=8)
def _compiled_super_resolver(graphdef, cfg, factor: int, weight, layout: tuple):
    """`layout`: a cache key only, as in `conditional._compiled_sampler`."""
    from flax import nnx

    def fn(params, rest, rng, low_res):
        model = nnx.merge(graphdef, params, rest)
        n, t = low_res.shape[:2]
        r = cfg.data.resolution
        return sample_observed(
            lambda z, logsnr, c: model(z, logsnr, c, train=False),
            (n, t, r, r, cfg.model.channels),
            rng,
            cfg.diffusion,
            cfg.sampler,
            resolution=r,
            observe=functools.partial(avgpool_frames, factor=factor),
            observation=low_res,
            weight=weight,
        )

    return jax.jit(fn)


def super_resolve(model, rng: jax.Array, low_res: jax.Array, *, weight: float | None = None) -> jax.Array:
    """Spatial super-resolution with an unconditional model (`conditional.SamplingModel`) by guiding with the
    downsampled prediction: low_res [N, T, h, h, C] in [-1, 1] -> [N, T, R, R, C], R = config.data.resolution, a
    multiple of h; avgpool(result) ≈ low_res. Make low_res by the same average pooling (`avgpool_frames(x, f)`, as
    `tf.image.resize(method="area")`), not by loading the data at a lower `data.resolution`: the pipeline's antialiased
    bilinear resize is another observation (up to 0.33 apart on hard edges, 64 -> 16).

    weight: the guidance weight w; default f² x config.sampler.recon_guidance_weight: averaging f x f pixels divides
    the variance of independent per-pixel errors by f², so f² times the known-frames weight is the like-for-like
    choice (the high-SNR limit of the exact weight, docs/conditional.md).
    """
    cfg = model.cfg
    low_res = jnp.asarray(low_res, jnp.float32)
    r, c = cfg.data.resolution, cfg.model.channels
    if low_res.ndim != 5 or low_res.shape[-1] != c or low_res.shape[2] != low_res.shape[3] or r % low_res.shape[2]:
        raise ValueError(
            f"low_res must be [N, T, h, h, {c}] with config.data.resolution={r} a multiple of h; "
            f"got shape {tuple(low_res.shape)}"
        )
    if cfg.model.label_or_text or cfg.model.frame_conditioning:
        raise ValueError("super_resolve supports unconditional models (no labels, text or frame conditioning)")
    factor = r // low_res.shape[2]
    weight = factor**2 * cfg.sampler.recon_guidance_weight if weight is None else weight
    if weight <= 0:
        raise ValueError("super_resolve needs a weight > 0: pass weight= or set config.sampler.recon_guidance_weight.")
    fn = _compiled_super_resolver(model.graphdef, cfg, factor, float(weight), current_layout())
    return call_padded(fn, (model.params, model.rest, rng), (low_res,))
