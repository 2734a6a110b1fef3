"""The training loss against its analytic value for an exact (oracle) denoiser, and its plumbing (masks, t-sampler);
the diffusion NLL against −log p of Gaussian data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffusion_oracles import GaussianOracle

from vdm_jax.diffusion import DiffusionConfig, diffusion_loss, diffusion_nll, make_schedule, sample_times, x_mse_weight

SHAPE = (2, 1, 1, 2)  # T = 2 frames of 2 features: F = 4
MEAN = np.array([0.3, -0.5, 1.0, 0.0])
STD = np.array([1.0, 0.5, 0.25, 1.5])
ORACLE = GaussianOracle(MEAN, np.diag(STD**2), SHAPE)
WRONG = GaussianOracle(MEAN + 0.3, np.diag((1.5 * STD) ** 2), SHAPE)


def paper_weight(weighting: str, lam: np.ndarray, gamma: float) -> np.ndarray:
    """w(λ) on the x-MSE, written out from the papers (not the package's table): ‖ε − ε̂‖² = SNR ‖x − x̂‖²,
    ‖v − v̂‖² = (1 + SNR) ‖x − x̂‖², truncated SNR max(SNR, 1), min-SNR-γ min(SNR, γ)."""
    snr = np.exp(lam)
    return {
        "eps_mse": snr,
        "v_mse": 1.0 + snr,
        "x_mse": np.ones_like(snr),
        "truncated_snr": np.maximum(snr, 1.0),
        "min_snr": np.minimum(snr, gamma),
    }[weighting]


def analytic_loss(cfg: DiffusionConfig, oracle: GaussianOracle, resolution: int = 32) -> float:
    """E_t[w(λ_t) tr Cov(x | z_t) / F]: the irreducible loss (the optimal x̂ errs by the posterior variance)."""
    t = (np.arange(200_000) + 0.5) / 200_000
    lam = np.asarray(make_schedule(cfg, resolution)(t), np.float64)
    return float(np.mean(paper_weight(cfg.loss_weighting, lam, cfg.min_snr_gamma) * oracle.posterior_var_mean(lam)))


@pytest.mark.parametrize("weighting", ["eps_mse", "v_mse", "x_mse", "truncated_snr", "min_snr"])
def test_x_mse_weight_is_the_papers(weighting):
    lam = np.linspace(-12.0, 12.0, 97)
    got = np.asarray(x_mse_weight(weighting, jnp.asarray(lam, jnp.float32), 5.0), np.float64)
    np.testing.assert_allclose(got, paper_weight(weighting, lam, 5.0), rtol=1e-5)


def batch_losses(cfg, num_batches=48, batch=256, seed=0):
    """Per-batch losses of the oracle and of the wrong denoiser, on the same data and keys: [2, num_batches]."""
    param = cfg.parameterization

    def one(key):
        kx, kl = jax.random.split(key)
        x = ORACLE.draw(kx, batch)
        return jnp.stack([diffusion_loss(o.denoise_fn(param), x, kl, cfg, resolution=32)[0] for o in (ORACLE, WRONG)])

    keys = jax.random.split(jax.random.key(seed), num_batches)
    return np.asarray(jax.jit(jax.vmap(one))(keys), np.float64).T


@pytest.mark.parametrize(
    "param, weighting",
    [("v", "v_mse"), ("eps", "eps_mse"), ("eps", "x_mse"), ("x", "min_snr"), ("eps", "truncated_snr")],
)
def test_oracle_loss_equals_irreducible_value_and_wrong_denoiser_is_worse(param, weighting):
    cfg = DiffusionConfig(parameterization=param, loss_weighting=weighting)
    losses, wrong = batch_losses(cfg)
    expected = analytic_loss(cfg, ORACLE)
    se = losses.std(ddof=1) / np.sqrt(len(losses))
    assert abs(losses.mean() - expected) < 3.5 * se, (losses.mean(), expected, se)
    # Same keys for both: the paired difference isolates the denoiser's excess error.
    excess = wrong - losses
    assert excess.mean() > 5 * excess.std(ddof=1) / np.sqrt(len(excess)), excess.mean()


def test_loss_mask_and_aux():
    cfg = DiffusionConfig(parameterization="v")
    x = ORACLE.draw(jax.random.key(1), 8)
    fn = ORACLE.denoise_fn("v")
    loss, aux = diffusion_loss(fn, x, jax.random.key(2), cfg, resolution=32)
    assert aux["frame_loss"].shape == (8, 2) and aux["logsnr"].shape == (8,)
    np.testing.assert_allclose(loss, aux["frame_loss"].mean(), rtol=1e-6)
    mask = jnp.array([[1, 0]] * 4 + [[1, 1]] * 4, jnp.float32)
    mloss, maux = diffusion_loss(fn, x, jax.random.key(2), cfg, resolution=32, loss_mask=mask)
    np.testing.assert_allclose(maux["frame_loss"], aux["frame_loss"] * mask, rtol=1e-6)
    np.testing.assert_allclose(mloss, jnp.sum(aux["frame_loss"] * mask) / 12.0, rtol=1e-6)
    with pytest.raises(ValueError, match="loss_mask must be"):
        diffusion_loss(fn, x, jax.random.key(2), cfg, resolution=32, loss_mask=mask[:, :1])


def test_time_samplers():
    t = np.sort(np.asarray(sample_times(jax.random.key(0), 64, low_discrepancy=True)))
    np.testing.assert_allclose(np.diff(t), 1 / 64, atol=1e-5)  # one point in each 1/B interval
    # Marginally uniform: over many keys the mean of t is 1/2 within its standard error.
    ts = jax.vmap(lambda k: sample_times(k, 4, True))(jax.random.split(jax.random.key(1), 20_000))
    assert abs(float(ts.mean()) - 0.5) < 3.5 * np.sqrt(1 / 12 / 80_000) * 2
    cfg = DiffusionConfig(timesteps=10)
    _, aux = diffusion_loss(
        ORACLE.denoise_fn("v"), ORACLE.draw(jax.random.key(3), 16), jax.random.key(4), cfg, resolution=32
    )
    np.testing.assert_allclose(aux["t"] * 10, np.round(aux["t"] * 10), atol=1e-5)
    assert float(aux["t"].min()) >= 0.1 - 1e-6


@pytest.mark.parametrize("param", ["v", "eps"])
@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_diffusion_nll_differences_are_log_density_differences(param, scale):
    """With the exact denoiser, E[nll(x) − nll(m)] = ½ Σ (x − m)²/s² (the integral of SNR/(1 + SNR s²)² over λ is
    1/s²; the 16-level midpoint rule in λ is within 1% of it); the wrong (wider) oracle's is visibly smaller.
    scale = 0.01 puts the data's detail at λ ≈ 8-12 (s = 0.0025-0.015, under one 8-bit level of [-1, 1]), where
    midpoints in t (|λ| < 6 with the cosine) found 0.3 of the 3.5 nats."""
    cfg = DiffusionConfig(parameterization=param)
    oracle = GaussianOracle(MEAN, np.diag((scale * STD) ** 2), SHAPE)
    wrong = GaussianOracle(MEAN + 0.3 * scale, np.diag((1.5 * scale * STD) ** 2), SHAPE)
    d = scale * np.array([1.0, -0.5, 0.5, 1.5])
    x = jnp.asarray(np.stack([MEAN, MEAN + d]).reshape(2, *SHAPE), jnp.float32)
    truth = 0.5 * np.sum(d**2 / (scale * STD) ** 2)  # 3.5 nats

    def diffs(oracle):
        fn = jax.jit(jax.vmap(lambda k: diffusion_nll(oracle.denoise_fn(param), x, k, cfg, resolution=32)))
        nll = np.asarray(fn(jax.random.split(jax.random.key(4), 4096)), np.float64)
        return nll[:, 1] - nll[:, 0]

    got = diffs(oracle)
    se = got.std() / np.sqrt(len(got))
    assert abs(got.mean() - truth) < 3.5 * se + 0.01 * truth, (got.mean(), truth, se)
    assert diffs(wrong).mean() < 0.7 * truth


def test_diffusion_nll_counts_only_masked_frames():
    """Frames are independent under this oracle: with frame 1 masked out, changing it leaves the NLL unchanged."""
    cfg = DiffusionConfig()
    x = jnp.asarray(MEAN.reshape(1, *SHAPE), jnp.float32)
    moved = x.at[:, 1].add(2.0)
    mask = jnp.array([[1.0, 0.0]])
    nll = lambda v, m: diffusion_nll(ORACLE.denoise_fn("v"), v, jax.random.key(0), cfg, resolution=32, frame_mask=m)  # noqa: E731
    np.testing.assert_allclose(nll(moved, mask), nll(x, mask), rtol=1e-6)
    assert float(nll(moved, None)[0]) > float(nll(x, None)[0]) + 1.0
    with pytest.raises(ValueError, match="frame_mask"):
        nll(x, jnp.ones((1, 3)))
