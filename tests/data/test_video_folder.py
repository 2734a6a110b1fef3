"""video_folder on real files: H.264 mp4 (PyAV/libx264) and GIF (Pillow), plus a truncated and a too-short file."""

import os

import numpy as np
import pytest

from tests.data.conftest import to_uint8
from tests.data.resize_reference import tent_resize
from tests.data.video_files import block_frames, smooth_frames, write_gif, write_mp4
from vdm_jax.data import DataConfig, load_examples, make_iterator, prepare
from vdm_jax.data.catalog import get_builder
from vdm_jax.parallel import make_mesh


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    os.makedirs(root / "waves")
    os.makedirs(root / "blocks")
    waves = smooth_frames(20, 48, 64, seed=1)  # 4:3, centre-cropped to 48x48, resized to 32
    blocks = block_frames(13, 32, seed=2)
    write_mp4(str(root / "waves" / "a.mp4"), waves)
    write_gif(str(root / "blocks" / "b.gif"), blocks)
    data = (root / "waves" / "a.mp4").read_bytes()
    (root / "waves" / "truncated.mp4").write_bytes(data[: len(data) // 3])
    write_gif(str(root / "blocks" / "short.gif"), blocks[:3])
    (root / "captions.tsv").write_text("waves/a.mp4\tcolour waves drifting\nblocks/b.gif\tblocks sliding\n")
    cfg = DataConfig(
        name="video_folder",
        video_dir=str(root),
        captions_file=str(root / "captions.tsv"),
        data_dir=str(tmp_path_factory.mktemp("tfds_folder")),
        num_frames=4,
        frame_stride=2,
        resolution=32,
    )
    prepare(cfg)
    return cfg, waves, blocks


def test_build_skips_bad_files_and_reports_them(folder):
    cfg, _, _ = folder
    info = get_builder(cfg).info
    skipped = info.metadata["skipped_files"]
    assert set(skipped) == {os.path.join("waves", "truncated.mp4"), os.path.join("blocks", "short.gif")}
    assert skipped[os.path.join("waves", "truncated.mp4")].startswith("undecodable")
    assert skipped[os.path.join("blocks", "short.gif")].startswith("too short")
    # a.mp4: 20 frames at stride 2 -> 10 -> 2 clips of 4; b.gif: 13 -> 7 -> 1 clip.
    assert info.splits["train"].num_examples == 3
    assert info.features["label"].names == ["blocks", "waves"]


def test_frames_read_back_match_what_was_written(folder):
    """The 48x64 (4:3) mp4 frames come back as their centre 48x48 square, columns 8..55 ((64 - 48) / 2 = 8),
    downsized to 32 by the triangle filter computed in numpy (`tent_resize`), within H.264's error; a top-left crop
    (columns 0..47) is off by ~40 grey levels on average. The 32x32 GIF is stored as it is, exactly."""
    cfg, waves, blocks = folder
    builder = get_builder(cfg)
    clips = {}
    for ex in builder.as_dataset(split="train").as_numpy_iterator():
        clips[(ex["path"].decode(), int(ex["clip_index"]))] = ex
    for c in range(2):
        ex = clips[(os.path.join("waves", "a.mp4"), c)]
        source = tent_resize(waves[c * 8 : c * 8 + 8 : 2, :, 8:56], 32)  # frames c*8, c*8+2, ... (stride 2)
        error = np.abs(ex["video"] - source)
        assert error.mean() < 4 and np.percentile(error, 99) < 16  # H.264 at crf 12 + yuv420 chroma subsampling
        assert ex["caption"] == b"colour waves drifting" and ex["label"] == 1
    ex = clips[(os.path.join("blocks", "b.gif"), 0)]
    np.testing.assert_array_equal(ex["video"], blocks[0:8:2])  # few colours: GIF is lossless here
    assert ex["caption"] == b"blocks sliding" and ex["label"] == 0


def grid_frames(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [T, H, W, 3]: 8x8-pixel cells of 4 flat colours in a random layout scrolling one cell left per frame.

    Few colours, so a GIF stores them exactly; every cell row and column differs, so a crop off by a cell shows.
    """
    rng = np.random.default_rng(seed)
    colours = rng.choice(256, size=(4, 3), replace=False).astype(np.uint8)
    cells = rng.integers(0, 4, size=(height // 8, width // 8 + num_frames))
    frames = [colours[cells[:, t : t + width // 8]] for t in range(num_frames)]
    return np.stack(frames).repeat(8, axis=1).repeat(8, axis=2)


def test_non_square_frames_are_centre_cropped_then_resized(tmp_path):
    """A wide 32x48 GIF at resolution 32 is its centre columns 8..39, exactly (no resize: the square is already 32).
    A tall 96x64 GIF is its centre rows 16..79, downsized 64 -> 32 by the numpy triangle filter to within 1 grey
    level (PIL resizes in 8 bits, rounding after each of its two passes). Top-left crops differ by whole cells."""
    (tmp_path / "v").mkdir()
    wide, tall = grid_frames(4, 32, 48, seed=6), grid_frames(4, 96, 64, seed=7)
    write_gif(str(tmp_path / "v" / "wide.gif"), wide)
    write_gif(str(tmp_path / "v" / "tall.gif"), tall)
    cfg = DataConfig(
        name="video_folder", video_dir=str(tmp_path / "v"), data_dir=str(tmp_path / "tfds"), num_frames=4, resolution=32
    )
    prepare(cfg)
    got = {ex["path"].decode(): ex["video"] for ex in get_builder(cfg).as_dataset(split="train").as_numpy_iterator()}
    assert set(got) == {"wide.gif", "tall.gif"}
    np.testing.assert_array_equal(got["wide.gif"], wide[:, :, 8:40])
    assert not np.array_equal(wide[:, :, 8:40], wide[:, :, :32])  # a top-left crop would show
    error = np.abs(got["tall.gif"] - tent_resize(tall[:, 16:80], 32))
    assert error.max() <= 1, error.max()
    assert np.abs(tent_resize(tall[:, :64], 32) - tent_resize(tall[:, 16:80], 32)).mean() > 20  # so would one here


def _stored_clips(cfg) -> list[np.ndarray]:
    return [ex["video"] for ex in get_builder(cfg).as_dataset(split="train").as_numpy_iterator()]


def test_pipeline_over_a_folder(folder):
    """The stored clips hold every frame_stride-th frame already: the pipeline and the reference videos give them
    as they are, not strided a second time."""
    cfg, _, blocks = folder
    it = make_iterator(cfg, split="train", global_batch_size=3, mesh=make_mesh((1, 1, 1)), seed=0)
    b = {k: np.asarray(v) for k, v in next(it).items()}
    assert b["video"].shape == (3, 4, 32, 32, 3) and sorted(b["label"].tolist()) == [0, 1, 1]
    stored = {v.tobytes() for v in _stored_clips(cfg)}
    assert {v.tobytes() for v in to_uint8(b["video"])} == stored
    ref = load_examples(cfg, "train")
    assert {v.tobytes() for v in ref["video"]} == stored
    assert any(np.array_equal(v, blocks[0:8:2]) for v in ref["video"])  # source frames 0, 2, 4, 6
    assert b["text_tokens"].shape == (3, cfg.text_max_length)


def test_long_range_windows_over_a_folder(tmp_path):
    """With long-range windows on, the folder's clips hold long_range_span frames and every training video is the
    frames of one stored clip at its frame_times."""
    (tmp_path / "v").mkdir()
    frames = block_frames(40, 32, seed=3)  # 20 frames at stride 2: two clips of 8
    write_gif(str(tmp_path / "v" / "a.gif"), frames)
    cfg = DataConfig(
        name="video_folder",
        video_dir=str(tmp_path / "v"),
        data_dir=str(tmp_path / "tfds"),
        num_frames=4,
        frame_stride=2,
        resolution=32,
        long_range_prob=0.5,
        long_range_span=8,
    )
    prepare(cfg)
    clips = _stored_clips(cfg)
    assert sorted(c.shape[0] for c in clips) == [8, 8]
    assert any(np.array_equal(c, frames[0:16:2]) for c in clips)
    it = make_iterator(cfg, split="train", global_batch_size=2, mesh=make_mesh((1, 1, 1)), seed=0)
    long_range = 0
    for _ in range(8):
        b = {k: np.asarray(v) for k, v in next(it).items()}
        for video, times in zip(to_uint8(b["video"]), b["frame_times"], strict=True):
            assert any(np.array_equal(video, c[times]) for c in clips), times
        long_range += int(b["use_known_mask"].sum())
    assert long_range > 0


def test_missing_folder_is_a_clear_error(tmp_path):
    cfg = DataConfig(name="video_folder", video_dir=str(tmp_path / "nope"), data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        prepare(cfg)


def _captioned_folder(tmp_path, lines: str) -> DataConfig:
    """Two GIFs, a.gif and sub/b.gif, and a captions file of `lines`."""
    (tmp_path / "v" / "sub").mkdir(parents=True)
    write_gif(str(tmp_path / "v" / "a.gif"), block_frames(4, 32, seed=4))
    write_gif(str(tmp_path / "v" / "sub" / "b.gif"), block_frames(4, 32, seed=5))
    (tmp_path / "captions.tsv").write_text(lines)
    return DataConfig(
        name="video_folder",
        video_dir=str(tmp_path / "v"),
        captions_file=str(tmp_path / "captions.tsv"),
        data_dir=str(tmp_path / "tfds"),
        num_frames=4,
        resolution=32,
    )


def test_captions_file_naming_no_video_is_refused(tmp_path):
    """Paths written another way than relative to video_dir match no video; before, every clip silently got the
    empty caption (the null caption), so a text model trained unconditionally."""
    from vdm_jax.data.video_folder import CaptionsFileError
    from vdm_jax.errors import UserError

    cfg = _captioned_folder(tmp_path, f"{tmp_path}/v/a.gif\tred blocks\nv/sub/b.gif\tblue blocks\n")
    with pytest.raises(CaptionsFileError, match="none of its 2 paths is a video") as caught:
        prepare(cfg)
    assert isinstance(caught.value, UserError)
    assert not get_builder(cfg).is_prepared()


def test_partly_matching_captions_file_is_built_with_a_warning(tmp_path, caplog):
    cfg = _captioned_folder(tmp_path, "./a.gif\tred blocks\nsub/c.gif\tno such video\nb.gif\twrong folder\n")
    with caplog.at_level("WARNING"):
        prepare(cfg)
    warning = " ".join(r.getMessage() for r in caplog.records if "no caption" in r.getMessage())
    assert "1 of 2 videos have no caption" in warning and "sub/b.gif" in warning
    assert "2 of its 3 lines name no video" in warning
    captions = {
        ex["path"].decode(): ex["caption"] for ex in get_builder(cfg).as_dataset(split="train").as_numpy_iterator()
    }
    assert captions == {"a.gif": b"red blocks", os.path.join("sub", "b.gif"): b""}
