"""A small renderer of moving-shapes scenes, for testing and calibrating the evaluation metrics.

Scenes follow the vocabulary of ``vdm_jax.data.palette`` (circles, squares and triangles of palette colours on the
background, constant velocity, elastic bounces off the frame's edges). Rendering is antialiased by supersampling, so
edges blend into the background the way resized dataset frames do. A scene is plain arrays, so a test can corrupt the
ground truth (drop an object for some frames, jitter positions, flicker colours) and render the result.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vdm_jax.data.palette import BACKGROUND, MAX_OBJECTS, PALETTE, SHAPES


@dataclasses.dataclass
class Scene:
    """Ground truth of one video (K objects, T frames); drawn in order, later objects on top.

    shape: [K] index into SHAPES; color: [T, K, 3] RGB in [0, 255]; size: [T, K] radius in pixels (circle radius,
    square half side, triangle circumradius); position: [T, K, 2] centre (row, col); visible: [T, K].
    """

    shape: np.ndarray
    color: np.ndarray
    size: np.ndarray
    position: np.ndarray
    visible: np.ndarray

    def copy(self) -> Scene:
        return Scene(*(np.array(getattr(self, f.name)) for f in dataclasses.fields(self)))


def bounce(unfolded: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Folds free motion into [lo, hi] by elastic reflection (a triangle wave). All arrays broadcast together."""
    period = 2.0 * (hi - lo)
    phase = np.mod(unfolded - lo, period)
    return lo + np.where(phase > hi - lo, period - phase, phase)


def random_scene(rng: np.random.Generator, num_frames: int, resolution: int, max_objects: int = MAX_OBJECTS) -> Scene:
    """1..max_objects objects with distinct colours, radius 12-18% of the frame, speed 2-6% of the frame per step."""
    k = int(rng.integers(1, max_objects + 1))
    size = rng.uniform(0.12, 0.18, k) * resolution
    lo, hi = size[:, None], resolution - size[:, None]
    start = rng.uniform(lo, hi, (k, 2))
    angle = rng.uniform(0.0, 2.0 * np.pi, k)
    speed = rng.uniform(0.02, 0.06, k) * resolution
    velocity = speed[:, None] * np.stack([np.sin(angle), np.cos(angle)], axis=-1)
    t = np.arange(num_frames, dtype=np.float64)[:, None, None]
    position = bounce(start[None] + t * velocity[None], lo[None], hi[None])
    colors = PALETTE[rng.choice(len(PALETTE), k, replace=False)].astype(np.float64)
    return Scene(
        shape=rng.integers(0, len(SHAPES), k),
        color=np.broadcast_to(colors, (num_frames, k, 3)).copy(),
        size=np.broadcast_to(size, (num_frames, k)).copy(),
        position=position,
        visible=np.ones((num_frames, k), bool),
    )


def _coverage(shape: int, size: float, center: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Boolean inside-mask of one shape on a (supersampled) grid of pixel-centre coordinates."""
    dy, dx = rows - center[0], cols - center[1]
    name = SHAPES[shape]
    if name == "circle":
        return dy**2 + dx**2 <= size**2
    if name == "square":
        return (np.abs(dy) <= size) & (np.abs(dx) <= size)
    # Equilateral triangle pointing up, circumradius `size`: inside the three edge half-planes.
    angles = np.deg2rad([-90.0, 30.0, 150.0])  # vertices in (row, col): top, bottom right, bottom left
    verts = np.stack([size * np.sin(angles), size * np.cos(angles)], axis=-1)
    inside = np.ones_like(dy, bool)
    for i in range(3):
        (y0, x0), (y1, x1) = verts[i], verts[(i + 1) % 3]
        inside &= (x1 - x0) * (dy - y0) - (y1 - y0) * (dx - x0) >= 0
    return inside


def render_scene(scene: Scene, resolution: int, supersample: int = 4) -> np.ndarray:
    """scene -> uint8 video [T, H, W, 3], each pixel the average of supersample^2 sub-pixel samples."""
    n = resolution * supersample
    coords = (np.arange(n) + 0.5) / supersample
    rows, cols = np.meshgrid(coords, coords, indexing="ij")
    num_frames, num_objects = scene.visible.shape
    video = np.empty((num_frames, resolution, resolution, 3), np.uint8)
    for t in range(num_frames):
        canvas = np.broadcast_to(BACKGROUND.astype(np.float64), (n, n, 3)).copy()
        for k in range(num_objects):
            if scene.visible[t, k]:
                mask = _coverage(int(scene.shape[k]), scene.size[t, k], scene.position[t, k], rows, cols)
                canvas[mask] = scene.color[t, k]
        pooled = canvas.reshape(resolution, supersample, resolution, supersample, 3).mean(axis=(1, 3))
        video[t] = np.clip(np.round(pooled), 0, 255).astype(np.uint8)
    return video


def moving_shapes_videos(
    num_videos: int, num_frames: int = 16, resolution: int = 32, seed: int = 0, supersample: int = 4
) -> tuple[np.ndarray, list[Scene]]:
    """num_videos random scenes rendered: (uint8 [N, T, H, W, 3], their scenes). supersample=1: hard edges (pixel
    centres sampled once, as the `moving_shapes` dataset renders); 4: antialiased, as after a resize."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, num_frames, resolution) for _ in range(num_videos)]
    return np.stack([render_scene(s, resolution, supersample) for s in scenes]), scenes
