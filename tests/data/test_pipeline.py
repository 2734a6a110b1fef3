"""The tf.data -> jax.Array pipeline on one process: contents, determinism, epochs, resumption, joint training."""

import dataclasses
import json
import re

import jax
import numpy as np
import pytest

from tests.data.conftest import find_clip, to_uint8
from vdm_jax.data import DataConfig, check_channels, load_examples, make_iterator, num_channels
from vdm_jax.data.moving_shapes import generate_example
from vdm_jax.models.text import tokenize
from vdm_jax.parallel import make_mesh


def batches(it, n):
    return [jax.tree.map(np.asarray, next(it)) for _ in range(n)]


def iterator(cfg, seed=0, batch=16, **kw):
    return make_iterator(cfg, split="train", global_batch_size=batch, mesh=make_mesh((1, 1, 1)), seed=seed, **kw)


def clip_caption(videos: dict, n: int, start: int, flipped: bool) -> str:
    """The stored caption of video n's frame `start` (left and right swapped if the clip is mirrored)."""
    text = generate_example("train", int(videos["index"][n]), 16, 32)["frame_captions"][start]
    swap = {"left": "right", "right": "left"}
    return re.sub(r"\b(left|right)\b", lambda m: swap[m.group(0)], text) if flipped else text


def test_config_from_default_config_and_bad_values():
    from configs.default import get_config

    data = get_config().data
    cfg = DataConfig(**data)  # The config block and the dataclass have exactly the same keys.
    assert {f.name for f in dataclasses.fields(cfg)} == set(data.keys())
    assert all(getattr(cfg, k) == v for k, v in data.items())
    with pytest.raises(TypeError, match="unexpected keyword"):
        DataConfig(**data, frames=3)
    for bad in ({"num_frames": 0}, {"name": "kinetics"}, {"num_image_frames": -1}, {"random_flip": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DataConfig(**bad)
    with pytest.raises(ValueError, match="video_dir"):
        DataConfig(name="video_folder")
    assert num_channels(DataConfig(name="moving_mnist")) == 1
    with pytest.raises(ValueError, match="--config.model.channels=1"):
        check_channels(DataConfig(name="moving_mnist"), 3)


def test_batch_contents_and_one_epoch_is_a_permutation(tiny_shapes, tiny_shapes_videos):
    it = iterator(tiny_shapes)
    epoch = batches(it, 4)  # 64 train clips / 16 = one epoch
    b = epoch[0]
    assert b["video"].shape == (16, 8, 32, 32, 3) and b["video"].dtype == np.float32
    assert b["video"].min() >= -1 and b["video"].max() <= 1
    assert b["segment_ids"].shape == (16, 8) and not b["segment_ids"].any()
    assert b["label"].dtype == np.int32 and b["text_tokens"].shape == (16, 64)
    seen = []
    for b in epoch:
        for i in range(16):
            n, start, flipped = find_clip(to_uint8(b["video"][i]), tiny_shapes_videos["video"])
            assert not flipped and 0 <= start <= 8
            assert b["label"][i] == tiny_shapes_videos["label"][n]
            text = clip_caption(tiny_shapes_videos, n, start, flipped)  # test_clip_captions checks it is true
            np.testing.assert_array_equal(b["text_tokens"][i], tokenize([text], 64)[0])
            seen.append(n)
    assert sorted(seen) == list(range(64))
    assert it.get_state()["epoch"] == 0 and it.get_state()["batch"] == 4


def _clip_starts(batches_, videos: np.ndarray, num_frames: int = 8) -> list[tuple[int, int]]:
    """(video, start) of every training clip in `batches_`, looked up among all windows of the stored `videos`."""
    windows = {
        videos[n, s : s + num_frames].tobytes(): (n, s)
        for n in range(videos.shape[0])
        for s in range(videos.shape[1] - num_frames + 1)
    }
    assert len(windows) == videos.shape[0] * (videos.shape[1] - num_frames + 1)  # each window names one start
    return [windows[clip.tobytes()] for b in batches_ for clip in to_uint8(b["video"])]


def test_clip_starts_are_uniform_and_redrawn_each_epoch_and_seed(tiny_shapes, tiny_shapes_videos):
    """Training clips of 8 frames start uniformly on 0..8 of the 16-frame videos: over two epochs (128 clips) every
    start occurs at least 4 times and the counts pass a chi-square test at the 0.1% level (8 degrees of freedom:
    statistic < 26.12). For a correct uniform sampler these fail together with probability ~0.3% over seeds
    (200,000 simulated multinomial(128, 1/9) draws); the seed is fixed, so the test is deterministic. A video's
    start is drawn afresh each epoch and for each seed: agreeing in >= 20 of 64 videos has probability 1.2e-5
    (binomial(64, 1/9)). Before, a start always 0 (training only ever sees each video's first frames) passed."""
    videos = tiny_shapes_videos["video"]
    it = iterator(tiny_shapes)
    epochs = [_clip_starts(batches(it, 4), videos), _clip_starts(batches(it, 4), videos)]
    other_seed = _clip_starts(batches(iterator(tiny_shapes, seed=1), 4), videos)
    for starts in (*epochs, other_seed):
        assert sorted(n for n, _ in starts) == list(range(64))  # one clip of each video per epoch
    counts = np.bincount([s for epoch in epochs for _, s in epoch], minlength=9)
    assert counts.shape == (9,) and counts.min() >= 4, counts
    expected = 128 / 9
    assert ((counts - expected) ** 2 / expected).sum() < 26.12, counts
    by_video = [dict(starts) for starts in (*epochs, other_seed)]
    assert sum(by_video[0][n] == by_video[1][n] for n in range(64)) < 20  # epoch 0 vs epoch 1
    assert sum(by_video[0][n] == by_video[2][n] for n in range(64)) < 20  # seed 0 vs seed 1


def test_deterministic_for_a_seed_and_different_across_seeds(tiny_shapes):
    a, b, c = batches(iterator(tiny_shapes), 2), batches(iterator(tiny_shapes), 2), batches(iterator(tiny_shapes, 1), 2)
    for x, y in zip(a, b, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert not np.array_equal(a[0]["video"], c[0]["video"])
    # A new epoch is a new order.
    it = iterator(tiny_shapes)
    e0, e1 = batches(it, 4), batches(it, 4)
    assert not np.array_equal(e0[0]["video"], e1[0]["video"])


@pytest.mark.parametrize("stop, conditioned", [(3, False), (5, False), (5, True)])  # mid-epoch, second epoch
def test_restored_iterator_gives_identical_batches(tiny_shapes, stop, conditioned):
    cfg = dataclasses.replace(tiny_shapes, num_image_frames=2, random_flip=True)
    it = iterator(cfg, conditioned=conditioned)
    batches(it, stop)
    state = json.loads(json.dumps(it.get_state()))  # what the checkpoint stores
    expected = batches(it, 3)
    resumed = iterator(cfg, conditioned=conditioned)
    resumed.set_state(state)
    for x, y in zip(expected, batches(resumed, 3), strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    with pytest.raises(ValueError, match="global_batch_size"):
        iterator(cfg, batch=8).set_state(state)
    # Image frames of other videos, or of the row's own: another batch order, refused like the others.
    with pytest.raises(ValueError, match="conditioned"):
        iterator(cfg, conditioned=not conditioned).set_state(state)
    # The stored split the name stands for (UCF-101's "train" became "train+test"): refused when it changed.
    with pytest.raises(ValueError, match="source_split"):
        iterator(cfg, conditioned=conditioned).set_state({**state, "source_split": "train[:50%]"})
    # A state from before the source split and `conditioned` were recorded still resumes.
    old = {k: v for k, v in state.items() if k not in ("source_split", "conditioned")}
    iterator(cfg, conditioned=conditioned).set_state(old)


def test_flips_and_appended_independent_images(tiny_shapes, tiny_shapes_videos):
    cfg = dataclasses.replace(tiny_shapes, num_image_frames=3, random_flip=True)
    b = batches(iterator(cfg), 1)[0]
    assert b["video"].shape == (16, 11, 32, 32, 3)
    np.testing.assert_array_equal(b["segment_ids"][0], [0] * 8 + [1, 2, 3])
    all_frames = tiny_shapes_videos["video"].reshape(-1, 32, 32, 3)
    flips = []
    for i in range(16):
        video = to_uint8(b["video"][i])
        flips.append(find_clip(video[:8], tiny_shapes_videos["video"])[2])
        for image in video[8:]:
            plain = np.all(all_frames == image, axis=(1, 2, 3)).any()
            mirrored = np.all(all_frames[:, :, ::-1] == image, axis=(1, 2, 3)).any()
            assert plain or mirrored  # a frame of some dataset video
    assert 0 < sum(flips) < 16  # flips happen, not always


def test_eval_order_and_load_examples_agree(tiny_shapes):
    it = make_iterator(tiny_shapes, split="test", global_batch_size=8, mesh=make_mesh((1, 1, 1)), seed=0)
    got = batches(it, 2)
    with pytest.raises(StopIteration):
        next(it)
    ref = load_examples(tiny_shapes, "test")
    np.testing.assert_array_equal(np.concatenate([to_uint8(b["video"]) for b in got]), ref["video"])
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in got]), ref["label"])


def test_text_max_length_zero_drops_tokens(tiny_shapes):
    b = batches(iterator(tiny_shapes, text_max_length=0), 1)[0]
    assert "text_tokens" not in b and set(b) == {"video", "segment_ids", "label"}


def test_evaluation_batches_take_successive_test_captions(tiny_shapes, monkeypatch):
    """Evaluating a text / class model: each sample gets its own test caption and label (cycling through a small
    split), batch after batch; before, every batch reused the first captions."""
    import ml_collections

    from vdm_jax.evaluation import entry
    from vdm_jax.models.text import tokenize
    from vdm_jax.train import sampling

    model = {"num_classes": 3, "text_conditioning": "builtin"}
    cfg = ml_collections.ConfigDict(
        {"data": tiny_shapes, "model": model, "eval": {"batch_size": 8, "num_cond_frames": 0}}
    )
    captions = list(load_examples(tiny_shapes, "test")["caption"])  # 16 test clips
    seen = []

    def fake_generate(sample_fn, params, rest, rng, *, num, num_frames, cond, known):
        assert known is None  # unconditional evaluation
        seen.append(cond)
        return np.zeros((num, num_frames, 1, 1, 3), np.float32)

    monkeypatch.setattr(sampling, "generate", fake_generate)
    videos = entry.sample_for_eval(cfg, None, None, None, num=20, seed=0)
    assert videos.shape[0] == 20 and len(seen) == 3
    expect = captions + captions[:8]  # 3 batches of 8: the split's 16 captions, then from the top again
    for i, cond in enumerate(seen):
        np.testing.assert_array_equal(
            cond["text_tokens"], tokenize(expect[8 * i : 8 * (i + 1)], tiny_shapes.text_max_length)
        )
        np.testing.assert_array_equal(cond["label"], (8 * i + np.arange(8)) % 3)


def test_long_range_windows_pick_far_known_frames_before_a_window():
    """`long_range_window` over many draws: increasing times inside the span; a long-range window is m = 1..3 known
    frames before T - m consecutive ones whose first o are known and the rest not; otherwise T consecutive frames."""
    import tensorflow as tf

    from vdm_jax.data.pipeline import long_range_window

    t, span, draws, used, far_counts = 8, 20, 400, 0, set()
    for i in range(draws):
        w = {k: np.asarray(v) for k, v in long_range_window(t, span, 0.5, tf.constant([3, i], tf.int64)).items()}
        times, known = w["times"], w["known_mask"]
        assert times.shape == (t,) and times.min() >= 0 and times.max() < span
        assert (np.diff(times) > 0).all()
        if not w["use_known_mask"]:
            np.testing.assert_array_equal(np.diff(times), 1)
            np.testing.assert_array_equal(known, 0)
            continue
        used += 1
        k = int(known.sum())  # far frames and the window's first frames are known, the rest of the window not
        assert 2 <= k <= t - 1 and known[:k].all() and not known[k:].any(), (times, known)
        gaps = np.flatnonzero(np.diff(times) != 1)
        far = 0 if not len(gaps) else int(gaps[-1]) + 1  # frames before the final consecutive run (the window)
        assert far <= 3 and far < k, (times, known)  # (a far frame just before the window joins the run)
        far_counts.add(far)
    assert 0.4 < used / draws < 0.6
    assert {1, 2, 3} <= far_counts  # the number of far frames varies


def test_null_long_range_windows_keep_their_times_and_know_no_frame():
    """`null_prob`: the same draws as without it (times, which clips are long-range windows), except that a share
    null_prob of the long-range windows know no frame; consecutive clips are untouched."""
    import tensorflow as tf

    from vdm_jax.data.pipeline import long_range_window

    t, span, draws, windows, nulls = 8, 20, 400, 0, 0
    for i in range(draws):
        seed = tf.constant([5, i], tf.int64)
        base = {k: np.asarray(v) for k, v in long_range_window(t, span, 0.5, seed).items()}
        w = {k: np.asarray(v) for k, v in long_range_window(t, span, 0.5, seed, null_prob=0.4).items()}
        np.testing.assert_array_equal(w["times"], base["times"])
        assert w["use_known_mask"] == base["use_known_mask"]
        if not base["use_known_mask"]:
            np.testing.assert_array_equal(w["known_mask"], 0)
            continue
        windows += 1
        assert base["known_mask"].sum() >= 2  # without null_prob a window always knows its far and first frames
        if w["known_mask"].any():
            np.testing.assert_array_equal(w["known_mask"], base["known_mask"])
        else:
            nulls += 1
    assert 0.3 < nulls / windows < 0.5, (nulls, windows)


def test_long_range_batches_hold_the_clip_frames_at_their_times(tiny_shapes, tiny_shapes_videos):
    """With data.long_range_prob every training clip is frames start + times of one stored video, and its
    known_mask / use_known_mask / frame_times travel with it; evaluation clips stay consecutive from frame 0."""
    cfg = dataclasses.replace(tiny_shapes, long_range_prob=0.5, long_range_span=16)
    b = batches(iterator(cfg), 1)[0]
    assert b["frame_times"].shape == b["known_mask"].shape == (16, 8) and b["use_known_mask"].shape == (16,)
    assert 0 < b["use_known_mask"].sum() < 16
    stored = tiny_shapes_videos["video"]
    for i in range(16):
        clip, times = to_uint8(b["video"][i]), b["frame_times"][i]
        starts = range(16 - times[-1])
        found = [(n, c) for n in range(len(stored)) for c in starts if np.array_equal(stored[n, c + times], clip)]
        assert found, f"row {i}: no stored video holds these frames at times {times}"
        if not b["use_known_mask"][i]:
            np.testing.assert_array_equal(b["known_mask"][i], 0)
    null = batches(iterator(dataclasses.replace(cfg, long_range_null_prob=0.5)), 1)[0]
    for key in ("video", "frame_times", "use_known_mask"):  # the same clips at the same times ...
        np.testing.assert_array_equal(null[key], b[key])
    zeroed = null["use_known_mask"] & ~null["known_mask"].any(axis=1)  # ... some windows knowing no frame
    assert 0 < zeroed.sum() < b["use_known_mask"].sum()
    np.testing.assert_array_equal(null["known_mask"][~zeroed], b["known_mask"][~zeroed])
    ev = next(make_iterator(cfg, split="test", global_batch_size=16, mesh=make_mesh((1, 1, 1)), seed=0))
    np.testing.assert_array_equal(np.asarray(ev["frame_times"]), np.tile(np.arange(8), (16, 1)))
    assert not np.asarray(ev["use_known_mask"]).any()
    with pytest.raises(ValueError, match="long_range_span"):
        dataclasses.replace(tiny_shapes, long_range_prob=0.5, long_range_span=8)
    with pytest.raises(ValueError, match="long_range_prob"):
        dataclasses.replace(tiny_shapes, long_range_prob=1.5)
    with pytest.raises(ValueError, match="long_range_null_prob"):
        dataclasses.replace(tiny_shapes, long_range_prob=0.5, long_range_span=16, long_range_null_prob=1.0)
    with pytest.raises(ValueError, match="set data.long_range_prob > 0"):
        dataclasses.replace(tiny_shapes, long_range_null_prob=0.5)


def _source_frames(image: np.ndarray, videos: np.ndarray) -> set[int]:
    """The videos of `videos` [N, L, H, W, C] that hold `image` [H, W, C] as one of their frames, plain or mirrored."""
    hit = np.all(videos == image, axis=(2, 3, 4)) | np.all(videos[:, :, :, ::-1] == image, axis=(2, 3, 4))
    return set(np.flatnonzero(hit.any(axis=1)).tolist())


def test_conditioned_models_get_image_frames_of_the_rows_own_video(tiny_shapes, tiny_shapes_videos):
    """Joint training of a class/text model: each appended image is a frame of the row's own video, so the row's
    label and caption are true of it (before, frames of other videos under this row's label). The clips themselves
    are those of an unconditional run, whose images come from other videos."""
    cfg = dataclasses.replace(tiny_shapes, num_image_frames=3, random_flip=True)
    stored, labels = tiny_shapes_videos["video"], tiny_shapes_videos["label"]
    cond, plain = batches(iterator(cfg, conditioned=True), 2), batches(iterator(cfg), 2)
    outside_clip = foreign = 0
    for b, u in zip(cond, plain, strict=True):
        np.testing.assert_array_equal(b["video"][:, :8], u["video"][:, :8])
        np.testing.assert_array_equal(b["label"], u["label"])
        np.testing.assert_array_equal(b["segment_ids"][0], [0] * 8 + [1, 2, 3])
        for i in range(16):
            n, start, flipped = find_clip(to_uint8(b["video"][i, :8]), stored)
            assert b["label"][i] == labels[n]
            text = clip_caption(tiny_shapes_videos, n, start, flipped)
            np.testing.assert_array_equal(b["text_tokens"][i], tokenize([text], 64)[0])
            for image in to_uint8(b["video"][i, 8:]):
                sources = _source_frames(image, stored)
                assert n in sources, f"row {i} (video {n}, label {labels[n]}): image from videos {sources}"
                assert {int(labels[s]) for s in sources} == {int(b["label"][i])}
                clip = stored[n, start : start + 8]
                outside_clip += not any(np.array_equal(image, f) or np.array_equal(image, f[:, ::-1]) for f in clip)
            for image in to_uint8(u["video"][i, 8:]):
                foreign += n not in _source_frames(image, stored)
    assert outside_clip > 0  # independent times across the whole video, not the clip's frames
    assert foreign > 16  # unconditional runs keep drawing images from other videos


def test_long_range_clips_of_videos_shorter_than_the_span_are_the_frames_at_their_times(
    tiny_shapes, tiny_shapes_videos
):
    """moving_mnist (20 frames) and BAIR (30) are shorter than the default long_range_span=32. Each training clip
    is the stored frames start + frame_times * stride of one video (before, the times ran past the last frame while
    the pixels repeated it). With stride 3 the 16-frame videos hold 6 frames, fewer than a clip of 8: the last frame
    repeats, and its time with it."""
    from vdm_jax.data import DataIterator, dataset_spec

    stored = tiny_shapes_videos["video"]  # 16 frames each, every frame the dataset has
    spec = dataset_spec(tiny_shapes)
    for stride, frames_held in ((1, 16), (2, 8), (3, 6)):
        cfg = dataclasses.replace(tiny_shapes, long_range_prob=0.5, long_range_span=32, frame_stride=stride)
        kw = {"global_batch_size": 16, "mesh": make_mesh((1, 1, 1)), "seed": 0, "text_max_length": 0, "tokenizer": None}
        it = DataIterator(cfg, dataclasses.replace(spec, frame_stride=stride), split="train", training=True, **kw)
        long_range = 0
        for b in batches(it, 3):
            long_range += int(b["use_known_mask"].sum())
            for i in range(16):
                clip, times = to_uint8(b["video"][i]), b["frame_times"][i]
                assert times.min() >= 0 and times.max() < frames_held, (stride, times)
                starts = range(16 - times[-1] * stride)
                found = any(np.array_equal(stored[n, c + times * stride], clip) for n in range(64) for c in starts)
                assert found, f"stride {stride}, row {i}: no stored video holds these frames at times {times}"
        if frames_held >= 8:
            assert long_range > 0
        else:
            np.testing.assert_array_equal(b["frame_times"], np.tile([0, 1, 2, 3, 4, 5, 5, 5], (16, 1)))
            assert long_range == 0
        ev = DataIterator(cfg, dataclasses.replace(spec, frame_stride=stride), split="test", training=False, **kw)
        expect = np.minimum(np.arange(8), frames_held - 1)
        np.testing.assert_array_equal(next(ev)["frame_times"], np.tile(expect, (16, 1)))
