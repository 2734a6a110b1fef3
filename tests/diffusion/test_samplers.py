"""Every sampler, driven by an exact denoiser, reproduces the data distribution (Gaussian and a mixture of points).

Tolerances are 3.5 standard errors of the estimate (two-sided p ≈ 5e-4 per check; ~40 checks here).
For Gaussian data every sampler is a linear map of Gaussian noise, so its *exact* output variance after N discrete
steps follows from a scalar recursion (`discrete_variance`, written independently in float64 numpy). The samplers'
discretisation bias is real and large enough to matter at these step counts (DDIM at 50 steps: −5% to −6% variance
for this data; the per-step shrink is cos(Δθ) with α = cos θ), so the sampled variance is compared with the exact
discrete variance within sampling error, and that in turn with the data variance within the discretisation budget.
"""

import jax
import numpy as np
import pytest
from diffusion_oracles import GaussianOracle, MixtureOracle

from vdm_jax.diffusion import DiffusionConfig, SamplerConfig, num_function_evals, sample

N = 4000
Z = 3.5
EVENT = (1, 1, 1, 3)
G_MEAN, G_STD = np.array([0.5, -1.0, 0.0]), np.array([1.0, 0.5, 2.0])
GAUSS = GaussianOracle(G_MEAN, np.diag(G_STD**2), EVENT)
MIX = MixtureOracle(np.array([[1.0, -1.0, 0.5], [-1.0, 0.5, 0.0], [0.0, 1.5, -1.5]]), np.array([0.5, 0.3, 0.2]), EVENT)
CASES = {  # the brief's step counts
    "ancestral": SamplerConfig(name="ancestral", num_steps=256, clip_x=False),
    "ddim": SamplerConfig(name="ddim", num_steps=50, clip_x=False),
    "ddim_eta1": SamplerConfig(name="ddim", num_steps=256, eta=1.0, clip_x=False),  # stochastic: ancestral's steps
    "pc": SamplerConfig(name="pc", num_steps=128, clip_x=False),
    "dpm_solver": SamplerConfig(name="dpm_solver", num_steps=20, clip_x=False),
}


def draw(oracle, scfg, param="v", seed=1, n=N):
    dcfg = DiffusionConfig(parameterization=param)
    fn = jax.jit(lambda k: sample(oracle.denoise_fn(param), (n, *EVENT), k, dcfg, scfg, resolution=32))
    return np.asarray(fn(jax.random.key(seed)), np.float64).reshape(n, -1)


def _lam(t):
    b = np.arctan(np.exp(-10.0))
    return -2 * np.log(np.tan((np.arctan(np.exp(10.0)) - b) * t + b))


def discrete_moments(scfg: SamplerConfig, s2: float, start_time: float = 1.0, offset: float = 0.0) -> tuple:
    """Exact (E[x] − m, Var(x)) of the sampler for x ~ N(m, s2) and its oracle x̂ = m + c(z − α m),
    c = α s2/(α² s2 + σ²).

    Centred variables y = z − α m evolve linearly; we carry their mean and Var(y) (stochastic samplers) or the gain
    y / y_start (deterministic ones) through the updates of vdm_jax/diffusion/samplers.py, re-derived here in float64.
    start_time = t0 < 1 is SDEdit from x_start = m + offset: y_t0 = α_t0 offset + σ_t0 ε, on a grid of
    round(N t0) steps of the full grid's spacing; t0 = 1 starts from z_1 ~ N(0, I) (mean 0, variance 1).
    """
    steps = scfg.num_steps if start_time == 1.0 else max(1, round(scfg.num_steps * start_time))
    lam = _lam(np.linspace(start_time, 0.0, steps + 1))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    a, s = np.sqrt(sig(lam)), np.sqrt(sig(-lam))
    c = a * s2 / (a**2 * s2 + s**2)
    mean0, var0 = (0.0, 1.0) if start_time == 1.0 else (a[0] * offset, s[0] ** 2)
    mean, var, gain, x_prev_gain, h_prev = mean0, var0, 1.0, 0.0, 1.0
    for i in range(steps):
        t, u, last = i, i + 1, i == steps - 1
        r = np.exp(lam[t] - lam[u])
        if scfg.name in ("ancestral", "pc"):
            k = r * a[u] / a[t] + (1 - r) * a[u] * c[t]
            noise = 0.0 if last else (1 - r) * s[u] ** (2 * (1 - scfg.gamma)) * s[t] ** (2 * scfg.gamma)
            mean, var = k * mean, k**2 * var + noise
            if scfg.name == "pc" and not last:
                for _ in range(scfg.corrector_steps):  # z − ½δσ ε̂ + √δ σ ε', ε̂ = (1 − α c) y / σ
                    k = 1 - 0.5 * scfg.langevin_delta * (1 - a[u] * c[u])
                    mean, var = k * mean, k**2 * var + scfg.langevin_delta * s[u] ** 2
        elif scfg.name == "ddim":
            eta = 0.0 if last else scfg.eta
            k = a[u] * c[t] + s[u] * np.sqrt(1 - eta**2 * (1 - r)) * (1 - a[t] * c[t]) / s[t]
            mean, var = k * mean, k**2 * var + eta**2 * (1 - r) * s[u] ** 2
        else:
            h = 0.5 * (lam[u] - lam[t])
            x_gain = c[t] * gain
            d = x_gain if (i == 0 or last) else (1 + 0.5 / (h_prev / h)) * x_gain - (0.5 / (h_prev / h)) * x_prev_gain
            gain, x_prev_gain, h_prev = (s[u] / s[t]) * gain - a[u] * np.expm1(-h) * d, x_gain, h
            mean, var = gain * mean0, gain**2 * var0
    return mean / a[-1], var / a[-1] ** 2


