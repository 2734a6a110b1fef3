"""Exact denoisers for data from known distributions: the optimal x̂(z_t) = E[x | z_t] in closed form.

Data are [N, T, H, W, C] arrays whose examples, flattened, have F = T·H·W·C features.
  - GaussianOracle: x ~ N(m, Σ). With Σ = U diag(s) Uᵀ, E[x | z] = m + U diag(α s / (α² s + σ²)) Uᵀ (z − α m)
    and Cov(x | z) = U diag(s / (1 + SNR s)) Uᵀ (Gaussian conditioning).
  - MixtureOracle: x uniform-ish on K points c_k with weights π_k. p(k | z) ∝ π_k N(z; α c_k, σ² I), so
    E[x | z] = Σ_k softmax_k(log π_k − ‖z − α c_k‖² / (2σ²)) c_k.
Each `denoise_fn(z, logsnr, cond)` returns E[x | z] converted to the requested parameterization; the conversions are
affine, so the converted value is the optimal (posterior-mean) prediction in that parameterization too.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.diffusion import from_x, log_alpha_sigma_sq


def _flat(z):
    return z.reshape(z.shape[0], -1)


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianOracle:
    mean: np.ndarray  # [F]
    cov: np.ndarray  # [F, F]
    event_shape: tuple[int, ...]  # (T, H, W, C), prod = F

    @property
    def eig(self):
        s, u = np.linalg.eigh(self.cov)
        return np.maximum(s, 0.0), u

    def draw(self, key, n: int) -> jax.Array:
        chol = np.linalg.cholesky(self.cov)
        e = jax.random.normal(key, (n, len(self.mean)))
        return (self.mean + e @ chol.T).reshape((n, *self.event_shape)).astype(jnp.float32)

    def posterior_mean(self, z, logsnr):
        s, u = self.eig
        s, u, m = jnp.asarray(s, jnp.float32), jnp.asarray(u, jnp.float32), jnp.asarray(self.mean, jnp.float32)
        la, _ = log_alpha_sigma_sq(logsnr)
        alpha = jnp.exp(0.5 * la)[:, None]
        # α s / (α² s + σ²) = s / (α (s + e^{−λ})): no cancellation at either end of λ.
        coef = s[None, :] / (alpha * (s[None, :] + jnp.exp(-logsnr)[:, None]))
        resid = (_flat(z) - alpha * m) @ u
        return (m + (coef * resid) @ u.T).reshape(z.shape)

    def posterior_var_mean(self, logsnr: np.ndarray) -> np.ndarray:
        """tr Cov(x | z_λ) / F for each λ (float64): the x-MSE of the optimal denoiser."""
        s, _ = self.eig
        snr = np.exp(np.asarray(logsnr, np.float64))[:, None]
        return np.mean(s[None, :] / (1.0 + snr * s[None, :]), axis=1)

    def denoise_fn(self, parameterization: str):
        def fn(z, logsnr, cond=None):
            return from_x(self.posterior_mean(z, logsnr), z, logsnr, parameterization)

        return fn


@dataclasses.dataclass(frozen=True, eq=False)
class MixtureOracle:
    points: np.ndarray  # [K, F]
    weights: np.ndarray  # [K], sums to 1
    event_shape: tuple[int, ...]

    def draw(self, key, n: int) -> jax.Array:
        k = jax.random.choice(key, len(self.weights), (n,), p=jnp.asarray(self.weights))
        return jnp.asarray(self.points, jnp.float32)[k].reshape((n, *self.event_shape))

    def posterior_mean(self, z, logsnr):
        c = jnp.asarray(self.points, jnp.float32)
        la, ls = log_alpha_sigma_sq(logsnr)
        alpha = jnp.exp(0.5 * la)[:, None, None]
        d2 = jnp.sum(jnp.square(_flat(z)[:, None, :] - alpha * c[None]), axis=-1)  # [B, K]
        logits = jnp.log(jnp.asarray(self.weights, jnp.float32))[None] - 0.5 * d2 * jnp.exp(-ls)[:, None]
        return (jax.nn.softmax(logits, axis=-1) @ c).reshape(z.shape)

    def moments(self):
        """(mean [F], variance [F], central 4th moment [F]) of the data distribution."""
        w = self.weights[:, None]
        mean = np.sum(w * self.points, axis=0)
        dev = self.points - mean
        return mean, np.sum(w * dev**2, axis=0), np.sum(w * dev**4, axis=0)

    def denoise_fn(self, parameterization: str):
        def fn(z, logsnr, cond=None):
            return from_x(self.posterior_mean(z, logsnr), z, logsnr, parameterization)

        return fn
