"""Small datasets shared by the data tests (built once per session into temporary TFDS data_dirs)."""

import numpy as np
import pytest

from vdm_jax.data import DataConfig


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> DataConfig:
    """moving_shapes with 64 train / 16 test clips of 16x32x32; the pipeline cuts 8-frame clips at stride 1."""
    from vdm_jax.data import prepare

    cfg = DataConfig(
        data_dir=str(tmp_path_factory.mktemp("tfds_tiny")),
        num_frames=8,
        resolution=32,  # the tests' expected shapes and captions are 32x32 (the library default is 16)
        moving_shapes_train_size=64,
        moving_shapes_test_size=16,
        shuffle_buffer=64,
    )
    prepare(cfg)
    return cfg


@pytest.fixture(scope="session")
def tiny_shapes_videos(tiny_shapes) -> dict[str, np.ndarray]:
    """Every stored train video at full length (16 frames): uint8 [64, 16, 32, 32, 3], in split order."""
    import dataclasses

    from vdm_jax.data import load_examples

    return load_examples(dataclasses.replace(tiny_shapes, num_frames=16), "train")


def to_uint8(video: np.ndarray) -> np.ndarray:
    """Pipeline output in [-1, 1] back to the stored uint8 values (exact for unresized frames)."""
    return np.round((np.asarray(video) + 1.0) * 127.5).astype(np.uint8)


def find_clip(clip: np.ndarray, videos: np.ndarray, stride: int = 1) -> tuple[int, int, bool]:
    """(example, start, flipped) such that videos[example, start::stride][:T] (mirrored if flipped) equals clip."""
    t = clip.shape[0]
    for n, video in enumerate(videos):
        for start in range(video.shape[0] - (t - 1) * stride):
            window = video[start : start + (t - 1) * stride + 1 : stride]
            if np.array_equal(window, clip):
                return n, start, False
            if np.array_equal(window[:, :, ::-1], clip):
                return n, start, True
    raise AssertionError("clip not found in the dataset")
