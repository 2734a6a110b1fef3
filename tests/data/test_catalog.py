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

from tests.data.resize_reference import tent_resize
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


def patterned_video(num_frames: int, base: int) -> np.ndarray:
    """uint8 [T, 256, 256, 3]: frame t is base + 4 t plus a spatial pattern: a horizontal ramp of 0..32 grey levels
    across the width and an off-centre bright square (+24) in the top-right quarter. The level names the frame;
    the pattern shows where the frame was cropped and how it was resized."""
    pattern = np.broadcast_to(np.round(32 * np.arange(256) / 255), (256, 256)).copy()
    pattern[32:96, 160:224] += 24
    levels = base + 4 * np.arange(num_frames)
    return np.repeat((levels[:, None, None] + pattern)[..., None], 3, axis=-1).astype(np.uint8)


def frame_levels(video: np.ndarray) -> np.ndarray:
    return np.round(video.reshape(video.shape[0], -1).mean(-1)).astype(int)


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_catalog"))
    # Frame levels: train video i 10 + i + 4 t (t < 24 + i, at most 117), test video j 120 + j + 4 t (t < 20): no
    # two frames of the six videos share a level.
    ucf = {
        "train": ((f"train_{i}.avi", {"video": patterned_video(24 + i, 10 + i), "label": 7 * i}) for i in range(4)),
        "test": ((f"test_{i}.avi", {"video": patterned_video(20, 120 + i), "label": 3}) for i in range(2)),
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


def _ucf_reference(data_dir: str, resolution: int) -> list[tuple[int, np.ndarray]]:
    """(label, every frame resized) of the six stored UCF-101 videos, train then test: the JPEG frames as TFDS
    decodes them (256x256, so the centre square is the whole frame), downsized by the numpy triangle filter."""
    builder = tfds.builder("ucf101/ucf101_1_256", data_dir=data_dir)
    return [
        (int(ex["label"]), tent_resize(ex["video"], resolution))
        for split in ("train", "test")
        for ex in builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator()
    ]


def _find_ucf_clip(clip: np.ndarray, label: int, reference, stride: int = 2) -> tuple[int, int, int]:
    """(video, start, number of frames) of the reference video with this label whose frames start + j * stride
    match `clip` (float, 0..255) within 0.01 grey levels; frames of other videos or starts are >= 1 level off."""
    t = clip.shape[0]
    found = [
        (v, s, len(frames))
        for v, (lab, frames) in enumerate(reference)
        if lab == label
        for s in range(len(frames) - (t - 1) * stride)
        if np.abs(frames[s : s + (t - 1) * stride + 1 : stride] - clip).max() < 0.01
    ]
    assert len(found) == 1, (label, found)
    return found[0]


def test_ucf101_clips_labels_and_resizing(catalog_dir):
    """Every training clip is frames start, start + 2, ... of one stored video with its own label, each frame the
    256x256 JPEG frame downsized to 32 by the triangle filter computed in numpy (`tent_resize`, within 0.01 grey
    levels): taking the top-left 32x32 pixels, or a plain box mean, is off by whole grey levels on the ramp and
    the square. Starts are uniform on 0..L - 7 for a video of L frames: over 8 epochs (one batch of the six videos
    each) every quarter of that range (4 start // (L - 6) = 0, 1, 2, 3) holds at least 3 of the 48 starts, and
    another seed's first epoch agrees on at most 4 of the 6 videos' starts. A correct sampler fails these with
    probability ~1e-3 and ~1e-5 over seeds (10^6 simulated draws); the seed is fixed, so the test is deterministic.
    Before, frames flat per frame left the resize unchecked, and a start always 0 passed."""
    cfg = DataConfig(name="ucf101", data_dir=catalog_dir, num_frames=4, frame_stride=2, resolution=32, shuffle_buffer=8)
    prepare(cfg)  # prepared: no error
    reference = _ucf_reference(catalog_dir, 32)
    assert [lab for lab, _ in reference[:4]] == [0, 7, 14, 21] and [lab for lab, _ in reference[4:]] == [3, 3]
    # Training reads all videos, train and test parts of split 1 (as the paper: all 13,320).
    starts = {}
    for seed, epochs in ((0, 8), (1, 1)):
        it = make_iterator(cfg, split="train", global_batch_size=6, mesh=make_mesh((1, 1, 1)), seed=seed)
        for epoch in range(epochs):
            b = {k: np.asarray(v) for k, v in next(it).items()}
            assert b["video"].shape == (6, 4, 32, 32, 3) and set(b) == {"video", "segment_ids", "label"}
            assert sorted(b["label"].tolist()) == [0, 3, 3, 7, 14, 21]
            for video, label in zip(b["video"], b["label"], strict=True):
                v, start, length = _find_ucf_clip((video.astype(np.float64) + 1) * 127.5, int(label), reference)
                starts[seed, epoch, v] = (start, length)
    assert len(starts) == 9 * 6  # each video once per epoch
    quarters = [4 * s // (length - 6) for (seed, _, _), (s, length) in starts.items() if seed == 0]
    counts = np.bincount(quarters, minlength=4)
    assert counts.shape == (4,) and counts.min() >= 3, counts
    assert sum(starts[0, 0, v] == starts[1, 0, v] for v in range(6)) <= 4, starts
    ref = load_examples(cfg, "test")
    assert ref["video"].shape == (2, 4, 32, 32, 3) and ref["label"].tolist() == [3, 3]
    # The test videos from frame 0, both lists in TFDS's stored order.
    for video, (_, frames) in zip(ref["video"], reference[4:], strict=True):
        assert np.abs(video - frames[0:7:2]).max() <= 0.51  # rounded to uint8


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


def test_clip_indices_of_a_short_video_repeat_its_last_frame_on_the_stride_grid():
    """A video too short for a strided clip repeats the last frame the clip's grid reaches: every step is the
    stride or 0. Before, the clip ended on the video's very last frame, one step shorter than the stride
    ([..., 26, 28, 29] for 30 frames at stride 2), an off-grid frame."""
    import tensorflow as tf

    from vdm_jax.data.pipeline import clip_indices

    def indices(length, num_frames, stride, start):
        return clip_indices(tf.constant(length), num_frames, stride, tf.constant(start)).numpy().tolist()

    assert indices(30, 16, 2, 0) == list(range(0, 30, 2)) + [28]
    assert indices(29, 16, 2, 0) == list(range(0, 29, 2)) + [28]
    assert indices(20, 8, 3, 0) == [0, 3, 6, 9, 12, 15, 18, 18]
    assert indices(16, 8, 3, 1) == [1, 4, 7, 10, 13, 13, 13, 13]
    assert indices(31, 16, 2, 0) == list(range(0, 31, 2))  # long enough: untouched
    assert indices(40, 8, 3, 5) == list(range(5, 27, 3))


def test_short_moving_mnist_clips_at_stride_3_step_by_3_then_repeat(catalog_dir):
    """moving_mnist's 20 frames hold 7 of an 8-frame clip at stride 3: the training clips and the evaluation
    reference (load_examples, FVD's real clips) are frames 0, 3, ..., 18 and then frame 18 again (steps
    [3] * 6 + [0]); before, they ended on frame 19 (steps [3] * 6 + [1])."""
    cfg = DataConfig(name="moving_mnist", data_dir=catalog_dir, num_frames=8, frame_stride=3, resolution=64)
    expected = [3] * 6 + [0]
    for video in load_examples(cfg, "test")["video"]:
        assert np.diff(frame_levels(video) // 4).tolist() == expected
    it = make_iterator(cfg, split="train", global_batch_size=6, mesh=make_mesh((1, 1, 1)), seed=0)
    for video in np.round((np.asarray(next(it)["video"]) + 1) * 127.5):
        assert np.diff(frame_levels(video) // 4).tolist() == expected


def test_missing_catalog_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(DatasetNotPreparedError) as e:
        prepare(DataConfig(name="ucf101", data_dir=str(tmp_path)))
    message = str(e.value)
    assert f"tfds build ucf101 --config ucf101_1_256 --data_dir {tmp_path}" in message and "GB" in message
    cfg = dataclasses.replace(DataConfig(name="moving_mnist"), data_dir=str(tmp_path))
    with pytest.raises(DatasetNotPreparedError, match="tfds build moving_mnist"):
        make_iterator(cfg, split="train", global_batch_size=2, mesh=make_mesh((1, 1, 1)), seed=0)
