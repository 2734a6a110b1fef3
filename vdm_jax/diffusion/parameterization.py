"""What the network predicts, and conversions among ε̂, x̂ and v̂ given z_t and λ_t.

With z = α x + σ ε (α² + σ² = 1):
  ε-prediction (Ho et al. 2020):        x̂ = (z − σ ε̂) / α
  x-prediction:                          ε̂ = (z − α x̂) / σ
  v-prediction (Salimans & Ho 2022, §4): v = α ε − σ x, so x̂ = α z − σ v̂ and ε̂ = σ z + α v̂.
All three are affine in the prediction, with coefficients that depend only on (z, λ); the ratios σ/α and α/σ are
written as e^{∓λ/2} so no 1 − α² cancellation occurs.

Also: clipping of x̂ to [−1, 1] and dynamic thresholding (Saharia et al. 2022, "Imagen", §2.3).
Shapes: pred, z: [B, T, H, W, C]; logsnr: [B] (or any prefix of the data shape).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vdm_jax.diffusion.gaussian import alpha_sigma, expand_to, log_alpha_sigma_sq


def _check(parameterization: str) -> None:
    if parameterization not in ("eps", "v", "x"):
        raise ValueError(f"parameterization={parameterization!r} is not one of ['eps', 'v', 'x']")


def x_from_eps(eps: jax.Array, z: jax.Array, logsnr: jax.Array) -> jax.Array:
    """x̂ = (z − σ ε̂)/α = z/α − e^{−λ/2} ε̂."""
    lam = expand_to(logsnr, z)
    la, _ = log_alpha_sigma_sq(lam)
    return z * jnp.exp(-0.5 * la) - jnp.exp(-0.5 * lam) * eps


def eps_from_x(x: jax.Array, z: jax.Array, logsnr: jax.Array) -> jax.Array:
    """ε̂ = (z − α x̂)/σ = z/σ − e^{λ/2} x̂."""
    lam = expand_to(logsnr, z)
    _, ls = log_alpha_sigma_sq(lam)
    return z * jnp.exp(-0.5 * ls) - jnp.exp(0.5 * lam) * x


def predict_x(pred: jax.Array, z: jax.Array, logsnr: jax.Array, parameterization: str) -> jax.Array:
    """The network output `pred` in `parameterization` -> x̂: [B, ...]."""
    _check(parameterization)
    if parameterization == "x":
        return pred
    if parameterization == "eps":
        return x_from_eps(pred, z, logsnr)
    alpha, sigma = alpha_sigma(expand_to(logsnr, z))
    return alpha * z - sigma * pred


def predict_eps(pred: jax.Array, z: jax.Array, logsnr: jax.Array, parameterization: str) -> jax.Array:
    """The network output `pred` in `parameterization` -> ε̂: [B, ...]."""
    _check(parameterization)
    if parameterization == "eps":
        return pred
    if parameterization == "x":
        return eps_from_x(pred, z, logsnr)
    alpha, sigma = alpha_sigma(expand_to(logsnr, z))
    return sigma * z + alpha * pred


def predict_v(pred: jax.Array, z: jax.Array, logsnr: jax.Array, parameterization: str) -> jax.Array:
    """The network output `pred` in `parameterization` -> v̂ = α ε̂ − σ x̂: [B, ...]."""
    _check(parameterization)
    if parameterization == "v":
        return pred
    x = predict_x(pred, z, logsnr, parameterization)
    eps = predict_eps(pred, z, logsnr, parameterization)
    alpha, sigma = alpha_sigma(expand_to(logsnr, z))
    return alpha * eps - sigma * x


def from_x_eps(x: jax.Array, eps: jax.Array, logsnr: jax.Array, parameterization: str) -> jax.Array:
    """The target (or prediction) in `parameterization` for a consistent pair (x, ε)."""
    _check(parameterization)
    if parameterization == "x":
        return x
    if parameterization == "eps":
        return eps
    alpha, sigma = alpha_sigma(expand_to(logsnr, x))
    return alpha * eps - sigma * x


def from_x(x: jax.Array, z: jax.Array, logsnr: jax.Array, parameterization: str) -> jax.Array:
    """x̂ -> the output in `parameterization` that would give x̂ at (z, λ) (inverse of `predict_x`)."""
    _check(parameterization)
    if parameterization == "x":
        return x
    return from_x_eps(x, eps_from_x(x, z, logsnr), logsnr, parameterization)


def dynamic_threshold(x: jax.Array, percentile: float) -> jax.Array:
    """Imagen's dynamic thresholding (Saharia et al. 2022, §2.3), per example.

    s = max(1, quantile_p(|x̂|)); x̂ <- clip(x̂, −s, s) / s. x: [B, ...].
    """
    flat = jnp.abs(x.reshape(x.shape[0], -1))
    s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.0)
    s = expand_to(s, x)
    return jnp.clip(x, -s, s) / s


def constrain_x(x: jax.Array, clip_x: bool, percentile: float) -> jax.Array:
    """Sampler-side x̂ post-processing: dynamic thresholding if `percentile` > 0, else clipping to [−1, 1] if clip_x."""
    if percentile > 0:
        return dynamic_threshold(x, percentile)
    if clip_x:
        return jnp.clip(x, -1.0, 1.0)
    return x
