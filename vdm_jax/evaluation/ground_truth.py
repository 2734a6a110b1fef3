"""Generated moving-shapes frames against the real clip they continue: where its objects went, and what else appeared.

Conditional generation (prediction, extension) starts from real frames, so each generated frame has a ground truth:
the real clip's objects at that frame (`vdm_jax.data.palette` schema: num_objects, color [K], position [T, K, 2]).
Colours are unique within a clip, so an object is matched to the detected object of its colour. Per frame of
`frames`, `object_fidelity` measures:

- trajectory error: pixels between each real object's true centre and its colour's detected centroid (the nearest,
  if the frame holds several); only over objects found, so read it beside the next number;
- missing: the real object's colour is not detected (lost, or hidden behind another object, as real clips
  sometimes are: ~1% of (object, frame) pairs);
- extra: the frame holds an object the clip does not explain, a colour the clip does not have or a second object of
  one it has. Models make these by splitting an object or growing a blob of another colour where two objects touch.
  Temporal object permanence (`vdm_jax.evaluation.temporal`) counts both losses and extras without telling them
  apart; against the ground truth they separate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vdm_jax.data.palette import BACKGROUND, PALETTE
from vdm_jax.evaluation.objects import detect_objects, to_rgb255


def object_fidelity(videos: np.ndarray, examples: Sequence[Mapping], frames: Sequence[int]) -> dict:
    """videos: [N, T, H, W, 3] in [-1, 1] (or uint8); examples: the N real clips' ground truth; frames: the frame
    indices to score (e.g. the generated ones). Returns
      trajectory_error_px: mean distance over (object, frame) pairs whose colour was found (NaN if none);
      trajectory_error_px_by_frame: the same per frame of `frames`;
      objects_missing: fraction of (real object, frame) pairs with no object of its colour;
      objects_extra: fraction of (video, frame) pairs holding an object that no real object explains.
    """
    frames = list(frames)
    if len(videos) != len(examples):
        raise ValueError(f"{len(videos)} videos but {len(examples)} ground-truth examples; pass one per video")
    if frames and not 0 <= min(frames) <= max(frames) < videos.shape[1]:
        raise ValueError(f"frames {min(frames)}..{max(frames)} lie outside the videos' {videos.shape[1]} frames")
    rgb = to_rgb255(videos)
    errors: dict[int, list[float]] = {t: [] for t in frames}
    missing = total = extra = 0
    for video, gt in zip(rgb, examples, strict=True):
        n = int(gt["num_objects"])
        colours = np.asarray(gt["color"])[:n].astype(int)
        expected = np.bincount(colours, minlength=len(PALETTE))
        positions = np.asarray(gt["position"])
        if positions.shape[0] < video.shape[0]:
            raise ValueError(f"ground truth covers {positions.shape[0]} frames, the video {video.shape[0]}")
        for t in frames:
            found = detect_objects(video[t], PALETTE, BACKGROUND)
            extra += int(np.any(np.bincount(found.color_index, minlength=len(PALETTE)) > expected))
            for j, colour in enumerate(colours):
                total += 1
                match = np.nonzero(found.color_index == colour)[0]
                if not len(match):
                    missing += 1
                    continue
                true_centre = positions[t, j] - 0.5  # continuous coordinates -> pixel indices
                errors[t].append(float(np.min(np.linalg.norm(found.centroid[match] - true_centre, axis=-1))))
    every = [e for t in frames for e in errors[t]]
    return {
        "trajectory_error_px": float(np.mean(every)) if every else float("nan"),
        "trajectory_error_px_by_frame": [float(np.mean(errors[t])) if errors[t] else float("nan") for t in frames],
        "objects_missing": missing / max(total, 1),
        "objects_extra": extra / max(len(videos) * len(frames), 1),
    }
