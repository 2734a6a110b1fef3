"""Input pipeline throughput (videos/s) for a config, next to what the training step consumes. Prints JSON.

  python benchmarks/input_pipeline.py                       # configs/default.py (moving_shapes, 8x16x16 clips)
  python benchmarks/input_pipeline.py --step_seconds 0.9    # with the train step time from the training benchmark
  python benchmarks/input_pipeline.py --set data.num_image_frames=4 --set data.random_flip=True

The timed loop includes everything the trainer waits for: tf.data, tokenising captions and building the global
jax.Arrays. The dataset is prepared first (not timed).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(path: str, overrides: list[str]):
    """The config file's ConfigDict with `group.key=value` overrides applied (values parsed as Python literals)."""
    spec = importlib.util.spec_from_file_location("benchmark_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for item in overrides:
        key, _, text = item.partition("=")
        group, _, name = key.partition(".")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        config[group][name] = value
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    parser.add_argument("--num_batches", type=int, default=50, help="timed batches (after 3 warm-up batches)")
    parser.add_argument("--step_seconds", type=float, default=None, help="seconds per train step, to compare")
    args = parser.parse_args()

    config = load_config(args.config, args.set)

    from vdm_jax.data import DataConfig, make_iterator, prepare
    from vdm_jax.models import ModelConfig
    from vdm_jax.parallel import make_mesh

    cfg = DataConfig(**config.data)
    batch_size = int(config.train.batch_size)
    t0 = time.perf_counter()
    prepare(cfg)
    prepare_s = time.perf_counter() - t0
    tokens = None if config.model.text_conditioning == "builtin" else 0  # as the trainer: tokenise only if read
    model = ModelConfig.from_config(config.model)
    it = make_iterator(
        cfg,
        split="train",
        global_batch_size=batch_size,
        mesh=make_mesh((-1, 1, 1)),
        seed=0,
        text_max_length=tokens,
        conditioned=model.label_or_text,  # as the trainer: image frames from the row's own video
    )
    for _ in range(3):
        next(it)["video"].block_until_ready()
    t0 = time.perf_counter()
    for _ in range(args.num_batches):
        next(it)["video"].block_until_ready()
    seconds = time.perf_counter() - t0
    videos_per_s = args.num_batches * batch_size / seconds
    consumed = batch_size / args.step_seconds if args.step_seconds else None
    print(
        json.dumps(
            {
                "benchmark": "input_pipeline",
                "dataset": cfg.name,
                "clip": [cfg.num_frames + cfg.num_image_frames, cfg.resolution, cfg.resolution],
                "batch_size": batch_size,
                "num_batches": args.num_batches,
                "prepare_seconds": round(prepare_s, 2),
                "pipeline_videos_per_s": round(videos_per_s, 1),
                "pipeline_seconds_per_batch": round(seconds / args.num_batches, 4),
                "step_seconds": args.step_seconds,
                "train_step_videos_per_s": None if consumed is None else round(consumed, 1),
                "headroom": None if consumed is None else round(videos_per_s / consumed, 1),
                "cpu_count": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
