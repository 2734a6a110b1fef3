"""Conditioning paths: class labels, text (builtin and precomputed), known frames, guidance nulls, dropout, remat."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from unet_helpers import RES, apply, build, tiny_config, video

from vdm_jax.models import drop_conditioning, load_matching_params, null_conditioning, tokenize
from vdm_jax.models.unet import Stage

Z = video(0, (2, 2, RES, RES, 3))
LOGSNR = jnp.array([0.0, 1.0])


def _close(a, b, atol=1e-5):
    return np.abs(np.asarray(a) - np.asarray(b)).max() <= atol


def test_class_labels_and_the_null_class():
    cfg = tiny_config(num_classes=5)
    model = build(cfg)
    cond = {"label": jnp.array([1, 3], jnp.int32)}
    null = null_conditioning(cond, cfg)
    np.testing.assert_array_equal(null["label"], [5, 5])
    a, b = apply(model, Z, LOGSNR, cond), apply(model, Z, LOGSNR, null)
    assert not _close(a, b, 1e-3)
    assert _close(apply(model, Z, LOGSNR, {"label": jnp.array([5, 5], jnp.int32)}), b)


def test_drop_conditioning_probability():
    cfg = tiny_config(num_classes=5)
    cond = {"label": jnp.full((4000,), 2, jnp.int32)}
    key = jax.random.key(0)
    np.testing.assert_array_equal(drop_conditioning(cond, key, 0.0, cfg)["label"], cond["label"])
    np.testing.assert_array_equal(drop_conditioning(cond, key, 1.0, cfg)["label"], 5)
    frac = float((drop_conditioning(cond, key, 0.25, cfg)["label"] == 5).mean())
    assert 0.22 < frac < 0.28


def test_builtin_text_encoder_ignores_padding():
    cfg = tiny_config(text_conditioning="builtin")
    model = build(cfg)
    encode = nnx.jit(lambda m, tokens: m.cond_embed.text_encoder(tokens))
    captions = ["a red ball", "two squares"]
    short, short_mask = encode(model, jnp.asarray(tokenize(captions, 12)))
    long, long_mask = encode(model, jnp.asarray(tokenize(captions, 20)))
    np.testing.assert_array_equal(long_mask[:, :12], short_mask)
    assert not bool(long_mask[:, 12:].any())
    valid = np.asarray(short_mask)
    np.testing.assert_allclose(np.asarray(long)[:, :12][valid], np.asarray(short)[valid], atol=1e-5)


def test_builtin_text_conditioning_and_null_caption():
    cfg = tiny_config(text_conditioning="builtin")
    model = build(cfg)
    cond = {"text_tokens": jnp.asarray(tokenize(["a red ball", "two squares"], 12))}
    null = null_conditioning(cond, cfg)
    assert int(null["text_tokens"].max()) == 0 and null["text_tokens"].shape == cond["text_tokens"].shape
    a, n = apply(model, Z, LOGSNR, cond), apply(model, Z, LOGSNR, null)
    assert not _close(a, n, 1e-3)
    other = {"text_tokens": jnp.asarray(tokenize(["a red ball", "one circle"], 12))}
    diff = np.abs(np.asarray(apply(model, Z, LOGSNR, other) - a)).max(axis=(1, 2, 3, 4))
    assert diff[0] == 0.0 and diff[1] > 1e-4  # captions act per example
    assert _close(apply(model, Z, LOGSNR, drop_conditioning(cond, jax.random.key(0), 1.0, cfg)), n, 0.0)


def test_precomputed_text_mask_hides_embeddings():
    cfg = tiny_config(text_conditioning="precomputed")
    model = build(cfg)
    emb = jax.random.normal(jax.random.key(1), (2, 6, cfg.text_embed_dim))
    mask = jnp.array([[True] * 4 + [False] * 2] * 2)
    cond = {"text_embeddings": emb, "text_mask": mask}
    a = apply(model, Z, LOGSNR, cond)
    changed_hidden = {"text_embeddings": emb.at[:, 4:].set(9.0), "text_mask": mask}
    assert _close(a, apply(model, Z, LOGSNR, changed_hidden))
    assert not _close(a, apply(model, Z, LOGSNR, {"text_embeddings": emb.at[:, 0].set(9.0), "text_mask": mask}), 1e-4)
    null = null_conditioning(cond, cfg)
    assert not bool(null["text_mask"].any())
    n = apply(model, Z, LOGSNR, null)
    assert _close(n, apply(model, Z, LOGSNR, {"text_embeddings": emb * 3.0, "text_mask": null["text_mask"]}))


def test_known_frames_enter_only_where_the_mask_is_one():
    cfg = tiny_config(frame_conditioning=True)
    model = build(cfg)
    known = video(1, Z.shape)
    mask = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    cond = {"known_frames": known, "known_mask": mask}
    a = apply(model, Z, LOGSNR, cond)
    assert _close(a, apply(model, Z, LOGSNR, {"known_frames": known.at[:, 1].set(5.0), "known_mask": mask}))
    assert not _close(a, apply(model, Z, LOGSNR, {"known_frames": known.at[:, 0].set(5.0), "known_mask": mask}), 1e-4)
    assert null_conditioning(cond, cfg)["known_frames"] is known  # observations are not guidance conditioning


def test_cond_keys_are_checked():
    model = build(tiny_config(num_classes=5))
    with pytest.raises(ValueError, match=r"cond lacks \['label'\].*num_classes=5"):
        model(Z, LOGSNR)
    with pytest.raises(ValueError, match="text_tokens"):
        model(Z, LOGSNR, {"label": jnp.zeros(2, jnp.int32), "text_tokens": jnp.zeros((2, 3), jnp.int32)})


_KNOWN = {"known_frames": Z, "known_mask": jnp.ones((2, 2))}
_EMB = jnp.ones((2, 5, 16))


@pytest.mark.parametrize(
    "overrides, cond, key",
    [
        (dict(num_classes=5), {"label": jnp.zeros((2, 1), jnp.int32)}, "label"),  # a trailing axis kept
        (dict(num_classes=5), {"label": 3}, "label"),  # a Python int: one class for all would need [B]
        (dict(text_conditioning="builtin"), {"text_tokens": jnp.zeros((2,), jnp.int32)}, "text_tokens"),
        (dict(text_conditioning="builtin"), {"text_tokens": jnp.zeros((1, 7), jnp.int32)}, "text_tokens"),
        (dict(text_conditioning="precomputed"), {"text_embeddings": jnp.ones((2, 5, 8))}, "text_embeddings"),
        (dict(text_conditioning="precomputed"), {"text_embeddings": jnp.ones((2, 16))}, "text_embeddings"),
        (
            dict(text_conditioning="precomputed"),
            {"text_embeddings": _EMB, "text_mask": jnp.ones((2, 6), bool)},
            "text_mask",
        ),
        (dict(frame_conditioning=True), {**_KNOWN, "known_frames": Z[:, :1]}, "known_frames"),
        (dict(frame_conditioning=True), {**_KNOWN, "known_mask": jnp.ones((2,))}, "known_mask"),  # one flag per clip
    ],
)
def test_cond_shapes_are_checked(overrides, cond, key):
    """A cond entry of the wrong shape is refused up front, naming its key and the expected shape."""
    model = build(tiny_config(**overrides))
    with pytest.raises(ValueError, match=rf"cond\['{key}'\] must be \["):
        model(Z, LOGSNR, cond)


def test_bfloat16_compute_stays_close_to_float32():
    f32 = build(tiny_config(num_classes=5))
    bf16 = build(tiny_config(num_classes=5, dtype="bfloat16"), seed=9)
    state, report = load_matching_params(nnx.state(bf16), nnx.state(f32))
    assert not report.missing and not report.mismatched
    nnx.update(bf16, state)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    cond = {"label": jnp.array([0, 4], jnp.int32)}
    ref = np.asarray(apply(f32, Z, LOGSNR, cond))
    low = apply(bf16, Z, LOGSNR, cond)
    assert low.dtype == jnp.float32
    rel = np.linalg.norm(np.asarray(low) - ref) / np.linalg.norm(ref)
    assert 1e-4 < rel < 0.03, rel  # stated tolerance: 3% relative L2 error (and bf16 really is in use)


MICRO = dict(channel_mults=(1,), attn_resolutions=(RES,), dropout=0.3)  # one level: cheap to compile


def test_dropout_uses_call_time_rngs():
    model = build(tiny_config(**MICRO))
    key = jax.random.key(4)
    eval_out = apply(model, Z, LOGSNR)
    t1 = apply(model, Z, LOGSNR, train=True, rngs=key)
    t2 = apply(model, Z, LOGSNR, train=True, rngs=key)
    t3 = apply(model, Z, LOGSNR, train=True, rngs=jax.random.key(5))
    assert _close(t1, t2, 0.0) and not _close(t1, eval_out, 1e-4) and not _close(t1, t3, 1e-4)
    with pytest.raises(ValueError, match="needs rngs"):
        model(Z, LOGSNR, train=True)


def test_remat_forward_matches_plain():
    plain, remat = build(tiny_config(**MICRO)), build(tiny_config(remat_policy="full", **MICRO))
    key = jax.random.key(4)
    assert _close(apply(plain, Z, LOGSNR, train=True, rngs=key), apply(remat, Z, LOGSNR, train=True, rngs=key), 1e-6)


def _count_equations(jaxpr, primitive) -> int:
    """Equations of ``primitive`` in ``jaxpr`` and every jaxpr nested in its equations' parameters."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive == primitive
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    count += _count_equations(sub.jaxpr, primitive)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    count += _count_equations(sub, primitive)
    return count


