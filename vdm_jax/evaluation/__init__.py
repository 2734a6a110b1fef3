"""Evaluation of video samples: FVD with the pretrained Kinetics-400 I3D, temporal-consistency metrics on the
embedded moving-shapes data, and the flow-warping error for any video. See docs/evaluation.md."""

from vdm_jax.evaluation.config import METRIC_NAMES, EvalConfig
from vdm_jax.evaluation.fvd import (
    RealStatsKey,
    feature_stats,
    frechet_distance,
    fvd_from_features,
    i3d_features,
    preprocess_for_i3d,
    real_stats,
    resize_bilinear_tf1,
    resolve_cache_dir,
)
from vdm_jax.evaluation.ground_truth import object_fidelity
from vdm_jax.evaluation.i3d import I3D, load_i3d_params, pretrained_i3d
from vdm_jax.evaluation.metrics import compute_metrics
from vdm_jax.evaluation.temporal import TEMPORAL_METRICS, temporal_consistency, temporal_consistency_per_video
from vdm_jax.evaluation.warp import warp_error, warp_error_per_video

__all__ = [
    "I3D",
    "METRIC_NAMES",
    "TEMPORAL_METRICS",
    "EvalConfig",
    "RealStatsKey",
    "compute_metrics",
    "feature_stats",
    "frechet_distance",
    "fvd_from_features",
    "i3d_features",
    "load_i3d_params",
    "object_fidelity",
    "preprocess_for_i3d",
    "pretrained_i3d",
    "real_stats",
    "resize_bilinear_tf1",
    "resolve_cache_dir",
    "temporal_consistency",
    "temporal_consistency_per_video",
    "warp_error",
    "warp_error_per_video",
]
