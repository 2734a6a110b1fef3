"""Fréchet distance against closed forms; FD(x, x) = 0; symmetry; robustness on singular covariances."""

import numpy as np
import pytest
from scipy import linalg

from vdm_jax.evaluation.fvd import frechet_distance, fvd_from_features, sqrtm_psd


def random_spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d + (0.0 if rank else 0.1 * np.eye(d))


def test_diagonal_gaussians_closed_form():
    mu1, mu2 = np.array([1.0, -2.0, 0.5]), np.array([0.0, 1.0, 0.5])
    var1, var2 = np.array([4.0, 1.0, 0.25]), np.array([1.0, 9.0, 0.25])
    # |mu1 - mu2|^2 + sum (sqrt(var1) - sqrt(var2))^2 = (1 + 9 + 0) + (1 + 4 + 0) = 15
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(15.0, rel=1e-12)


def test_non_commuting_2x2_closed_form():
    # For 2x2 PSD A, B: tr sqrt(AB) = sqrt(tr(AB) + 2 sqrt(det A det B)) (AB has the eigenvalues of A^1/2 B A^1/2).
    a = np.array([[2.0, 0.7], [0.7, 1.0]])
    b = np.array([[0.5, -0.3], [-0.3, 3.0]])
    cross = np.sqrt(np.trace(a @ b) + 2.0 * np.sqrt(np.linalg.det(a) * np.linalg.det(b)))
    mu1, mu2 = np.array([0.3, 0.1]), np.array([-1.0, 2.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(a) + np.trace(b) - 2.0 * cross
    assert frechet_distance(mu1, a, mu2, b) == pytest.approx(expected, rel=1e-12)


def test_matches_scipy_sqrtm_and_is_symmetric():
    rng = np.random.default_rng(0)
    d = 20
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    c1, c2 = random_spd(rng, d), random_spd(rng, d)
    reference = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2.0 * linalg.sqrtm(c1 @ c2).real)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(reference, rel=1e-9)
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(frechet_distance(mu1, c1, mu2, c2), rel=1e-10)
    np.testing.assert_allclose(sqrtm_psd(c1) @ sqrtm_psd(c1), c1, atol=1e-12)


def test_identical_sets_give_zero_even_with_singular_covariances():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((50, 400)) * 3.0 + 7.0  # N < D: rank-49 covariance
    assert fvd_from_features(features, features) == pytest.approx(0.0, abs=1e-6)
    other = rng.standard_normal((50, 400))
    value = fvd_from_features(features, other)
    assert np.isfinite(value) and value > 0
    assert fvd_from_features(other, features) == pytest.approx(value, rel=1e-9)


def test_rank_deficient_covariances_stay_real_and_finite():
    rng = np.random.default_rng(2)
    c1, c2 = random_spd(rng, 30, rank=3), random_spd(rng, 30, rank=2)
    value = frechet_distance(np.zeros(30), c1, np.ones(30), c2)
    assert isinstance(value, float) and np.isfinite(value)
    # Shifting both means by the same vector changes nothing; shifting one adds ||shift||^2.
    shift = rng.standard_normal(30)
    assert frechet_distance(shift, c1, 1.0 + shift, c2) == pytest.approx(value, rel=1e-9)
    assert frechet_distance(np.zeros(30), c1, np.zeros(30), c1) == pytest.approx(0.0, abs=1e-9)
