"""Builds a context pool for `config.train.context_pool`: training clips whose known frames the model generated.

For each of the first --num training clips (cut from frame 0, 2T - overlap frames long), the frame-conditioned model
in --workdir predicts frames k .. T - 1 from the first k real ones (the sampler of its config plus --set
overrides), and the example is the window an extension's second chunk sees: its own last `overlap` frames as known,
the real clip's next T - overlap frames to generate (`vdm_jax.train.context_pool.own_context_examples`).

--renoise_from=t0 (0 < t0 < 1) builds the other kind of pool measured in docs/conditional_results.md: each real T-frame
clip is noised to time t0 and denoised by the model with no frame known (SDEdit: `vdm_jax.diffusion.sample`'s
start / start_time, the configured sampler at the spacing of sampler.num_steps over [0, 1]); its first `overlap`
frames, the model's rendering of the real frames at their real positions, are the known frames, the real clip's
next frames the target. Prints JSON (examples, seconds, the known frames' pixel error against the real ones).

  python benchmarks/own_context.py --workdir=runs/fc --out=runs/fc/own_context.npz --num=512 \
      --set sampler.num_steps=50 --set sampler.frame_guidance_weight=3
  python main.py --config=configs/default.py --workdir=runs/fc_own --config.model.frame_conditioning=True \
      --config.train.init_from=runs/fc/checkpoints --config.train.context_pool=runs/fc/own_context.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def check_args(renoise_from: float, overlap: int, k: int, t: int) -> None:
    """Exits with the reason unless the pool's examples can be made: a frame to generate and a known one in each
    (0 < overlap < T), from a prediction of 0 < k < T frames or a re-noising time 0 < t0 < 1."""
    if not 0 < overlap < t:
        raise SystemExit(
            f"--overlap={overlap}: each example needs a known frame and one to generate; give 0 < --overlap < T={t}"
        )
    if renoise_from and not 0.0 < renoise_from < 1.0:
        raise SystemExit(f"--renoise_from={renoise_from} must be in (0, 1) (0: the model's own prediction)")
    if not renoise_from and not 0 < k < t:
        raise SystemExit(f"--k={k}: the first chunk is predicted from 0 < --k < T={t} real frames")


def renoised_examples(model, rng, clips: np.ndarray, t0: float, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """clips [N, T, ...] (real) -> (video [N, T, ...]: the model's SDEdit of frames 0 .. overlap - 1 from time t0,
    then the real frames; known_mask [N, T], 1 on the first `overlap` frames)."""
    from vdm_jax.train.conditional import sample_with_known

    check_args(t0, overlap, 1, clips.shape[1])
    none_known = np.zeros(clips.shape[:2], np.float32)
    renoised = np.asarray(sample_with_known(model, rng, clips, none_known, start=clips, start_time=t0), np.float32)
    video = np.concatenate([renoised[:, :overlap], clips[:, overlap:]], axis=1).astype(np.float32)
    known_mask = np.zeros(video.shape[:2], np.float32)
    known_mask[:, :overlap] = 1.0
    return video, known_mask


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a frame-conditioned training run")
    parser.add_argument("--out", required=True, help="the pool file to write (.npz)")
    parser.add_argument("--num", type=int, default=512, help="training clips (one example each)")
    parser.add_argument("--k", type=int, default=2, help="real frames the first chunk is predicted from")
    parser.add_argument("--overlap", type=int, default=4, help="known frames per example (extend's overlap)")
    parser.add_argument("--batch", type=int, default=64, help="clips sampled together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--renoise_from", type=float, default=0.0, help="0: the model's own prediction; t0: SDEdit")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (sampler settings)")
    args = parser.parse_args(argv)

    import jax

    from vdm_jax import configuration
    from vdm_jax import data as vdm_data
    from vdm_jax.train import conditional
    from vdm_jax.train.context_pool import own_context_examples, save_pool
    from vdm_jax.train.sampling import on_mesh

    cfg = configuration.from_config_dict(configuration.load_run_config(args.workdir, args.set))
    if not cfg.model.frame_conditioning:
        raise SystemExit(f"{args.workdir} is not a frame-conditioned run (config.model.frame_conditioning=True)")
    t = cfg.data.num_frames
    check_args(args.renoise_from, args.overlap, args.k, t)  # before any data is read or frame sampled
    clip_cfg = dataclasses.replace(cfg.data, num_frames=t if args.renoise_from else 2 * t - args.overlap)
    vdm_data.prepare(clip_cfg)
    clips = vdm_data.load_examples(clip_cfg, split="train", num=args.num)["video"]
    clips = clips.astype(np.float32) / 127.5 - 1.0
    if len(clips) < args.num:
        raise SystemExit(f"the training split holds {len(clips)} clips, fewer than --num={args.num}")
    model, step = conditional.load_model(cfg, args.workdir)
    t0 = time.time()
    videos, masks = [], []
    with on_mesh(cfg):  # the videos split over this host's devices, as --mode=sample does
        for i in range(0, args.num, args.batch):
            rng = jax.random.fold_in(jax.random.key(args.seed), i)
            batch = clips[i : i + args.batch]
            if args.renoise_from:
                video, mask = renoised_examples(model, rng, batch, args.renoise_from, args.overlap)
            else:
                video, mask = own_context_examples(model, rng, batch, args.k, args.overlap)
            videos.append(video)
            masks.append(mask)
    video, mask = np.concatenate(videos), np.concatenate(masks)
    save_pool(args.out, video, mask)
    start = 0 if args.renoise_from else t - args.overlap
    real_known = clips[:, start : start + args.overlap]
    result = {
        "workdir": args.workdir,
        "checkpoint_step": step,
        "out": args.out,
        "examples": len(video),
        "seconds": round(time.time() - t0, 1),
        # How far the model's own known frames are from the real frames at the same positions.
        "known_frames_rmse": float(np.sqrt(np.mean((video[:, : args.overlap] - real_known) ** 2))),
        "sampler": dataclasses.asdict(cfg.sampler),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
