"""Input checks of the data pipeline. A saved data position resumes only in the stream it was taken from: changed
stream settings are refused with the flags that restore them; states saved before the settings were recorded still
load. A data.video_dir that is missing, empty, or gives no clip is one UserError naming it, before TFDS fails."""

import dataclasses
import json

import numpy as np
import pytest

from tests.data.video_files import block_frames, write_gif
from vdm_jax.data import DataConfig, make_iterator, prepare
from vdm_jax.data.catalog import get_builder
from vdm_jax.data.stream_state import DataStateMismatchError
from vdm_jax.errors import UserError
from vdm_jax.parallel import make_mesh


def iterator(cfg, seed=0, batch=16):
    return make_iterator(cfg, split="train", global_batch_size=batch, mesh=make_mesh((1, 1, 1)), seed=seed)


def saved_state(cfg, batch: int = 2) -> dict:
    """What a checkpoint of `cfg`'s run holds, `batch` batches into epoch 0 (JSON round trip, as stored)."""
    it = iterator(cfg)
    it.batch_in_epoch = batch  # where training stopped; reading that far would only cost time
    return json.loads(json.dumps(it.get_state()))


# Each change keeps the stored dataset (moving_shapes stores 16 frames; 8-frame clips at stride 2 fit in them), so
# only the recorded stream settings can tell the streams apart.
@pytest.mark.parametrize(
    "change, flag",
    [
        ({"frame_stride": 2}, "--config.data.frame_stride=1"),
        ({"shuffle_buffer": 32}, "--config.data.shuffle_buffer=64"),
        ({"random_flip": True}, "--config.data.random_flip=False"),
        ({"num_image_frames": 2}, "--config.data.num_image_frames=0"),
        ({"num_frames": 4}, "--config.data.num_frames=8"),
    ],
)
def test_changed_stream_setting_is_refused_naming_the_flag(tiny_shapes, change, flag):
    state = saved_state(tiny_shapes)
    changed = iterator(dataclasses.replace(tiny_shapes, **change))
    with pytest.raises(DataStateMismatchError, match="new --workdir") as err:
        changed.set_state(state)
    assert isinstance(err.value, UserError)
    assert flag in str(err.value), str(err.value)
    assert "batch 2 of epoch 0" in str(err.value)
    assert (changed.epoch, changed.batch_in_epoch) == (0, 0), "a refused state must not move the iterator"


@pytest.mark.parametrize(
    "seed, batch, flags",
    [
        (1, 16, ["--config.seed=0"]),
        (0, 8, ["--config.train.batch_size=16"]),
        (1, 8, ["--config.seed=0", "--config.train.batch_size=16"]),
    ],
)
def test_changed_seed_or_batch_size_is_a_user_error_naming_each_flag(tiny_shapes, seed, batch, flags):
    state = saved_state(tiny_shapes)
    with pytest.raises(UserError) as err:
        iterator(tiny_shapes, seed=seed, batch=batch).set_state(state)
    for flag in flags:
        assert flag in str(err.value), str(err.value)
    assert "not restoring the iterator" not in str(err.value)  # no main.py flag does that


def test_old_state_without_stream_settings_still_loads(tiny_shapes):
    """Checkpoints written before the stream settings were recorded resume (the settings count as unknown), while a
    state that records them is checked: the same change is refused for it."""
    state = saved_state(tiny_shapes, batch=3)
    assert state["data"]["frame_stride"] == 1
    old = {k: v for k, v in state.items() if k not in ("data", "source_split", "conditioned")}
    changed = iterator(dataclasses.replace(tiny_shapes, frame_stride=2))
    changed.set_state(old)
    assert (changed.epoch, changed.batch_in_epoch) == (0, 3)
    with pytest.raises(DataStateMismatchError, match="frame_stride"):
        iterator(dataclasses.replace(tiny_shapes, frame_stride=2)).set_state(state)


def test_unchanged_stream_resumes_where_it_stopped(tiny_shapes):
    """Same stream settings (a setting outside the stream, text_max_length, may change): the resumed iterator gives
    the batch the first one would have given next."""
    it = iterator(tiny_shapes)
    next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = next(it)
    resumed = iterator(dataclasses.replace(tiny_shapes, text_max_length=7))
    resumed.set_state(state)
    got = next(resumed)
    np.testing.assert_array_equal(np.asarray(got["video"]), np.asarray(expected["video"]))


# ---------------------------------------------------------------------------------------------- data.video_dir
def folder_config(tmp_path, video_dir, num_frames: int = 4) -> DataConfig:
    return DataConfig(
        name="video_folder", video_dir=str(video_dir), data_dir=str(tmp_path / "tfds"), num_frames=num_frames
    )


def test_missing_or_empty_video_dir_is_refused_before_any_build(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not a video")
    for video_dir, said in [(tmp_path / "nope", "does not exist"), (tmp_path / "empty", "holds no video files")]:
        cfg = folder_config(tmp_path, video_dir)
        with pytest.raises(UserError, match=said) as err:
            get_builder(cfg)  # what prepare, training and evaluation call first
        assert f"data.video_dir={str(video_dir)!r}" in str(err.value) and "--config.data.video_dir" in str(err.value)
        with pytest.raises(UserError, match=said):
            prepare(cfg)
    assert ".mp4" in str(err.value)  # what it looked for
    assert not (tmp_path / "tfds").exists()


def test_folder_whose_files_all_fail_is_one_error_naming_the_first(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))  # an mp4 header, no video
    (videos / "b.mp4").write_bytes(b"oops")
    with pytest.raises(UserError) as err:
        prepare(folder_config(tmp_path, videos))
    message = str(err.value)
    assert "all 2 video files" in message and "could not be decoded" in message, message
    assert f"first: {videos / 'a.mp4'}: undecodable" in message, message
    # Undecodable and too-short files together: both counted, and the flags that let short videos give clips.
    write_gif(str(videos / "c.gif"), block_frames(3, 16, seed=0))
    with pytest.raises(UserError) as err:
        prepare(folder_config(tmp_path, videos))
    message = str(err.value)
    assert "all 3 video files" in message and "(2 undecodable, 1 too short)" in message, message
    assert "a clip needs 4 frames" in message and "--config.data.num_frames" in message, message
    # With clips short enough the gif alone gives one.
    prepare(folder_config(tmp_path, videos, num_frames=3))
    assert get_builder(folder_config(tmp_path, videos, num_frames=3)).info.splits["train"].num_examples == 1
