"""Train-step throughput for a config: steps/s, videos/s, FLOPs per step (XLA cost analysis), achieved FLOP/s, and
utilisation (achieved FLOP/s per device) against one device's matmul peak and convolution ceiling, both measured in
the same run (before and after the step's timings, so a machine whose load changes is seen), plus peak memory.
Prints JSON.

  python benchmarks/train_throughput.py --config=configs/default.py
  python benchmarks/train_throughput.py --config=configs/ucf101.py --set model.base_channels=32 --set train.batch_size=4
  python benchmarks/train_throughput.py --config=configs/default.py --profile=/tmp/prof   # + jax.profiler op summary

Each timed step is one call of the compiled, donated step followed by `block_until_ready` on the new state and the
metrics, so the time is the device's (no asynchronous dispatch hides work); compilation and two warm-up steps are not
timed. The step runs on random videos already on the device, so the input pipeline is not part of the number (see
`benchmarks/input_pipeline.py` for that side).
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
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from benchmarks.common import (  # noqa: E402
    conv_ceiling_flops,
    load_average,
    load_config,
    matmul_peak_flops,
    peak_memory_bytes,
    summarize_trace,
    timed,
)


def random_batch(spec: dict, key: jax.Array) -> dict[str, jax.Array]:
    """A batch with the shapes and shardings of `spec`: videos uniform in [-1, 1], integer fields zero."""

    def value(v):
        if v.dtype == jnp.float32:
            return jax.random.uniform(key, v.shape, minval=-1, maxval=1)
        return jnp.zeros(v.shape, v.dtype)

    return {k: jax.device_put(value(v), v.sharding) for k, v in spec.items()}


def ceilings(repeats: int) -> dict[str, float]:
    return {"matmul": matmul_peak_flops(repeats=repeats), "conv": conv_ceiling_flops(repeats=repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps (the median is reported)")
    parser.add_argument("--profile", default="", help="also trace 3 steps with jax.profiler into this directory")
    parser.add_argument("--no-ceilings", action="store_true", help="skip the matmul / convolution ceilings")
    args = parser.parse_args()

    from vdm_jax.parallel import make_mesh, use_mesh
    from vdm_jax.train.compile import abstract_batch, compile_train_step, new_model
    from vdm_jax.train.state import init_state, make_optimizer

    cfg = load_config(args.config, args.set)
    load_start = load_average()
    mesh = make_mesh(cfg.parallel.mesh_shape)
    t0 = time.perf_counter()
    step = compile_train_step(cfg, mesh)
    compile_seconds = time.perf_counter() - t0
    tx = make_optimizer(cfg.train)
    state = jax.jit(lambda: init_state(new_model(cfg), tx)[1], out_shardings=step.state_shardings)()
    batch = random_batch(abstract_batch(cfg, cfg.train.batch_size, mesh), jax.random.key(1))
    rng = jax.device_put(jax.random.key(0), NamedSharding(mesh, PartitionSpec()))
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = step.compiled(holder["state"], batch, rng)
        jax.block_until_ready((holder["state"], metrics))

    before = {} if args.no_ceilings else ceilings(5)
    with use_mesh(mesh, cfg.parallel.rule_list):
        times = timed(one_step, repeats=args.repeats, warmup=2)
        profile = None
        if args.profile:
            jax.profiler.start_trace(args.profile)
            for _ in range(3):
                one_step()
            jax.profiler.stop_trace()
            profile = summarize_trace(args.profile, steps=3)
    after = {} if args.no_ceilings else ceilings(5)
    seconds = statistics.median(times)
    achieved = step.flops / seconds  # all devices together
    per_device = achieved / step.num_devices  # against the ceilings, which are measured on one device
    memory, memory_kind = peak_memory_bytes()
    result = {
        "config": args.config,
        "overrides": args.set,
        "device": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "num_params": step.num_params,
        "batch_size": cfg.train.batch_size,
        "video_shape": [
            cfg.data.num_frames + cfg.data.num_image_frames,
            cfg.data.resolution,
            cfg.data.resolution,
            cfg.model.channels,
        ],
        "dtype": cfg.model.dtype,
        "remat_policy": cfg.model.remat_policy,
        "compile_seconds": round(compile_seconds, 2),
        "seconds_per_step_median": seconds,
        "seconds_per_step_all": [round(t, 4) for t in times],
        "steps_per_second": 1.0 / seconds,
        "videos_per_second": cfg.train.batch_size / seconds,
        "flops_per_step": step.flops,
        "flops_per_step_compiled": step.flops_per_device * step.num_devices,  # backend-specific (see CompiledStep)
        "flops_per_video": step.flops / cfg.train.batch_size,
        "achieved_flops_per_second": achieved,
        "achieved_flops_per_second_per_device": per_device,
        "bytes_per_device_compiled": step.bytes_per_device,
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "load_average_start": load_start,
        "load_average_end": load_average(),
    }
    if before:
        matmul = (before["matmul"] + after["matmul"]) / 2
        conv = (before["conv"] + after["conv"]) / 2
        result.update(
            {
                "matmul_peak_flops_per_second": matmul,
                "conv_ceiling_flops_per_second": conv,
                "ceilings_before_after": {"before": before, "after": after},
                "utilisation_vs_matmul_peak": per_device / matmul,
                "utilisation_vs_conv_ceiling": per_device / conv,
            }
        )
    if profile is not None:
        result["profile"] = profile
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
