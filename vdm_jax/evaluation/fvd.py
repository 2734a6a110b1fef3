"""Fréchet Video Distance (Unterthiner et al. 2018, "Towards Accurate Generative Models of Video").

FVD = ||mu_r - mu_g||^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)), the Fréchet (2-Wasserstein) distance between Gaussians
fitted to I3D logits of real and generated clips (the FID formula of Heusel et al. 2017, eq. (6)).

The protocol of the reference implementation (google-research/frechet_video_distance): frames resized with TF1's
``tf.image.resize_bilinear`` (align_corners=False, *no* half-pixel centres) to 224x224, values mapped to [-1, 1], the
400 averaged Kinetics logits as features. We reproduce that resize exactly (``resize_bilinear_tf1``), so numbers are
comparable with published FVDs given the same sample counts (2048 clips for UCF-101, 100 x 256 for BAIR).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vdm_jax.evaluation.i3d import INPUT_SIZE, NUM_CLASSES, pretrained_i3d
from vdm_jax.evaluation.objects import check_finite

STATS_FORMAT = "i3d-kinetics-400-logits/tf1-bilinear-224/v1"  # stored with cached statistics; bump on any change


# ------------------------------------------------------------------------------------------------------ inputs


def to_unit_range(videos: np.ndarray) -> np.ndarray:
    """videos: [N, T, H, W, C], uint8 in [0, 255] or float in [-1, 1] -> float32 in [-1, 1]."""
    videos = np.asarray(videos)
    if videos.ndim != 5:
        raise ValueError(f"videos must be [N, T, H, W, C]; got shape {videos.shape}")
    if videos.dtype == np.uint8:
        return videos.astype(np.float32) / 127.5 - 1.0
    if not np.issubdtype(videos.dtype, np.floating):
        raise ValueError(f"videos must be uint8 in [0, 255] or float in [-1, 1]; got dtype {videos.dtype}")
    check_finite(videos)
    lo, hi = float(np.min(videos)), float(np.max(videos))
    if lo < -1.05 or hi > 1.05:
        raise ValueError(
            f"float videos must lie in [-1, 1] (got values in [{lo:.3g}, {hi:.3g}]); pass uint8 frames as uint8, "
            "or scale floats with x / 127.5 - 1"
        )
    return np.clip(videos, -1.0, 1.0).astype(np.float32)


def _tf1_bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] interpolation weights: output i samples input at i * size_in / size_out, clamped."""
    src = np.arange(size_out, dtype=np.float64) * (size_in / size_out)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    frac = src - lo
    weights = np.zeros((size_out, size_in), np.float64)
    np.add.at(weights, (np.arange(size_out), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(size_out), hi), frac)
    return weights.astype(np.float32)


def resize_bilinear_tf1(frames: jax.Array, size: int) -> jax.Array:
    """TF1 ``tf.image.resize_bilinear(align_corners=False)``: output pixel i samples input at i * in / out.

    frames: [..., H, W, C] -> [..., size, size, C]. Unlike ``jax.image.resize`` (half-pixel centres), the legacy
    mapping has no 0.5 offset and clamps at the far edge; this is the resize behind published FVD numbers.
    Separable: two small matrix products.
    """
    rows = jnp.asarray(_tf1_bilinear_matrix(frames.shape[-3], size))
    cols = jnp.asarray(_tf1_bilinear_matrix(frames.shape[-2], size))
    hp = jax.lax.Precision.HIGHEST
    out = jnp.einsum("oh,...hwc->...owc", rows, frames, precision=hp)
    return jnp.einsum("pw,...owc->...opc", cols, out, precision=hp)


def preprocess_for_i3d(videos: jax.Array) -> jax.Array:
    """videos: [B, T, H, W, 3], uint8 or float in [-1, 1] -> float32 [B, T, 224, 224, 3] in [-1, 1]."""
    x = videos.astype(jnp.float32)
    if videos.dtype == jnp.uint8:
        x = x / 127.5 - 1.0
    if x.shape[-3:-1] != (INPUT_SIZE, INPUT_SIZE):
        x = resize_bilinear_tf1(x, INPUT_SIZE)
    return x


# ---------------------------------------------------------------------------------------------- I3D features


@functools.lru_cache(maxsize=1)
def _model_split():
    return nnx.split(pretrained_i3d())


@functools.lru_cache(maxsize=8)
def _forward(mesh: Mesh | None):
    graphdef, _ = _model_split()

    def forward(state, videos):
        return nnx.merge(graphdef, state)(preprocess_for_i3d(videos))

    if mesh is None:
        return jax.jit(forward)
    replicated = NamedSharding(mesh, PartitionSpec())
    batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    return jax.jit(forward, in_shardings=(replicated, batch), out_shardings=replicated)


def i3d_features(
    videos: np.ndarray, *, batch_size: int = 16, mesh: Mesh | None = None, progress: bool = True
) -> np.ndarray:
    """I3D Kinetics-400 logits of each clip, batched and jitted (on ``mesh`` when given: batch over data x fsdp).

    videos: [N, T, H, W, 3], uint8 or float in [-1, 1], T >= 9 (16 in the FVD protocol), any H, W (resized to 224).
    Every process passes the same full array; the last batch is padded (by repetition) and the padding dropped.
    Returns np.float64 [N, 400].
    """
    videos = np.asarray(videos)
    if videos.dtype != np.uint8:
        videos = to_unit_range(videos)
    elif videos.ndim != 5:
        raise ValueError(f"videos must be [N, T, H, W, C]; got shape {videos.shape}")
    if videos.shape[-1] != 3:
        raise ValueError(f"I3D takes RGB videos; got {videos.shape[-1]} channels (shape {videos.shape})")
    n = videos.shape[0]
    if n == 0:
        return np.zeros((0, NUM_CLASSES), np.float64)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    data_size = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
    batch_size = -(-min(batch_size, n) // data_size) * data_size  # a multiple of the data-parallel size
    _, state = _model_split()
    forward = _forward(mesh)
    if mesh is not None:
        state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
    from tqdm.auto import tqdm

    out = []
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc="I3D features", unit="batch", disable=not progress or jax.process_index() != 0):
        batch = videos[start : start + batch_size]
        if len(batch) < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - len(batch), axis=0)])
        if mesh is not None:
            sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
            batch = jax.make_array_from_callback(batch.shape, sharding, lambda index, b=batch: b[index])
        out.append(np.asarray(forward(state, batch), np.float64))
    return np.concatenate(out)[:n]


