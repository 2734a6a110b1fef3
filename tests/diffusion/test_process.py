"""Closed forms of the noise process: α² + σ² = 1, schedules, the posterior q(z_s | z_t, x), parameterizations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.diffusion import (
    DiffusionConfig,
    Schedule,
    alpha_sigma,
    diffuse,
    discretize_time,
    dynamic_threshold,
    from_x,
    from_x_eps,
    make_schedule,
    posterior_mean_log_var,
    predict_eps,
    predict_v,
    predict_x,
    transition_log_var,
)


def test_alpha_sq_plus_sigma_sq_is_one_and_tails_are_exact():
    lam = jnp.linspace(-30.0, 30.0, 601)
    a, s = alpha_sigma(lam)
    np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=1e-6)
    np.testing.assert_allclose(a**2 / s**2, np.exp(np.asarray(lam, np.float64)), rtol=1e-4)
    # No 1 − α² cancellation: σ² at λ = 20 is e^-20 to float32 precision, not 0.
    _, s20 = alpha_sigma(jnp.float32(20.0))
    np.testing.assert_allclose(float(s20) ** 2, 1.0 / (1.0 + np.exp(20.0)), rtol=1e-5)


@pytest.mark.parametrize(
    "schedule, resolution", [("cosine", 32), ("shifted_cosine", 32), ("shifted_cosine", 128), ("linear", 32)]
)
def test_schedule_endpoints_monotone_and_inverse(schedule, resolution):
    sch = make_schedule(DiffusionConfig(schedule=schedule), resolution)
    np.testing.assert_allclose(sch(jnp.array([0.0, 1.0])), [20.0, -20.0], rtol=1e-6)
    t = jnp.linspace(0.0, 1.0, 10001)
    lam = sch(t)
    assert bool(jnp.all(jnp.diff(lam) < 0)), "λ(t) must decrease strictly"
    np.testing.assert_allclose(sch.time(lam[1:-1]), t[1:-1], atol=2e-4)


def test_cosine_matches_float64_formula_and_shift():
    t = np.linspace(0.0, 1.0, 1001)
    b = np.arctan(np.exp(-10.0))
    a = np.arctan(np.exp(10.0)) - b
    np.testing.assert_allclose(Schedule("cosine", -20.0, 20.0)(t), -2 * np.log(np.tan(a * t + b)), atol=1e-4)
    # Away from the clipped ends the shifted cosine is the cosine plus 2 log(64 / 32).
    base = make_schedule(DiffusionConfig(schedule="cosine", logsnr_min=-40, logsnr_max=40), 32)
    shifted = make_schedule(DiffusionConfig(schedule="shifted_cosine", logsnr_min=-40, logsnr_max=40), 32)
    mid = jnp.linspace(0.2, 0.8, 7)
    np.testing.assert_allclose(shifted(mid) - base(mid), 2 * np.log(2.0), atol=1e-3)
    with pytest.raises(ValueError, match="resolution must be a positive int"):
        make_schedule(DiffusionConfig(), 0)


def test_discrete_time_grid():
    u = jnp.array([0.0, 0.0999, 0.1, 0.999])
    np.testing.assert_allclose(discretize_time(u, 10), [0.1, 0.1, 0.2, 1.0], rtol=1e-6)
    assert discretize_time(u, 0) is u


def test_posterior_matches_bayes_in_float64():
    """q(z_s | z_t, x) ∝ q(z_t | z_s) q(z_s | x): product of two Gaussians in z_s, computed directly in float64."""
    rng = np.random.default_rng(0)
    lam_s = np.array([3.0, 0.5, -2.0, 12.0])
    lam_t = lam_s - np.array([0.1, 2.0, 5.0, 30.0])
    x, z_t = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    a_s, s2_s, a_t, s2_t = np.sqrt(sig(lam_s)), sig(-lam_s), np.sqrt(sig(lam_t)), sig(-lam_t)
    a_ts = a_t / a_s
    s2_ts = s2_t - a_ts**2 * s2_s
    prec = 1 / s2_s + a_ts**2 / s2_ts
    mean = ((a_s / s2_s)[:, None] * x + (a_ts / s2_ts)[:, None] * z_t) / prec[:, None]
    got_mean, got_log_var = posterior_mean_log_var(jnp.asarray(z_t), jnp.asarray(x), lam_t, lam_s)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.exp(got_log_var[:, 0]), 1 / prec, rtol=1e-4)
    np.testing.assert_allclose(np.exp(transition_log_var(lam_t, lam_s)), s2_ts, rtol=1e-4)


def test_monte_carlo_moments_of_forward_process():
    n, lam = 200_000, jnp.array([-3.0, 0.0, 4.0])
    x = jnp.array([0.7, -1.2, 0.3])
    eps = jax.random.normal(jax.random.key(0), (3, n))
    z = diffuse(jnp.broadcast_to(x[:, None], (3, n)), lam, eps)
    a, s = alpha_sigma(lam)
    se_mean = s / np.sqrt(n)
    assert np.all(np.abs(z.mean(1) - a * x) < 4 * se_mean)
    se_var = s**2 * np.sqrt(2 / n)
    assert np.all(np.abs(z.var(1) - s**2) < 4 * se_var)


@pytest.mark.parametrize("param", ["eps", "v", "x"])
def test_parameterization_round_trips(param):
    k1, k2 = jax.random.split(jax.random.key(1))
    x = jax.random.normal(k1, (4, 2, 3, 3, 2))
    eps = jax.random.normal(k2, x.shape)
    lam = jnp.array([-6.0, -1.0, 2.0, 7.0])
    z = diffuse(x, lam, eps)
    target = from_x_eps(x, eps, lam, param)  # what a perfect network outputs
    np.testing.assert_allclose(predict_x(target, z, lam, param), x, atol=2e-3)
    np.testing.assert_allclose(predict_eps(target, z, lam, param), eps, atol=2e-3)
    a, s = alpha_sigma(lam[:, None, None, None, None])
    np.testing.assert_allclose(predict_v(target, z, lam, param), a * eps - s * x, atol=2e-3)
    np.testing.assert_allclose(from_x(predict_x(target, z, lam, param), z, lam, param), target, atol=2e-3)


def test_dynamic_threshold():
    x = jnp.stack([jnp.linspace(-0.5, 0.5, 101), jnp.linspace(-3.0, 3.0, 101)])
    out = dynamic_threshold(x, 0.9)
    np.testing.assert_allclose(out[0], x[0])  # s = max(1, quantile) = 1: unchanged inside [−1, 1]
    s = float(jnp.quantile(jnp.abs(x[1]), 0.9))
    np.testing.assert_allclose(out[1], jnp.clip(x[1], -s, s) / s, rtol=1e-6)
    assert float(jnp.max(jnp.abs(out))) <= 1.0