REMAT = jax.make_jaxpr(jax.checkpoint(jnp.sin))(1.0).eqns[0].primitive  # the primitive jax.checkpoint binds


@pytest.mark.parametrize("policy", ["none", "full", "dots"])
def test_remat_wraps_every_stage_in_the_gradient(policy):
    """Each Stage (ResBlock + attention) is one ``checkpoint`` (remat) equation of the traced gradient, and none is
    there without remat: the forward and gradient checks above would pass just as well if remat did nothing."""
    model = build(tiny_config(remat_policy=policy, **MICRO))
    stages = sum(isinstance(m, Stage) for _, m in nnx.iter_graph(model))
    assert stages == 5  # MICRO: one down stage, two middle stages, two up stages
    graphdef, state = nnx.split(model)

    def loss(state):
        return jnp.mean(nnx.merge(graphdef, state)(Z, LOGSNR, train=True, rngs=jax.random.key(4)) ** 2)

    jaxpr = jax.make_jaxpr(jax.grad(loss))(state).jaxpr
    assert _count_equations(jaxpr, REMAT) == (0 if policy == "none" else stages)


@pytest.mark.slow
def test_remat_gives_the_same_gradients():
    """Two backward compilations (~20 s of CPU): slow."""
    plain, remat = build(tiny_config(**MICRO)), build(tiny_config(remat_policy="dots", **MICRO))
    key = jax.random.key(4)

    def loss(m, rngs):
        return jnp.mean(m(Z, LOGSNR, train=True, rngs=rngs) ** 2)

    grad = nnx.jit(nnx.value_and_grad(loss))
    l_plain, g_plain = grad(plain, nnx.Rngs(dropout=key))  # an nnx.Rngs, as the trainer passes
    l_remat, g_remat = grad(remat, nnx.Rngs(dropout=key))
    np.testing.assert_allclose(float(l_plain), float(l_remat), rtol=1e-6)
    leaves_plain, leaves_remat = jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)
    assert len(leaves_plain) == len(leaves_remat) > 20
    for a, b in zip(leaves_plain, leaves_remat, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)


