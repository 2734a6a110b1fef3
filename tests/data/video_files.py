"""Writing real video files for the tests: H.264 mp4 through PyAV (libx264), GIF through Pillow."""

from __future__ import annotations

import av
import numpy as np
from PIL import Image


def smooth_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [T, H, W, 3]: drifting low-frequency colour waves (H.264 keeps them within a few levels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    phase = rng.uniform(0, 2 * np.pi, size=3)
    frames = []
    for t in range(num_frames):
        chans = [
            128 + 90 * np.sin(2 * np.pi * (xx / width + yy / (2 * height)) + phase[c] + 0.2 * t * (c + 1))
            for c in range(3)
        ]
        frames.append(np.stack(chans, -1))
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def block_frames(num_frames: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 [T, S, S, 3] of 4 flat colours in moving blocks: few colours, so a GIF stores them exactly."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(4, 3)).astype(np.uint8)
    frames = np.empty([num_frames, size, size, 3], np.uint8)
    for t in range(num_frames):
        frames[t] = colours[0]
        o = (2 * t) % (size // 2)
        frames[t, o : o + size // 2, : size // 2] = colours[1]
        frames[t, size // 2 :, o : o + size // 4] = colours[2]
        frames[t, : size // 4, size // 2 + o // 2 :] = colours[3]
    return frames


def write_mp4(path: str, frames: np.ndarray, fps: int = 24, crf: int = 12) -> None:
    """H.264 (libx264, yuv420p) in an mp4 container."""
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_gif(path: str, frames: np.ndarray) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)
