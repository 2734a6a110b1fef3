"""Per-step cost of each sampler's own arithmetic, without a network: prints JSON.

The denoiser is a stand-in of negligible cost (x̂ = 0.5 z, in v-parameterization); `floor` is a scan that only calls
it and adds the result, so `overhead_ms_per_step` = sampler − floor is the sampler's own work per step (noise draws,
parameterization conversions, the update, clipping). Compile time is excluded (one warm-up call).

  python benchmarks/sampler_overhead.py --batch=4 --frames=16 --resolution=32 --steps=64
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp

from vdm_jax.diffusion import DiffusionConfig, SamplerConfig, from_x, num_function_evals, sample


def stand_in(z: jax.Array, logsnr: jax.Array, cond) -> jax.Array:
    return from_x(0.5 * z, z, logsnr, "v")


def best_time(fn, key, repeats: int) -> float:
    jax.block_until_ready(fn(key))  # compile
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(jax.random.fold_in(key, i)))
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shape = (args.batch, args.frames, args.resolution, args.resolution, args.channels)
    dcfg = DiffusionConfig(parameterization="v")
    key = jax.random.key(0)

    @jax.jit
    def floor(k):
        z = jax.random.normal(k, shape)
        lam = jnp.zeros((shape[0],))
        return jax.lax.fori_loop(0, args.steps, lambda i, z: z + 1e-3 * stand_in(z, lam, None), z)

    floor_s = best_time(floor, key, args.repeats)
    known = {"frames": jnp.zeros(shape), "mask": jnp.zeros(shape[:2]).at[:, : args.frames // 2].set(1.0)}
    variants = {
        "ancestral": (SamplerConfig(name="ancestral", num_steps=args.steps), None),
        "ddim": (SamplerConfig(name="ddim", num_steps=args.steps), None),
        "ddim_eta1": (SamplerConfig(name="ddim", num_steps=args.steps, eta=1.0), None),
        "pc": (SamplerConfig(name="pc", num_steps=args.steps), None),
        "dpm_solver": (SamplerConfig(name="dpm_solver", num_steps=args.steps), None),
        "ddim_dynamic_threshold": (SamplerConfig(name="ddim", num_steps=args.steps, dynamic_threshold=0.995), None),
        "ancestral_replacement": (SamplerConfig(name="ancestral", num_steps=args.steps), known),
        "ancestral_recon_guidance": (
            SamplerConfig(name="ancestral", num_steps=args.steps, recon_guidance_weight=2.0),
            known,
        ),
    }
    results = {}
    for name, (scfg, kn) in variants.items():
        fn = jax.jit(
            lambda k, scfg=scfg, kn=kn: sample(stand_in, shape, k, dcfg, scfg, resolution=args.resolution, known=kn)
        )
        seconds = best_time(fn, key, args.repeats)
        nfe = num_function_evals(scfg)
        results[name] = {
            "ms_per_step": 1e3 * seconds / args.steps,
            "ms_per_denoiser_call": 1e3 * seconds / nfe,
            "overhead_ms_per_step": 1e3 * (seconds - floor_s) / args.steps,
            "nfe": nfe,
        }
    print(
        json.dumps(
            {
                "shape": list(shape),
                "steps": args.steps,
                "device": str(jax.devices()[0]),
                "machine": platform.processor() or platform.machine(),
                "floor_ms_per_step": 1e3 * floor_s / args.steps,
                "samplers": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
