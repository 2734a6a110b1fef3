"""Per-frame object detection by colour, for videos drawn from a known palette on a plain background.

Pixel model: every clean pixel is the background b, a palette colour p_k, or an antialiased blend
b + a (p_k - b) with a in [0, 1]. For each pixel we project x - b onto each segment [b, p_k], giving a coverage
a_k and a residual r_k = |x - b - a_k (p_k - b)|. A pixel belongs to colour k when a_k >= 0.5 and r_k is the smallest
residual (and below ``object_tol``); it is *clean* when min_k r_k < ``clean_tol``.

Objects are 8-connected components of one colour whose soft area (sum of a_k over the component grown by one pixel)
reaches ``min_area_fraction`` of the frame (at least ``MIN_AREA_PIXELS``): single speckles never count as objects.
Each object carries its soft area, coverage-weighted centroid, median colour, and a translation- and
scale-invariant shape descriptor from normalised central moments (Hu 1962), which separates circles, axis-aligned
squares and triangles.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

CLEAN_TOL = 20.0  # RGB units (0-255): a pixel farther than this from every background-palette blend is noise
OBJECT_TOL = 90.0  # RGB units: the largest residual for a pixel to still be assigned to a colour
MIN_AREA_FRACTION = 0.005  # of H * W; objects smaller than this are speckle
MIN_AREA_PIXELS = 3.0
_EIGHT = np.ones((3, 3), bool)


@dataclasses.dataclass(frozen=True)
class FrameObjects:
    """The objects of one frame (M of them). color_index: [M]; area: [M] soft pixels; centroid: [M, 2] (row, col);
    color: [M, 3] median RGB; shape: [M, 4] descriptor (see ``shape_descriptor``); touching: [M] bool, within two
    pixels of another object's pixels (possibly occluded: its area, shape and centroid are not to be trusted)."""

    color_index: np.ndarray
    area: np.ndarray
    centroid: np.ndarray
    color: np.ndarray
    shape: np.ndarray
    touching: np.ndarray


def check_finite(videos: np.ndarray) -> None:
    """ValueError when videos ([N, T, H, W, C], or one video or frame) hold NaN or Inf (a diverged or broken
    sampler), naming how many videos do."""
    finite = np.isfinite(videos)
    if finite.all():
        return
    if videos.ndim != 5:
        raise ValueError("the video contains NaN or Inf; no metric can score it")
    bad = ~finite.reshape(len(videos), -1).all(axis=1)
    raise ValueError(
        f"{int(bad.sum())} of {len(videos)} videos contain NaN or Inf (first: video {int(np.argmax(bad))}); no "
        "metric can score them"
    )


