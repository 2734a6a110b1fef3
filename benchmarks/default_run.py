"""Runs the default job exactly as a user would, times it, and collects its curve. Prints JSON.

  python benchmarks/default_run.py --workdir=runs/default
  python benchmarks/default_run.py --workdir=runs/default --no-run      # only read an existing run's curve

The job is `python main.py --config=configs/default.py --workdir=<workdir>` (plus any `--set` overrides); its wall
time covers everything (dataset generation on first use, compilation, training, periodic and final samples and
evaluations). The curve comes from the run's TensorBoard event files: the training loss at every logged step and
each evaluation's `eval/<metric>` (temporal-consistency metrics for moving_shapes).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import load_average, main_command  # noqa: E402


def scalar_curves(workdir: str) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of every scalar the run wrote (clu writes them as TensorBoard tensors)."""
    import numpy as np
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    curves: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents*"))):
        acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("tensors", []):
            for e in acc.Tensors(tag):
                value = np.asarray(tensor_util.make_ndarray(e.tensor_proto))
                if value.size == 1 and value.dtype.kind in "fiu":
                    curves.setdefault(tag, {})[e.step] = float(value)
        for tag in tags.get("scalars", []):
            for e in acc.Scalars(tag):
                curves.setdefault(tag, {})[e.step] = float(e.value)
    return {tag: sorted(points.items()) for tag, points in curves.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    parser.add_argument("--no-run", action="store_true", help="do not train; read the curve of --workdir")
    args = parser.parse_args()
    args.workdir = os.path.abspath(args.workdir)  # main.py runs in the repository root; the curves are read here

    result = {"config": args.config, "overrides": args.set, "workdir": args.workdir}
    if not args.no_run:
        command = [sys.executable, *main_command(args.workdir, args.set, args.config)]
        result["command"] = "python " + " ".join(command[1:])
        result["load_average_start"] = load_average()
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT)
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        result["load_average_end"] = load_average()
        result["returncode"] = proc.returncode
    curves = scalar_curves(args.workdir)
    as_dict = lambda points: {step: round(value, 4) for step, value in points}
    result["eval"] = {tag: as_dict(points) for tag, points in curves.items() if tag.startswith("eval/")}
    loss = curves.get("loss", [])
    result["loss"] = as_dict(loss[:: max(1, len(loss) // 12)] + loss[-1:])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
