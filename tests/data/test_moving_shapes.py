"""The embedded moving_shapes dataset: geometry, bounces, captions, determinism, and what the builder stores."""

import math

import numpy as np
import pytest

from vdm_jax.data import load_examples
from vdm_jax.data.moving_shapes import generate_example
from vdm_jax.data.palette import BACKGROUND, MAX_OBJECTS, PALETTE, SHAPES
from vdm_jax.data.shapes_render import caption, direction_words, render, shape_mask


def reflect(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Closed form of elastic bouncing in [lo, hi]: a triangle wave of period 2 (hi - lo)."""
    span = hi - lo
    m = np.mod(x - lo, 2 * span)
    return lo + np.where(m <= span, m, 2 * span - m)


@pytest.mark.parametrize("resolution", [32, 64])
def test_trajectories_match_the_closed_form_of_elastic_bounces(resolution):
    bounced = 0
    for i in range(40):
        ex = generate_example("train", i, 24, resolution)
        n = ex["num_objects"]
        p0, v, r = ex["position"][0, :n], ex["velocity"][:n], ex["size"][:n, None]
        t = np.arange(24)[:, None, None]
        expected = reflect(p0 + v * t, r, resolution - r)
        np.testing.assert_allclose(ex["position"][:, :n], expected, atol=1e-3)
        # The velocity at frame t is v on the rising half of the triangle wave, -v on the falling half.
        m = np.mod(p0 + v * t - r, 2 * (resolution - 2 * r))
        expected_v = np.where(m < resolution - 2 * r, v, -v)
        np.testing.assert_allclose(ex["frame_velocity"][:, :n], expected_v, rtol=1e-6)
        assert np.all(ex["frame_velocity"][:, n:] == 0)
        assert np.all(ex["position"][:, :n] >= r - 1e-4) and np.all(ex["position"][:, :n] <= resolution - r + 1e-4)
        steps = np.diff(ex["position"][:, :n], axis=0)
        bounced += int(np.sum(np.sign(steps[1:]) != np.sign(steps[:-1])))
    assert bounced > 10  # the sample really exercises the walls


def test_mask_areas_match_the_shapes_areas():
    r, res = 12.3, 64
    centre = np.array([31.7, 30.2])
    areas = {name: shape_mask(i, centre, r, res).sum() for i, name in enumerate(SHAPES)}
    assert areas["circle"] == pytest.approx(math.pi * r * r, rel=0.02)
    assert areas["square"] == pytest.approx((2 * r) ** 2, rel=0.06)
    assert areas["triangle"] == pytest.approx(3 * math.sqrt(3) / 4 * r * r, rel=0.04)  # circumradius r
    tri = shape_mask(2, centre, r, res)
    rows = np.nonzero(tri.any(1))[0]
    assert rows.min() + 0.5 >= centre[0] - r - 1e-3 and rows.max() + 0.5 <= centre[0] + r / 2 + 1e-3  # apex up


def test_examples_are_deterministic_and_well_formed():
    a, b = generate_example("train", 7, 16, 32), generate_example("train", 7, 16, 32)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(generate_example("train", 8, 16, 32)["video"], a["video"])
    assert not np.array_equal(generate_example("test", 7, 16, 32)["video"], a["video"])
    for i in range(30):
        ex = generate_example("test", i, 16, 32)
        n = ex["num_objects"]
        assert 1 <= n <= MAX_OBJECTS and ex["label"] == ex["shape"][0]
        assert len(set(ex["color"][:n].tolist())) == n  # distinct colours
        assert np.all(ex["shape"][n:] == -1) and np.all(ex["position"][:, n:] == -1)
        # Object 0 is painted last: every pixel of its mask has its colour.
        for t in (0, 15):
            mask = shape_mask(ex["shape"][0], ex["position"][t, 0], ex["size"][0], 32)
            assert np.all(ex["video"][t][mask] == PALETTE[ex["color"][0]])
        colours = {tuple(c) for c in ex["video"].reshape(-1, 3)}
        assert colours <= {tuple(BACKGROUND)} | {tuple(PALETTE[c]) for c in ex["color"][:n]}


def test_same_scene_at_both_resolutions():
    lo, hi = generate_example("train", 3, 16, 32), generate_example("train", 3, 16, 64)
    np.testing.assert_allclose(hi["position"], np.where(lo["position"] >= 0, 2 * lo["position"], -1), rtol=1e-5)
    assert lo["caption"] == hi["caption"]


def test_captions_name_colours_shapes_and_directions():
    assert direction_words(np.array([-1.0, -1.0])) == "up and to the left"
    assert direction_words(np.array([0.05, 1.0])) == "right"
    assert direction_words(np.array([1.0, 0.9])) == "down and to the right"
    assert direction_words(np.array([-1.0, 0.1])) == "up"
    gt = {
        "num_objects": 2,
        "shape": np.array([0, 1, -1]),
        "color": np.array([0, 2, -1]),
        "velocity": np.array([[-1.0, -1.0], [1.0, 0.0], [0.0, 0.0]]),
    }
    assert caption(gt) == "a red circle moving up and to the left and a blue square moving down"
    bounced = {**gt, "frame_velocity": np.stack([gt["velocity"], -gt["velocity"]])}  # all reversed at frame 1
    assert caption(bounced, frame=0) == caption(gt)
    assert caption(bounced, frame=1) == "a red circle moving down and to the right and a blue square moving up"
    for i in range(20):  # each stored frame caption is the motion at that frame; frame 0's is the caption
        ex = generate_example("train", i, 16, 32)
        assert ex["frame_captions"] == [caption(ex, frame=t) for t in range(16)]
        assert ex["frame_captions"][0] == ex["caption"]


def test_stored_dataset_shapes_and_rerendering(tiny_shapes):
    ex = load_examples(tiny_shapes, "test")
    n = len(ex["video"])
    assert n == 16 and sorted(ex["index"].tolist()) == list(range(16))
    assert ex["video"].shape == (n, 8, 32, 32, 3) and ex["video"].dtype == np.uint8
    assert ex["position"].shape == (n, 8, MAX_OBJECTS, 2) and ex["position"].dtype == np.float32
    assert ex["label"].dtype == np.int32 and ex["shape"].dtype == np.int32 and ex["size"].dtype == np.float32
    for i in range(n):
        gt = {k: ex[k][i] for k in ("num_objects", "shape", "color", "size", "position")}
        np.testing.assert_array_equal(render(gt, 32), ex["video"][i])  # PNG storage is lossless
        fresh = generate_example("test", int(ex["index"][i]), 16, 32)
        np.testing.assert_array_equal(ex["video"][i], fresh["video"][:8])
        assert ex["caption"][i] == fresh["caption"]
