"""Decoding video files with PyAV (FFmpeg in the wheel) and antialiased resizing, in numpy.

Used by the `video_folder` builder. Any container and codec FFmpeg reads works: mp4, avi, webm, mov, mkv, gif.
"""

from __future__ import annotations

import av
import numpy as np
from PIL import Image

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".gif", ".m4v")


class VideoDecodeError(Exception):
    """A file FFmpeg cannot open or decode (corrupt, truncated, not a video)."""


def center_crop_square(frame: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [S, S, C] with S = min(H, W), keeping the centre."""
    h, w = frame.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return frame[top : top + s, left : left + s]


def resize_square(frame: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-crops to a square and resizes with antialiasing: uint8 [H, W, 3] -> uint8 [R, R, 3].

    PIL's bilinear filter widens its support by the downscale factor, so downsampling averages over the whole source
    footprint of each output pixel (no aliasing); upsampling is plain bilinear.
    """
    square = center_crop_square(frame)
    if square.shape[0] == resolution:
        return np.ascontiguousarray(square)
    image = Image.fromarray(square)
    return np.asarray(image.resize((resolution, resolution), Image.Resampling.BILINEAR, reducing_gap=None))


def read_video(path: str, resolution: int | None = None, frame_stride: int = 1) -> np.ndarray:
    """Decodes every `frame_stride`-th frame of a video file: uint8 [N, R, R, 3] (or [N, H, W, 3] if no resolution).

    Frames are resized as they are decoded, so a long high-resolution video never sits in memory at full size.
    Raises VideoDecodeError if the file cannot be opened, has no video stream, fails mid-stream or yields no frames.
    """
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i % frame_stride:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                frames.append(rgb if resolution is None else resize_square(rgb, resolution))
    except VideoDecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError, RuntimeError, EOFError) as e:
        raise VideoDecodeError(f"{path}: {type(e).__name__}: {e}") from e
    if not frames:
        raise VideoDecodeError(f"{path}: no frames could be decoded")
    return np.stack(frames)


def cut_clips(frames: np.ndarray, num_frames: int) -> list[np.ndarray]:
    """Consecutive, non-overlapping clips of `num_frames` frames: [N, ...] -> N // num_frames arrays [num_frames, ...].

    `frames` are already strided (see `read_video`), so clip c holds source frames (c * num_frames + j) * stride.
    """
    return [frames[c * num_frames : (c + 1) * num_frames] for c in range(len(frames) // num_frames)]
