"""Conditioning frames for `--mode=sample`: the first frames of a video file or of dataset clips, at the model's size.

main.py ... --mode=sample --cond_video=clip.mp4 --num_cond_frames=2 --num_frames=32
main.py ... --mode=sample --cond_split=test --cond_index=5 --num_cond_frames=1
"""

from __future__ import annotations

import os

import numpy as np

from vdm_jax.errors import UserError


class ContextError(UserError, ValueError):
    """The conditioning of `--mode=sample` cannot be used: frames that cannot be read (missing file, too short a
    video, a bad split or index), or a label or caption the model cannot take."""


def to_model_range(frames: np.ndarray) -> np.ndarray:
    """uint8 [..., C] -> float32 in [-1, 1] (the models' pixel range)."""
    return np.asarray(frames, np.float32) / 127.5 - 1.0


def _to_channels(frames: np.ndarray, channels: int) -> np.ndarray:
    """uint8 RGB [..., 3] -> [..., channels] (grey by ITU-R 601 luma for one channel)."""
    if channels == frames.shape[-1]:
        return frames
    if channels == 1 and frames.shape[-1] == 3:
        luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
    raise ContextError(f"cannot turn {frames.shape[-1]}-channel frames into the model's {channels} channels")


def context_from_video(path: str, cfg, num_cond_frames: int) -> np.ndarray:
    """The first `num_cond_frames` frames (at config.data.frame_stride) of a video file, centre-cropped and resized
    to config.data.resolution: float32 [1, k, R, R, C] in [-1, 1]."""
    from vdm_jax.data.video_decode import VideoDecodeError, read_video

    if not os.path.exists(path):
        raise ContextError(f"--cond_video={path}: no such file")
    try:
        frames = read_video(path, cfg.data.resolution, cfg.data.frame_stride)
    except VideoDecodeError as e:
        raise ContextError(f"--cond_video: {e}") from e
    if len(frames) < num_cond_frames:
        raise ContextError(
            f"--cond_video={path} has {len(frames)} frames at frame_stride={cfg.data.frame_stride}; "
            f"--num_cond_frames={num_cond_frames} needs at least that many"
        )
    return to_model_range(_to_channels(frames[:num_cond_frames], cfg.model.channels))[None]


def context_from_dataset(cfg, split: str, index: int, num: int, num_cond_frames: int) -> tuple[np.ndarray, dict]:
    """The first `num_cond_frames` frames of clips index .. index + num - 1 of the configured dataset's `split`, as the
    model sees them: float32 [num, k, R, R, C] in [-1, 1]; and those clips' own conditioning, {"labels": int [num],
    "captions": str [num]} where the dataset has them (the keyword arguments of `loop.conditioning_batch`)."""
    from vdm_jax import data as vdm_data

    if num_cond_frames > cfg.data.num_frames:
        raise ContextError(
            f"--num_cond_frames={num_cond_frames} exceeds the dataset clips' {cfg.data.num_frames} frames "
            "(config.data.num_frames)"
        )
    if index < 0:
        raise ContextError(f"--cond_index={index} must be >= 0")
    try:
        examples = vdm_data.load_examples(cfg.data, split=split, num=index + num)
    except (KeyError, ValueError) as e:
        raise ContextError(f"--cond_split={split!r}: {e}") from e
    videos = examples["video"]
    if len(videos) < index + num:
        raise ContextError(
            f"--cond_index={index} with {num} samples needs {index + num} clips; split {split!r} has {len(videos)}"
        )
    pairs = (("label", "labels"), ("caption", "captions"))
    own = {name: examples[key][index : index + num] for key, name in pairs if key in examples}
    return to_model_range(videos[index : index + num, :num_cond_frames]), own
