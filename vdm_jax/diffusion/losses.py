"""The training loss: t ~ U(0, 1), z_t = α_t x + σ_t ε, weighted MSE of the network's prediction.

Every weighting is a weighted x-MSE, w(λ) ‖x − x̂‖² (Ho et al. 2022, eq. 2; Kingma et al. 2021, eq. 13), and we
compute it in the space where it is best conditioned, using ‖ε − ε̂‖² = SNR ‖x − x̂‖² and
‖v − v̂‖² = (1 + SNR) ‖x − x̂‖² (Salimans & Ho 2022, §4):

  eps_mse        w = SNR                ε-space, weight 1
  v_mse          w = 1 + SNR            v-space, weight 1
  x_mse          w = 1                  x-space, weight 1
  truncated_snr  w = max(SNR, 1)        v-space, weight max(SNR, 1)/(1 + SNR) = max(σ(λ), σ(−λ)) (Salimans & Ho 2022)
  min_snr        w = min(SNR, γ)        v-space, weight min(SNR, γ)/(1 + SNR) = min(σ(λ), γ σ(−λ)) (Hang et al. 2023)

(σ(·) the logistic sigmoid.) The v-space weights of the last two lie in (0, 1], so no λ makes them blow up.
Squared errors are averaged over pixels and channels, giving one loss per frame; a per-frame mask lets one batch mix
video frames, independent image frames and known (conditioning) frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from vdm_jax.diffusion.config import DiffusionConfig
from vdm_jax.diffusion.gaussian import diffuse
from vdm_jax.diffusion.parameterization import from_x_eps, predict_eps, predict_v, predict_x
from vdm_jax.diffusion.schedules import discretize_time, make_schedule

DenoiseFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def sample_times(rng: jax.Array, batch_size: int, low_discrepancy: bool) -> jax.Array:
    """t: [B] ~ U(0, 1). Low-discrepancy (Kingma et al. 2021, Appendix I.1): t_i = (u + i/B) mod 1, one shared u.

    Each t_i is still marginally uniform, so the loss stays unbiased; its variance over the batch drops.
    """
    if low_discrepancy:
        u = jax.random.uniform(rng, ())
        return jnp.mod(u + jnp.arange(batch_size, dtype=jnp.float32) / batch_size, 1.0)
    return jax.random.uniform(rng, (batch_size,))


def loss_space_and_weight(weighting: str, logsnr: jax.Array, min_snr_gamma: float) -> tuple[str, jax.Array]:
    """(space the squared error is taken in, its weight: shape of logsnr) for a weighting (see module docstring)."""
    ones = jnp.ones_like(logsnr)
    if weighting == "eps_mse":
        return "eps", ones
    if weighting == "v_mse":
        return "v", ones
    if weighting == "x_mse":
        return "x", ones
    if weighting == "truncated_snr":
        return "v", jnp.maximum(jax.nn.sigmoid(logsnr), jax.nn.sigmoid(-logsnr))
    if weighting == "min_snr":
        return "v", jnp.minimum(jax.nn.sigmoid(logsnr), min_snr_gamma * jax.nn.sigmoid(-logsnr))
    raise ValueError(f"loss_weighting={weighting!r} is not one of eps_mse, v_mse, x_mse, truncated_snr, min_snr")


def x_mse_weight(weighting: str, logsnr: jax.Array, min_snr_gamma: float) -> jax.Array:
    """The same weighting expressed on the x-MSE, w(λ) (for analysis and tests): see the module table."""
    snr = jnp.exp(logsnr)
    return {
        "eps_mse": snr,
        "v_mse": 1.0 + snr,
        "x_mse": jnp.ones_like(snr),
        "truncated_snr": jnp.maximum(snr, 1.0),
        "min_snr": jnp.minimum(snr, min_snr_gamma),
    }[weighting]


_TO_SPACE = {"x": predict_x, "eps": predict_eps, "v": predict_v}


def diffusion_loss(
    denoise_fn: DenoiseFn,
    x: jax.Array,
    rng: jax.Array,
    cfg: DiffusionConfig,
    *,
    resolution: int,
    cond: Any = None,
    loss_mask: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The weighted denoising loss of one batch (Ho et al. 2022, eq. 2).

    Args:
      denoise_fn: (z: [B, T, H, W, C], logsnr: [B], cond) -> the network output in `cfg.parameterization`.
      x: [B, T, H, W, C] clean data (any [B, T, ...] works).
      rng: key for t and ε.
      cfg: the diffusion config (schedule, parameterization, weighting, discrete time, t-sampler).
      resolution: the frame size in pixels (sets the shifted cosine's shift).
      cond: passed through to `denoise_fn`.
      loss_mask: [B, T], 1 where the frame's loss counts (0 for known/padding frames), or None (all count).
    Returns:
      loss: scalar, the mean of `frame_loss` over counted frames.
      aux: frame_loss [B, T] (weighted per-frame loss, zero where masked out), logsnr [B], t [B].
    """
    if x.ndim < 3:
        raise ValueError(f"x must be [B, T, ...] (e.g. [B, T, H, W, C]), got shape {x.shape}")
    t_rng, eps_rng = jax.random.split(rng)
    batch = x.shape[0]
    t = discretize_time(sample_times(t_rng, batch, cfg.low_discrepancy), cfg.timesteps)
    logsnr = make_schedule(cfg, resolution)(t)
    x = x.astype(jnp.float32)
    eps = jax.random.normal(eps_rng, x.shape, jnp.float32)
    z = diffuse(x, logsnr, eps)
    pred = denoise_fn(z, logsnr, cond).astype(jnp.float32)
    if pred.shape != x.shape:
        raise ValueError(f"denoise_fn returned shape {pred.shape}, expected the data shape {x.shape}")

    space, weight = loss_space_and_weight(cfg.loss_weighting, logsnr, cfg.min_snr_gamma)
    target = from_x_eps(x, eps, logsnr, space)
    estimate = _TO_SPACE[space](pred, z, logsnr, cfg.parameterization)
    frame_mse = jnp.mean(jnp.square(estimate - target), axis=tuple(range(2, x.ndim)))  # [B, T]
    frame_loss = weight[:, None] * frame_mse
    if loss_mask is None:
        loss = jnp.mean(frame_loss)
    else:
        if loss_mask.shape != frame_loss.shape:
            raise ValueError(f"loss_mask must be [B, T] = {frame_loss.shape}, got {loss_mask.shape}")
        mask = loss_mask.astype(jnp.float32)
        frame_loss = frame_loss * mask
        loss = jnp.sum(frame_loss) / jnp.maximum(jnp.sum(mask), 1.0)
    return loss, {"frame_loss": frame_loss, "logsnr": logsnr, "t": t}


