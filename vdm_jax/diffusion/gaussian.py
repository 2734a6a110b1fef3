"""The continuous-time Gaussian noise process, indexed by log-SNR λ (Kingma et al. 2021; Ho et al. 2022, §2).

    q(z_t | x) = N(α_t x, σ_t² I),   α_t² = sigmoid(λ_t),   σ_t² = sigmoid(−λ_t),   λ_t = log(α_t² / σ_t²).

Everything is computed from λ through log-sigmoid and expm1, never as 1 − α²: at λ = 20, σ² = 2e-9 would be lost
to rounding in float32 (1 − sigmoid(20) == 0), and at λ = −20 the same holds for α².

Shapes: `logsnr` has a prefix of the data's shape (`[B]` per example, or `[B, T]` per frame) and is broadcast over
the remaining axes of `x`/`z: [B, T, H, W, C]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def expand_to(a: jax.Array, x: jax.Array) -> jax.Array:
    """Appends trailing unit axes to `a` (shape a prefix of `x.shape`) so it broadcasts against `x`."""
    a = jnp.asarray(a)
    if a.shape != x.shape[: a.ndim]:
        raise ValueError(f"per-example values of shape {a.shape} do not prefix the data shape {x.shape}")
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def log_alpha_sigma_sq(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(log α², log σ²) = (log sigmoid(λ), log sigmoid(−λ)); exact in float32 for any λ."""
    return jax.nn.log_sigmoid(logsnr), jax.nn.log_sigmoid(-logsnr)


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(α, σ) with α² = sigmoid(λ), σ² = sigmoid(−λ), so α² + σ² = 1 (variance preserving)."""
    la, ls = log_alpha_sigma_sq(logsnr)
    return jnp.exp(0.5 * la), jnp.exp(0.5 * ls)


def diffuse(x: jax.Array, logsnr: jax.Array, eps: jax.Array) -> jax.Array:
    """A draw of q(z_t | x): z_t = α_t x + σ_t ε (Ho et al. 2022, eq. 1). x, eps: [B, ...]; logsnr: a prefix."""
    alpha, sigma = alpha_sigma(expand_to(logsnr, x))
    return alpha * x + sigma * eps


def log_one_minus_snr_ratio(logsnr_t: jax.Array, logsnr_s: jax.Array) -> jax.Array:
    """log(1 − e^{λ_t − λ_s}) for λ_s > λ_t, via log(−expm1(·)): exact when the two levels are close."""
    return jnp.log(-jnp.expm1(logsnr_t - logsnr_s))


def transition_log_var(logsnr_t: jax.Array, logsnr_s: jax.Array) -> jax.Array:
    """log σ²_{t|s} of q(z_t | z_s) = N(α_{t|s} z_s, σ²_{t|s} I), s < t (λ_s > λ_t).

    σ²_{t|s} = σ_t² − α²_{t|s} σ_s² = (1 − e^{λ_t − λ_s}) σ_t²  (Kingma et al. 2021, eq. 2; Ho et al. 2022, §2).
    """
    return log_one_minus_snr_ratio(logsnr_t, logsnr_s) + jax.nn.log_sigmoid(-logsnr_t)


def posterior_coefficients(logsnr_t: jax.Array, logsnr_s: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Coefficients of q(z_s | z_t, x) = N(μ̃, σ̃² I) for s < t (λ_s > λ_t) (Ho et al. 2022, eq. 3):

        μ̃_{s|t} = e^{λ_t − λ_s} (α_s / α_t) z_t + (1 − e^{λ_t − λ_s}) α_s x,
        σ̃²_{s|t} = (1 − e^{λ_t − λ_s}) σ_s².

    Returns (c_z, c_x, log σ̃²) with μ̃ = c_z z_t + c_x x, each with the shape of the log-SNRs.
    """
    la_t, _ = log_alpha_sigma_sq(logsnr_t)
    la_s, ls_s = log_alpha_sigma_sq(logsnr_s)
    log_one_minus_r = log_one_minus_snr_ratio(logsnr_t, logsnr_s)
    c_z = jnp.exp(logsnr_t - logsnr_s + 0.5 * (la_s - la_t))
    c_x = jnp.exp(log_one_minus_r + 0.5 * la_s)
    return c_z, c_x, log_one_minus_r + ls_s


def posterior_mean_log_var(
    z_t: jax.Array, x: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(μ̃_{s|t}(z_t, x): [B, ...], log σ̃²_{s|t}: broadcastable) of q(z_s | z_t, x), s < t (Ho et al. 2022, eq. 3)."""
    c_z, c_x, log_var = posterior_coefficients(logsnr_t, logsnr_s)
    return expand_to(c_z, z_t) * z_t + expand_to(c_x, z_t) * x, expand_to(log_var, z_t)
