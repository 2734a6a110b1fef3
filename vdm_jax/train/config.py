"""Typed training and parallelism settings (`config.train`, `config.parallel`)."""

from __future__ import annotations

import dataclasses

from vdm_jax.parallel import RULE_PRESETS
from vdm_jax.parallel.mesh import MESH_AXES


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    lr_schedule: str
    b1: float
    b2: float
    weight_decay: float
    grad_clip: float
    ema_decay: float
    grad_accum_steps: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    sample_every: int
    num_samples: int
    eval_every: int
    init_from: str
    context_pool: str = ""  # npz of examples with the model's own known frames (vdm_jax.train.context_pool)
    context_pool_fraction: float = 0.5
    ema_warmup: bool = True  # the EMA's effective decay min(ema_decay, (1 + step) / (10 + step)); False: ema_decay

    def __post_init__(self):
        positive = ("num_steps", "batch_size", "grad_accum_steps", "log_every", "checkpoint_every", "keep_checkpoints")
        positive += ("num_samples",)  # the final sample grid is always written
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "sample_every", "eval_every"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not (0.0 <= self.b1 < 1.0 and 0.0 <= self.b2 < 1.0):
            raise ValueError(f"Adam betas must be in [0, 1), got b1={self.b1}, b2={self.b2}")
        if not 0.0 < self.context_pool_fraction <= 1.0:
            raise ValueError(f"context_pool_fraction must be in (0, 1], got {self.context_pool_fraction}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("learning_rate must be > 0 and weight_decay, grad_clip >= 0")


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    mesh_shape: tuple[int, ...]
    rules: str

    def __post_init__(self):
        if len(self.mesh_shape) != len(MESH_AXES):
            raise ValueError(f"mesh_shape {self.mesh_shape} needs one entry per mesh axis {MESH_AXES}")
        if self.mesh_shape[2] != 1:
            raise ValueError(
                f"mesh_shape {self.mesh_shape}: the tensor axis (last) must be 1. The rule presets split no "
                "computation over it (activations are not sharded by heads), so its devices would repeat the same "
                "work; put them in data or fsdp, e.g. (-1, 1, 1) or (1, -1, 1)"
            )
        if self.rules not in RULE_PRESETS:
            raise ValueError(f"rules must be one of {sorted(RULE_PRESETS)}, got {self.rules!r}")

    @property
    def rule_list(self):
        return RULE_PRESETS[self.rules]
