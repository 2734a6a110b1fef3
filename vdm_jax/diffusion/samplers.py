"""Samplers: stateless functions of one denoiser, each a single `lax.scan` over its steps (jittable end to end).

The grid is uniform in t, t_N = 1 > ... > t_0 = 0 (log-SNR λ_min ... λ_max); step i goes from t = t_{N−i} to s < t.
Every sampler starts from z_1 ~ N(0, I) (q(z_1) is N(α_1 x, σ_1²) with α_1² = sigmoid(λ_min) ≈ 2e-9) and returns
z_0 / α_0. The last step adds no noise (and pc runs no corrector after it). Given a start x and a start time t0 < 1
(SDEdit, Meng et al. 2022), it starts instead from z_t0 = α_t0 x + σ_t0 ε, a draw of q(z_t0 | x), and runs the
steps of the same spacing from t0 down to 0. The stochastic samplers (ancestral, pc, ddim with η = 1) then draw
from p(x_0 | z_t0), keeping what the noise at t0 leaves of x (the coarse layout at mid t0) and re-drawing the rest;
the deterministic ones map z_t0 along the probability-flow ODE.

  ancestral   Ho et al. 2022, §2: z_s = μ̃_{s|t}(z_t, x̂) + sqrt((σ̃²_{s|t})^{1−γ} (σ²_{t|s})^γ) ε.
  ddim        Song et al. 2021a, eq. 12 with σ_t(η) of eq. 16: z_s = α_s x̂ + sqrt(σ_s² − c²) ε̂ + c ε,
              c² = η² σ̃²_{s|t}; η = 0 is the deterministic DDIM, η = 1 the DDPM posterior.
  pc          the ancestral step then Langevin corrector steps (Ho et al. 2022, §2; Song et al. 2021b),
              z_s <- z_s − ½ δ σ_s ε̂(z_s) + sqrt(δ) σ_s ε'.
  dpm_solver  DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2) in half-log-SNR ℓ = λ/2, h = ℓ_s − ℓ_t:
              z_s = (σ_s/σ_t) z_t − α_s (e^{−h} − 1) D, D = (1 + 1/(2r)) x̂_t − 1/(2r) x̂_prev, r = h_prev/h;
              first order (D = x̂_t) on the first and the last step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from vdm_jax.diffusion.config import DiffusionConfig, SamplerConfig
from vdm_jax.diffusion.gaussian import (
    alpha_sigma,
    expand_to,
    log_alpha_sigma_sq,
    log_one_minus_snr_ratio,
    posterior_coefficients,
    transition_log_var,
)
from vdm_jax.diffusion.guidance import (
    DenoiseFn,
    Predictor,
    as_known_frames,
    classifier_free_guidance,
    frame_guidance,
    make_predictor,
)
from vdm_jax.diffusion.parameterization import eps_from_x
from vdm_jax.diffusion.schedules import make_schedule, sampling_times

ProgressFn = Callable[[int, int], None]


def num_function_evals(sampler_cfg: SamplerConfig) -> int:
    """Calls of denoise_fn per sample (NFE). With guidance each call is a batch of 2B, and with reconstruction
    guidance each also has a backward pass; pc runs no corrector after its last step."""
    n = sampler_cfg.num_steps
    if sampler_cfg.name == "pc":
        return n + (n - 1) * sampler_cfg.corrector_steps
    return n


def ancestral_update(
    z: jax.Array, x_hat: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array, gamma: float, noise: jax.Array
) -> jax.Array:
    """One ancestral step with VDM's variance interpolation (Ho et al. 2022, §2), z: [B, ...], logsnr: [B].

    log variance = (1 − γ) log σ̃²_{s|t} + γ log σ²_{t|s}, both from log(1 − e^{λ_t − λ_s}) (no cancellation).
    `noise` is ε (zero for a noise-free last step).
    """
    c_z, c_x, log_var_post = posterior_coefficients(logsnr_t, logsnr_s)
    log_var = (1.0 - gamma) * log_var_post + gamma * transition_log_var(logsnr_t, logsnr_s)
    return expand_to(c_z, z) * z + expand_to(c_x, z) * x_hat + expand_to(jnp.exp(0.5 * log_var), z) * noise


def ddim_update(
    z: jax.Array, x_hat: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array, eta: jax.Array, noise: jax.Array
) -> jax.Array:
    """One DDIM step (Song et al. 2021a, eqs. 12 and 16): c = η σ_s sqrt(1 − e^{λ_t − λ_s}) = η σ̃_{s|t}."""
    eps_hat = eps_from_x(x_hat, z, logsnr_t)
    alpha_s, sigma_s = alpha_sigma(logsnr_s)
    frac = jnp.exp(log_one_minus_snr_ratio(logsnr_t, logsnr_s))  # σ̃²_{s|t} / σ_s²
    c = eta * sigma_s * jnp.sqrt(frac)
    keep = sigma_s * jnp.sqrt(jnp.maximum(1.0 - eta**2 * frac, 0.0))
    return expand_to(alpha_s, z) * x_hat + expand_to(keep, z) * eps_hat + expand_to(c, z) * noise


def langevin_update(z: jax.Array, x_hat: jax.Array, logsnr: jax.Array, delta: float, noise: jax.Array) -> jax.Array:
    """One Langevin corrector step at level λ_s (Ho et al. 2022, §2): z − ½ δ σ ε̂ + sqrt(δ) σ ε'."""
    eps_hat = eps_from_x(x_hat, z, logsnr)
    _, sigma = alpha_sigma(expand_to(logsnr, z))
    return z - 0.5 * delta * sigma * eps_hat + jnp.sqrt(delta) * sigma * noise


