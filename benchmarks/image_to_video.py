"""Image to video, end to end (the recipe of docs/conditional.md): does an image model give a video model a head start?

Three runs of `main.py` on the default config (`configs/default.py`, embedded `moving_shapes`), each a subprocess:
  1. image: T = 1 frames, no temporal layers, `--image_steps` steps;
  2. video_from_image: T = data.num_frames, `train.init_from=<image>/checkpoints`, temporal layers identity-initialised,
     `--video_steps` steps;
  3. video_from_scratch: the same video run without `init_from` (also identity-initialised temporal layers, so the
     two differ only in where the other weights start).
Prints JSON: each run's wall time, its training loss curve, and the final evaluation (temporal-consistency metrics of
`eval.num_samples` samples) of the two video runs. Same seeds, same data order, same sampler.

  python benchmarks/image_to_video.py --workdir=/tmp/i2v
  python benchmarks/image_to_video.py --workdir=/tmp/i2v --image_steps=1000 --video_steps=600 --set train.batch_size=8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import load_average, main_command  # noqa: E402
from benchmarks.default_run import scalar_curves  # noqa: E402


def run_main(workdir: str, overrides: list[str]) -> float:
    """`python main.py --config=configs/default.py --workdir=<workdir> --config.<override>...`; returns wall seconds."""
    cmd = [sys.executable, *main_command(workdir, overrides)]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {out.returncode}")
    return time.time() - t0


def summary(workdir: str, seconds: float) -> dict:
    curves = scalar_curves(workdir)
    final = {tag.split("/", 1)[1]: points[-1][1] for tag, points in curves.items() if tag.startswith("eval/")}
    loss = curves.get("loss", [])
    return {
        "seconds": round(seconds, 1),
        "loss": {step: round(value, 4) for step, value in loss},
        "final_eval": {k: round(v, 3) for k, v in sorted(final.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--image_steps", type=int, default=1000)
    parser.add_argument("--video_steps", type=int, default=500)
    parser.add_argument("--set", action="append", default=[], help="config override key=value for every run")
    args = parser.parse_args()
    args.workdir = os.path.abspath(args.workdir)  # main.py runs in the repository root; the curves are read here

    quiet = ["train.sample_every=0", "train.eval_every=0", "train.log_every=50", *args.set]
    image_dir = os.path.join(args.workdir, "image")
    image = [
        "data.num_frames=1",
        "model.temporal_attention=False",
        f"train.num_steps={args.image_steps}",
        f"train.checkpoint_every={args.image_steps}",
        "eval.metrics=()",  # one-frame videos have no temporal consistency to measure
    ]
    video = [
        f"train.num_steps={args.video_steps}",
        f"train.checkpoint_every={args.video_steps}",
        "model.temporal_identity_init=True",
    ]
    result = {"load_average_start": load_average(), "image_steps": args.image_steps, "video_steps": args.video_steps}
    result["image"] = summary(image_dir, run_main(image_dir, [*image, *quiet]))
    for name, extra in [
        ("video_from_image", [f"train.init_from={os.path.join(image_dir, 'checkpoints')}"]),
        ("video_from_scratch", []),
    ]:
        workdir = os.path.join(args.workdir, name)
        result[name] = summary(workdir, run_main(workdir, [*video, *extra, *quiet]))
    result["load_average_end"] = load_average()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
