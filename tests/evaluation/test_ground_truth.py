"""Generated frames against their real clip (`vdm_jax.evaluation.ground_truth`): known corruptions of rendered
moving-shapes clips give the numbers they must."""

import numpy as np
import pytest

from vdm_jax.data.palette import PALETTE
from vdm_jax.data.shapes_render import render, sample_scene
from vdm_jax.evaluation.ground_truth import object_fidelity

T, R = 12, 32


def scenes(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng, T, R) for _ in range(count)]


def as_videos(frames: list[np.ndarray]) -> np.ndarray:
    return np.stack(frames).astype(np.float32) / 127.5 - 1.0


def first(condition, candidates):
    for c in candidates:
        if condition(c):
            return c
    raise AssertionError("no scene of the kind the test needs among the candidates")


def test_real_clips_are_found_on_their_tracks():
    gts = scenes(24)
    out = object_fidelity(as_videos([render(g, R) for g in gts]), gts, range(T))
    # Only occlusion (rare) hides an object or splits it in two.
    assert out["objects_missing"] <= 0.03
    assert out["objects_extra"] <= 0.03
    assert len(out["trajectory_error_px_by_frame"]) == T
    single = [g for g in gts if int(g["num_objects"]) == 1]
    assert single, "the seed should draw some one-object scenes"
    alone = object_fidelity(as_videos([render(g, R) for g in single]), single, range(T))
    assert alone["objects_missing"] == 0.0 and alone["objects_extra"] == 0.0
    # Hard edges snap a square's sides to whole pixels (up to half a pixel per axis); a half-pixel slip of the
    # pixel-centre convention alone would add 0.7 px.
    assert alone["trajectory_error_px"] < 0.35


def test_an_erased_object_counts_as_missing_in_exactly_its_frames():
    def clean_multi(g):
        if int(g["num_objects"]) < 2:
            return False
        out = object_fidelity(as_videos([render(g, R)]), [g], range(T))
        return out["objects_missing"] == 0.0 and out["objects_extra"] == 0.0

    gt = first(clean_multi, scenes(40, seed=1))
    n, start = int(gt["num_objects"]), 5
    # Objects are painted last to first, so dropping the last one leaves the others' pixels as they were.
    without_last = render({**gt, "num_objects": n - 1}, R)
    video = render(gt, R)
    video[start:] = without_last[start:]
    out = object_fidelity(as_videos([video]), [gt], range(T))
    assert out["objects_missing"] == pytest.approx((T - start) / (n * T))
    assert out["objects_extra"] == 0.0
    # Scoring only the frames before the erasure sees nothing wrong.
    assert object_fidelity(as_videos([video]), [gt], range(start))["objects_missing"] == 0.0


@pytest.mark.parametrize("same_colour", [False, True])
def test_a_blob_the_clip_does_not_explain_counts_as_extra(same_colour):
    gt = first(lambda g: int(g["num_objects"]) == 1, scenes(40, seed=2))
    colour = int(gt["color"][0])
    blob = colour if same_colour else (colour + 1) % len(PALETTE)
    real = render(gt, R)
    video, start = real.copy(), 4
    for t in range(start, T):
        # A 4x4 blob in the corner farthest from the object (objects span at most 0.4 R = 13 px).
        row, col = gt["position"][t, 0]
        r0 = 0 if row > R / 2 else R - 4
        c0 = 0 if col > R / 2 else R - 4
        video[t, r0 : r0 + 4, c0 : c0 + 4] = PALETTE[blob]
    clean = object_fidelity(as_videos([real]), [gt], range(T))
    out = object_fidelity(as_videos([video]), [gt], range(T))
    assert out["objects_extra"] == pytest.approx((T - start) / T)
    assert out["objects_missing"] == 0.0
    # A second object of the real colour does not move the real one's error: the nearest is matched.
    assert out["trajectory_error_px"] == pytest.approx(clean["trajectory_error_px"])


def test_a_displaced_object_is_off_by_the_displacement():
    shift = np.array([2.0, 1.0])

    def inside_after_shift(g):  # one object, fully inside the frame (by a pixel) in every shifted frame
        centre, size = g["position"][:, 0] + shift, g["size"][0]
        return int(g["num_objects"]) == 1 and np.all((centre >= size + 1) & (centre <= R - size - 1))

    gt = first(inside_after_shift, scenes(80, seed=3))
    moved = {**gt, "position": gt["position"] + shift}
    base = object_fidelity(as_videos([render(gt, R)]), [gt], range(T))["trajectory_error_px"]
    off = object_fidelity(as_videos([render(moved, R)]), [gt], range(T))["trajectory_error_px"]
    # Whole-pixel shifts keep each shape's pixel pattern, so each frame's error is |q_t + shift| for the rendering's own
    # centroid offset q_t (mean |q_t| = base): by the triangle inequality the mean lies within base of |shift|.
    assert abs(off - np.linalg.norm(shift)) <= base + 1e-6
    assert off > 1.5


def test_bad_inputs_say_what_is_wrong():
    gts = scenes(2)
    videos = as_videos([render(g, R) for g in gts])
    with pytest.raises(ValueError, match="2 videos but 1 ground-truth"):
        object_fidelity(videos, gts[:1], range(T))
    with pytest.raises(ValueError, match="outside the videos' 12 frames"):
        object_fidelity(videos, gts, range(T + 1))
    short = [{**g, "position": g["position"][: T - 2]} for g in gts]
    with pytest.raises(ValueError, match="ground truth covers 10 frames"):
        object_fidelity(videos, short, range(T - 2))