def dpm_solver_update(z: jax.Array, data_pred: jax.Array, logsnr_t: jax.Array, logsnr_s: jax.Array) -> jax.Array:
    """The DPM-Solver++ exponential-integrator step (Lu et al. 2022b, eq. 9 / Algorithm 2) for a data estimate D:
    z_s = (σ_s/σ_t) z_t − α_s expm1(−h) D, h = (λ_s − λ_t)/2."""
    _, ls_t = log_alpha_sigma_sq(logsnr_t)
    la_s, ls_s = log_alpha_sigma_sq(logsnr_s)
    h = 0.5 * (logsnr_s - logsnr_t)
    ratio = jnp.exp(0.5 * (ls_s - ls_t))
    return expand_to(ratio, z) * z - expand_to(jnp.exp(0.5 * la_s) * jnp.expm1(-h), z) * data_pred


def _run(
    predictor: Predictor,
    shape: tuple[int, ...],
    rng: jax.Array,
    logsnrs: jax.Array,
    cfg: SamplerConfig,
    progress: ProgressFn | None,
    start: jax.Array | None = None,
) -> jax.Array:
    """The scan over steps for every sampler; logsnrs: [N + 1] from λ(t0) up to λ(0); z_t0 ~ N(0, I), or q(z_t0 | start)
    when a start x is given."""
    num_steps = logsnrs.shape[0] - 1
    batch = shape[0]
    init_rng, loop_rng = jax.random.split(rng)
    z = jax.random.normal(init_rng, shape, jnp.float32)
    if start is not None:
        alpha_t0, sigma_t0 = alpha_sigma(logsnrs[0])
        z = alpha_t0 * start.astype(jnp.float32) + sigma_t0 * z
    per_example = lambda lam: jnp.full((batch,), lam, jnp.float32)  # noqa: E731

    def step(carry, i):
        z, x_prev, h_prev = carry
        is_last = i == num_steps - 1
        lam_t, lam_s = per_example(logsnrs[i]), per_example(logsnrs[i + 1])
        k_model, k_noise, k_corr = jax.random.split(jax.random.fold_in(loop_rng, i), 3)
        z, x_hat = predictor(z, lam_t, k_model)
        stochastic = cfg.name in ("ancestral", "pc") or (cfg.name == "ddim" and cfg.eta > 0)
        noise = jnp.where(is_last, 0.0, 1.0) * jax.random.normal(k_noise, shape, jnp.float32) if stochastic else 0.0
        h = 0.5 * (logsnrs[i + 1] - logsnrs[i])
        if cfg.name in ("ancestral", "pc"):
            z = ancestral_update(z, x_hat, lam_t, lam_s, cfg.gamma, noise)
        elif cfg.name == "ddim":
            z = ddim_update(z, x_hat, lam_t, lam_s, jnp.where(is_last, 0.0, cfg.eta), noise)
        else:
            first_order = (i == 0) | is_last
            r = h_prev / h
            second = (1.0 + 0.5 / r) * x_hat - (0.5 / r) * x_prev
            z = dpm_solver_update(z, jnp.where(first_order, x_hat, second), lam_t, lam_s)
        if cfg.name == "pc" and cfg.corrector_steps > 0:
            z = jax.lax.cond(is_last, lambda z: z, lambda z: _correct(predictor, z, lam_s, k_corr, cfg), z)
        if progress is not None:
            jax.debug.callback(lambda j: progress(int(j) + 1, num_steps), i)
        return (z, x_hat, h), None

    carry = (z, jnp.zeros(shape, jnp.float32), jnp.float32(1.0))
    (z, _, _), _ = jax.lax.scan(step, carry, jnp.arange(num_steps))
    alpha_0, _ = alpha_sigma(logsnrs[-1])
    return z / alpha_0


