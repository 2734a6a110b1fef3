"""Image -> video: an image model's weights in a video model with identity-initialised temporal layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from unet_helpers import RES, apply, build, tiny_config, video

from vdm_jax.models import INPUT_KERNEL, UNet3D, load_matching_params

B, T = 2, 5
LOGSNR = jnp.array([2.0, -1.0])
COND = {"label": jnp.array([0, 2], jnp.int32)}


@pytest.fixture(scope="module")
def image():
    return build(tiny_config(num_classes=3, temporal_attention=False), seed=1)


@pytest.fixture(scope="module")
def image_per_frame(image):
    z = video(0, (B, T, RES, RES, 3))
    out = apply(image, z.reshape(B * T, 1, RES, RES, 3), jnp.repeat(LOGSNR, T), {"label": jnp.repeat(COND["label"], T)})
    return np.asarray(out).reshape(z.shape)


def test_identity_init_video_model_equals_image_model_per_frame(image, image_per_frame):
    # The real initialisers (an rbg key: its PRNG kernels compile ~3x faster than threefry's on a CPU).
    rngs = nnx.Rngs(jax.random.key(7, impl="rbg"))
    video_model = UNet3D(tiny_config(num_classes=3, temporal_identity_init=True), resolution=RES, rngs=rngs)
    state, report = load_matching_params(nnx.state(video_model), nnx.state(image))
    assert report.loaded and not report.mismatched and not report.unused
    assert report.missing and all("/temporal/" in p for p in report.missing)
    nnx.update(video_model, state)

    z = video(0, (B, T, RES, RES, 3))
    got = np.asarray(apply(video_model, z, LOGSNR, COND))
    np.testing.assert_allclose(got, image_per_frame, atol=1e-5)

    # The oracle can fail: once the temporal output projections move off zero, frames mix and the outputs differ.
    for path, var in nnx.iter_graph(video_model):
        if "temporal" in path and path[-1] == "out_kernel":
            var[...] = jnp.full(var.shape, 0.05)
    moved = np.asarray(apply(video_model, z, LOGSNR, COND))
    assert np.abs(moved - image_per_frame).max() > 1e-4


def test_report_lists_shape_mismatches_and_keeps_them():
    small = build(tiny_config(), seed=0)
    wide = build(tiny_config(base_channels=24), seed=1)
    state, report = load_matching_params(nnx.state(wide), nnx.state(small))
    assert ("conv_in/kernel", (3, 3, 3, 24), (3, 3, 3, 16)) in report.mismatched
    np.testing.assert_array_equal(state["conv_in"]["kernel"][...], nnx.state(wide)["conv_in"]["kernel"][...])
    # Entries of equal shape were copied (the noise MLP does not depend on the channel width).
    np.testing.assert_array_equal(
        state["cond_embed"]["noise_in"]["kernel"][...], nnx.state(small)["cond_embed"]["noise_in"]["kernel"][...]
    )
    assert "loaded" in report.summary()


def test_loads_from_raw_checkpoint_dicts():
    """Orbax restores an nnx.State without a target as dicts with string list indices and trailing 'value' keys."""
    src, dst = build(tiny_config(), seed=0), build(tiny_config(), seed=1)

    def raw(tree):
        return {str(k): raw(v) for k, v in tree.items()} if isinstance(tree, dict) else {"value": np.asarray(tree)}

    state, report = load_matching_params(nnx.state(dst), raw(nnx.to_pure_dict(nnx.state(src))))
    assert not report.missing and not report.unused and not report.mismatched
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(nnx.state(src)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_frame_conditioned_model_started_from_unconditional_equals_it():
    """The input kernel grows by C + 1 channels (known frames, mask); zero-extended, the frame-conditioned model
    computes exactly what the unconditional one does, whatever frames it is given; moved off zero, it reads them."""
    uncond = build(tiny_config(), seed=0)
    fc = build(tiny_config(frame_conditioning=True), seed=1)
    plain, plain_report = load_matching_params(nnx.state(fc), nnx.state(uncond))
    assert ("conv_in/kernel", (3, 3, 7, 16), (3, 3, 3, 16)) in plain_report.mismatched  # not without zero_extend
    state, report = load_matching_params(nnx.state(fc), nnx.state(uncond), zero_extend=(INPUT_KERNEL,))
    assert report.extended == (INPUT_KERNEL,) and INPUT_KERNEL in report.loaded
    assert not report.mismatched and not report.missing and not report.unused
    assert "zero-extended" in report.summary()
    nnx.update(fc, state)

    z = video(0, (B, T, RES, RES, 3))
    mask = jnp.array([[1.0, 1, 0, 0, 0], [1, 0, 1, 0, 1]])
    cond = {"known_frames": video(1, z.shape) * mask[:, :, None, None, None], "known_mask": mask}
    want = np.asarray(apply(uncond, z, LOGSNR))
    np.testing.assert_allclose(np.asarray(apply(fc, z, LOGSNR, cond)), want, atol=1e-5)
    kernel = fc.conv_in.kernel
    kernel[...] = kernel[...].at[:, :, 3:].set(0.1)
    assert np.abs(np.asarray(apply(fc, z, LOGSNR, cond)) - want).max() > 1e-3
    # The other way (a frame-conditioned source, an unconditional destination) cannot be narrowed: left as it was.
    _, back = load_matching_params(nnx.state(uncond), nnx.state(fc), zero_extend=(INPUT_KERNEL,))
    assert [m[0] for m in back.mismatched] == [INPUT_KERNEL] and not back.extended
