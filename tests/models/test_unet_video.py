"""The U-Net on videos: shapes, frame independence in joint image-video batches, T = 1 and temporal attention off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from unet_helpers import RES, apply, build, tiny_config, video

ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    return build(tiny_config())


@pytest.mark.parametrize("t, h, w", [(1, RES, RES), (7, 8, 24)])
def test_output_shapes(model, t, h, w):
    z = video(0, (2, t, h, w, 3))
    out = apply(model, z, jnp.array([-3.0, 4.0]))
    assert out.shape == z.shape and out.dtype == z.dtype
    assert np.isfinite(np.asarray(out)).all() and float(jnp.abs(out).max()) > 0


def test_bad_shapes_fail_clearly(model):
    with pytest.raises(ValueError, match="not divisible by 2\\^1=2"):
        model(video(0, (1, 2, 9, 9, 3)), jnp.zeros(1))
    with pytest.raises(ValueError, match=r"z must be \[B, T, H, W, 3\]"):
        model(video(0, (1, 2, RES, RES, 4)), jnp.zeros(1))
    with pytest.raises(ValueError, match="logsnr must be"):
        model(video(0, (2, 2, RES, RES, 3)), jnp.zeros(3))


def test_appended_image_frames_are_independent(model):
    """VDM §3.1: in example 0, frames 4 and 5 are independent images appended to a 4-frame video; example 1 is one
    6-frame video."""
    z = video(1, (2, 6, RES, RES, 3))
    seg = jnp.array([[0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 0, 0]], jnp.int32)
    logsnr = jnp.array([0.5, -1.0])
    base = np.asarray(apply(model, z, logsnr, segment_ids=seg))

    # Change the image frame (0, 4): only output (0, 4) may change.
    out = np.asarray(apply(model, z.at[0, 4].add(1.0), logsnr, segment_ids=seg))
    diff = np.abs(out - base).max(axis=(2, 3, 4))
    assert diff[0, 4] > 1e-3
    diff[0, 4] = 0
    assert diff.max() < ATOL

    # Change video frame 1 of both examples: the other frames of each video change; the appended images do not.
    out = np.asarray(apply(model, z.at[:, 1].add(1.0), logsnr, segment_ids=seg))
    diff = np.abs(out - base).max(axis=(2, 3, 4))
    assert (diff[0, [0, 2, 3]] > 1e-4).all() and diff[0, 4:].max() < ATOL
    assert (diff[1] > 1e-4).all()


def test_temporal_attention_off_equals_frame_by_frame():
    model = build(tiny_config(temporal_attention=False), seed=3)
    z = video(3, (2, 4, RES, RES, 3))
    logsnr = jnp.array([1.0, -2.0])
    whole = np.asarray(apply(model, z, logsnr))
    for t in range(4):
        alone = np.asarray(apply(model, z[:, t : t + 1], logsnr))
        np.testing.assert_allclose(whole[:, t : t + 1], alone, atol=ATOL)


def _count_attention_and_matmuls(model, z) -> int:
    graphdef, state = nnx.split(model)
    jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, jnp.zeros(x.shape[0])))(state, z)
    return str(jaxpr).count("dot_general")


def test_single_frame_costs_no_temporal_compute(model):
    """At T = 1 the video model traces to the same matmuls as the image model: no temporal attention at all."""
    image = build(tiny_config(temporal_attention=False))
    one, two = video(4, (2, 1, RES, RES, 3)), video(4, (2, 2, RES, RES, 3))
    assert _count_attention_and_matmuls(model, one) == _count_attention_and_matmuls(image, one)
    assert _count_attention_and_matmuls(model, two) > _count_attention_and_matmuls(image, two)


def test_logsnr_matters(model):
    z = video(5, (2, 7, 8, 24, 3))
    a = apply(model, z, jnp.array([-5.0, -5.0]))
    b = apply(model, z, jnp.array([5.0, -5.0]))
    diff = np.abs(np.asarray(a - b)).max(axis=(1, 2, 3, 4))
    assert diff[0] > 1e-3 and diff[1] == 0.0
