"""Compile check at full size: lower and compile the real train step of every paper config on 8 simulated devices
with FSDP, from abstract inputs only (nothing is allocated), and report parameters, FLOPs per step (XLA cost analysis)
and bytes per device (XLA memory analysis). Prints JSON, and a Markdown table with --markdown.

  python benchmarks/compile_check.py --markdown            # all paper configs, their full batch
  python benchmarks/compile_check.py --configs=ucf101 --batch_size=8
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import load_config  # noqa: E402

PAPER_CONFIGS = ("ucf101", "ucf101_class_cfg", "bair", "kinetics600")


def check(name: str, batch_size: int | None, mesh_shape: str) -> dict:
    from vdm_jax.parallel import make_mesh
    from vdm_jax.train.compile import compile_train_step

    overrides = [f"parallel.mesh_shape={mesh_shape}", "parallel.rules=fsdp"]
    if name == "kinetics600":  # The video folder does not need to exist to compile.
        overrides.append("data.video_dir=/data/kinetics600/train")
    cfg = load_config(f"configs/{name}.py", overrides)
    mesh = make_mesh(cfg.parallel.mesh_shape)
    batch = batch_size or cfg.train.batch_size
    t0 = time.perf_counter()
    step = compile_train_step(cfg, mesh, batch)
    return {
        "config": name,
        "mesh": dict(mesh.shape),
        "batch_size": batch,
        "video": [cfg.data.num_frames + cfg.data.num_image_frames, cfg.data.resolution, cfg.data.resolution],
        "num_params": step.num_params,
        # flops_per_step: the lowered (whole, unpartitioned) program; flops_per_device: the compiled per-device one.
        "flops_per_device": step.flops_per_device,
        "flops_per_step": step.flops,
        "bytes_per_device": step.bytes_per_device,
        "memory": step.memory,
        "compile_seconds": time.perf_counter() - t0,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| config | batch | video (T,H,W) | parameters | TFLOP / step (all devices) | GiB / device (8-way FSDP) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['batch_size']} | {tuple(r['video'])} | {r['num_params'] / 1e6:.1f} M | "
            f"{r['flops_per_step'] / 1e12:.1f} | {r['bytes_per_device'] / 2**30:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(PAPER_CONFIGS))
    parser.add_argument("--batch_size", type=int, default=None, help="default: each config's own batch")
    parser.add_argument("--mesh_shape", default="(1,8,1)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = [check(name, args.batch_size, args.mesh_shape) for name in args.configs.split(",")]
    print(json.dumps(rows, indent=2))
    if args.markdown:
        print(markdown(rows))


if __name__ == "__main__":
    main()
