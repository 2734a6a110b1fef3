"""Shared by the benchmark scripts: configs with overrides, timing, the device's measured ceilings, profiles."""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import resource
import statistics
import time

import jax
import jax.numpy as jnp


def load_config(path: str, overrides: list[str]):
    """An ExperimentConfig from a config file plus `key=value` overrides, as main.py parses them."""
    from vdm_jax import configuration

    return configuration.from_config_dict(configuration.load_config_file(path, overrides))


def main_command(workdir: str, overrides: list[str], config: str = "configs/default.py") -> list[str]:
    """The user's launch line after `python`: `main.py --config=<config> --workdir=<workdir> --config.<key=value>...`.

    Run it from the repository root: `subprocess.run([sys.executable, *main_command(...)], cwd=ROOT)`.
    """
    return ["main.py", f"--config={config}", f"--workdir={workdir}", *[f"--config.{kv}" for kv in overrides]]


def timed(fn, *, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of `fn()` (which must block until its work is done), after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): how busy the machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def peak_memory_bytes() -> tuple[int, str]:
    """(bytes, what they are): the device's peak allocation where it reports one (GPU, TPU), else this process's
    peak resident set size (CPU, which includes the Python heap and the compiler)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"


def matmul_peak_flops(n: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
    """Achieved FLOP/s of a jitted n x n x n matmul on the default device: the ceiling we compare against."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    times = timed(lambda: f(a, b).block_until_ready(), repeats=repeats, warmup=2)
    return 2 * n**3 / statistics.median(times)


def conv_ceiling_flops(repeats: int = 5, dtype=jnp.float32) -> float:
    """Achieved FLOP/s of a 1x3x3 conv, 64 -> 64 channels on (32 frames, 32x32) NHWC, forward + backward: what a
    U-Net's convolutions can reach on this device."""
    x = jax.random.normal(jax.random.key(0), (32, 32, 32, 64), dtype)
    w = (jax.random.normal(jax.random.key(1), (3, 3, 64, 64)) * 0.05).astype(dtype)

    def loss(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(jnp.square(y.astype(jnp.float32)))

    f = jax.jit(jax.grad(loss, argnums=(0, 1)))
    flops = 3 * 2 * 32 * 32 * 32 * 3 * 3 * 64 * 64  # forward + two backward convolutions
    times = timed(lambda: jax.block_until_ready(f(x, w)), repeats=repeats, warmup=2)
    return flops / statistics.median(times)


# ---------------------------------------------------------------- profiles
# Name prefixes of matmul and convolution ops ("conv_", not "conv": XLA's type conversions are "convert_...").
_MATMUL_OPS = ("ynn_fusion", "convolution", "conv_", "dot", "gemm", "cublas", "cudnn", "xnn_fusion", "onednn")
_LAYOUT_OPS = ("copy", "transpose", "bitcast", "concatenate", "pad", "slice", "dynamic")


def _op_class(name: str) -> str:
    head = re.sub(r"[._]?\d+$", "", name)
    if head.startswith(_MATMUL_OPS) or head == "conv":
        return "matmul_and_convolution"
    if all(part in _LAYOUT_OPS or part in ("fusion", "wrapped") for part in head.split("_")):
        return "layout (copy / transpose / concatenate / pad)"
    return "elementwise, reductions and the rest"


def summarize_trace(trace_dir: str, steps: int, top: int = 15) -> dict:
    """Per-step device time by XLA op from a `jax.profiler` trace (the newest `*.trace.json.gz` under `trace_dir`).

    Counts events of the XLA CPU worker threads (``tf_XLAEigen*``) or of accelerator streams (``/device:*``), groups
    op names without their numeric suffix (``ynn_fusion.25`` -> ``ynn_fusion``) and into three classes. Times are
    summed over threads, so on a CPU with n cores they add up to about n x the wall time when all cores are busy.
    """
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True), key=os.path.getmtime)
    if not files:
        return {"error": f"no *.trace.json.gz under {trace_dir}"}
    with gzip.open(files[-1]) as f:
        events = json.load(f)["traceEvents"]
    threads, processes = {}, {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            threads[(e.get("pid"), e.get("tid"))] = e["args"]["name"]
        if e.get("ph") == "M" and e.get("name") == "process_name":
            processes[e.get("pid")] = e["args"]["name"]
    by_op, by_class = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") != "X" or e["name"].startswith(("ThunkExecutor", "$")):
            continue
        thread = threads.get((e.get("pid"), e.get("tid")), "")
        if not (thread.startswith("tf_XLAEigen") or "/device:" in processes.get(e.get("pid"), "")):
            continue
        op = re.sub(r"[._]?\d+$", "", e["name"])
        by_op[op] += e["dur"]
        by_class[_op_class(e["name"])] += e["dur"]
    total = sum(by_class.values()) or 1.0
    ms = lambda us: round(us / 1e3 / steps, 2)
    return {
        "trace": files[-1],
        "op_ms_per_step_summed_over_threads": ms(total),
        "classes": {k: {"ms_per_step": ms(v), "share": round(v / total, 3)} for k, v in by_class.most_common()},
        "top_ops": {k: {"ms_per_step": ms(v), "share": round(v / total, 3)} for k, v in by_op.most_common(top)},
    }