def to_rgb255(videos: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 in [0, 255] or float in [-1, 1] -> float64 RGB in [0, 255]."""
    videos = np.asarray(videos)
    if videos.shape[-1] != 3:
        raise ValueError(f"expected RGB frames [..., 3]; got shape {videos.shape}")
    if videos.dtype == np.uint8:
        return videos.astype(np.float64)
    if not np.issubdtype(videos.dtype, np.floating):
        raise ValueError(f"videos must be uint8 in [0, 255] or float in [-1, 1]; got dtype {videos.dtype}")
    check_finite(videos)
    if videos.size and (np.min(videos) < -1.05 or np.max(videos) > 1.05):
        raise ValueError("float videos must lie in [-1, 1]; pass uint8 frames as uint8 or scale with x / 127.5 - 1")
    return (np.clip(videos.astype(np.float64), -1.0, 1.0) + 1.0) * 127.5


def pixel_model(
    frames: np.ndarray, palette: np.ndarray, background: np.ndarray, object_tol: float = OBJECT_TOL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """frames: [..., H, W, 3] RGB in [0, 255]; palette: [K, 3]; background: [3].

    Returns (label [..., H, W] int: colour index or -1 for background, coverage [..., H, W, K] in [0, 1],
    residual [..., H, W]: distance to the nearest background-palette blend).
    """
    bg = np.asarray(background, np.float64)
    directions = np.asarray(palette, np.float64) - bg  # [K, 3]
    offset = frames - bg
    coverage = np.clip(offset @ directions.T / np.sum(directions**2, axis=-1), 0.0, 1.0)  # [..., K]
    residuals = np.linalg.norm(offset[..., None, :] - coverage[..., None] * directions, axis=-1)  # [..., K]
    candidate = np.where(coverage >= 0.5, residuals, np.inf)
    best = np.argmin(candidate, axis=-1)
    best_residual = np.take_along_axis(candidate, best[..., None], axis=-1)[..., 0]
    label = np.where(best_residual < object_tol, best, -1)
    return label, coverage, residuals.min(axis=-1)


def shape_descriptor(weights: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """[I1, I22, S_row, S_col] of a soft mask: with m_pq = E_w[(row - mean)^p (col - mean)^q] and A = sum(w),
    I1 = (m20 + m02) / A, I22 = m22 / (m20 + m02)^2, S = (m30, m03) / (m20 + m02)^1.5.

    Continuous values: circle (0.159, 0.167, 0, 0); axis-aligned square (0.167, 0.25, 0, 0); upward triangle
    (0.192, 0.20, -0.2, 0) (the apex is a long thin tail upwards). Antialiased at radius 4 px: within ~0.01 of
    these, S within ~0.05."""
    area = weights.sum()
    cy, cx = (weights @ rows) / area, (weights @ cols) / area
    dy, dx = rows - cy, cols - cx
    m = lambda p, q: (weights @ (dy**p * dx**q)) / area
    spread = m(2, 0) + m(0, 2) + 1e-12
    return np.array([spread / area, m(2, 2) / spread**2, m(3, 0) / spread**1.5, m(0, 3) / spread**1.5])


def detect_objects(
    frame: np.ndarray,
    palette: np.ndarray,
    background: np.ndarray,
    min_area_fraction: float = MIN_AREA_FRACTION,
    object_tol: float = OBJECT_TOL,
) -> FrameObjects:
    """frame: [H, W, 3] RGB in [0, 255] -> its objects (see the module docstring)."""
    h, w, _ = frame.shape
    min_area = max(MIN_AREA_PIXELS, min_area_fraction * h * w)
    label, coverage, _ = pixel_model(frame, palette, background, object_tol)
    found: list[tuple] = []
    for k in np.unique(label[label >= 0]):
        components, count = ndimage.label(label == k, structure=_EIGHT)
        for j in range(1, count + 1):
            core = components == j
            # Grow by one pixel to collect the antialiased rim, but never into another object's pixels.
            region = ndimage.binary_dilation(core, structure=_EIGHT) & ((label == -1) | core)
            rows, cols = np.nonzero(region)
            weights = coverage[rows, cols, k]
            area = weights.sum()
            if area < min_area:
                continue
            centroid = np.array([weights @ rows, weights @ cols]) / area
            color = np.median(frame[core], axis=0)
            near = ndimage.binary_dilation(core, structure=_EIGHT, iterations=2)
            touching = bool(np.any(near & (label >= 0) & ~core))
            descriptor = shape_descriptor(weights, rows.astype(float), cols.astype(float))
            found.append((k, area, centroid, color, descriptor, touching))
    if not found:
        empty = np.zeros((0, 4))
        return FrameObjects(np.zeros(0, int), np.zeros(0), empty[:, :2], empty[:, :3], empty, np.zeros(0, bool))
    k, area, centroid, color, shape, touching = zip(*found, strict=True)
    return FrameObjects(
        np.array(k), np.array(area), np.stack(centroid), np.stack(color), np.stack(shape), np.array(touching)
    )


def clean_fraction(frames: np.ndarray, palette: np.ndarray, background: np.ndarray, clean_tol: float = CLEAN_TOL):
    """frames: [..., H, W, 3] RGB in [0, 255] -> [...] fraction of pixels explained by the palette (within tol)."""
    _, _, residual = pixel_model(frames, palette, background)
    return np.mean(residual < clean_tol, axis=(-2, -1))
