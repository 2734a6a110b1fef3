"""Temporal co-denoising with a perfect model: exact T-frame windows on a stationary AR(1) Gaussian video. Prints JSON.

The data: L frames of one value each, x_t = ρ x_{t−1} + sqrt(1 − ρ²) e_t (unit variance, correlation ρ^d at lag d).
The exact denoisers are the closed-form posterior means (tests/diffusion/diffusion_oracles.py). Rows:
  - the exact L-frame denoiser (the sampler's own error; should match the truth);
  - `windowed_denoiser` of the exact T-frame one, every `--hop` frames, from pure noise (`extend_jointly`);
  - the same re-drawing exact samples of the process from each t0 in `--refine_times` (SDEdit, what
    `extend_jointly(start=, start_time=)` does to a finished video);
each with the mean per-frame variance and the mean correlation at lags 1, T and 2T, against the truth.

  python benchmarks/co_denoising_gaussian.py
  python benchmarks/co_denoising_gaussian.py --rho=0.99 --frames=32 --chunk=8 --hop=4
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "diffusion"))


def ar1(frames: int, rho: float):
    from diffusion_oracles import GaussianOracle

    lags = np.abs(np.arange(frames)[:, None] - np.arange(frames)[None])
    return GaussianOracle(np.zeros(frames), rho**lags, (frames, 1, 1, 1))


def statistics(x: np.ndarray, lags: list[int]) -> dict:
    """x [N, L] -> mean variance and mean correlation at each lag over all frame pairs that far apart."""
    c = np.cov(np.asarray(x, np.float64).T)
    d = np.sqrt(np.diag(c))
    out = {"variance": round(float(np.diag(c).mean()), 3)}
    for lag in lags:
        pairs = [c[i, i + lag] / (d[i] * d[i + lag]) for i in range(len(d) - lag)]
        out[f"corr_lag{lag}"] = round(float(np.mean(pairs)), 3)
    return out


def main(args) -> dict:
    from vdm_jax.diffusion import DiffusionConfig, SamplerConfig, sample, windowed_denoiser

    n, total, chunk = args.num, args.frames, args.chunk
    lags = [lag for lag in (1, chunk, 2 * chunk) if lag < total]
    scfg = SamplerConfig(name="ancestral", num_steps=args.steps, clip_x=False)
    shape = (n, total, 1, 1, 1)

    def draw(fn, **kw):
        x = sample(fn, shape, jax.random.key(0), DiffusionConfig(), scfg, resolution=32, **kw)
        return statistics(np.asarray(x).reshape(n, total), lags)

    exact = ar1(total, args.rho)
    windowed = windowed_denoiser(ar1(chunk, args.rho).denoise_fn("v"), chunk, args.hop)
    data = exact.draw(jax.random.key(1), n)
    results = {
        "setting": {k: getattr(args, k) for k in ("rho", "frames", "chunk", "hop", "num", "steps")},
        "truth": {"variance": 1.0, **{f"corr_lag{lag}": round(args.rho**lag, 3) for lag in lags}},
        "data_drawn": statistics(np.asarray(data).reshape(n, total), lags),
        "exact_whole_video": draw(exact.denoise_fn("v")),
        "co_denoising": draw(windowed),
    }
    for t0 in args.refine_times:
        results[f"co_denoising_from_data_t{t0:g}"] = draw(windowed, start=data, start_time=t0)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rho", type=float, default=0.9, help="correlation of neighbouring frames")
    parser.add_argument("--frames", type=int, default=16, help="L, the video's frames")
    parser.add_argument("--chunk", type=int, default=4, help="T, the frames of a window (the model's)")
    parser.add_argument("--hop", type=int, default=2, help="frames between window starts")
    parser.add_argument("--num", type=int, default=4000, help="samples per row")
    parser.add_argument("--steps", type=int, default=128, help="ancestral sampler steps")
    parser.add_argument("--refine_times", default="0.1,0.3,0.5,0.7", help="comma-separated SDEdit start times t0")
    cli = parser.parse_args()
    cli.refine_times = [float(t) for t in cli.refine_times.split(",") if t]
    print(json.dumps(main(cli), indent=1))
