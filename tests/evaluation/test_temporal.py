"""Temporal-consistency metrics: ~1 on rendered real videos; each corruption lowers the metric it targets."""

import numpy as np
import pytest

from tests.evaluation.corruptions import RESOLUTION, corrupted, real_videos
from vdm_jax.data.palette import BACKGROUND, PALETTE
from vdm_jax.evaluation.objects import detect_objects, to_rgb255
from vdm_jax.evaluation.synthetic import Scene, bounce, render_scene
from vdm_jax.evaluation.temporal import TEMPORAL_METRICS, _velocity_errors, temporal_consistency


@pytest.fixture(scope="module")
def real_scores():
    return temporal_consistency(real_videos()[0])


@pytest.mark.parametrize("supersample", [1, 4])  # hard edges (as the dataset) and antialiased (as after a resize)
def test_real_videos_score_near_one(supersample):
    scores = temporal_consistency(real_videos(supersample=supersample)[0])
    assert set(scores) == set(TEMPORAL_METRICS)
    for name, value in scores.items():
        assert 0.94 <= value <= 1.0, (name, value)


def test_float_and_uint8_videos_score_the_same():
    videos = real_videos(supersample=4)[0][:4]
    as_float = (videos.astype(np.float32) / 127.5 - 1.0).astype(np.float32)
    a, b = temporal_consistency(videos), temporal_consistency(as_float)
    for name in TEMPORAL_METRICS:
        assert a[name] == pytest.approx(b[name], abs=1e-6), name


@pytest.mark.parametrize(
    "corruption, target",
    [
        ("shuffled", "motion_smoothness"),
        ("jitter", "motion_smoothness"),
        ("flicker", "color_constancy"),
        ("dropped", "object_permanence"),
        ("size", "size_constancy"),
        ("shape", "shape_constancy"),
        ("noisy", "cleanliness"),
    ],
)
def test_each_corruption_lowers_its_metric(real_scores, corruption, target):
    scores = temporal_consistency(corrupted(corruption))
    assert scores[target] < real_scores[target] - 0.25, (corruption, target, scores[target], real_scores[target])


def test_empty_and_noise_videos_score_zero_on_objects():
    blank = np.broadcast_to(BACKGROUND, (2, 8, RESOLUTION, RESOLUTION, 3)).astype(np.uint8)
    scores = temporal_consistency(blank)
    assert scores["cleanliness"] == 1.0
    assert all(scores[name] == 0.0 for name in TEMPORAL_METRICS[:-1])
    noise = np.random.default_rng(0).integers(0, 256, (2, 8, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    scores = temporal_consistency(noise)
    assert max(scores.values()) < 0.5, scores


def test_specks_are_not_objects_but_shapes_are():
    frame = np.broadcast_to(BACKGROUND, (RESOLUTION, RESOLUTION, 3)).copy()
    frame[3, 3] = PALETTE[0]  # single-pixel speck
    frame[10:12, 20] = PALETTE[1]  # two-pixel speck
    assert detect_objects(to_rgb255(frame), PALETTE, BACKGROUND).area.size == 0
    scene = Scene(
        shape=np.array([0, 1, 2]),
        color=PALETTE[[0, 1, 2]][None].astype(float),
        size=np.full((1, 3), 4.5),
        position=np.array([[[8.0, 8.0], [8.0, 24.0], [24.0, 16.0]]]),
        visible=np.ones((1, 3), bool),
    )
    objects = detect_objects(to_rgb255(render_scene(scene, RESOLUTION)[0]), PALETTE, BACKGROUND)
    assert sorted(objects.color_index.tolist()) == [0, 1, 2]
    true_area = np.array([np.pi, 4.0, 3.0 * np.sqrt(3.0) / 4.0]) * 4.5**2
    np.testing.assert_allclose(objects.area[np.argsort(objects.color_index)], true_area, rtol=0.05)
    # Circle, square and triangle have distinct shape descriptors (see objects.shape_descriptor).
    descriptors = objects.shape[np.argsort(objects.color_index)]
    assert descriptors[1, 1] - descriptors[0, 1] > 0.06  # square's m22 term above the circle's
    assert descriptors[2, 2] < -0.1 and abs(descriptors[0, 2]) < 0.05  # the triangle is skewed, the circle is not


def test_velocity_errors_accept_constant_motion_and_bounces_only():
    t = np.arange(12.0)[:, None]
    straight = np.concatenate([3.0 + 1.7 * t, 20.0 - 0.9 * t], axis=1)
    np.testing.assert_allclose(_velocity_errors(straight), 0.0, atol=1e-9)
    lo, hi = np.array([4.0, 4.0]), np.array([28.0, 28.0])
    for start in (24.5, 25.0, 26.9):  # bounces within a step and exactly at a frame
        bounced = bounce(np.concatenate([start + 1.5 * t, 10.0 - 2.5 * t], axis=1), lo, hi)
        assert np.ptp(bounced[:, 0]) < 1.5 * 11  # it did bounce
        np.testing.assert_allclose(_velocity_errors(bounced), 0.0, atol=1e-9)
    shaken = straight + np.random.default_rng(0).uniform(-1, 1, straight.shape)
    assert np.median(_velocity_errors(shaken)) > 0.5


def test_a_reversal_away_from_the_border_is_not_a_bounce():
    t = np.arange(8.0)[:, None]
    zigzag = np.concatenate([16.0 + np.where(t < 4, t, 8 - t), 16.0 + 0.5 * t], axis=1)  # turns at row 20
    far = np.zeros(zigzag.shape, bool)
    assert _velocity_errors(zigzag, far).max() >= 2.0 - 1e-9
    np.testing.assert_allclose(_velocity_errors(zigzag, np.ones(zigzag.shape, bool)), 0.0, atol=1e-9)
