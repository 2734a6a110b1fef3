"""Sampling throughput of a config's U-Net with each sampler: network evaluations per second and seconds per video
(16 frames by default, whatever the config trains on: the U-Net runs on any number of frames). Prints JSON.

  python benchmarks/sample_throughput.py --config=configs/default.py
  python benchmarks/sample_throughput.py --config=configs/default.py --frames=16 --batch=8 --steps=32

The model is freshly initialised (its weights do not change the cost). Every sampler runs the config's jitted
sampling function (`vdm_jax.train.sampling.make_sample_fn`, the one training and evaluation use) with only
`sampler.name` changed, on one device (training, `--mode=sample` and evaluation split the videos over the mesh's
devices: divide by their number for a sharded run's cost); one untimed call compiles it, then the median of
`--repeats` calls, each ending in `block_until_ready`, is reported. A class- or caption-conditioned model samples
with labels in turn, one fixed caption (builtin text) or zero embeddings (precomputed text): the cost does not
depend on what they say.
`network_evals` counts denoiser calls in units of the batch (classifier-free guidance on labels or text, and frame
guidance, each double it: one call on a batch twice as large), `video_network_evals_per_second` multiplies by the
batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import load_average, load_config, timed  # noqa: E402

SAMPLERS = ("ancestral", "ddim", "pc", "dpm_solver")


def benchmark_conditioning(cfg, batch: int) -> dict | None:
    """Labels and text for `batch` videos of a conditioned model (None for an unconditional one)."""
    from vdm_jax.models import tokenize

    cond = {}
    if cfg.model.num_classes:
        cond["label"] = np.arange(batch, dtype=np.int32) % cfg.model.num_classes
    length = cfg.data.text_max_length
    if cfg.model.text_conditioning == "builtin":
        cond["text_tokens"] = np.asarray(tokenize(["a red circle moving up"] * batch, length))
    elif cfg.model.text_conditioning == "precomputed":
        cond["text_embeddings"] = np.zeros((batch, length, cfg.model.text_embed_dim), np.float32)
    return cond or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated sampler names")
    parser.add_argument("--frames", type=int, default=16, help="frames per sampled video")
    parser.add_argument("--batch", type=int, default=0, help="videos per call (0 = config.eval.batch_size)")
    parser.add_argument("--steps", type=int, default=0, help="sampling steps (0 = config.sampler.num_steps)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from flax import nnx

    from vdm_jax.diffusion import num_function_evals
    from vdm_jax.train.compile import new_model
    from vdm_jax.train.sampling import make_sample_fn

    base = load_config(args.config, args.set)
    batch = args.batch or base.eval.batch_size
    graphdef, params, rest = nnx.split(new_model(base), nnx.Param, ...)
    segment_ids = jnp.zeros((batch, args.frames), jnp.int32)
    cond = benchmark_conditioning(base, batch)
    load_start = load_average()
    results = {}
    for name in args.samplers.split(","):
        overrides = [*args.set, f"sampler.name={name}"]
        if args.steps:
            overrides.append(f"sampler.num_steps={args.steps}")
        cfg = load_config(args.config, overrides)
        fn = make_sample_fn(graphdef, cfg, num_frames=args.frames)
        call = lambda fn=fn: jax.block_until_ready(fn(params, rest, jax.random.key(0), cond, segment_ids, None))
        t0 = time.perf_counter()
        call()
        compile_seconds = time.perf_counter() - t0
        seconds = statistics.median(timed(call, repeats=args.repeats, warmup=0))
        evals = num_function_evals(cfg.sampler)
        evals *= 2 if cond is not None and cfg.sampler.guidance_weight > 0 else 1
        evals *= 2 if cfg.model.frame_conditioning and cfg.sampler.frame_guidance_weight > 0 else 1
        results[name] = {
            "num_steps": cfg.sampler.num_steps,
            "network_evals": evals,
            "seconds_per_batch": seconds,
            "network_evals_per_second": evals / seconds,
            "video_network_evals_per_second": evals * batch / seconds,
            "seconds_per_video": seconds / batch,
            "first_call_seconds_incl_compile": round(compile_seconds, 2),
        }
    print(
        json.dumps(
            {
                "config": args.config,
                "overrides": args.set,
                "device": jax.devices()[0].device_kind,
                "video_shape": [args.frames, base.data.resolution, base.data.resolution, base.model.channels],
                "batch": batch,
                "load_average_start": load_start,
                "load_average_end": load_average(),
                "samplers": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
