"""compute_metrics: the configured evaluation metrics of a set of (sampled) videos, for training and evaluation."""

from __future__ import annotations

import numpy as np
from absl import logging
from jax.sharding import Mesh

from vdm_jax.evaluation.config import EvalConfig
from vdm_jax.evaluation.fvd import (
    RealStatsKey,
    feature_stats,
    frechet_distance,
    i3d_features,
    real_stats,
    resolve_cache_dir,
)
from vdm_jax.evaluation.objects import check_finite
from vdm_jax.evaluation.temporal import TEMPORAL_METRICS, temporal_consistency
from vdm_jax.evaluation.warp import warp_error


def compute_metrics(
    videos: np.ndarray,
    eval_cfg: EvalConfig,
    *,
    real_videos: np.ndarray | None = None,
    real_stats_key: RealStatsKey | None = None,
    real_statistics: tuple[np.ndarray, np.ndarray] | None = None,
    mesh: Mesh | None = None,
    data_dir: str = "",
    progress: bool = True,
) -> dict[str, float]:
    """videos: [N, T, H, W, 3] float in [-1, 1] (or uint8) -> {metric name: value}.

    'temporal' adds the six temporal-consistency scores (1 = perfect), 'warp_error' the flow-warping error (lower is
    better), 'fvd' the Fréchet Video Distance to real data. FVD's real side is ``real_statistics`` (mu, cov) when
    given; else it comes from ``real_stats_key`` (statistics cached under ``eval_cfg.cache_dir``, computed from
    ``real_videos`` on first use or when the cached sample count differs from len(real_videos)), or from
    ``real_videos`` alone (not cached).
    Videos holding NaN or Inf (a sampler gone wrong) score NaN on every metric, with a warning: a training run keeps
    its evaluation's record and goes on, where an error would stop it again at every restart.
    """
    try:
        check_finite(np.asarray(videos))
    except ValueError as e:
        logging.warning("Every metric is NaN: %s", e)
        names = list(TEMPORAL_METRICS) if "temporal" in eval_cfg.metrics else []
        names += [name for name in ("warp_error", "fvd") if name in eval_cfg.metrics]
        return dict.fromkeys(names, float("nan"))
    results: dict[str, float] = {}
    if "temporal" in eval_cfg.metrics:
        results.update(temporal_consistency(videos))
    if "warp_error" in eval_cfg.metrics:
        results["warp_error"] = warp_error(videos)
    if "fvd" in eval_cfg.metrics:
        features = lambda v: i3d_features(v, batch_size=eval_cfg.batch_size, mesh=mesh, progress=progress)
        if real_statistics is not None:
            mu_real, cov_real = real_statistics
        elif real_stats_key is not None:
            compute = None if real_videos is None else (lambda: features(real_videos))
            cache_dir = resolve_cache_dir(eval_cfg.cache_dir, data_dir)
            num_real = None if real_videos is None else len(real_videos)
            mu_real, cov_real = real_stats(real_stats_key, cache_dir, compute, num_samples=num_real)
        elif real_videos is not None:
            mu_real, cov_real = feature_stats(features(real_videos))
        else:
            raise ValueError("FVD needs the real side: pass real_videos=..., real_stats_key=..., or both (to cache)")
        results["fvd"] = frechet_distance(*feature_stats(features(videos)), mu_real, cov_real)
    return results
