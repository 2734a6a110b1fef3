"""Writing videos: sample grids as GIF and MP4, and filmstrips for TensorBoard."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image


def to_uint8(videos: np.ndarray) -> np.ndarray:
    """[-1, 1] floats (or uint8 already) -> uint8, any leading shape."""
    videos = np.asarray(videos)
    if videos.dtype == np.uint8:
        return videos
    return np.clip(np.round((videos + 1.0) * 127.5), 0, 255).astype(np.uint8)


def video_grid(videos: np.ndarray, *, columns: int | None = None, pad: int = 1, marked: np.ndarray | None = None):
    """videos: [N, T, H, W, C] -> one video [T, rows*(H+pad)+pad, cols*(W+pad)+pad, 3] uint8.

    `marked`: optional bool [N, T]; marked frames (e.g. the conditioning frames of a prediction) get a white border.
    """
    videos = to_uint8(videos)
    if videos.shape[-1] == 1:
        videos = np.repeat(videos, 3, axis=-1)
    n, t, h, w, _ = videos.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((t, rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        if marked is not None and pad > 0:
            grid[np.asarray(marked[i], bool), y - pad : y + h + pad, x - pad : x + w + pad] = 255
        grid[:, y : y + h, x : x + w] = videos[i]
    return grid


def filmstrip(videos: np.ndarray) -> np.ndarray:
    """[N, T, H, W, C] -> [N*H, T*W, 3] uint8: each row one video, frames left to right (for TensorBoard images)."""
    videos = to_uint8(videos)
    if videos.shape[-1] == 1:
        videos = np.repeat(videos, 3, axis=-1)
    n, t, h, w, c = videos.shape
    return videos.transpose(0, 2, 1, 3, 4).reshape(n * h, t * w, c)


def write_gif(path: str, frames: np.ndarray, *, fps: int = 8, scale: int = 1) -> None:
    """frames: [T, H, W, 3] uint8 -> an endlessly looping GIF."""
    frames = to_uint8(frames)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def write_mp4(path: str, frames: np.ndarray, *, fps: int = 8, scale: int = 1) -> None:
    """frames: [T, H, W, 3] uint8 -> H.264 MP4 (PyAV; sizes are padded to even numbers as yuv420p requires)."""
    import av

    frames = to_uint8(frames)
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def save_sample_grid(directory: str, name: str, videos: np.ndarray, *, marked=None, fps: int = 8) -> dict[str, str]:
    """Writes `<directory>/<name>.gif` and `.mp4` of the grid of `videos`; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    grid = video_grid(videos, marked=marked)
    scale = max(1, 256 // max(grid.shape[1:3]))
    paths = {"gif": os.path.join(directory, f"{name}.gif"), "mp4": os.path.join(directory, f"{name}.mp4")}
    write_gif(paths["gif"], grid, fps=fps, scale=scale)
    write_mp4(paths["mp4"], grid, fps=fps, scale=scale)
    return paths