def discrete_variance(scfg: SamplerConfig, s2: float) -> float:
    """Exact Var(x) of the N-step sampler started from z_1 ~ N(0, I) (see `discrete_moments`)."""
    return discrete_moments(scfg, s2)[1]


@pytest.mark.parametrize("name", list(CASES))
def test_gaussian_data_is_reproduced(name):
    scfg = CASES[name]
    x = draw(GAUSS, scfg)
    se_mean = G_STD / np.sqrt(N)
    assert np.all(np.abs(x.mean(0) - G_MEAN) < Z * se_mean), (x.mean(0) - G_MEAN) / se_mean
    exact = np.array([discrete_variance(scfg, v) for v in G_STD**2])
    se_var = exact * np.sqrt(2 / (N - 1))  # the sample is exactly Gaussian
    assert np.all(np.abs(x.var(0, ddof=1) - exact) < Z * se_var), (x.var(0, ddof=1) - exact) / se_var
    # The discretisation budget at the brief's step counts (it shrinks like 1/N for these samplers).
    assert np.all(np.abs(exact / G_STD**2 - 1) < 0.07), exact / G_STD**2 - 1


@pytest.mark.parametrize("name", list(CASES))
def test_mixture_of_points_is_reproduced(name):
    """Means, variances (SE from the 4th central moment) and the mass at each point (binomial SE)."""
    x = draw(MIX, CASES[name], param="eps" if name == "pc" else "x")
    mean, var, m4 = MIX.moments()
    assert np.all(np.abs(x.mean(0) - mean) < Z * np.sqrt(var / N))
    assert np.all(np.abs(x.var(0) - var) < Z * np.sqrt((m4 - var**2) / N))
    d2 = np.sum((x[:, None, :] - MIX.points[None]) ** 2, axis=-1)
    assert np.sqrt(d2.min(1).max()) < 1e-2, "samples must land on the data points"
    frac = np.bincount(d2.argmin(1), minlength=3) / N
    w = MIX.weights
    assert np.all(np.abs(frac - w) < Z * np.sqrt(w * (1 - w) / N)), frac


def test_wrong_denoiser_fails_the_same_check():
    """Negative control: an oracle for a 20% wider Gaussian is caught by the variance check at this N."""
    wrong = GaussianOracle(G_MEAN, np.diag((1.2 * G_STD) ** 2), EVENT)
    x = draw(wrong, CASES["ancestral"])
    exact = np.array([discrete_variance(CASES["ancestral"], v) for v in G_STD**2])
    assert np.all(np.abs(x.var(0, ddof=1) - exact) > Z * exact * np.sqrt(2 / (N - 1)))


def test_discrete_variance_converges_first_order():
    for name in ("ancestral", "ddim"):
        b1 = discrete_variance(SamplerConfig(name=name, num_steps=64), 1.0) - 1
        b4 = discrete_variance(SamplerConfig(name=name, num_steps=256), 1.0) - 1
        assert 3.0 < b1 / b4 < 5.0, (name, b1, b4)
    # DDIM with unit-variance data: the per-step factor is cos(Δθ), Δθ = π/(2N): Var = Π cos² ≈ 1 − π²/(4N).
    np.testing.assert_allclose(
        discrete_variance(SamplerConfig(name="ddim", num_steps=50), 1.0), np.cos(np.pi / 100) ** 100, rtol=2e-3
    )


def test_deterministic_given_key_and_progress_callback():
    scfg = SamplerConfig(name="pc", num_steps=6, corrector_steps=2)
    calls = []
    fn = jax.jit(
        lambda k: sample(
            GAUSS.denoise_fn("v"),
            (5, *EVENT),
            k,
            DiffusionConfig(),
            scfg,
            resolution=32,
            progress=lambda i, n: calls.append((i, n)),
        )
    )
    a, b = fn(jax.random.key(3)), fn(jax.random.key(3))
    jax.block_until_ready((a, b))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, fn(jax.random.key(4)))
    assert sorted(calls) == sorted([(i, 6) for i in range(1, 7)] * 3)  # three runs of six steps
    assert np.all(np.abs(np.asarray(a)) <= 1.0)  # clip_x defaults to True


