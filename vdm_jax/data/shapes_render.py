"""Scenes of the embedded `moving_shapes` dataset: sampling, bouncing trajectories, captions and the renderer.

Pure numpy, no TensorFlow: the TFDS builder (`vdm_jax.data.moving_shapes`) and the evaluation metrics both use these
functions, so the stored ground truth re-renders to the stored pixels exactly.

Geometry. A frame of resolution R covers the continuous square [0, R] x [0, R]; pixel (i, j) is the unit cell whose
centre is (i + 0.5, j + 0.5) in (row, col). An object of size r (circle: radius; square: half side; triangle:
circumradius, apex up) has its centre confined to [r, R - r] on both axes and moves at constant velocity, reflecting
elastically off the walls. Objects are painted from the last to the first, so object 0 (whose shape is the label) is
never occluded. Edges are hard (no antialiasing): every pixel is the background or exactly one palette colour.
"""

from __future__ import annotations

import math

import numpy as np

from vdm_jax.data.palette import BACKGROUND, MAX_OBJECTS, PALETTE, PALETTE_NAMES, SHAPES

# Scene distribution, in units of the frame side (so the 32x32 and 64x64 configs hold the same scenes, scaled).
SIZE_RANGE = (0.12, 0.2)  # object size r / R
SPEED_RANGE = (0.04, 0.09)  # |velocity| / R per frame
DIRECTION_JITTER_DEG = 15.0  # headings are one of 8 compass directions +- this, so captions are unambiguous
GENERATOR_SEED = 2022  # example i of split s is drawn from default_rng([GENERATOR_SEED, s, i])

_SQRT3 = math.sqrt(3.0)


def sample_scene(rng: np.random.Generator, num_frames: int, resolution: int) -> dict[str, np.ndarray]:
    """Draws one scene and simulates it for `num_frames` frames.

    Returns the ground truth of `vdm_jax.data.palette` (K = MAX_OBJECTS, padded with -1) plus
    `velocity: float32 [K, 2]`, the initial velocity in pixels per frame (row, col), and
    `frame_velocity: float32 [T, K, 2]`, the velocity at each frame (the one that carries frame t to t + 1; padding: 0).
    """
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    shape = rng.integers(0, len(SHAPES), size=n)
    color = rng.choice(len(PALETTE), size=n, replace=False)
    size = rng.uniform(*SIZE_RANGE, size=n)
    start = rng.uniform(size[:, None], 1.0 - size[:, None], size=(n, 2))
    heading = np.deg2rad(45.0 * rng.integers(0, 8, size=n) + rng.uniform(-1, 1, size=n) * DIRECTION_JITTER_DEG)
    speed = rng.uniform(*SPEED_RANGE, size=n)
    # Heading 0 points right; rows grow downwards, so "up" is a negative row velocity.
    velocity = np.stack([-np.sin(heading), np.cos(heading)], axis=-1) * speed[:, None]
    position, frame_velocity = simulate_bounces(
        start * resolution, velocity * resolution, size * resolution, resolution, num_frames
    )

    k = MAX_OBJECTS
    gt = {
        "num_objects": np.int32(n),
        "shape": np.full([k], -1, np.int32),
        "color": np.full([k], -1, np.int32),
        "size": np.full([k], -1, np.float32),
        "position": np.full([num_frames, k, 2], -1, np.float32),
        "velocity": np.zeros([k, 2], np.float32),
        "frame_velocity": np.zeros([num_frames, k, 2], np.float32),
    }
    gt["shape"][:n] = shape
    gt["color"][:n] = color
    gt["size"][:n] = size * resolution
    gt["position"][:, :n] = position
    gt["velocity"][:n] = frame_velocity[0]
    gt["frame_velocity"][:, :n] = frame_velocity
    return gt


