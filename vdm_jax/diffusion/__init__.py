"""Gaussian diffusion in log-SNR, in pure jax.numpy (no Flax): schedules, parameterizations, the training loss,
samplers (ancestral, DDIM, predictor-corrector, DPM-Solver++(2M)) and guidance (classifier-free, known frames).

One contract joins it to any network: `denoise_fn(z: [B, T, H, W, C], logsnr: [B], cond) -> output` in the configured
parameterization (eps | v | x). The maths and the papers behind each equation: docs/diffusion.md.
"""

from vdm_jax.diffusion.config import (
    LOSS_WEIGHTINGS,
    PARAMETERIZATIONS,
    SAMPLERS,
    SCHEDULES,
    DiffusionConfig,
    SamplerConfig,
)
from vdm_jax.diffusion.gaussian import (
    alpha_sigma,
    diffuse,
    expand_to,
    log_alpha_sigma_sq,
    posterior_coefficients,
    posterior_mean_log_var,
    transition_log_var,
)
from vdm_jax.diffusion.guidance import (
    KnownFrames,
    classifier_free_guidance,
    frame_guidance,
    make_predictor,
    replace_known,
)
from vdm_jax.diffusion.losses import diffusion_loss, diffusion_nll, loss_space_and_weight, sample_times, x_mse_weight
from vdm_jax.diffusion.parameterization import (
    constrain_x,
    dynamic_threshold,
    eps_from_x,
    from_x,
    from_x_eps,
    predict_eps,
    predict_v,
    predict_x,
    x_from_eps,
)
from vdm_jax.diffusion.samplers import (
    ancestral_update,
    ddim_update,
    dpm_solver_update,
    langevin_update,
    num_function_evals,
    sample,
)
from vdm_jax.diffusion.schedules import Schedule, cosine_shift, discretize_time, make_schedule, sampling_times
from vdm_jax.diffusion.windows import window_starts, windowed_denoiser

__all__ = [
    "LOSS_WEIGHTINGS",
    "PARAMETERIZATIONS",
    "SAMPLERS",
    "SCHEDULES",
    "DiffusionConfig",
    "KnownFrames",
    "SamplerConfig",
    "Schedule",
    "alpha_sigma",
    "ancestral_update",
    "classifier_free_guidance",
    "frame_guidance",
    "constrain_x",
    "cosine_shift",
    "ddim_update",
    "diffuse",
    "diffusion_loss",
    "diffusion_nll",
    "discretize_time",
    "dpm_solver_update",
    "dynamic_threshold",
    "eps_from_x",
    "expand_to",
    "from_x",
    "from_x_eps",
    "langevin_update",
    "log_alpha_sigma_sq",
    "loss_space_and_weight",
    "make_predictor",
    "make_schedule",
    "num_function_evals",
    "posterior_coefficients",
    "posterior_mean_log_var",
    "predict_eps",
    "predict_v",
    "predict_x",
    "replace_known",
    "sample",
    "sample_times",
    "sampling_times",
    "transition_log_var",
    "window_starts",
    "windowed_denoiser",
    "x_from_eps",
    "x_mse_weight",
]