def test_nfe_counts_denoiser_calls():
    assert num_function_evals(SamplerConfig(name="dpm_solver", num_steps=9)) == 9
    for scfg, want in [(SamplerConfig(name="pc", num_steps=5, corrector_steps=2), 13)]:  # no corrector after the last
        counter = {"n": 0}

        def fn(z, logsnr, cond, counter=counter):
            jax.debug.callback(lambda: counter.__setitem__("n", counter["n"] + 1))
            return z

        run = jax.jit(lambda k, fn=fn, scfg=scfg: sample(fn, (2, *EVENT), k, DiffusionConfig(), scfg, resolution=32))
        out = run(jax.random.key(0))
        jax.block_until_ready(out)
        jax.effects_barrier()
        assert counter["n"] == want == num_function_evals(scfg), (scfg.name, counter["n"])


@pytest.mark.parametrize("name", ["ancestral", "ddim", "dpm_solver"])
def test_sdedit_start_follows_the_posterior_or_the_flow(name):
    """SDEdit (`start`, `start_time`): from z_t0 ~ q(z_t0 | x_start), x_start = m + d, with the exact denoiser.

    In continuous time a stochastic sampler draws x ~ p(x | z_t0): E[x] − m = c α d, Var = s2 σ²/(α² s2 + σ²) + c² σ²
    (c = α s2/(α² s2 + σ²), all at t0); the probability-flow ODE (DDIM η = 0, DPM-Solver) maps y_t0 = z_t0 − α m by
    the gain g = sqrt(s2/(α² s2 + σ²)): E[x] − m = g α d, Var = g² σ². The samples match the exact discrete moments
    within sampling error, and those match the continuous ones within the discretisation budget.
    """
    t0, scfg = 0.6, CASES[name]
    offset = 1.5 * G_STD
    start = np.broadcast_to((G_MEAN + offset).reshape(EVENT), (N, *EVENT))
    dcfg = DiffusionConfig(parameterization="v")
    fn = jax.jit(
        lambda k: sample(GAUSS.denoise_fn("v"), (N, *EVENT), k, dcfg, scfg, resolution=32, start=start, start_time=t0)
    )
    x = np.asarray(fn(jax.random.key(3)), np.float64).reshape(N, -1)
    lam = _lam(t0)
    a2, sg2 = 1 / (1 + np.exp(-lam)), 1 / (1 + np.exp(lam))
    for j, (s2, d) in enumerate(zip(G_STD**2, offset, strict=True)):
        mean, var = discrete_moments(scfg, s2, t0, d)
        assert abs(x[:, j].mean() - G_MEAN[j] - mean) < Z * np.sqrt(var / N), (j, x[:, j].mean() - G_MEAN[j], mean)
        assert abs(x[:, j].var(ddof=1) - var) < Z * var * np.sqrt(2 / (N - 1)), (j, x[:, j].var(ddof=1), var)
        if name == "ancestral":
            c = np.sqrt(a2) * s2 / (a2 * s2 + sg2)
            mean_c, var_c = c * np.sqrt(a2) * d, s2 * sg2 / (a2 * s2 + sg2) + c**2 * sg2
        else:
            g = np.sqrt(s2 / (a2 * s2 + sg2))
            mean_c, var_c = g * np.sqrt(a2) * d, g**2 * sg2
        assert abs(mean - mean_c) < 0.05 * np.sqrt(s2) and abs(var / var_c - 1) < 0.07, (j, mean, mean_c, var, var_c)
    # The start matters: from the other side of the mean the samples move with it.
    other = jax.jit(
        lambda k: sample(
            GAUSS.denoise_fn("v"),
            (N, *EVENT),
            k,
            dcfg,
            scfg,
            resolution=32,
            start=2 * G_MEAN.reshape(EVENT) - start,
            start_time=t0,
        )
    )
    y = np.asarray(other(jax.random.key(3)), np.float64).reshape(N, -1)
    assert np.all(np.sign(y.mean(0) - G_MEAN) == -np.sign(x.mean(0) - G_MEAN))


def test_sdedit_arguments_are_checked():
    dcfg, scfg = DiffusionConfig(), CASES["ddim"]
    fn = GAUSS.denoise_fn("v")
    start = np.zeros((4, *EVENT), np.float32)
    with pytest.raises(ValueError, match="both a start x and a start_time"):
        sample(fn, (4, *EVENT), jax.random.key(0), dcfg, scfg, resolution=32, start=start)
    with pytest.raises(ValueError, match="both a start x and a start_time"):
        sample(fn, (4, *EVENT), jax.random.key(0), dcfg, scfg, resolution=32, start_time=0.5)
    with pytest.raises(ValueError, match="shape"):
        sample(fn, (8, *EVENT), jax.random.key(0), dcfg, scfg, resolution=32, start=start, start_time=0.5)
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        sample(fn, (4, *EVENT), jax.random.key(0), dcfg, scfg, resolution=32, start=start, start_time=1.5)
