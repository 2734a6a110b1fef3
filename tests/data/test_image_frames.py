"""The independent image frames appended for joint video-image training (VDM §4.3.1): where each one comes from."""

import dataclasses

import jax
import numpy as np
import pytest

from tests.data.conftest import find_clip, to_uint8
from vdm_jax.data import load_examples, make_iterator
from vdm_jax.parallel import make_mesh


def _sources(image: np.ndarray, stored: np.ndarray) -> set[tuple[int, int, bool]]:
    """{(video, time, mirrored)} of the frames of `stored` [N, L, H, W, C] equal to `image` [H, W, C]."""
    plain = np.all(stored == image, axis=(2, 3, 4))
    mirrored = np.all(stored[:, :, :, ::-1] == image, axis=(2, 3, 4))
    return {(int(n), int(t), False) for n, t in zip(*np.nonzero(plain), strict=True)} | {
        (int(n), int(t), True) for n, t in zip(*np.nonzero(mirrored), strict=True)
    }


@pytest.mark.parametrize("conditioned", [False, True])
def test_image_frames_are_independent_draws_over_times_and_frames(tiny_shapes, tiny_shapes_videos, conditioned):
    """Over 64 rows of 3 images each, the images are frames of the stored 16-frame videos at times spread over the
    whole video (>= 14 of 16 times seen, none in >= 25% of the images: a time drawn uniformly), and a row's images
    are distinct frames in >= 80% of rows. Each row draws 3 of 16 times (and, unconditioned, of 64 videos), so two
    equal in a row has probability <= 3/16 per row; the seed is fixed, so the test is deterministic. Before, image
    frames always frame 0, or K copies of one frame, passed the pipeline tests."""
    cfg = dataclasses.replace(tiny_shapes, num_image_frames=3, random_flip=True)
    stored = tiny_shapes_videos["video"]
    it = make_iterator(
        cfg, split="train", global_batch_size=16, mesh=make_mesh((1, 1, 1)), seed=0, conditioned=conditioned
    )
    times, rows_distinct, rows = [], 0, 0
    for _ in range(4):
        b = jax.tree.map(np.asarray, next(it))
        for v in to_uint8(b["video"]):
            sources = [_sources(image, stored) for image in v[8:]]
            assert all(sources)  # each image is a stored frame, plain or mirrored
            picked = [next(iter(s)) for s in sources if len(s) == 1]  # unambiguous frames only
            times += [t for _, t, _ in picked]
            rows += 1
            rows_distinct += len({(n, t) for n, t, _ in picked}) == len(picked)
    counts = np.bincount(times, minlength=16)
    assert len(times) > 0.9 * 3 * rows, len(times)  # nearly every frame names one video and time
    assert (counts > 0).sum() >= 14, counts  # times spread over the whole 16-frame video
    assert counts.max() < 0.25 * len(times), counts  # no favoured time (frame 0 always: 100%)
    assert rows_distinct >= 0.8 * rows, (rows_distinct, rows)  # a row's images are not copies of one frame


def test_evaluation_image_frames_come_from_other_videos(tiny_shapes):
    """A test-split iterator (one ordered pass, clips from frame 0) with num_image_frames=1 appends frames of other
    videos, as for training: before, its image pass kept the stored order too, so row n's image was a frame of its
    own video n in 16 of 16 rows. Drawn from a shuffled pass over the 16 test videos, a row's image is its own
    video's with probability ~1/16: >= 4 of 16 rows has probability ~1.6% (binomial(16, 1/16)); the seed is fixed."""
    cfg = dataclasses.replace(tiny_shapes, num_image_frames=1)
    stored = load_examples(dataclasses.replace(tiny_shapes, num_frames=16), "test")["video"]
    it = make_iterator(cfg, split="test", global_batch_size=16, mesh=make_mesh((1, 1, 1)), seed=0, text_max_length=0)
    b = jax.tree.map(np.asarray, next(it))
    own = 0
    for row, v in enumerate(to_uint8(b["video"])):
        n, start, flipped = find_clip(v[:8], stored)
        assert (n, start, flipped) == (row, 0, False)  # evaluation clips: the stored order, from frame 0
        sources = _sources(v[8], stored)
        assert any(not mirrored for *_, mirrored in sources)  # a stored frame, not flipped (no random_flip)
        own += n in {s for s, _, _ in sources}
    assert own < 0.2 * 16, f"{own} of 16 evaluation rows append a frame of their own video"
