"""The class and caption conditioning of `--mode=sample`: the continued clips' own, `--label` / `--caption` for every
video, the null class and caption for a video file, and errors for what the model cannot take."""

from __future__ import annotations

import numpy as np
import pytest

from tests.train import runs


def config(data_dir: str, *overrides: str):
    from vdm_jax import configuration

    flags = [a.removeprefix("--config.") for a in runs.TINY] + [f"data.data_dir={data_dir}", *overrides]
    return configuration.from_config_dict(configuration.load_config_file("configs/default.py", flags))


@pytest.fixture(scope="module")
def data_dir(moving_shapes_dir) -> str:
    """The tiny run's moving_shapes variant, built here (main.py builds it on first use)."""
    from vdm_jax import data as vdm_data

    vdm_data.prepare(config(moving_shapes_dir).data)
    return moving_shapes_dir


LABELLED_TEXT = ("model.num_classes=3", "model.text_conditioning=builtin", "model.text_embed_dim=16")


def tokens(captions, cfg) -> np.ndarray:
    from vdm_jax.models.text import tokenize

    return np.asarray(tokenize(list(captions), cfg.data.text_max_length))


def test_clips_from_the_dataset_bring_their_own_labels_and_captions(data_dir):
    from vdm_jax import data as vdm_data
    from vdm_jax.train.context import context_from_dataset

    cfg = config(data_dir)
    context, own = context_from_dataset(cfg, "test", 2, 3, 1)
    clips = vdm_data.load_examples(cfg.data, split="test", num=5)
    np.testing.assert_array_equal(context, clips["video"][2:5, :1].astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_array_equal(own["labels"], clips["label"][2:5])
    assert list(own["captions"]) == list(clips["caption"][2:5])
    assert len(set(clips["caption"][:5])) == 5  # distinct clips: an offset mistake would show


def test_the_sources_of_labels_and_captions_in_order(data_dir):
    from vdm_jax import data as vdm_data
    from vdm_jax.train.sampling import sample_conditioning

    cfg = config(data_dir, *LABELLED_TEXT)
    own = {"labels": np.array([2, 0]), "captions": np.array(["a red circle moving up", "a blue square moving left"])}
    # The continued clips' own
    cond = sample_conditioning(cfg, 2, own=own)
    np.testing.assert_array_equal(cond["label"], [2, 0])
    np.testing.assert_array_equal(cond["text_tokens"], tokens(own["captions"], cfg))
    # Flags win, for every video
    cond = sample_conditioning(cfg, 2, own=own, label=1, caption="a green triangle moving down")
    np.testing.assert_array_equal(cond["label"], [1, 1])
    np.testing.assert_array_equal(cond["text_tokens"], tokens(["a green triangle moving down"] * 2, cfg))
    # A video file: nothing known, so the null class (index num_classes) and the empty caption, unless a flag says
    cond = sample_conditioning(cfg, 2, unknown=True)
    np.testing.assert_array_equal(cond["label"], [3, 3])
    assert not cond["text_tokens"].any()
    cond = sample_conditioning(cfg, 2, unknown=True, caption="a red circle moving up")
    np.testing.assert_array_equal(cond["label"], [3, 3])
    np.testing.assert_array_equal(cond["text_tokens"], tokens(["a red circle moving up"] * 2, cfg))
    # From nothing: the classes in turn and the first test captions
    cond = sample_conditioning(cfg, 4)
    np.testing.assert_array_equal(cond["label"], [0, 1, 2, 0])
    test_captions = vdm_data.load_examples(cfg.data, split="test", num=4)["caption"]
    np.testing.assert_array_equal(cond["text_tokens"], tokens(test_captions, cfg))
    # A model with neither input gets nothing
    assert sample_conditioning(config(data_dir), 2, own=own) is None


def test_conditioning_the_model_cannot_take_is_a_clear_error(data_dir):
    from vdm_jax.train.context import ContextError
    from vdm_jax.train.sampling import sample_conditioning

    plain, labelled = config(data_dir), config(data_dir, *LABELLED_TEXT)
    precomputed = config(data_dir, "model.text_conditioning=precomputed")
    cases = [
        (plain, {"label": 1}, "--label=1: this model is not class-conditional"),
        (plain, {"caption": "a red circle"}, "--caption needs a model with the built-in text encoder"),
        (precomputed, {"caption": "a red circle"}, "text_conditioning='precomputed'"),
        (labelled, {"label": 3}, r"--label \[3\]: this model has classes 0 \.\. 2"),
        (labelled, {"own": {"labels": np.array([0, 7])}}, r"the conditioning clips' labels \[7\]"),
    ]
    for cfg, kwargs, message in cases:
        with pytest.raises(ContextError, match=message):
            sample_conditioning(cfg, 2, **kwargs)


def test_continuing_clips_gives_each_video_its_own_clips_caption(data_dir, monkeypatch, tmp_path):
    """The wiring of --cond_split --cond_index: the clips continued from index 3 are described by clips 3 and 4's
    labels and captions, not by the first test clips' (the sampler is replaced by a spy; no checkpoint needed)."""
    import jax.numpy as jnp

    from vdm_jax import data as vdm_data
    from vdm_jax.train import conditional, sampling

    cfg = config(data_dir, *LABELLED_TEXT)
    seen = {}

    def spy(model, rng, context, total, **kwargs):
        seen.update(kwargs["cond"])
        n, k = context.shape[:2]
        return jnp.concatenate([context, jnp.zeros((n, total - k, *context.shape[2:]))], axis=1)

    monkeypatch.setattr(conditional, "load_model", lambda cfg, workdir, step=None: (None, 5))
    monkeypatch.setattr(conditional, "extend", spy)
    sampling.sample_conditional_from_checkpoint(
        cfg, str(tmp_path), num_samples=2, cond_split="test", cond_index=3, num_cond_frames=1
    )
    clips = vdm_data.load_examples(cfg.data, split="test", num=5)
    np.testing.assert_array_equal(seen["label"], clips["label"][3:5])
    np.testing.assert_array_equal(seen["text_tokens"], tokens(clips["caption"][3:5], cfg))
    assert (tmp_path / "samples" / "cond_step5.npz").exists()


def test_sample_files_are_written_by_process_0_and_a_replacement_is_announced(tmp_path, monkeypatch, caplog):
    import jax

    from vdm_jax.train import sampling

    videos = np.zeros((2, 3, 4, 4, 3), np.float32)
    marked = np.zeros((2, 3), bool)
    paths = sampling._write_samples(str(tmp_path), "cond_step1", videos, marked=marked, context=videos[:, :1])
    saved = np.load(paths["npz"])
    assert sorted(saved.files) == ["context", "marked", "videos"]
    assert all((tmp_path / f"cond_step1.{ext}").stat().st_size > 0 for ext in ("gif", "mp4"))
    with caplog.at_level("WARNING"):
        sampling._write_samples(str(tmp_path), "cond_step1", videos + 0.5)
    assert any("Replacing the earlier samples cond_step1" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(jax, "process_index", lambda: 1)  # another host of a multi-host run: writes nothing
    sampling._write_samples(str(tmp_path / "other"), "x", videos)
    assert not (tmp_path / "other").exists()


def test_marked_frames_get_a_white_border_and_only_they():
    """video_grid: 3 black videos of 2 frames in a 2-column grid (pad 1); video i's frame i is marked (video 2's
    frame 0 as well). Exactly the one-pixel ring around each marked tile is white; tiles and the rest stay black."""
    from vdm_jax.train import media

    videos = -np.ones((3, 2, 4, 5, 3), np.float32)
    marked = np.array([[1, 0], [0, 1], [1, 0]], bool)
    grid = media.video_grid(videos, columns=2, marked=marked)
    assert grid.shape == (2, 2 * 5 + 1, 2 * 6 + 1, 3)
    want = np.zeros(grid.shape[:3], bool)
    for i in range(3):
        r, c = divmod(i, 2)
        y, x = 1 + r * 5, 1 + c * 6
        ring = np.zeros(grid.shape[1:3], bool)
        ring[y - 1 : y + 5, x - 1 : x + 6] = True
        ring[y : y + 4, x : x + 5] = False
        want[marked[i]] |= ring
    np.testing.assert_array_equal(grid.min(axis=-1) == 255, want)
    np.testing.assert_array_equal(grid.max(axis=-1) == 0, ~want)
    np.testing.assert_array_equal(media.video_grid(videos, columns=2), 0)  # no marks: black
