"""Start-up cost of a run before its first step, as JSON: tracing the U-Net's initialisation with nnx.Rngs against
vdm_jax.models.make_rngs (same keys), and `build_abstract` (graphdef + abstract train state), per config.

  python benchmarks/startup.py                                   # configs/default.py and configs/ucf101.py
  python benchmarks/startup.py --configs=default,bair --repeats=5

Each number is the median wall time of `--repeats` traces in this process, after one untimed warm-up; the two
initialisations alternate, so load on the machine affects both alike. Nothing is compiled or allocated.
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
from flax import nnx  # noqa: E402

from benchmarks.common import load_average, load_config  # noqa: E402
from vdm_jax.models import UNet3D, make_rngs  # noqa: E402
from vdm_jax.train.compile import build_abstract  # noqa: E402
from vdm_jax.train.state import init_state, make_optimizer  # noqa: E402


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(name: str, repeats: int) -> dict:
    cfg = load_config(f"configs/{name}.py", [])
    tx = make_optimizer(cfg.train)

    def trace_init(rngs_fn):
        model = lambda: UNet3D(cfg.model, resolution=cfg.data.resolution, rngs=rngs_fn(cfg.seed))
        return lambda: jax.eval_shape(lambda: init_state(model(), tx)[1])

    runs = {"nnx_rngs": trace_init(nnx.Rngs), "make_rngs": trace_init(make_rngs)}
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up: imports, caches of the tracer
    for _ in range(repeats):
        for k, fn in runs.items():
            times[k].append(_seconds(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    built = []
    abstract = statistics.median(_seconds(lambda: built.append(build_abstract(cfg, tx))) for _ in range(repeats))
    num_params = sum(x.size for x in jax.tree.leaves(built[-1][1].params))
    return {
        "config": name,
        "num_params": int(num_params),
        "init_trace_s": {k: round(v, 3) for k, v in med.items()},
        "speedup": round(med["nnx_rngs"] / med["make_rngs"], 2),
        "build_abstract_s": round(abstract, 3),
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="default,ucf101")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = [measure(name, args.repeats) for name in args.configs.split(",")]
    print(json.dumps({"rows": rows, "load_average": load_average(), "backend": jax.default_backend()}, indent=1))


if __name__ == "__main__":
    main()
