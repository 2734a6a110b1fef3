"""Throughput of the evaluation metrics; prints one JSON line.

  python benchmarks/fvd.py --what=i3d --num_clips=16 --batch_size=8 --num_frames=16 --resolution=32
  python benchmarks/fvd.py --what=temporal --num_clips=64
  python benchmarks/fvd.py --what=warp --num_clips=64

`i3d` reports seconds per clip of I3D feature extraction (resize to 224 included, after compilation) and the
forward's FLOPs from XLA's cost analysis of the lowered program, on one device (evaluation splits the clips over
the mesh's devices). Run one `--what` per process: numpy's BLAS threads
and XLA's compete for the same cores.
"""

import argparse
import json
import time

import numpy as np


def bench_i3d(args) -> dict:
    import jax

    from vdm_jax.evaluation import fvd
    from vdm_jax.evaluation.synthetic import moving_shapes_videos

    videos, _ = moving_shapes_videos(args.num_clips, args.num_frames, args.resolution, seed=0)
    start = time.perf_counter()
    fvd.i3d_features(videos[: args.batch_size], batch_size=args.batch_size, progress=False)  # load + compile
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    fvd.i3d_features(videos, batch_size=args.batch_size, progress=False)
    seconds = time.perf_counter() - start
    _, state = fvd._model_split()
    lowered = fvd._forward(None).lower(state, videos[: args.batch_size])
    cost = lowered.cost_analysis()  # the lowered program's count: the same on every backend (see CompiledStep)
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))
    lowered_clips = min(args.batch_size, args.num_clips)  # the clips in the lowered batch
    return {
        "what": "i3d_features",
        "device": str(jax.devices()[0].device_kind),
        "num_clips": args.num_clips,
        "clip": [args.num_frames, args.resolution, args.resolution],
        "batch_size": args.batch_size,
        "load_and_compile_s": round(warmup, 2),
        "s_per_clip": round(seconds / args.num_clips, 3),
        "gflop_per_clip": round(flops / lowered_clips / 1e9, 1),
        "gflop_per_s": round(flops / lowered_clips * args.num_clips / seconds / 1e9, 1),
    }


def bench_numpy(args) -> dict:
    from vdm_jax.evaluation import temporal_consistency, warp_error
    from vdm_jax.evaluation.synthetic import moving_shapes_videos

    videos, _ = moving_shapes_videos(args.num_clips, args.num_frames, args.resolution, seed=0)
    metric = temporal_consistency if args.what == "temporal" else warp_error
    start = time.perf_counter()
    value = metric(videos)
    seconds = time.perf_counter() - start
    return {
        "what": args.what,
        "num_clips": args.num_clips,
        "clip": [args.num_frames, args.resolution, args.resolution],
        "s_per_clip": round(seconds / args.num_clips, 4),
        "value_on_rendered_real_videos": value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=("i3d", "temporal", "warp"), default="i3d")
    parser.add_argument("--num_clips", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=32)
    args = parser.parse_args()
    result = bench_i3d(args) if args.what == "i3d" else bench_numpy(args)
    print(json.dumps(result))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
