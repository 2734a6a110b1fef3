"""EvalConfig: the typed form of ``config.eval`` (see configs/default.py for each key's meaning)."""

from __future__ import annotations

import dataclasses

METRIC_NAMES = ("fvd", "temporal", "warp_error")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """``EvalConfig(**config.eval)``; unknown keys fail as a TypeError, bad values as a ValueError.

    metrics: any of METRIC_NAMES (a tuple, or a comma-separated string from the command line).
    num_samples: sampled videos per evaluation. batch_size: videos per sampling / I3D batch.
    cache_dir: directory of cached real-data FVD statistics ('' = <data_dir>/fvd_stats).
    num_cond_frames: 0 = unconditional samples; k > 0 = video prediction: every sample is conditioned on the first k
      frames of a test clip (BAIR 1, Kinetics-600 5), with the sampler's conditioning method.
    samples_per_clip: samples per test clip (BAIR's protocol: 100 x 256); the real side of FVD is the
      num_samples / samples_per_clip test clips the samples continue.
    """

    metrics: tuple[str, ...] = ("temporal",)
    num_samples: int = 16
    batch_size: int = 16
    cache_dir: str = ""
    num_cond_frames: int = 0
    samples_per_clip: int = 1

    def __post_init__(self):
        metrics = self.metrics
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        metrics = tuple(metrics)
        unknown = [m for m in metrics if m not in METRIC_NAMES]
        if unknown:
            raise ValueError(
                f"config.eval.metrics: unknown metric(s) {unknown}; choose from {METRIC_NAMES}, "
                'e.g. --config.eval.metrics=\'("fvd", "temporal")\''
            )
        object.__setattr__(self, "metrics", metrics)
        for name in ("num_samples", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"config.eval.{name} must be a positive integer; got {getattr(self, name)}")
        if int(self.num_cond_frames) < 0:
            raise ValueError(f"config.eval.num_cond_frames must be >= 0; got {self.num_cond_frames}")
        if int(self.samples_per_clip) < 1:
            raise ValueError(f"config.eval.samples_per_clip must be a positive integer; got {self.samples_per_clip}")
        if self.num_samples % self.samples_per_clip:
            raise ValueError(
                f"config.eval.num_samples={self.num_samples} must be a multiple of "
                f"config.eval.samples_per_clip={self.samples_per_clip} (every test clip gets the same number)"
            )

    @property
    def num_real_clips(self) -> int:
        """Test clips per evaluation: FVD's real side, and the clips prediction samples continue."""
        return self.num_samples // self.samples_per_clip