# ----------------------------------------------------------------------------------------- Fréchet distance


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root by eigendecomposition (float64); negative round-off eigenvalues are set to 0."""
    matrix = np.asarray(matrix, np.float64)
    eigvals, eigvecs = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr((C1 C2)^(1/2)) in float64 (Heusel et al. 2017, eq. (6)).

    mu: [D], cov: [D, D]. tr((C1 C2)^(1/2)) = tr((C1^(1/2) C2 C1^(1/2))^(1/2)): the inner matrix is symmetric PSD, so
    its eigenvalues are real and >= 0 up to round-off (clipped), leaving no complex parts and no NaN even when the
    covariances are singular (fewer samples than dimensions).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shapes mu {mu1.shape}, {mu2.shape}; cov {cov1.shape}, {cov2.shape}")
    root1 = sqrtm_psd(cov1)
    inner = root1 @ cov2 @ root1
    eigvals = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    cross = np.sum(np.sqrt(np.clip(eigvals, 0.0, None)))
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross
    return float(max(distance, 0.0))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features: [N, D] -> (mean [D], unbiased covariance [D, D]) in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features [N >= 2, D] for a covariance; got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def fvd_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FVD between two sets of I3D features [N1, 400] and [N2, 400]."""
    return frechet_distance(*feature_stats(features1), *feature_stats(features2))


# --------------------------------------------------------------------------------- cached real-data statistics


@dataclasses.dataclass(frozen=True)
class RealStatsKey:
    """What real-data FVD statistics depend on: the dataset, its split, the frame size, the clip length, and where
    set, the frame stride, the number of clips and ``source``, the identity of the stored data (its TFDS builder's
    full name: it names moving_shapes' split sizes and a video folder's listing hash)."""

    dataset: str
    split: str
    resolution: int
    num_frames: int
    frame_stride: int = 1
    num_samples: int = 0  # 0: any count (the file records its own)
    source: str = ""

    def filename(self) -> str:
        safe = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s))
        name = f"{safe(self.dataset)}-{safe(self.split)}-{int(self.resolution)}px-{int(self.num_frames)}f"
        if self.frame_stride != 1:
            name += f"-s{int(self.frame_stride)}"
        if self.num_samples:
            name += f"-{int(self.num_samples)}clips"
        if self.source:
            name += "-" + hashlib.sha256(self.source.encode()).hexdigest()[:10]
        return name + ".npz"


def resolve_cache_dir(cache_dir: str, data_dir: str = "") -> pathlib.Path:
    """``cache_dir``, or ``<data_dir>/fvd_stats`` when it is '' (TFDS's default data dir when that is '' too)."""
    if cache_dir:
        return pathlib.Path(cache_dir).expanduser()
    base = data_dir or os.environ.get("TFDS_DATA_DIR", "") or "~/tensorflow_datasets"
    return pathlib.Path(base).expanduser() / "fvd_stats"


def cached_real_stats(
    key: RealStatsKey, cache_dir: str | os.PathLike, num_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (mu, cov) of ``key`` if there is a file made with this feature protocol (``STATS_FORMAT``) and, if
    given, from ``num_samples`` clips; else None (to be computed)."""
    path = pathlib.Path(cache_dir) / key.filename()
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as cached:
        if str(cached["format"]) != STATS_FORMAT:
            return None
        if num_samples is not None and int(cached["num_samples"]) != num_samples:
            return None
        return cached["mu"], cached["cov"]


def real_stats(
    key: RealStatsKey,
    cache_dir: str | os.PathLike,
    compute_features: Callable[[], np.ndarray] | None = None,
    num_samples: int | None = None,
    read_cache: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(mu, cov) of real clips' I3D features, computed once and cached as ``<cache_dir>/<key.filename()>``.

    A cached file is used when ``cached_real_stats`` accepts it (and ``read_cache``: False recomputes, as every host
    must when the hosts share the sharded I3D calls); otherwise ``compute_features() -> [N, 400]`` is called and the
    result saved (by process 0).
    """
    path = pathlib.Path(cache_dir) / key.filename()
    cached = cached_real_stats(key, cache_dir, num_samples) if read_cache else None
    if cached is not None:
        return cached
    if compute_features is None:
        raise FileNotFoundError(
            f"no usable cached real-data FVD statistics for {key} (with {num_samples} samples, format "
            f"{STATS_FORMAT}) at {path}; pass the real videos (real_videos=...) to compute and cache them"
        )
    features = np.asarray(compute_features(), np.float64)
    if num_samples is not None and features.shape[0] != num_samples:
        raise ValueError(f"real-data features for {key}: got {features.shape[0]} clips, expected {num_samples}")
    mu, cov = feature_stats(features)
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, mu=mu, cov=cov, num_samples=features.shape[0], format=STATS_FORMAT)
        os.replace(tmp, path)
    return mu, cov
