"""Temporal consistency of moving-shapes videos, measured against the dataset's palette and geometry.

Do objects stay the same thing and move plausibly? Per video (objects from ``vdm_jax.evaluation.objects``):

- object_permanence: fraction of frames whose objects (count per colour) equal the video's most common set; a video
  whose most common set is empty scores 0 (the dataset always holds 1..MAX_OBJECTS objects).
- color_constancy, size_constancy, shape_constancy: per object track, how close each frame's median colour, soft area
  and shape descriptor stay to the track's median over time. Area, shape and motion skip frames in which the object
  touches another one (it may be partly hidden), unless it always does.
- motion_smoothness: per track, constant velocity between bounces: successive velocities (first differences of
  centroids) must be equal (a zero second difference), or reflected in one axis (an elastic bounce off an edge,
  possibly split over two steps).
- cleanliness: fraction of pixels that are background, a palette colour, or a blend of the two (antialiased edges).

Each deviation d maps to a score 1 / (1 + (d / scale)^2): 1 for perfect, 0.5 at d = scale, falling off smoothly,
so partly trained models' blurry blobs and colour drift give intermediate numbers. Videos without any object score
0 on every per-object metric, and so does a track seen in fewer than half of the frames. Rendered real videos
score ~0.94-1.0 (occlusions between objects cost a little).

Objects are tracked by colour: each colour of the most common set owns that many tracks, matched between frames
by nearest centroid (Hungarian assignment).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from vdm_jax.data.palette import BACKGROUND, PALETTE
from vdm_jax.evaluation.objects import FrameObjects, clean_fraction, detect_objects, to_rgb255

TEMPORAL_METRICS = (
    "object_permanence",
    "color_constancy",
    "size_constancy",
    "shape_constancy",
    "motion_smoothness",
    "cleanliness",
)
COLOR_SCALE = 25.0  # RGB units of colour change that halve the score
SIZE_SCALE = 0.5  # pixels of equivalent radius change (area change / perimeter), beyond the dead zone, that halve
SIZE_DEAD_ZONE = 0.5  # the score; hard edges snap a square's sides to whole pixels: +-0.5 px of radius is free
SHAPE_SCALES = np.array([0.02, 0.04, 0.1, 0.1])  # per shape-descriptor entry (objects.shape_descriptor) ...
SHAPE_REFERENCE_AREA = 100.0  # ... for objects of at least this many pixels; smaller ones get sqrt(100 / area) more
EDGE_MARGIN = 0.1  # a bounce is only accepted within sqrt(area) + this fraction of the frame from its border
MOTION_SCALE = 1.0  # velocity error in pixels per step, beyond the dead zone, that halves the score
MOTION_DEAD_ZONE = 1.0  # per axis: hard edges snap positions to whole pixels, so second differences of +-1 are free


def _score(deviation: np.ndarray, scale: float | np.ndarray = 1.0) -> np.ndarray:
    return 1.0 / (1.0 + (np.asarray(deviation) / scale) ** 2)


def _tracks(frames: list[FrameObjects], signature: np.ndarray) -> list[list[int | None]]:
    """For each track (one per object of the modal set), the index of its object in each frame or None."""
    tracks: list[list[int | None]] = []
    for k in np.nonzero(signature)[0]:
        count = int(signature[k])
        slots: list[list[int | None]] = [[None] * len(frames) for _ in range(count)]
        last = None  # [count, 2] last known centroids of the slots
        for t, objects in enumerate(frames):
            idx = np.nonzero(objects.color_index == k)[0]
            if len(idx) != count:
                continue
            centroids = objects.centroid[idx]
            if last is None:
                order = np.lexsort((centroids[:, 1], centroids[:, 0]))
            else:
                cost = np.linalg.norm(last[:, None] - centroids[None], axis=-1)
                _, order = linear_sum_assignment(cost)
            for slot, j in enumerate(order):
                slots[slot][t] = int(idx[j])
            last = centroids[order]
        tracks.extend(slots)
    return tracks


def _velocity_errors(centroids: np.ndarray, near_edge: np.ndarray | None = None, dead_zone: float = 0.0) -> np.ndarray:
    """centroids: [S, 2] of consecutive frames; near_edge: [S, 2] whether each frame's object is near the frame's
    border in each axis (default: everywhere) -> [S - 2] velocity errors (pixels per step).

    A transition between velocities v_{t-1} and v_t is consistent with constant motion (v_t = v_{t-1}) or, in an
    axis where frame t is near the border, with an elastic bounce: at a frame (v_t = -v_{t-1}), or within a step
    (v_{t+1} = -v_{t-1} with v_t in between; or the same seen from the step after; at the ends of a run of frames,
    where the other side of the bounce is unseen, a shorter first or last step). Per axis the best explanation
    counts, less ``dead_zone``; the axes combine in L2.
    """
    v = np.diff(centroids, axis=0)  # [S - 1, 2]
    near_edge = np.ones(centroids.shape, bool) if near_edge is None else np.asarray(near_edge, bool)
    errors = []
    for t in range(1, len(v)):
        bounces = [np.abs(v[t] + v[t - 1])]
        if t + 1 < len(v):  # v[t] is the step that hit the edge
            inside = np.abs(v[t]) <= np.abs(v[t - 1]) + 1e-6
            bounces.append(np.where(inside, np.abs(v[t + 1] + v[t - 1]), np.inf))
        if t >= 2:  # v[t - 1] was the step that hit the edge
            inside = np.abs(v[t - 1]) <= np.abs(v[t]) + 1e-6
            bounces.append(np.where(inside, np.abs(v[t] + v[t - 2]), np.inf))
        if t == 1 and len(v) > 2:
            bounces.append(np.where(np.abs(v[0]) <= np.abs(v[1]) + 1e-6, 0.0, np.inf))
        if t == len(v) - 1 and len(v) > 2:
            bounces.append(np.where(np.abs(v[t]) <= np.abs(v[t - 1]) + 1e-6, 0.0, np.inf))
        bounce = np.where(near_edge[t], np.min(bounces, axis=0), np.inf)
        per_axis = np.minimum(np.abs(v[t] - v[t - 1]), bounce)
        errors.append(np.linalg.norm(np.maximum(per_axis - dead_zone, 0.0)))
    return np.asarray(errors)


def _video_scores(frames: list[FrameObjects], resolution: int) -> dict[str, float]:
    num_colors = 1 + max([int(f.color_index.max()) for f in frames if f.color_index.size] + [0])
    counts = np.stack([np.bincount(f.color_index, minlength=num_colors) for f in frames])  # [T, K]
    patterns, inverse, occurrences = np.unique(counts, axis=0, return_inverse=True, return_counts=True)
    modal = int(np.argmax(occurrences))
    signature = patterns[modal]
    scores = dict.fromkeys(TEMPORAL_METRICS[:-1], 0.0)
    if signature.sum() == 0:
        return scores
    scores["object_permanence"] = float(np.mean(inverse.reshape(-1) == modal))
    per_track: dict[str, list[float]] = {name: [] for name in TEMPORAL_METRICS[1:-1]}
    for track in _tracks(frames, signature):
        found = [t for t, j in enumerate(track) if j is not None]
        if 2 * len(found) < len(frames):  # seen in under half the frames: nothing that stays constant
            for values in per_track.values():
                values.append(np.zeros(1))
            continue
        color = np.stack([frames[t].color[track[t]] for t in found])
        per_track["color_constancy"].append(_score(np.linalg.norm(color - np.median(color, 0), axis=-1), COLOR_SCALE))
        # Geometry only where the object is clear of others (not possibly occluded), unless it never is.
        present = [t for t in found if not frames[t].touching[track[t]]] or found
        area = np.array([frames[t].area[track[t]] for t in present])
        shape = np.stack([frames[t].shape[track[t]] for t in present])
        # Area change per unit of perimeter = change of the equivalent radius; pixel quantisation of hard edges
        # moves it by a fraction of a pixel whatever the object's size.
        typical = np.median(area)
        radius_change = np.abs(area - typical) / (2.0 * np.sqrt(np.pi * typical))
        per_track["size_constancy"].append(_score(np.maximum(radius_change - SIZE_DEAD_ZONE, 0.0), SIZE_SCALE))
        tolerance = SHAPE_SCALES * np.sqrt(max(1.0, SHAPE_REFERENCE_AREA / typical))
        shape_deviation = np.linalg.norm((shape - np.median(shape, 0)) / tolerance, axis=-1)
        per_track["shape_constancy"].append(_score(shape_deviation))
        # Velocities only over runs of consecutive frames in which the object was measured.
        runs = np.split(np.asarray(present), np.nonzero(np.diff(present) != 1)[0] + 1)
        errors = []
        for run in (r for r in runs if len(r) > 2):
            centroid = np.stack([frames[t].centroid[track[t]] for t in run])
            # Near the border: within the object's extent (sqrt(area) >= its radius) plus a fast step of the edge.
            margin = np.sqrt([frames[t].area[track[t]] for t in run])[:, None] + EDGE_MARGIN * resolution
            near_edge = (centroid < margin) | (centroid > resolution - 1 - margin)
            errors.append(_velocity_errors(centroid, near_edge, MOTION_DEAD_ZONE))
        errors = np.concatenate(errors) if errors else np.zeros(0)
        if errors.size:
            per_track["motion_smoothness"].append(_score(errors, MOTION_SCALE))
    for name, values in per_track.items():
        scores[name] = float(np.mean([v.mean() for v in values])) if values else 0.0
    return scores


def temporal_consistency_per_video(
    videos: np.ndarray, *, palette: np.ndarray = PALETTE, background: np.ndarray = BACKGROUND
) -> dict[str, np.ndarray]:
    """videos: [N, T, H, W, 3], uint8 or float in [-1, 1] -> {metric: [N] scores in [0, 1], 1 = perfect}."""
    videos = to_rgb255(videos)
    if videos.ndim != 5:
        raise ValueError(f"videos must be [N, T, H, W, 3]; got shape {videos.shape}")
    palette, background = np.asarray(palette, np.float64), np.asarray(background, np.float64)
    resolution = min(videos.shape[2:4])
    per_video = {name: np.zeros(len(videos)) for name in TEMPORAL_METRICS}
    for i, video in enumerate(videos):
        frames = [detect_objects(frame, palette, background) for frame in video]
        for name, value in _video_scores(frames, resolution).items():
            per_video[name][i] = value
        per_video["cleanliness"][i] = float(np.mean(clean_fraction(video, palette, background)))
    return per_video


def temporal_consistency(
    videos: np.ndarray, *, palette: np.ndarray = PALETTE, background: np.ndarray = BACKGROUND
) -> dict[str, float]:
    """Averages over videos of ``temporal_consistency_per_video``: {metric: score in [0, 1]}."""
    per_video = temporal_consistency_per_video(videos, palette=palette, background=background)
    return {name: float(np.mean(values)) for name, values in per_video.items()}
