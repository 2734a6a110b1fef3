"""Guidance: classifier-free guidance, and conditioning a sample on known frames (replacement, reconstruction).

The samplers see one function, a *predictor* `(z_t, λ_t, key) -> (z_t', x̂)`: it evaluates the network, converts its
output to x̂, applies the known-frame hook (which may also replace the known part of z_t, hence z_t'), and clips.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vdm_jax.diffusion.gaussian import alpha_sigma, diffuse, expand_to
from vdm_jax.diffusion.parameterization import constrain_x, predict_x

DenoiseFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
Predictor = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def classifier_free_guidance(denoise_fn: DenoiseFn, guidance_weight: float, null_cond: Any) -> DenoiseFn:
    """ε̃ = (1 + w) ε̂(z, c) − w ε̂(z, ∅) (Ho & Salimans 2021, eq. 6), cond and null in ONE batched call.

    The combination is done on the raw outputs, in whatever parameterization the network uses: each of ε̂, x̂, v̂ is
    an affine function a(z, λ) + b(λ)·output of the output, and the weights (1 + w) and −w sum to one, so combining
    outputs and then converting equals converting to ε, combining and converting back (exactly).

    Args:
      denoise_fn: (z: [B, ...], logsnr: [B], cond) -> output [B, ...].
      guidance_weight: w >= 0 (0 returns the conditional output).
      null_cond: the "no conditioning" values: a dict with some of cond's keys (each leaf broadcast to the matching
        leaf of cond, so a scalar null label works); keys of cond absent from null_cond (e.g. known frames of a
        frame-conditioned model) are shared by both halves. A non-dict cond needs a pytree of the same structure.
    Returns:
      a denoise_fn with the same signature; the wrapped network sees a batch of 2B.
    """

    def guided(z: jax.Array, logsnr: jax.Array, cond: Any) -> jax.Array:
        if cond is None:
            raise ValueError("classifier-free guidance needs a conditioning `cond` (got None); set guidance_weight=0")
        null = _null_like(cond, null_cond)
        both = jax.tree.map(lambda c, n: jnp.concatenate([c, n], axis=0), cond, null)
        out = denoise_fn(jnp.concatenate([z, z], axis=0), jnp.concatenate([logsnr, logsnr], axis=0), both)
        out_c, out_u = jnp.split(out, 2, axis=0)
        return (1.0 + guidance_weight) * out_c - guidance_weight * out_u

    return guided


FRAME_KEYS = ("known_frames", "known_mask")


def frame_guidance(denoise_fn: DenoiseFn, guidance_weight: float, cond: Any) -> DenoiseFn:
    """Classifier-free guidance on the known frames of a frame-conditioned model:
    ε̃ = (1 + w) ε̂(z, x^a, m) − w ε̂(z, 0, 0), the second branch with no frame known.

    A frame-conditioned model is trained with random masks that include "no frame known" (see
    `vdm_jax.train.frame_masks`), so it is its own unconditional model, and w > 0 pushes samples towards what the known
    frames imply (as guidance on labels sharpens class conditioning). Other conditioning keys are shared by both
    branches. `cond` (the sampling call's) only checks that the model reads known frames.
    """
    missing = [k for k in FRAME_KEYS if not (isinstance(cond, Mapping) and k in cond)]
    if missing:
        raise ValueError(
            f"sampler.frame_guidance_weight > 0 needs a frame-conditioned model (config.model.frame_conditioning=True) "
            f"sampled with known frames; the conditioning lacks {missing}. Set frame_guidance_weight=0."
        )
    return classifier_free_guidance(denoise_fn, guidance_weight, dict.fromkeys(FRAME_KEYS, 0.0))


def _null_like(cond: Any, null_cond: Any) -> Any:
    def fill(c, n):
        c = jnp.asarray(c)
        return jnp.broadcast_to(jnp.asarray(n, c.dtype), c.shape)

    if isinstance(cond, Mapping):
        if not isinstance(null_cond, Mapping):
            raise TypeError(f"null_cond must be a dict like cond (keys {sorted(cond)}), got {type(null_cond)}")
        unknown = sorted(set(null_cond) - set(cond))
        if unknown:
            raise ValueError(f"null_cond has keys {unknown} that cond lacks (cond keys: {sorted(cond)})")
        return {k: (jax.tree.map(fill, v, null_cond[k]) if k in null_cond else v) for k, v in cond.items()}
    return jax.tree.map(fill, cond, null_cond)


class KnownFrames(NamedTuple):
    """Frames given to the sampler: frames [B, T, H, W, C] (any value where unknown), mask [B, T] (1 = known)."""

    frames: jax.Array
    mask: jax.Array


def as_known_frames(known: Any, shape: tuple[int, ...]) -> KnownFrames | None:
    """None, a KnownFrames, or a dict {"frames": [B, T, ...], "mask": [B, T]} -> KnownFrames (shapes checked)."""
    if known is None:
        return None
    if isinstance(known, Mapping):
        missing = {"frames", "mask"} - set(known)
        if missing:
            raise ValueError(f"known must hold 'frames' [B, T, H, W, C] and 'mask' [B, T]; missing {sorted(missing)}")
        known = KnownFrames(known["frames"], known["mask"])
    frames, mask = jnp.asarray(known.frames, jnp.float32), jnp.asarray(known.mask, jnp.float32)
    if frames.shape != tuple(shape) or mask.shape != tuple(shape[:2]):
        raise ValueError(
            f"known frames {frames.shape} / mask {mask.shape} do not fit the sample shape {tuple(shape)} "
            f"(expected frames {tuple(shape)} and mask {tuple(shape[:2])})"
        )
    return KnownFrames(frames, mask)


def replace_known(z: jax.Array, logsnr: jax.Array, known: KnownFrames, key: jax.Array) -> jax.Array:
    """The replacement method (Song et al. 2021b; Ho et al. 2022, §3.1): z^a <- α_t x^a + σ_t ε, a fresh draw of
    q(z_t^a | x^a) on the known frames; z^b is left as it is. z: [B, T, H, W, C], logsnr: [B]."""
    noised = diffuse(known.frames, logsnr, jax.random.normal(key, z.shape, z.dtype))
    return jnp.where(expand_to(known.mask, z) > 0, noised, z)


def make_predictor(
    denoise_fn: DenoiseFn,
    cond: Any,
    parameterization: str,
    *,
    clip_x: bool = False,
    dynamic_threshold: float = 0.0,
    known: KnownFrames | None = None,
    recon_guidance_weight: float | Callable[[jax.Array], jax.Array] = 0.0,
) -> Predictor:
    """The sampler's view of the model: (z_t: [B, ...], logsnr: [B], key) -> (z_t', x̂: [B, ...]).

    Without known frames z_t' = z_t and x̂ is the network's prediction (clipped / thresholded as asked).
    With known frames x^a (mask a), z^a is first replaced by a draw of q(z_t^a | x^a); then
      - recon_guidance_weight = 0: the replacement method, x̂ as the model gives it;
      - recon_guidance_weight = w_r > 0: reconstruction guidance (Ho et al. 2022, eq. 7),
            x̃^b = x̂^b − (w_r α_t / 2) ∇_{z^b} ‖x^a − x̂^a(z_t)‖²,
        the gradient through the network by one vector-Jacobian product; w_r = 1 is the Bayes correction under the
        paper's approximation q(x^a | z_t) ≈ N(x̂^a(z_t), (σ_t²/α_t²) I), larger w_r sharpens it.
        `recon_guidance_weight` may also be a function logsnr [B] -> w_r [B]: with the true posterior covariance
        C_a of x^a given z_t, w_r(λ) = (σ²/α²) / C_a makes the correction exact, E[x^b | z_t, x^a] (Tweedie).
    In both cases x̂^a is set to x^a (those frames are given).
    """
    guided = callable(recon_guidance_weight) or recon_guidance_weight > 0

    def model_x(z: jax.Array, logsnr: jax.Array) -> jax.Array:
        pred = denoise_fn(z, logsnr, cond).astype(jnp.float32)
        return predict_x(pred, z, logsnr, parameterization)

    def predictor(z: jax.Array, logsnr: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        if known is None:
            return z, constrain_x(model_x(z, logsnr), clip_x, dynamic_threshold)
        z = replace_known(z, logsnr, known, key)
        mask = expand_to(known.mask, z) > 0
        if guided:
            x_hat, vjp = jax.vjp(lambda zz: model_x(zz, logsnr), z)
            # ∇_z ‖x^a − x̂^a(z)‖² = −2 J^T (x^a − x̂^a); only its z^b part is used.
            (grad,) = vjp(jnp.where(mask, 2.0 * (x_hat - known.frames), 0.0))
            alpha, _ = alpha_sigma(expand_to(logsnr, z))
            w_r = recon_guidance_weight(logsnr) if callable(recon_guidance_weight) else recon_guidance_weight
            x_hat = x_hat - 0.5 * expand_to(jnp.asarray(w_r, jnp.float32), z) * alpha * grad
        else:
            x_hat = model_x(z, logsnr)
        x_hat = jnp.where(mask, known.frames, x_hat)
        return z, constrain_x(x_hat, clip_x, dynamic_threshold)

    return predictor
