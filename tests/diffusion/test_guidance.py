"""Classifier-free guidance and sampling with known frames (replacement, reconstruction guidance)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffusion_oracles import GaussianOracle

from vdm_jax.diffusion import (
    DiffusionConfig,
    SamplerConfig,
    classifier_free_guidance,
    diffuse,
    frame_guidance,
    from_x,
    predict_eps,
    sample,
)

SHAPE = (6, 2, 3, 3, 2)


def class_model(calls, param="v"):
    """A toy conditional model with output `param`: x̂ = tanh(z) + 0.3·label (label 2 = null), counting its calls
    and batch sizes."""

    def fn(z, logsnr, cond):
        calls.append(z.shape[0])
        shift = 0.3 * cond["label"].astype(jnp.float32).reshape(-1, 1, 1, 1, 1)
        return from_x(jnp.tanh(z) + shift, z, logsnr, param)

    return fn


def test_cfg_zero_weight_is_the_conditional_model_and_one_batched_call():
    calls = []
    fn = class_model(calls)
    z = jax.random.normal(jax.random.key(0), SHAPE)
    lam = jnp.linspace(-4.0, 4.0, 6)
    cond = {"label": jnp.array([0, 1, 0, 1, 1, 0])}
    out = classifier_free_guidance(fn, 0.0, {"label": 2})(z, lam, cond)
    np.testing.assert_array_equal(out, fn(z, lam, cond))
    assert calls == [12, 6]  # the guided call evaluated cond and null in one batch of 2B


@pytest.mark.parametrize("param", ["eps", "v", "x"])
def test_cfg_is_the_epsilon_space_combination(param):
    """Combining the raw outputs equals the combination of eq. 6 in ε space, whatever the network predicts."""
    fn = class_model([], param)
    z = jax.random.normal(jax.random.key(1), SHAPE)
    lam = jnp.linspace(-4.0, 4.0, 6)
    cond, null = {"label": jnp.array([0, 1, 0, 1, 1, 0])}, {"label": jnp.full((6,), 2)}
    w = 3.0
    out = classifier_free_guidance(fn, w, {"label": 2})(z, lam, cond)
    eps_c, eps_u = (predict_eps(fn(z, lam, c), z, lam, param) for c in (cond, null))
    np.testing.assert_allclose(predict_eps(out, z, lam, param), (1 + w) * eps_c - w * eps_u, rtol=1e-4, atol=1e-4)
    # Keys of cond that null_cond does not name (known frames of a frame-conditioned model) are shared.
    seen = []
    classifier_free_guidance(lambda z, lam_, c: seen.append(c) or z, w, {"label": 2})(
        z, lam, {**cond, "known": jnp.ones((6, 2))}
    )
    np.testing.assert_array_equal(seen[0]["known"], jnp.ones((12, 2)))
    np.testing.assert_array_equal(seen[0]["label"][6:], 2)


def test_cfg_needs_cond_and_null_cond():
    scfg = SamplerConfig(guidance_weight=1.0)
    fn = class_model([])
    with pytest.raises(ValueError, match="needs null_cond"):
        sample(fn, SHAPE, jax.random.key(0), DiffusionConfig(), scfg, resolution=3, cond={"label": jnp.zeros(6, int)})
    with pytest.raises(ValueError, match="null_cond has keys"):
        classifier_free_guidance(fn, 1.0, {"text": 0})(jnp.zeros(SHAPE), jnp.zeros(6), {"label": jnp.zeros(6, int)})


def frame_model(z, logsnr, cond):
    """A toy frame-conditioned v-model: x̂ = tanh(z) + 0.5·mask·known_frames + 0.2·label."""
    m = cond["known_mask"][:, :, None, None, None]
    label = cond["label"].astype(jnp.float32).reshape(-1, 1, 1, 1, 1)
    return from_x(jnp.tanh(z) + 0.5 * m * cond["known_frames"] + 0.2 * label, z, logsnr, "v")


def test_frame_guidance_is_cfg_against_no_known_frame_with_other_keys_shared():
    z = jax.random.normal(jax.random.key(2), SHAPE)
    lam = jnp.linspace(-3.0, 3.0, 6)
    frames = jax.random.normal(jax.random.key(3), SHAPE)
    mask = jnp.array([[1.0, 0.0]] * 6)
    cond = {"known_frames": frames * mask[:, :, None, None, None], "known_mask": mask, "label": jnp.arange(6) % 2}
    none_known = {**cond, "known_frames": jnp.zeros(SHAPE), "known_mask": jnp.zeros((6, 2))}
    w = 2.0
    out = frame_guidance(frame_model, w, cond)(z, lam, cond)
    eps_c, eps_u = (predict_eps(frame_model(z, lam, c), z, lam, "v") for c in (cond, none_known))
    np.testing.assert_allclose(predict_eps(out, z, lam, "v"), (1 + w) * eps_c - w * eps_u, rtol=1e-4, atol=1e-4)
    # In x-space the guided model moves the known-frame term by (1 + w): 0.5·(1 + w)·x^a; the label term is shared.
    x_hat = jnp.tanh(z) + 0.5 * (1 + w) * cond["known_frames"] + 0.2 * (jnp.arange(6) % 2).reshape(-1, 1, 1, 1, 1)
    np.testing.assert_allclose(from_x(x_hat, z, lam, "v"), out, rtol=1e-4, atol=1e-4)


def test_frame_guidance_needs_a_frame_conditioned_model():
    scfg = SamplerConfig(frame_guidance_weight=1.0)
    with pytest.raises(ValueError, match="frame_conditioning=True"):
        sample(class_model([]), SHAPE, jax.random.key(0), DiffusionConfig(), scfg, resolution=3, cond=None)
    with pytest.raises(ValueError, match=r"\['known_mask'\]"):
        frame_guidance(frame_model, 1.0, {"known_frames": jnp.zeros(SHAPE)})
    with pytest.raises(ValueError, match="frame_guidance_weight=-1.0 must be >= 0"):
        SamplerConfig(frame_guidance_weight=-1.0)


# ---------------------------------------------------------------- known frames on jointly Gaussian frames
T, RHO, XA, N = 3, 0.9, 1.0, 4000
COV = RHO ** np.abs(np.arange(T)[:, None] - np.arange(T)[None])  # AR(1) frames, unit variance
ORACLE = GaussianOracle(np.zeros(T), COV, (T, 1, 1, 1))
TRUE_MEAN = COV[1:, 0] * XA  # p(x^b | x^a): mean Σ_ba Σ_aa^{-1} x^a, variance Σ_bb − Σ_ba Σ_aa^{-1} Σ_ab
TRUE_VAR = np.diag(COV[1:, 1:] - np.outer(COV[1:, 0], COV[0, 1:]))


def exact_recon_weight(logsnr):
    """w_r(λ) = (σ²/α²) / Var(x^a | z_t): the weight that makes reconstruction guidance exact for this Gaussian."""
    post = jnp.linalg.inv(
        jnp.linalg.inv(jnp.asarray(COV, jnp.float32))[None] + jnp.exp(logsnr)[:, None, None] * jnp.eye(T)[None]
    )
    return jnp.exp(-logsnr) / post[:, 0, 0]


def conditional_draw(scfg, weight_fn=None):
    known = {"frames": jnp.zeros((N, T, 1, 1, 1)).at[:, 0].set(XA), "mask": jnp.zeros((N, T)).at[:, 0].set(1.0)}
    fn = jax.jit(
        lambda k: sample(
            ORACLE.denoise_fn("v"),
            (N, T, 1, 1, 1),
            k,
            DiffusionConfig(),
            scfg,
            resolution=32,
            known=known,
            recon_weight_fn=weight_fn,
        )
    )
    x = np.asarray(fn(jax.random.key(7)), np.float64).reshape(N, T)
    np.testing.assert_array_equal(x[:, 0], XA)  # the known frame comes back exactly
    return x[:, 1:].mean(0), x[:, 1:].var(0, ddof=1)


@pytest.mark.parametrize("name, steps", [("ancestral", 256), ("pc", 256)])
def test_reconstruction_guidance_with_exact_weight_gives_the_true_conditional(name, steps):
    mean, var = conditional_draw(SamplerConfig(name=name, num_steps=steps, clip_x=False), exact_recon_weight)
    assert np.all(np.abs(mean - TRUE_MEAN) < 3.5 * np.sqrt(TRUE_VAR / N)), (mean, TRUE_MEAN)
    assert np.all(np.abs(var - TRUE_VAR) < 3.5 * TRUE_VAR * np.sqrt(2 / (N - 1))), (var, TRUE_VAR)


def test_reconstruction_guidance_beats_replacement():
    """The paper's constant w_r (Var(x^a | z_t) taken as σ²/α²) is not exact, but far closer than replacement."""
    base = dict(name="ancestral", num_steps=256, clip_x=False)
    errors = {}
    for label, w_r in [("replacement", 0.0), ("reconstruction", 2.0)]:
        mean, var = conditional_draw(SamplerConfig(recon_guidance_weight=w_r, **base))
        errors[label] = (np.abs(mean - TRUE_MEAN).max(), np.abs(var / TRUE_VAR - 1).max())
    assert errors["replacement"][0] > 0.3  # replacement misses the conditional mean badly (0.55 vs 0.9)
    assert errors["reconstruction"][0] < 0.5 * errors["replacement"][0], errors
    assert errors["reconstruction"][1] < 0.5 * errors["replacement"][1], errors


def test_replacement_noises_known_frames_and_leaves_others():
    from vdm_jax.diffusion import KnownFrames, replace_known

    z = jax.random.normal(jax.random.key(0), (2, 3, 1, 1, 1))
    known = KnownFrames(jnp.full((2, 3, 1, 1, 1), 0.5), jnp.array([[1.0, 0, 0], [0, 0, 1.0]]))
    lam = jnp.array([1.0, -2.0])
    out = replace_known(z, lam, known, jax.random.key(1))
    eps = jax.random.normal(jax.random.key(1), z.shape)
    want = jnp.where(known.mask[..., None, None, None] > 0, diffuse(known.frames, lam, eps), z)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    with pytest.raises(ValueError, match="do not fit the sample shape"):
        sample(
            lambda z, lam_, c: z,
            (2, 4, 1, 1, 1),
            jax.random.key(0),
            DiffusionConfig(),
            SamplerConfig(),
            resolution=1,
            known={"frames": known.frames, "mask": known.mask},
        )