def simulate_bounces(
    start: np.ndarray, velocity: np.ndarray, size: np.ndarray, resolution: int, num_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Steps centres forward one frame at a time, reflecting off the walls [r, R - r].

    start, velocity: [N, 2] (row, col), pixels and pixels per frame; size: [N]. Returns positions and velocities
    [num_frames, N, 2]: velocities[t] carries frame t to t + 1 (a bounce negates the component it reflects).
    Requires |velocity| < R - 2r per axis (at most one reflection per step), which the scene ranges guarantee.
    """
    lo = size[:, None] * np.ones([1, 2])
    hi = resolution - lo
    p, v = start.astype(np.float64).copy(), velocity.astype(np.float64).copy()
    out = np.empty([num_frames, *p.shape], np.float64)
    out_v = np.empty_like(out)
    for t in range(num_frames):
        out[t], out_v[t] = p, v
        p = p + v
        over, under = p > hi, p < lo
        p = np.where(over, 2 * hi - p, np.where(under, 2 * lo - p, p))
        v = np.where(over | under, -v, v)
    return out.astype(np.float32), out_v.astype(np.float32)


def shape_mask(shape: int, centre: np.ndarray, size: float, resolution: int) -> np.ndarray:
    """Pixels covered by one object: bool [R, R]. centre: (row, col) in pixels."""
    coords = np.arange(resolution, dtype=np.float32) + 0.5
    dy = coords[:, None] - np.float32(centre[0])
    dx = coords[None, :] - np.float32(centre[1])
    r = np.float32(size)
    name = SHAPES[shape]
    if name == "circle":
        return dy * dy + dx * dx <= r * r
    if name == "square":
        return (np.abs(dy) <= r) & (np.abs(dx) <= r)
    if name == "triangle":
        # Equilateral, apex at (row - r, col), base at row + r/2; the half width grows by 1/sqrt(3) per row.
        return (dy <= r / 2) & (np.abs(dx) <= (dy + r) / np.float32(_SQRT3))
    raise ValueError(f"unknown shape index {shape}; expected 0..{len(SHAPES) - 1} ({SHAPES})")


def render(gt: dict[str, np.ndarray], resolution: int) -> np.ndarray:
    """Paints one example's ground truth: uint8 [T, R, R, 3].

    gt: the schema of `vdm_jax.data.palette` for ONE example (num_objects [], shape/color/size [K], position [T, K, 2]).
    """
    position = np.asarray(gt["position"])
    n = int(gt["num_objects"])
    frames = np.broadcast_to(BACKGROUND, (position.shape[0], resolution, resolution, 3)).copy()
    for t in range(position.shape[0]):
        for k in reversed(range(n)):
            mask = shape_mask(int(gt["shape"][k]), position[t, k], float(gt["size"][k]), resolution)
            frames[t][mask] = PALETTE[int(gt["color"][k])]
    return frames


def direction_words(velocity: np.ndarray) -> str:
    """'up and to the left', 'right', ... for a (row, col) velocity (rows grow downwards)."""
    vy, vx = float(velocity[0]), float(velocity[1])
    speed = math.hypot(vy, vx)
    tan = math.tan(math.radians(22.5))  # outside +-22.5 degrees of an axis, the other axis counts too
    vertical = "" if abs(vy) <= tan * abs(vx) else ("up" if vy < 0 else "down")
    horizontal = "" if abs(vx) <= tan * abs(vy) else ("left" if vx < 0 else "right")
    if speed == 0:
        return "still"
    if vertical and horizontal:
        return f"{vertical} and to the {horizontal}"
    return vertical or horizontal


def caption(gt: dict[str, np.ndarray], frame: int | None = None) -> str:
    """'a red circle moving up and to the left and a blue square moving down': each object's motion.

    frame=None: the initial motion (`gt["velocity"]`); frame=t: the motion at frame t (`gt["frame_velocity"][t]`),
    which bounces before t may have reversed.
    """
    n = int(gt["num_objects"])
    velocity = gt["velocity"] if frame is None else gt["frame_velocity"][frame]
    parts = []
    for k in range(n):
        colour, shape = PALETTE_NAMES[int(gt["color"][k])], SHAPES[int(gt["shape"][k])]
        parts.append(f"a {colour} {shape} moving {direction_words(velocity[k])}")
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]
