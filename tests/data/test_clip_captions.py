"""Captions the pipeline attaches to moving_shapes clips, checked against the clips' true motion.

The truth is recomputed here from the stored track alone: each object's velocity frame by frame, re-simulated from
its first position and initial velocity with the elastic bounce rule, must reproduce the stored positions; a clip
starting at frame s then moves as the velocity at s says, mirrored (column velocity negated) if the clip is flipped.
"""

import dataclasses

import jax
import numpy as np

from tests.data.conftest import find_clip, to_uint8
from vdm_jax.data import load_examples, make_iterator
from vdm_jax.data.shapes_render import caption
from vdm_jax.parallel import make_mesh

TEXT_BYTES = 256  # longer than any moving_shapes caption (3 objects: ~150 characters)


def byte_tokens(texts: list[str], length: int) -> np.ndarray:
    """A tokenizer that keeps the text: its UTF-8 bytes, zero-padded to int32 [N, length]."""
    out = np.zeros((len(texts), length), np.int32)
    for i, text in enumerate(texts):
        raw = text.encode("utf-8")
        assert len(raw) <= length, text
        out[i, : len(raw)] = list(raw)
    return out


def row_captions(batch: dict) -> list[str]:
    return [bytes(row[row > 0].astype(np.uint8).tolist()).decode("utf-8") for row in np.asarray(batch["text_tokens"])]


def true_velocities(videos: dict, n: int, resolution: int) -> np.ndarray:
    """Velocity of each object of stored video n at every frame: float [L, K, 2], re-simulated from its track."""
    positions = videos["position"][n]
    k = int(videos["num_objects"][n])
    p, v = positions[0, :k].astype(np.float64), videos["velocity"][n, :k].astype(np.float64)
    lo = videos["size"][n, :k, None] * np.ones([1, 2])
    hi = resolution - lo
    out = np.zeros((positions.shape[0], *videos["velocity"].shape[1:]))
    for t in range(positions.shape[0]):
        np.testing.assert_allclose(p, positions[t, :k], atol=1e-3)  # the re-simulation is the stored track
        out[t, :k] = v
        p = p + v
        over, under = p > hi, p < lo
        p = np.where(over, 2 * hi - p, np.where(under, 2 * lo - p, p))
        v = np.where(over | under, -v, v)
    return out


def true_caption(videos: dict, n: int, start: int, flipped: bool, resolution: int = 32) -> str:
    velocity = true_velocities(videos, n, resolution)[start]
    if flipped:
        velocity = velocity * np.array([1.0, -1.0])  # a mirrored clip moves the other way along the columns
    gt = {key: videos[key][n] for key in ("num_objects", "shape", "color")}
    return caption({**gt, "velocity": velocity})


def epoch_rows(cfg, videos: dict, split: str = "train", batches: int = 4) -> list[tuple[int, int, bool, str]]:
    """(video, start, flipped, caption) of every row of the first `batches` batches of 16."""
    it = make_iterator(
        cfg,
        split=split,
        global_batch_size=16,
        mesh=make_mesh((1, 1, 1)),
        seed=0,
        text_max_length=TEXT_BYTES,
        tokenizer=byte_tokens,
    )
    rows = []
    for _ in range(batches):
        b = jax.tree.map(np.asarray, next(it))
        for clip, text in zip(to_uint8(b["video"]), row_captions(b), strict=True):
            rows.append((*find_clip(clip, videos["video"]), text))
    return rows


def test_each_training_clip_has_the_caption_of_its_own_motion(tiny_shapes, tiny_shapes_videos):
    """8-frame clips start anywhere in 0..8 of the 16-frame videos, and objects bounce in between: every row of an
    epoch carries the caption of the motion at its clip's first frame (before, frame 0's: 39 of these 64 rows false).
    Evaluation clips start at frame 0 and keep frame 0's caption, as load_examples gives it."""
    rows = epoch_rows(tiny_shapes, tiny_shapes_videos)
    assert sorted(n for n, *_ in rows) == list(range(64))  # one epoch: every video once
    wrong = [(n, s, text) for n, s, flipped, text in rows if text != true_caption(tiny_shapes_videos, n, s, flipped)]
    assert not wrong, f"{len(wrong)} of {len(rows)} rows: (video, clip start, caption) {wrong[:3]}"
    moved_on = sum(
        true_caption(tiny_shapes_videos, n, s, False) != tiny_shapes_videos["caption"][n] for n, s, *_ in rows
    )
    assert moved_on > 10  # many clips move otherwise than at frame 0: the check above tells the two apart

    test_videos = load_examples(dataclasses.replace(tiny_shapes, num_frames=16), "test")
    ev = epoch_rows(tiny_shapes, test_videos, split="test", batches=1)
    assert [(n, s) for n, s, *_ in ev] == [(n, 0) for n in range(16)]
    assert [text for *_, text in ev] == list(load_examples(tiny_shapes, "test")["caption"])
    assert [text for *_, text in ev] == [true_caption(test_videos, n, 0, False) for n in range(16)]


def test_flipped_clips_have_left_and_right_swapped_in_their_captions(tiny_shapes, tiny_shapes_videos):
    """random_flip mirrors a clip; its caption must describe the mirrored motion (before, 'left' stayed 'left').
    Unflipped rows keep the caption of their clip unchanged."""
    rows = epoch_rows(dataclasses.replace(tiny_shapes, random_flip=True), tiny_shapes_videos)
    flipped = [r for r in rows if r[2]]
    assert 0 < len(flipped) < len(rows)
    sideways = [r for r in flipped if "left" in r[3] or "right" in r[3]]
    assert len(sideways) > 10  # flips that change a caption: the swap is exercised
    for n, s, mirrored, text in rows:
        assert text == true_caption(tiny_shapes_videos, n, s, mirrored), (n, s, mirrored)
    import tensorflow as tf

    from vdm_jax.data.pipeline import swap_left_right

    # Whole words only, capitalised ones too.
    got = swap_left_right(tf.constant("Left of the leftmost ball, right and bright, Right.")).numpy().decode()
    assert got == "Right of the leftmost ball, left and bright, Left."


def test_long_range_clips_have_the_caption_of_their_first_frame(tiny_shapes, tiny_shapes_videos):
    """A long-range window holds a few far frames and then consecutive ones: its caption is the motion at the first
    frame it holds (frame c + frame_times[0] of its video), like any clip's."""
    cfg = dataclasses.replace(tiny_shapes, long_range_prob=0.5, long_range_span=16)
    it = make_iterator(
        cfg,
        split="train",
        global_batch_size=16,
        mesh=make_mesh((1, 1, 1)),
        seed=0,
        text_max_length=TEXT_BYTES,
        tokenizer=byte_tokens,
    )
    stored, moved_on = tiny_shapes_videos["video"], 0
    for _ in range(2):
        b = jax.tree.map(np.asarray, next(it))
        for clip, times, text in zip(to_uint8(b["video"]), b["frame_times"], row_captions(b), strict=True):
            found = [
                (n, c) for n in range(64) for c in range(16 - times[-1]) if np.array_equal(stored[n, c + times], clip)
            ]
            assert len(found) == 1, found
            n, c = found[0]
            first = c + int(times[0])
            assert text == true_caption(tiny_shapes_videos, n, first, False), (n, c, times)
            moved_on += text != tiny_shapes_videos["caption"][n]
    assert moved_on > 0  # some windows start where the motion differs from frame 0's
