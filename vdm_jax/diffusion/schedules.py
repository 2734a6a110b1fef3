"""Log-SNR schedules λ(t), t ∈ [0, 1], decreasing from λ(0) = λ_max to λ(1) = λ_min, and their discretisations.

- cosine: the cosine schedule of Nichol & Dhariwal (2021) written in log-SNR, λ(t) = −2 log tan(πt/2), restricted
  to [λ_min, λ_max] by rescaling the interval (VDM, Kingma et al. 2021; Ho et al. 2022 use λ ∈ [−20, 20]):

      λ(t) = −2 log tan(a t + b),  b = arctan(e^{−λ_max/2}),  a = arctan(e^{−λ_min/2}) − b,

  so λ(0) = λ_max and λ(1) = λ_min exactly (no clipping kink at either end).
- shifted_cosine: the cosine shifted by s = 2 log(base / resolution) (Hoogeboom et al. 2023, "simple diffusion",
  §3.1): λ(t) = λ_cos(t) + s, with the cosine's interval chosen so the result still spans [λ_min, λ_max] exactly.
  Lower resolutions (s > 0) spend more of t at high SNR, where their fewer pixels still carry signal.
- linear: linear in log-SNR, λ(t) = λ_max + (λ_min − λ_max) t (the fixed linear schedule of Kingma et al. 2021).

Near t = 1 the argument of tan approaches π/2, where float32 tan loses precision; there we use
tan(u) = 1 / tan(π/2 − u) with π/2 − u computed directly, so both ends are exact.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from vdm_jax.diffusion.config import DiffusionConfig


@dataclasses.dataclass(frozen=True)
class Schedule:
    """λ(t) for t ∈ [0, 1]: `kind` in {"cosine", "linear"}; `shift` adds 2 log(base/res) to a cosine (see module)."""

    kind: str
    logsnr_min: float
    logsnr_max: float
    shift: float = 0.0

    def __call__(self, t: jax.Array) -> jax.Array:
        """t: any shape, in [0, 1] -> λ(t), same shape, float32."""
        t = jnp.asarray(t, jnp.float32)
        if self.kind == "linear":
            return self.logsnr_max + (self.logsnr_min - self.logsnr_max) * t
        b, a, b_end = self._cosine_constants()
        head = -2.0 * jnp.log(jnp.tan(a * t + b))  # accurate while a t + b <= π/4
        tail = 2.0 * jnp.log(jnp.tan(b_end + a * (1.0 - t)))  # π/2 − (a t + b), accurate near t = 1
        return jnp.where(a * t + b <= math.pi / 4, head, tail) + self.shift

    def time(self, logsnr: jax.Array) -> jax.Array:
        """The inverse t(λ), for λ in [λ_min, λ_max]."""
        logsnr = jnp.asarray(logsnr, jnp.float32)
        if self.kind == "linear":
            return (logsnr - self.logsnr_max) / (self.logsnr_min - self.logsnr_max)
        b, a, _ = self._cosine_constants()
        return (jnp.arctan(jnp.exp(-0.5 * (logsnr - self.shift))) - b) / a

    def _cosine_constants(self) -> tuple[float, float, float]:
        # In float64 on the host: b = arctan(e^{−(λ_max−s)/2}), a = arctan(e^{−(λ_min−s)/2}) − b,
        # b_end = π/2 − a − b = arctan(e^{(λ_min−s)/2}).
        lo, hi = self.logsnr_min - self.shift, self.logsnr_max - self.shift
        b = math.atan(math.exp(-0.5 * hi))
        a = math.atan(math.exp(-0.5 * lo)) - b
        return b, a, math.atan(math.exp(0.5 * lo))


def cosine_shift(base_resolution: int, resolution: int) -> float:
    """s = 2 log(base / resolution) of the shifted cosine (Hoogeboom et al. 2023, §3.1)."""
    return 2.0 * math.log(base_resolution / resolution)


def make_schedule(cfg: DiffusionConfig, resolution: int) -> Schedule:
    """The schedule of `cfg`; `resolution` (frame height = width in pixels) sets the shifted cosine's shift."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int (the frame size in pixels), got {resolution!r}")
    if cfg.schedule == "linear":
        return Schedule("linear", cfg.logsnr_min, cfg.logsnr_max)
    shift = cosine_shift(cfg.shift_base_resolution, resolution) if cfg.schedule == "shifted_cosine" else 0.0
    return Schedule("cosine", cfg.logsnr_min, cfg.logsnr_max, shift)


def discretize_time(t: jax.Array, timesteps: int) -> jax.Array:
    """Training on a grid of N steps (Kingma et al. 2021, discrete-time VDM): u ∈ [0, 1) -> t ∈ {1/N, ..., 1}.

    timesteps = 0 leaves t continuous.
    """
    if timesteps == 0:
        return t
    return (jnp.floor(t * timesteps) + 1.0) / timesteps


def sampling_times(num_steps: int, start_time: float = 1.0) -> jax.Array:
    """The sampler's grid t_N = 1 > t_{N−1} > ... > t_0 = 0, uniform in t: [num_steps + 1], from 1 down to 0.

    start_time = t0 < 1 (a sampler started from a noised input, SDEdit) keeps the spacing of the full grid:
    max(1, round(num_steps · t0)) steps from t0 down to 0.
    """
    if not 0.0 < start_time <= 1.0:
        raise ValueError(f"start_time={start_time} must be in (0, 1]")
    if start_time == 1.0:
        return jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)
    steps = max(1, int(round(num_steps * start_time)))
    return jnp.linspace(start_time, 0.0, steps + 1, dtype=jnp.float32)
