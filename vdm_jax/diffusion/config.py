"""Typed, frozen views of `config.diffusion` and `config.sampler` (keys and meanings: configs/default.py).

Built as `DiffusionConfig(**config.diffusion)`: an unknown key is a TypeError naming it, a bad value a ValueError that
names the key, the allowed values and the fix. Both are hashable, so they can be static arguments of `jax.jit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

SCHEDULES = ("cosine", "shifted_cosine", "linear")
PARAMETERIZATIONS = ("eps", "v", "x")
LOSS_WEIGHTINGS = ("eps_mse", "v_mse", "x_mse", "truncated_snr", "min_snr")
SAMPLERS = ("ancestral", "ddim", "pc", "dpm_solver")


def _check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name}={value!r} is not one of {list(choices)}; pick one of those")


def _as_float(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{owner}.{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def _check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}.{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{owner}.{name}={value} must be >= {minimum}")


def _check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}.{name} must be True or False, got {value!r}")


def _from_mapping(cls, mapping: Mapping[str, Any]):
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - fields)
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    return cls(**mapping)


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """The noise process and the training loss (`config.diffusion`)."""

    schedule: str = "cosine"
    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    shift_base_resolution: int = 64
    parameterization: str = "v"
    loss_weighting: str = "v_mse"
    min_snr_gamma: float = 5.0
    timesteps: int = 0
    low_discrepancy: bool = True

    def __post_init__(self) -> None:
        own = "config.diffusion"
        _check_choice(own, "schedule", self.schedule, SCHEDULES)
        _check_choice(own, "parameterization", self.parameterization, PARAMETERIZATIONS)
        _check_choice(own, "loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        for name in ("logsnr_min", "logsnr_max", "min_snr_gamma"):
            object.__setattr__(self, name, _as_float(own, name, getattr(self, name)))
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(
                f"{own}: logsnr_min={self.logsnr_min} must be < logsnr_max={self.logsnr_max} (e.g. -20 and 20)"
            )
        if self.min_snr_gamma <= 0:
            raise ValueError(f"{own}.min_snr_gamma={self.min_snr_gamma} must be > 0 (Hang et al. 2023 use 5)")
        _check_int(own, "shift_base_resolution", self.shift_base_resolution, 1)
        _check_int(own, "timesteps", self.timesteps, 0)
        _check_bool(own, "low_discrepancy", self.low_discrepancy)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> DiffusionConfig:
        """Like `DiffusionConfig(**mapping)`, with the list of valid keys in the message for an unknown one."""
        return _from_mapping(cls, mapping)


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How samples are drawn (`config.sampler`)."""

    name: str = "ancestral"
    num_steps: int = 100
    gamma: float = 0.1
    eta: float = 0.0
    corrector_steps: int = 1
    langevin_delta: float = 0.1
    guidance_weight: float = 0.0
    clip_x: bool = True
    dynamic_threshold: float = 0.0
    recon_guidance_weight: float = 0.0
    frame_guidance_weight: float = 0.0

    def __post_init__(self) -> None:
        own = "config.sampler"
        _check_choice(own, "name", self.name, SAMPLERS)
        _check_int(own, "num_steps", self.num_steps, 1)
        _check_int(own, "corrector_steps", self.corrector_steps, 0)
        _check_bool(own, "clip_x", self.clip_x)
        floats = ("gamma", "eta", "langevin_delta", "guidance_weight", "dynamic_threshold")
        for name in (*floats, "recon_guidance_weight", "frame_guidance_weight"):
            object.__setattr__(self, name, _as_float(own, name, getattr(self, name)))
        for name in ("gamma", "eta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{own}.{name}={getattr(self, name)} must lie in [0, 1]")
        if self.langevin_delta <= 0:
            raise ValueError(f"{own}.langevin_delta={self.langevin_delta} must be > 0 (VDM uses 0.1)")
        if self.guidance_weight < 0:
            raise ValueError(f"{own}.guidance_weight={self.guidance_weight} must be >= 0 (0 = no guidance)")
        if self.recon_guidance_weight < 0:
            raise ValueError(f"{own}.recon_guidance_weight={self.recon_guidance_weight} must be >= 0 (0 = off)")
        if self.frame_guidance_weight < 0:
            raise ValueError(f"{own}.frame_guidance_weight={self.frame_guidance_weight} must be >= 0 (0 = off)")
        if self.dynamic_threshold != 0.0 and not 0.5 < self.dynamic_threshold < 1.0:
            raise ValueError(
                f"{own}.dynamic_threshold={self.dynamic_threshold} must be 0 (off) or a percentile in (0.5, 1), "
                "e.g. 0.995"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SamplerConfig:
        """Like `SamplerConfig(**mapping)`, with the list of valid keys in the message for an unknown one."""
        return _from_mapping(cls, mapping)