def test_noise_level_mlp_depth():
    """``emb_mlp_layers`` dense layers with SiLU between them embed the noise level (VDM's UCF-101 model: 4); two
    layers keep the parameter tree of before, and the embedding equals the MLP written out by hand."""
    from vdm_jax.models.conditioning import ConditionEmbedding
    from vdm_jax.models.layers import sinusoidal_embedding

    def names(module):
        return {"/".join(map(str, path)) for path, _ in nnx.state(module, nnx.Param).flat_state()}

    two = ConditionEmbedding(tiny_config(), rngs=nnx.Rngs(0))
    four = ConditionEmbedding(tiny_config(emb_mlp_layers=4), rngs=nnx.Rngs(0))
    assert names(two) == {"noise_in/kernel", "noise_in/bias", "noise_out/kernel", "noise_out/bias"}
    assert names(four) - names(two) == {f"noise_hidden/{i}/{p}" for i in (0, 1) for p in ("kernel", "bias")}

    def layer(d, h):
        return h @ np.asarray(d.kernel[...]) + np.asarray(d.bias[...])

    silu = lambda h: h / (1.0 + np.exp(-h))
    logsnr = jnp.array([-3.0, 0.5, 7.0])
    h = silu(layer(four.noise_in, np.asarray(sinusoidal_embedding(logsnr, 32))))
    for d in four.noise_hidden:
        h = silu(layer(d, h))
    expected = layer(four.noise_out, h)
    emb, _, _ = four(logsnr, None)
    np.testing.assert_allclose(emb, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="emb_mlp_layers"):
        tiny_config(emb_mlp_layers=1)
