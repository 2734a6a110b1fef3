"""Rendered moving-shapes videos and the corruptions the temporal metrics must notice (shared by the tests)."""

import functools

import numpy as np

from vdm_jax.evaluation.synthetic import Scene, moving_shapes_videos, render_scene

NUM_VIDEOS, NUM_FRAMES, RESOLUTION = 12, 16, 32


SUPERSAMPLE = 1  # hard edges, as the moving_shapes dataset renders them


@functools.lru_cache(maxsize=4)
def real_videos(seed: int = 3, supersample: int = SUPERSAMPLE) -> tuple[np.ndarray, tuple[Scene, ...]]:
    videos, scenes = moving_shapes_videos(NUM_VIDEOS, NUM_FRAMES, RESOLUTION, seed=seed, supersample=supersample)
    videos.setflags(write=False)
    return videos, tuple(scenes)


def _rerender(scenes, edit, supersample: int) -> np.ndarray:
    out = []
    for scene in scenes:
        scene = scene.copy()
        edit(scene)
        out.append(render_scene(scene, RESOLUTION, supersample))
    return np.stack(out)


def corrupted(name: str, seed: int = 0, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """The real videos with one corruption applied: [N, T, H, W, 3] uint8."""
    rng = np.random.default_rng(seed)
    videos, scenes = real_videos(supersample=supersample)
    if name == "shuffled":
        return videos[:, rng.permutation(NUM_FRAMES)]
    if name == "flicker":  # every object's colour wobbles by up to +-50 per channel, frame by frame

        def edit(s):
            s.color = np.clip(s.color + rng.uniform(-50, 50, s.color.shape), 0, 255)

        return _rerender(scenes, edit, supersample)
    if name == "dropped":  # the first object vanishes for 5 of 16 frames

        def edit(s):
            s.visible[5:10, 0] = False

        return _rerender(scenes, edit, supersample)
    if name == "jitter":  # positions shaken by up to +-1.5 px (5% of the frame)

        def edit(s):
            s.position = s.position + rng.uniform(-1.5, 1.5, s.position.shape)

        return _rerender(scenes, edit, supersample)
    if name == "size":  # objects breathe: radius +-40%

        def edit(s):
            s.size = s.size * (1.0 + 0.4 * np.sin(np.arange(NUM_FRAMES) / 2.0))[:, None]

        return _rerender(scenes, edit, supersample)
    if name == "shape":  # every other frame, every object becomes the next shape (circle -> square -> triangle)

        def edit(s):
            s.shape = (s.shape + 1) % 3

        other = _rerender(scenes, edit, supersample)
        out = videos.copy()
        out[:, 1::2] = other[:, 1::2]
        return out
    if name == "noisy":  # Gaussian pixel noise, std 25 of 255 (a sample that has not fully denoised)
        noisy = videos.astype(np.float64) + rng.normal(0.0, 25.0, videos.shape)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    raise ValueError(name)