def _correct(predictor: Predictor, z: jax.Array, logsnr: jax.Array, key: jax.Array, cfg: SamplerConfig) -> jax.Array:
    def body(j, z):
        k_model, k_noise = jax.random.split(jax.random.fold_in(key, j))
        z, x_hat = predictor(z, logsnr, k_model)
        return langevin_update(z, x_hat, logsnr, cfg.langevin_delta, jax.random.normal(k_noise, z.shape, z.dtype))

    return jax.lax.fori_loop(0, cfg.corrector_steps, body, z)


def sample(
    denoise_fn: DenoiseFn,
    shape: tuple[int, ...],
    rng: jax.Array,
    diffusion_cfg: DiffusionConfig,
    sampler_cfg: SamplerConfig,
    *,
    resolution: int,
    cond: Any = None,
    known: Any = None,
    progress: ProgressFn | None = None,
    null_cond: Any = None,
    recon_weight_fn: Callable[[jax.Array], jax.Array] | None = None,
    start: jax.Array | None = None,
    start_time: float = 1.0,
) -> jax.Array:
    """Draws samples x: `shape` = [B, T, H, W, C] with the sampler `sampler_cfg.name`; jittable end to end.

    Args:
      denoise_fn: (z, logsnr: [B], cond) -> the network output in `diffusion_cfg.parameterization`.
      shape: the sample shape, [B, T, H, W, C] (any [B, T, ...] works without known frames).
      rng: the key; the result is a deterministic function of it.
      resolution: the frame size in pixels (sets the shifted cosine's shift).
      cond: the conditioning passed to denoise_fn (a dict of arrays with leading batch dim, or None).
      known: None, or known frames as `KnownFrames(frames, mask)` / {"frames": [B, T, ...], "mask": [B, T]};
        sampled with replacement, plus reconstruction guidance when sampler_cfg.recon_guidance_weight > 0;
        the returned known frames equal the given ones.
      progress: optional host callback progress(step, num_steps), called after each step (works under jit).
      null_cond: the null conditioning for classifier-free guidance (needed when sampler_cfg.guidance_weight > 0
        and cond is not None; see `classifier_free_guidance`).
      recon_weight_fn: optional logsnr [B] -> w_r [B], a noise-level-dependent reconstruction-guidance weight that
        replaces sampler_cfg.recon_guidance_weight (see `make_predictor`).
      start, start_time: SDEdit (Meng et al. 2022): start [B, T, ...] (the data shape) is noised to start_time = t0
        in (0, 1), z_t0 ~ q(z_t0 | start), and the sampler runs from t0 to 0 at the spacing of its full grid
        (`sampling_times`); a stochastic sampler then draws from p(x_0 | z_t0). Both or neither.
    sampler_cfg.frame_guidance_weight > 0 applies classifier-free guidance to the known frames of a frame-conditioned
    model (`frame_guidance`; cond must hold "known_frames" and "known_mask"), inside the class/text guidance.
    """
    shape = tuple(shape)
    if (start is None) != (start_time == 1.0):
        raise ValueError(
            f"SDEdit needs both a start x and a start_time t0 in (0, 1); got start={'None' if start is None else 'x'}, "
            f"start_time={start_time}"
        )
    if start is not None and tuple(start.shape) != shape:
        raise ValueError(f"start has shape {tuple(start.shape)}; the samples' shape is {shape}")
    if sampler_cfg.frame_guidance_weight > 0:
        denoise_fn = frame_guidance(denoise_fn, sampler_cfg.frame_guidance_weight, cond)
    if sampler_cfg.guidance_weight > 0 and cond is not None:
        if null_cond is None:
            raise ValueError("sampler.guidance_weight > 0 needs null_cond (the model's 'no conditioning' values)")
        denoise_fn = classifier_free_guidance(denoise_fn, sampler_cfg.guidance_weight, null_cond)
    frames = as_known_frames(known, shape)
    predictor = make_predictor(
        denoise_fn,
        cond,
        diffusion_cfg.parameterization,
        clip_x=sampler_cfg.clip_x,
        dynamic_threshold=sampler_cfg.dynamic_threshold,
        known=frames,
        recon_guidance_weight=sampler_cfg.recon_guidance_weight if recon_weight_fn is None else recon_weight_fn,
    )
    logsnrs = make_schedule(diffusion_cfg, resolution)(sampling_times(sampler_cfg.num_steps, start_time))
    x = _run(predictor, shape, rng, logsnrs, sampler_cfg, progress, start)
    if frames is not None:
        x = jnp.where(expand_to(frames.mask, x) > 0, frames.frames, x)
    return x
