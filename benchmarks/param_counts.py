"""Parameter counts of the video U-Net for the default config and the VDM UCF-101 paper size, as JSON.

  python benchmarks/param_counts.py            # counts only (abstract init: no memory, a few seconds)
  python benchmarks/param_counts.py --flops    # plus forward GFLOPs per video (XLA cost analysis)

ucf101_paper: the model of configs/ucf101.py (Ho et al. 2022, App. A: base channels 256, multipliers (1, 2, 4, 8),
attention at 8/16/32 of 64x64 frames, 16 frames), read from that file so that the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from configs import default, ucf101  # noqa: E402
from vdm_jax.models import ModelConfig, UNet3D, make_rngs  # noqa: E402


def configs() -> dict[str, tuple[ModelConfig, int, int]]:
    """name -> (model config, resolution, num_frames)."""
    small, paper = default.get_config(), ucf101.get_config()
    return {
        "default": (ModelConfig(**small.model), small.data.resolution, small.data.num_frames),
        "ucf101_paper": (ModelConfig(**paper.model), paper.data.resolution, paper.data.num_frames),
    }


def count(cfg: ModelConfig, resolution: int) -> dict[str, int]:
    model = nnx.eval_shape(lambda: UNet3D(cfg, resolution=resolution, rngs=make_rngs(0)))
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    total, temporal, conditioning = 0, 0, 0
    for path, var in flat:
        n = math.prod(var.shape)
        total += n
        temporal += n if "temporal" in path else 0
        conditioning += n if "cond_embed" in path else 0
    return {"total": total, "temporal_attention": temporal, "conditioning": conditioning}


def forward_gflops(cfg: ModelConfig, resolution: int, num_frames: int) -> float:
    """XLA's FLOP count of one forward pass on one video (batch 1), in GFLOPs."""
    model = nnx.eval_shape(lambda: UNet3D(cfg, resolution=resolution, rngs=make_rngs(0)))
    graphdef, state = nnx.split(model)
    z = jax.ShapeDtypeStruct((1, num_frames, resolution, resolution, cfg.channels), jnp.float32)
    logsnr = jax.ShapeDtypeStruct((1,), jnp.float32)
    fn = jax.jit(lambda s, x, snr: nnx.merge(graphdef, s)(x, snr))
    return fn.lower(state, z, logsnr).cost_analysis()["flops"] / 1e9  # lowered: the same on every backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flops", action="store_true", help="also compile and report forward GFLOPs per video")
    args = parser.parse_args()
    report = {}
    for name, (cfg, resolution, frames) in configs().items():
        entry = {"resolution": resolution, "num_frames": frames, "params": count(cfg, resolution)}
        entry["params_millions"] = round(entry["params"]["total"] / 1e6, 2)
        if args.flops:
            entry["forward_gflops_per_video"] = round(forward_gflops(cfg, resolution, frames), 2)
        report[name] = entry
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
