"""The U-Net on videos: shapes, frame independence in joint image-video batches, T = 1, temporal attention off, and
temporal attention alone at a level (`temporal_attn_resolutions`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from unet_helpers import RES, apply, build, tiny_config, video

from vdm_jax.models import UNet3D, load_matching_params, make_rngs
from vdm_jax.models.attention import TemporalAttention

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
    with pytest.raises(ValueError, match="frame_times must be"):
        model(video(0, (2, 2, RES, RES, 3)), jnp.zeros(2), frame_times=jnp.zeros((2, 3), jnp.int32))


def test_appended_image_frames_are_independent(model):
    """VDM §4.3.1: in example 0, frames 4 and 5 are independent images appended to a 4-frame video; example 1 is one
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


def _count_ops(model, z) -> tuple[int, int]:
    """(matmuls, softmax exponentials) in the traced forward pass."""
    graphdef, state = nnx.split(model)
    jaxpr = str(jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, jnp.zeros(x.shape[0])))(state, z))
    return jaxpr.count("dot_general"), jaxpr.count(" exp ")


def test_single_frame_computes_no_temporal_attention(model):
    """At T = 1 a temporal block reduces to its value and output projections (one key: softmax weight 1), so the
    trace has the image model's attention and two more matmuls per temporal block; with two frames, more."""
    image = build(tiny_config(temporal_attention=False))
    one, two = video(4, (2, 1, RES, RES, 3)), video(4, (2, 2, RES, RES, 3))
    blocks = sum(1 for _, m in nnx.iter_graph(model) if isinstance(m, TemporalAttention))
    assert blocks > 0
    (mm_v, exp_v), (mm_i, exp_i) = _count_ops(model, one), _count_ops(image, one)
    assert exp_v == exp_i and mm_v == mm_i + 2 * blocks
    assert _count_ops(model, two)[1] > _count_ops(image, two)[1]


def test_image_alone_equals_image_appended_to_a_video(model):
    """Joint training (VDM §4.3.1): an image frame appended to a video attends only to itself in temporal attention.
    The same image run alone (T = 1) must get the same output, with temporal weights off their identity init."""
    z = video(8, (2, 5, RES, RES, 3))
    seg = jnp.array([[0, 0, 0, 0, 1], [0, 0, 0, 1, 2]], jnp.int32)
    logsnr = jnp.array([0.7, -2.0])
    joint = np.asarray(apply(model, z, logsnr, segment_ids=seg))
    for b, t in ((0, 4), (1, 3), (1, 4)):
        alone = np.asarray(apply(model, z[b : b + 1, t : t + 1], logsnr[b : b + 1]))
        np.testing.assert_allclose(joint[b, t], alone[0, 0], atol=ATOL)
    # Not vacuous: skipping the temporal blocks (zero output projections) computes something else on that image.
    graphdef, state = nnx.split(model)
    zeroed = jax.tree.map_with_path(
        lambda p, x: (
            jnp.zeros_like(x) if "temporal" in jax.tree_util.keystr(p) and "out_" in jax.tree_util.keystr(p) else x
        ),
        state,
    )
    skipped = np.asarray(apply(nnx.merge(graphdef, zeroed), z[:1, 4:5], logsnr[:1]))
    assert np.abs(skipped[0, 0] - joint[0, 4]).max() > 1e-3


def test_logsnr_matters(model):
    z = video(5, (2, 7, 8, 24, 3))
    a = apply(model, z, jnp.array([-5.0, -5.0]))
    b = apply(model, z, jnp.array([5.0, -5.0]))
    diff = np.abs(np.asarray(a - b)).max(axis=(1, 2, 3, 4))
    assert diff[0] > 1e-3 and diff[1] == 0.0


def test_temporal_only_level_adds_frame_mixing_and_nothing_else():
    """`temporal_attn_resolutions=(16,)`: the 16x16 stages get temporal attention alone (no spatial attention). With
    those blocks' output projections at zero (identity init), the network is exactly the one without them; once they
    move off zero, the frames of a video mix and appended image frames still stay independent."""
    plain = build(tiny_config(), seed=6)
    rngs = nnx.Rngs(jax.random.key(2, impl="rbg"))
    extra = UNet3D(tiny_config(temporal_attn_resolutions=(16,), temporal_identity_init=True), resolution=RES, rngs=rngs)
    state, report = load_matching_params(nnx.state(extra), nnx.state(plain))
    assert not report.unused and not report.mismatched
    assert report.missing and all("/attn/temporal/" in p for p in report.missing)
    nnx.update(extra, state)
    for stage in (extra.down[0], extra.up[-1]):  # 16x16 stages
        assert stage.attn.spatial is None and stage.attn.temporal is not None
    assert plain.down[0].attn is None and extra.down[2].attn.spatial is not None  # the 8x8 stage keeps both

    z = video(6, (2, 6, RES, RES, 3))
    seg = jnp.array([[0, 0, 0, 0, 1, 2], [0, 0, 0, 0, 0, 0]], jnp.int32)
    logsnr = jnp.array([0.5, -1.0])
    np.testing.assert_allclose(
        np.asarray(apply(extra, z, logsnr, segment_ids=seg)),
        np.asarray(apply(plain, z, logsnr, segment_ids=seg)),
        atol=ATOL,
    )

    for path, var in nnx.iter_graph(extra):
        if "temporal" in path and path[-1] == "out_kernel":
            var[...] = jnp.full(var.shape, 0.05)
    base = np.asarray(apply(extra, z, logsnr, segment_ids=seg))
    assert np.abs(base - np.asarray(apply(plain, z, logsnr, segment_ids=seg))).max() > 1e-4
    out = np.asarray(apply(extra, z.at[:, 1].add(1.0), logsnr, segment_ids=seg))
    diff = np.abs(out - base).max(axis=(2, 3, 4))
    assert (diff[0, [0, 2, 3]] > 1e-4).all() and diff[0, 4:].max() < ATOL and (diff[1] > 1e-4).all()


def test_temporal_attention_off_drops_temporal_only_levels():
    cfg = tiny_config(temporal_attention=False, temporal_attn_resolutions=(16,))
    model = nnx.eval_shape(lambda: UNet3D(cfg, resolution=RES, rngs=make_rngs(0)))  # structure only
    assert model.down[0].attn is None and model.down[2].attn.temporal is None
