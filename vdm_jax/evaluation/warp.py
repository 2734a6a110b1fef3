"""Flow-warping error: temporal consistency of any video (Lai et al. 2018, "Learning Blind Video Temporal
Consistency", eq. (8)).

For consecutive frames (V_t, V_{t+1}) we estimate the optical flow from V_{t+1} back to V_t (OpenCV's DIS, preset
MEDIUM), warp V_t onto V_{t+1}, and average the squared RGB error over the pixels that a forward-backward check finds
visible in both frames (Ruder et al. 2016: |w_b + w_f(x + w_b)|^2 < 0.01 (|w_b|^2 + |w_f(x + w_b)|^2) + 0.5):

  E_warp(V) = 1/(T-1) sum_t  sum_x M_t(x) ||V_{t+1}(x) - warp(V_t)(x)||^2 / (3 sum_x M_t(x)),  RGB in [0, 1].

Lower is better; 0 for a static video. Frames smaller than ``MIN_FLOW_SIZE`` are upscaled (bilinear) before the flow
is estimated, so that the estimator's patches fit; the error is measured at that size.
"""

from __future__ import annotations

import cv2
import numpy as np

from vdm_jax.evaluation.objects import to_rgb255

MIN_FLOW_SIZE = 128


def _flow(dis, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dense flow [H, W, 2] (dx, dy) such that target(x) ~ source(x + flow(x)); frames uint8 grey."""
    return dis.calc(target, source, None)


def _remap(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(
        image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def _pair_error(dis, previous: np.ndarray, current: np.ndarray) -> float:
    """previous, current: [H, W, 3] float32 RGB in [0, 1]."""
    grey = [cv2.cvtColor(np.round(f * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY) for f in (previous, current)]
    backward = _flow(dis, grey[0], grey[1])  # current(x) ~ previous(x + backward(x))
    forward = _flow(dis, grey[1], grey[0])  # previous(y) ~ current(y + forward(y))
    forward_at = _remap(forward, backward)
    mismatch = np.sum((backward + forward_at) ** 2, axis=-1)
    visible = mismatch < 0.01 * (np.sum(backward**2, axis=-1) + np.sum(forward_at**2, axis=-1)) + 0.5
    warped = _remap(previous, backward)
    squared = np.mean((current - warped) ** 2, axis=-1)
    return float(np.sum(squared * visible) / max(np.sum(visible), 1.0))


def warp_error_per_video(videos: np.ndarray) -> np.ndarray:
    """videos: [N, T, H, W, 3 or 1 (grey)], uint8 or float in [-1, 1], T >= 2 -> [N] flow-warping errors (lower is
    better). Grey frames count as RGB frames of three equal channels: the error is the grey levels' error."""
    videos = np.asarray(videos)
    if videos.ndim == 5 and videos.shape[-1] == 1:
        videos = np.repeat(videos, 3, axis=-1)
    videos = to_rgb255(videos)
    if videos.ndim != 5 or videos.shape[1] < 2:
        raise ValueError(f"videos must be [N, T >= 2, H, W, 3]; got shape {videos.shape}")
    _, _, h, w, _ = videos.shape
    factor = max(1.0, MIN_FLOW_SIZE / min(h, w))
    size = (round(w * factor), round(h * factor))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    errors = np.zeros(len(videos))
    for i, video in enumerate(videos):
        frames = [cv2.resize((f / 255.0).astype(np.float32), size, interpolation=cv2.INTER_LINEAR) for f in video]
        errors[i] = np.mean([_pair_error(dis, a, b) for a, b in zip(frames[:-1], frames[1:], strict=True)])
    return errors


def warp_error(videos: np.ndarray) -> float:
    """Mean flow-warping error over videos: [N, T, H, W, 3 or 1] -> float (lower is better)."""
    return float(np.mean(warp_error_per_video(videos)))
