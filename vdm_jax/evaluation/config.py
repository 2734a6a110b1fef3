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
    """

    metrics: tuple[str, ...] = ("temporal",)
    num_samples: int = 16
    batch_size: int = 16
    cache_dir: str = ""

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