def diffusion_nll(
    denoise_fn: DenoiseFn,
    x: jax.Array,
    rng: jax.Array,
    cfg: DiffusionConfig,
    *,
    resolution: int,
    cond: Any = None,
    frame_mask: jax.Array | None = None,
    levels: int = 16,
) -> jax.Array:
    """The diffusion term of the continuous-time negative ELBO of each example, in nats (Kingma et al. 2021, eq. 17):
    ½ ∫₀¹ (−dλ/dt) ‖ε − ε̂(z_t)‖² dt = ½ ∫ ‖ε − ε̂(z_λ)‖² dλ over [λ_min, λ_max], by the midpoint rule over `levels`
    log-SNRs evenly spaced in λ (the integral does not depend on the schedule; midpoints in t would leave the ends
    of λ, where fine detail is scored, almost unweighted: 16 of them reach only |λ| < 6 with the cosine).

    With the exact denoiser this is −log p(x) up to a constant and the truncation of λ to [λ_min, λ_max] (for
    N(m, s²) data: ½ (x − m)²/s² per element, for any s with λ_min ≪ −2 log s ≪ λ_max). Each level draws one ε and
    gives it to every example (common random numbers): the values are noisy, differences between examples much less,
    which is what ranking candidates needs.
    x: [B, T, ...]; frame_mask: [B, T], 1 where a frame counts (e.g. the unknown frames), or None (all). Returns [B].
    """
    schedule = make_schedule(cfg, resolution)
    lam_max, lam_min = schedule(0.0), schedule(1.0)
    logsnrs = lam_max - (jnp.arange(levels, dtype=jnp.float32) + 0.5) * (lam_max - lam_min) / levels
    weights = jnp.full((levels,), (lam_max - lam_min) / levels)  # Δλ
    x = x.astype(jnp.float32)
    mask = jnp.ones(x.shape[:2], jnp.float32) if frame_mask is None else frame_mask.astype(jnp.float32)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"frame_mask must be [B, T] = {x.shape[:2]}, got {mask.shape}")

    def level(args):
        lam, key = args
        logsnr = jnp.full(x.shape[:1], lam)
        eps = jnp.broadcast_to(jax.random.normal(key, x.shape[1:], jnp.float32), x.shape)
        z = diffuse(x, logsnr, eps)
        eps_hat = predict_eps(denoise_fn(z, logsnr, cond).astype(jnp.float32), z, logsnr, cfg.parameterization)
        return jnp.sum(jnp.sum(jnp.square(eps_hat - eps), axis=tuple(range(2, x.ndim))) * mask, axis=1)

    per_level = jax.lax.map(level, (logsnrs, jax.random.split(rng, levels)))  # [levels, B]
    return 0.5 * jnp.einsum("l,lb->b", weights, per_level)
