"""Temporal co-denoising: windows of a long video denoised in one batch, each frame the mean of its windows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffusion_oracles import GaussianOracle
from flax.core import FrozenDict

from vdm_jax.diffusion import from_x, window_starts, windowed_denoiser


@pytest.mark.parametrize("total, chunk, hop", [(32, 8, 4), (30, 8, 4), (8, 8, 3), (11, 4, 3), (9, 4, 4), (10, 4, 1)])
def test_windows_cover_every_frame_and_stay_inside_the_video(total, chunk, hop):
    starts = window_starts(total, chunk, hop)
    assert starts[0] == 0 and starts[-1] == total - chunk
    assert np.all(np.diff(starts) >= 1) and np.all(np.diff(starts) <= hop)  # no gap between windows
    covered = np.zeros(total, int)
    for s in starts:
        covered[s : s + chunk] += 1
    assert covered.min() >= 1


def test_window_errors_name_the_limits():
    with pytest.raises(ValueError, match="total_frames=6 must be >= the model's 8 frames"):
        window_starts(6, 8, 4)
    with pytest.raises(ValueError, match=r"hop=9 must be in 1 \.\. chunk = 8"):
        window_starts(16, 8, 9)
    with pytest.raises(ValueError, match="hop=0"):
        window_starts(16, 8, 0)


def test_each_frame_is_the_mean_of_the_windows_that_hold_it():
    """A fake network answering every frame of a window with the window's first frame: frame f gets the mean start of
    the windows holding it. L = 11, T = 4, hop 3: windows at 0, 3, 6, 7."""
    fn = windowed_denoiser(lambda z, lam, c: jnp.broadcast_to(z[:, :1], z.shape), 4, 3)
    z = jnp.broadcast_to(jnp.arange(11.0).reshape(1, 11, 1, 1, 1), (2, 11, 2, 2, 1))
    out = np.asarray(fn(z, jnp.zeros(2), None))[0, :, 0, 0, 0]
    want = [0, 0, 0, 1.5, 3, 3, 4.5, 6.5, 6.5, 6.5, 7]  # frame 3: windows 0, 3; frame 7: windows 6, 7 (never 3)
    np.testing.assert_allclose(out, want)


@pytest.mark.parametrize("param", ["eps", "v", "x"])
def test_windowed_oracle_of_independent_frames_is_the_oracle_of_the_whole_video(param):
    """Frames i.i.d. Gaussian (correlated pixels within a frame, none across frames): the exact T-frame denoiser run in
    windows is the exact L-frame one, in every parameterization."""
    hwc, chunk, total = 3, 4, 10
    a = np.random.default_rng(0).normal(size=(hwc, hwc))
    frame_cov, frame_mean = a @ a.T + 0.3 * np.eye(hwc), np.array([0.4, -0.2, 0.1])
    oracle = lambda t: GaussianOracle(  # noqa: E731
        np.tile(frame_mean, t), np.kron(np.eye(t), frame_cov), (t, 1, 1, hwc)
    )
    windowed = windowed_denoiser(oracle(chunk).denoise_fn(param), chunk, 3)
    z = jax.random.normal(jax.random.key(1), (3, total, 1, 1, hwc))
    lam = jnp.array([-5.0, 0.0, 4.0])
    np.testing.assert_allclose(windowed(z, lam, None), oracle(total).denoise_fn(param)(z, lam), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("container", [dict, FrozenDict])
def test_known_frames_are_cut_into_windows_and_other_conditioning_repeated(container):
    """Any mapping (a Flax FrozenDict too) has its per-frame entries cut, not repeated whole."""
    calls = []

    def fn(z, lam, cond):
        calls.append((z.shape, cond["known_mask"].shape, cond["label"].shape))
        # x̂ = the known frames where known, 0 elsewhere, plus the label: windows agree wherever they overlap.
        known = cond["known_frames"] * cond["known_mask"][:, :, None, None, None]
        return from_x(known + cond["label"].reshape(-1, 1, 1, 1, 1), z, lam, "v")

    total, chunk = 10, 4
    frames = jax.random.normal(jax.random.key(0), (2, total, 2, 2, 3))
    mask = jnp.zeros((2, total)).at[:, :3].set(1.0)
    cond = container({"known_frames": frames, "known_mask": mask, "label": jnp.array([1.0, -2.0])})
    z = jax.random.normal(jax.random.key(1), frames.shape)
    lam = jnp.array([0.5, -1.0])
    out = windowed_denoiser(fn, chunk, 2)(z, lam, cond)
    assert calls == [((4 * 2, chunk, 2, 2, 3), (4 * 2, chunk), (4 * 2,))]  # windows at 0, 2, 4, 6, one batch
    want = frames * mask[:, :, None, None, None] + cond["label"].reshape(-1, 1, 1, 1, 1)
    np.testing.assert_allclose(out, from_x(want, z, lam, "v"), rtol=1e-5, atol=1e-5)


def test_co_denoising_with_exact_windows_loses_what_no_window_sees():
    """The method's limit, with a perfect T-frame model: on a stationary AR(1) video (ρ = 0.9, 16 frames, windows of 4
    every 2) the exact 16-frame denoiser samples the true process, but windows that each see 4 frames, averaged,
    under-disperse (variance ~0.72, not 1) and lose correlation beyond a window (lag 8: ~0, not ρ⁸ = 0.43). An
    autoregressive chain of exact conditionals would be exact here (the process is Markov)."""
    from vdm_jax.diffusion import DiffusionConfig, SamplerConfig, sample

    rho, total, chunk, n = 0.9, 16, 4, 2000
    ar1 = lambda t: GaussianOracle(  # noqa: E731
        np.zeros(t), rho ** np.abs(np.arange(t)[:, None] - np.arange(t)[None]), (t, 1, 1, 1)
    )
    scfg = SamplerConfig(name="ancestral", num_steps=128, clip_x=False)

    def stats(fn):
        x = sample(fn, (n, total, 1, 1, 1), jax.random.key(0), DiffusionConfig(), scfg, resolution=32)
        c = np.cov(np.asarray(x, np.float64).reshape(n, total).T)
        lag8 = np.mean([c[i, i + 8] / np.sqrt(c[i, i] * c[i + 8, i + 8]) for i in range(total - 8)])
        return np.diag(c).mean(), lag8

    var, lag8 = stats(ar1(total).denoise_fn("v"))
    assert abs(var - 1.0) < 0.08 and abs(lag8 - rho**8) < 0.08, (var, lag8)  # the sampler itself is right
    var, lag8 = stats(windowed_denoiser(ar1(chunk).denoise_fn("v"), chunk, 2))
    assert var < 0.8 and abs(lag8) < 0.1, (var, lag8)
