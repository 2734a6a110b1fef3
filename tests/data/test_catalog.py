"""Catalog adapters on data in the datasets' real TFDS format.

The real TFDS builders (`ucf101/ucf101_1_256`, `bair_robot_pushing_small`, `moving_mnist`) write the data: only their
`_split_generators` (the download) is replaced by a generator of synthetic frames, so features, encodings, file layout
and dataset_info are exactly what `tfds build` produces. `tfds.testing.mock_data` is not used.
"""

import dataclasses
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.data.conftest import to_uint8
from vdm_jax.data import DataConfig, DatasetNotPreparedError, load_examples, make_iterator, prepare
from vdm_jax.parallel import make_mesh


def build_with_fake_download(name: str, data_dir: str, splits: dict) -> None:
    builder = tfds.builder(name, data_dir=data_dir)
    with mock.patch.object(type(builder), "_split_generators", lambda self, dl_manager: splits):
        builder.download_and_prepare()


def level_video(num_frames: int, size: int, base: int, channels: int = 3) -> np.ndarray:
    """Frame t is flat with value base + 4 t: any clip reveals its start and stride."""
    levels = (base + 4 * np.arange(num_frames)).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (num_frames, size, size, channels)).copy()


def frame_levels(video: np.ndarray) -> np.ndarray:
    return np.round(video.reshape(video.shape[0], -1).mean(-1)).astype(int)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_catalog"))
    ucf = {
        "train": ((f"train_{i}.avi", {"video": level_video(24 + i, 256, 10 + i), "label": 7 * i}) for i in range(4)),
        "test": ((f"test_{i}.avi", {"video": level_video(20, 256, 100 + i), "label": 3}) for i in range(2)),
    }
    build_with_fake_download("ucf101/ucf101_1_256", data_dir, ucf)

    def bair(n, base):
        for i in range(n):
            frames = level_video(30, 64, base + i)
            steps = [
                {
                    "image_main": frames[t],
                    "image_aux1": frames[t],
                    "action": np.zeros(4, np.float32),
                    "endeffector_pos": np.zeros(3, np.float32),
                }
                for t in range(30)
            ]
            yield i, steps

    build_with_fake_download("bair_robot_pushing_small", data_dir, {"train": bair(4, 0), "test": bair(2, 50)})
    mnist = {"test": ((i, {"image_sequence": level_video(20, 64, i, channels=1)}) for i in range(20))}
    build_with_fake_download("moving_mnist", data_dir, mnist)
    return data_dir


def test_ucf101_clips_labels_and_resizing(catalog_dir):
    cfg = DataConfig(name="ucf101", data_dir=catalog_dir, num_frames=4, frame_stride=2, resolution=32, shuffle_buffer=8)
    prepare(cfg)  # prepared: no error
    # Training reads all videos, train and test parts of split 1 (as the paper: all 13,320).
    it = make_iterator(cfg, split="train", global_batch_size=6, mesh=make_mesh((1, 1, 1)), seed=0)
    b = {k: np.asarray(v) for k, v in next(it).items()}
    assert b["video"].shape == (6, 4, 32, 32, 3) and set(b) == {"video", "segment_ids", "label"}
    for video, label in zip(to_uint8(b["video"]), b["label"], strict=True):
        levels = frame_levels(video)
        assert np.all(np.abs(np.diff(levels) - 8) <= 1)  # stride 2 frames of +4 each (JPEG: +-1)
        if label == 3:  # test video j in {0, 1}: 20 frames of levels 100 + j + 4 f
            starts = [(levels[0] - 100 - j) / 4 for j in (0, 1)]
            assert any(abs(s - round(s)) < 0.3 and 0 <= round(s) <= 20 - 7 for s in starts), levels
            continue
        i = label // 7
        start = (levels[0] - 10 - i) / 4
        assert abs(start - round(start)) < 0.3 and 0 <= round(start) <= (24 + i) - 7
    assert sorted(b["label"].tolist()) == [0, 3, 3, 7, 14, 21]
    ref = load_examples(cfg, "test")
    assert ref["video"].shape == (2, 4, 32, 32, 3) and ref["label"].tolist() == [3, 3]
    assert sorted(frame_levels(v)[0] for v in ref["video"]) == pytest.approx([100, 101], abs=1)


def test_bair_and_moving_mnist(catalog_dir):
    cfg = DataConfig(name="bair_robot_pushing_small", data_dir=catalog_dir, num_frames=30, resolution=64)
    ref = load_examples(cfg, "train")
    assert ref["video"].shape == (4, 30, 64, 64, 3) and "label" not in ref
    assert sorted(frame_levels(v)[0] for v in ref["video"]) == [0, 1, 2, 3]
    assert all(np.array_equal(frame_levels(v) - frame_levels(v)[0], 4 * np.arange(30)) for v in ref["video"])

    cfg = DataConfig(name="moving_mnist", data_dir=catalog_dir, num_frames=10, resolution=64, shuffle_buffer=4)
    train, test = load_examples(cfg, "train"), load_examples(cfg, "test")
    assert train["video"].shape == (18, 10, 64, 64, 1) and test["video"].shape == (2, 10, 64, 64, 1)
    assert not set(frame_levels(v)[0] for v in train["video"]) & set(frame_levels(v)[0] for v in test["video"])
    it = make_iterator(cfg, split="train", global_batch_size=6, mesh=make_mesh((1, 1, 1)), seed=0)
    assert np.asarray(next(it)["video"]).shape == (6, 10, 64, 64, 1)


def test_missing_catalog_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(DatasetNotPreparedError) as e:
        prepare(DataConfig(name="ucf101", data_dir=str(tmp_path)))
    message = str(e.value)
    assert f"tfds build ucf101 --config ucf101_1_256 --data_dir {tmp_path}" in message and "GB" in message
    cfg = dataclasses.replace(DataConfig(name="moving_mnist"), data_dir=str(tmp_path))
    with pytest.raises(DatasetNotPreparedError, match="tfds build moving_mnist"):
        make_iterator(cfg, split="train", global_batch_size=2, mesh=make_mesh((1, 1, 1)), seed=0)
