"""Conditional generation on the embedded moving_shapes data (VDM §3.1). Prints JSON.

Trains (or, when --workdir already holds a run, reuses it with its saved config) a model, by default the default
config's unconditional one, then measures with the temporal-consistency metrics
(`vdm_jax.evaluation.temporal_consistency`):
  - prediction of T - k frames from the first k real frames: replacement vs reconstruction guidance for an
    unconditional model, the known frames as network inputs for a frame-conditioned one;
  - 4x autoregressive extension (T -> 4T frames, each chunk conditioned on the previous chunk's last frames), with
    --memory=M also the chain whose chunks each hold M far-back frames besides fewer last ones (--chains picks
    the chains: plain, memory), and with --candidates=C each chain also keeping the likeliest of C samples per
    chunk (`conditional.extend(candidates=C)`, and for keyframes then interpolation, per chunk of every stage);
    with --joint_hop=H also all 4T frames sampled at once by temporal co-denoising in windows every H frames
    (`conditional.extend_jointly`), and with --refine_times the plain chain's videos re-drawn from their noised
    version at each t0 by co-denoising (SDEdit);
  - keyframes then interpolation (4T frames: keyframes at --stride, then the frames between them), the keyframes
    from the frame model or from a run trained at --stride times its data.frame_stride (--keyframe_workdir; the
    `--set` overrides apply to both runs, the frame run's sampler settings to both), conditioned on
    the context's keyframes or, with --key_context=2, on two (the frame model first continues the context);
  - long videos from nothing (task from_nothing, 4T frames, no real frame known): extension from an unconditional
    first chunk, and with --keyframe_workdir keyframes, then interpolation (--key_context=0: the keyframe model
    starts from nothing; 1 or 2: the frame model makes the start); scored by the temporal metrics alone;
  - how well the conditioning frames are reproduced (their largest absolute error; 0 by construction of the
    samplers), how far the first predicted frame is from the real continuation (pixel MSE, and a no-model baseline
    that repeats the last context frame), how far generated objects are from the real trajectories, how often a
    real object is missing and how often a frame holds an object the real clip does not explain
    (`vdm_jax.evaluation.ground_truth`).

  python benchmarks/conditional_prediction.py --workdir=/tmp/cond_run     # trains as main.py does, then evaluates
  python benchmarks/conditional_prediction.py --workdir=runs/default --stage=eval   # a finished run
  python benchmarks/conditional_prediction.py --workdir=runs/default --stage=eval --set sampler.num_steps=64
  python benchmarks/conditional_prediction.py --workdir=/tmp/fc --set model.frame_conditioning=True # frame-conditioned
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def experiment_config(workdir: str, extra: list[str]):
    """The config of the run in `workdir` (its saved config.json: an unconditional or a frame-conditioned model) or,
    for a new workdir, the default config (`configs/default.py`, the CPU demo), plus `--set` overrides."""
    from vdm_jax import configuration

    if os.path.exists(os.path.join(workdir, "config.json")):
        return configuration.from_config_dict(configuration.load_run_config(workdir, extra))
    from benchmarks.common import load_config

    return load_config("configs/default.py", extra)


def train(cfg, workdir: str) -> float:
    """Trains (or resumes / reuses) the run in `workdir`; returns the wall seconds spent."""
    from vdm_jax.train.loop import train_and_evaluate

    t0 = time.time()
    train_and_evaluate(cfg, workdir)
    return time.time() - t0


def real_clips(num: int, num_frames: int, resolution: int) -> tuple[np.ndarray, list[dict]]:
    """Test clips of the embedded dataset rendered at any length (the generator is a pure function of the index):
    (videos float32 [num, T, R, R, 3] in [-1, 1], ground truth per clip)."""
    from vdm_jax.data.moving_shapes import generate_example

    examples = [generate_example("test", i, num_frames, resolution) for i in range(num)]
    return np.stack([e["video"] for e in examples]).astype(np.float32) / 127.5 - 1.0, examples


def clip_conditioning(cfg, examples: list[dict], conditioning: str) -> dict | None:
    """What a class- or caption-conditioned model is given besides the known frames (None for a model with neither):
    each test clip's own label (the shape of object 0) and caption, which names every object's colour, shape and
    initial direction (`clip`, as `main.py --mode=sample --cond_split` gives them), or the null class and the empty
    caption (`null`: the same network told nothing, the control)."""
    from vdm_jax.train.sampling import sample_conditioning

    if conditioning not in CONDITIONING:
        raise ValueError(f"--conditioning={conditioning}: choose one of {', '.join(CONDITIONING)}")
    own = {"labels": [e["label"] for e in examples], "captions": [e["caption"] for e in examples]}
    return sample_conditioning(cfg, len(examples), own=own, unknown=conditioning == "null")


def colour_kept(videos: np.ndarray, last: int) -> float:
    """Fraction of the colours present in frame 0 that are still present in frame `last` (per video, averaged)."""
    from vdm_jax.data.palette import BACKGROUND, PALETTE
    from vdm_jax.evaluation.objects import detect_objects, to_rgb255

    rgb = to_rgb255(videos)
    kept = []
    for video in rgb:
        first = set(detect_objects(video[0], PALETTE, BACKGROUND).color_index.tolist())
        final = set(detect_objects(video[last], PALETTE, BACKGROUND).color_index.tolist())
        kept.append(len(first & final) / max(len(first), 1))
    return float(np.mean(kept))


def summarise_unconditional(videos: np.ndarray) -> dict:
    """Videos made from no real frame: the temporal-consistency metrics and the frame-0 colours kept to the end."""
    from vdm_jax.evaluation import temporal_consistency

    return {
        "colours_kept_last_frame": round(colour_kept(videos, videos.shape[1] - 1), 3),
        **{k_: round(v, 3) for k_, v in temporal_consistency(videos).items()},
    }


def summarise(videos: np.ndarray, context: np.ndarray, real: np.ndarray, examples: list[dict], k: int) -> dict:
    from vdm_jax.evaluation import object_fidelity, temporal_consistency

    t = videos.shape[1]
    fidelity = object_fidelity(videos, examples, range(k, t))
    return {
        "context_max_abs_error": float(np.abs(videos[:, :k] - context).max()),
        "first_new_frame_mse": float(np.mean((videos[:, k] - real[:, k]) ** 2)),
        "trajectory_error_px": round(fidelity["trajectory_error_px"], 3),
        "trajectory_error_px_by_frame": [round(e, 2) for e in fidelity["trajectory_error_px_by_frame"]],
        "objects_missing": round(fidelity["objects_missing"], 3),
        "objects_extra": round(fidelity["objects_extra"], 3),
        "colours_kept_last_frame": round(colour_kept(videos, t - 1), 3),
        **{k_: round(v, 3) for k_, v in temporal_consistency(videos).items()},
    }


TASKS = ("predict", "extend", "keyframes", "from_nothing")
CHAINS = ("plain", "memory")  # the extend task's 4x chains: the last frames only; with --memory, far frames too
CONDITIONING = ("clip", "null")  # what a class- or caption-conditioned model is told: see clip_conditioning


def pick_long_video_method(methods: dict, results: dict, choice: str) -> str:
    """The guided method that long videos (extension, keyframes) use: `choice`, or for "auto" the one whose prediction
    keeps objects best (highest object permanence, then lowest trajectory error). Chained chunks condition on
    generated frames, so losing objects compounds; the lowest trajectory error alone picked w_r = 50 on the default
    model, whose 4x extension then had object permanence 0.16 against 0.44 at w_r = 10 (docs/conditional_results.md)."""
    if choice != "auto":
        return choice
    guided = [name for name in methods if name != "replacement"]
    score = lambda name: (
        -results[f"predict_{name}"]["object_permanence"],
        results[f"predict_{name}"]["trajectory_error_px"],
    )
    return min(guided, key=score)


def _on_mesh(fn):
    """Runs fn(cfg, ...) under cfg's mesh: the videos split over this host's devices, as --mode=sample does."""

    @functools.wraps(fn)
    def on_mesh(cfg, *args, **kwargs):
        from vdm_jax.train.sampling import on_mesh

        with on_mesh(cfg):
            return fn(cfg, *args, **kwargs)

    return on_mesh


@_on_mesh
def evaluate(
    cfg,
    workdir: str,
    *,
    num: int,
    k: int,
    weights: list[float],
    overlap: int,
    stride: int,
    tasks=TASKS,
    frame_weights: tuple[float, ...] = (),
    extend_with: str = "auto",
    samples_dir: str = "",
    candidates: int = 1,
    joint_hop: int = 0,
    refine_times: tuple[float, ...] = (),
    keyframe_workdir: str = "",
    key_context: int = 1,
    conditioning: str = "clip",
    overrides: tuple[str, ...] = (),
    memory: int = 0,
    chains: tuple[str, ...] = CHAINS,
) -> dict:
    import jax

    from vdm_jax.train import conditional, keyframes

    model, step = conditional.load_model(cfg, workdir)
    key_model = None  # keyframes: a model trained at stride x the frame model's frame stride, else the frame model
    if keyframe_workdir and stride:  # a run of another stride or frame size is a ConfigError that says what differs
        key_model, key_step = keyframes.load_keyframe_model(model, keyframe_workdir, stride, overrides=overrides)
    t, r = cfg.data.num_frames, cfg.data.resolution
    real, examples = real_clips(num, 4 * t, r)
    context = real[:, :k]
    cond = clip_conditioning(cfg, examples, conditioning)  # a class- or caption-conditioned model's other input
    rng = jax.random.key(7)
    results = {"checkpoint_step": step, "num_videos": num, "context_frames": k, "model_frames": t, "resolution": r}
    if cond is not None:
        results["conditioning"] = conditioning
    if key_model is not None:
        results["keyframe_checkpoint_step"] = key_step
    # References: the real clips, a no-model "repeat the last context frame" predictor, unconditional samples.
    repeat = np.concatenate([context, np.repeat(context[:, -1:], t - k, axis=1)], axis=1)
    results["real_T"] = summarise(real[:, :t], context, real, examples, k)
    results["repeat_last_frame"] = summarise(repeat, context, real, examples, k)
    uncond = conditional.sample_with_known(model, rng, np.zeros((num, t, r, r, 3)), np.zeros((num, t)), cond=cond)
    empty = np.zeros((num, 0, r, r, 3), np.float32)  # no context: long videos from nothing
    results["unconditional_temporal"] = summarise(np.asarray(uncond), np.asarray(uncond)[:, :k], real, examples, k)

    def run(name: str, fn, conditioned: bool = True) -> np.ndarray:
        t0 = time.time()
        out = np.asarray(fn())
        scores = summarise(out, context, real, examples, k) if conditioned else summarise_unconditional(out)
        results[name] = {**scores, "seconds": round(time.time() - t0, 1)}
        if samples_dir:  # [N, T, H, W, 3] float32 in [-1, 1], as scored: to look at or score again exactly
            os.makedirs(samples_dir, exist_ok=True)
            np.savez_compressed(os.path.join(samples_dir, f"{name}.npz"), videos=out.astype(np.float32))
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)  # progress: results as they come
        return out

    # An unconditional model: replacement against reconstruction guidance at each weight; a frame-conditioned one
    # reads the known frames as inputs (the "network" method), with frame guidance at each weight w_f > 0.
    if cfg.model.frame_conditioning:
        methods = {"network": (model, {"method": "network", "cond": cond})}
        for w in frame_weights:
            sampler = dataclasses.replace(cfg.sampler, frame_guidance_weight=w)
            variant = model._replace(cfg=dataclasses.replace(cfg, sampler=sampler))
            methods[f"network_fg{w:g}"] = (variant, {"method": "network", "cond": cond})
    else:
        methods = {"replacement": (model, {"method": "replacement", "cond": cond})}
        for w in weights:
            methods[f"reconstruction_w{w:g}"] = (model, {"method": "reconstruction", "recon_weight": w, "cond": cond})
    if extend_with != "auto" and extend_with not in methods:
        raise ValueError(f"--extend_with={extend_with}: choose auto or one of {', '.join(methods)}")
    for name, (m, kwargs) in methods.items():
        run(f"predict_{name}", lambda m=m, kw=kwargs: conditional.predict(m, rng, context, **kw))
    results["extend_with"] = best = pick_long_video_method(methods, results, extend_with)
    for name in [n for n in dict.fromkeys(("replacement", best)) if n in methods]:
        m, kwargs = methods[name]
        km = None  # the keyframe model, sampled with this method's sampler settings (steps, frame guidance)
        if stride and key_model is not None:
            km = key_model._replace(cfg=keyframes.keyframe_config(m.cfg, keyframe_workdir, stride, overrides))
        if "extend" in tasks:
            runs, chain = {}, None  # the 4x chains to run: name suffix -> extend arguments; the plain one's videos
            if "plain" in chains:
                runs[""] = {"overlap": overlap}
            if memory and "memory" in chains and name != "replacement":  # the same new frames per chunk
                runs[f"_memory{memory}_overlap{overlap - memory}"] = {"overlap": overlap - memory, "memory": memory}
            for suffix, ext in runs.items():
                out = run(
                    f"extend4x_{name}{suffix}",
                    lambda m=m, kw=kwargs, ext=ext: conditional.extend(m, rng, context, 4 * t, **ext, **kw),
                )
                if not suffix:
                    chain = out
                if candidates > 1 and name != "replacement":
                    run(
                        f"extend4x_{name}{suffix}_best_of{candidates}",
                        lambda m=m, kw=kwargs, ext=ext: conditional.extend(
                            m, rng, context, 4 * t, candidates=candidates, **ext, **kw
                        ),
                    )
            if joint_hop:
                run(
                    f"joint4x_{name}_hop{joint_hop}",
                    lambda m=m, kw=kwargs: conditional.extend_jointly(m, rng, context, 4 * t, hop=joint_hop, **kw),
                )
            for t0 in refine_times:  # the chain's videos re-drawn from time t0 by co-denoising
                run(
                    f"extend4x_{name}_refined_hop{joint_hop or t // 2}_t{t0:g}",
                    lambda m=m, kw=kwargs, t0=t0, chain=chain: conditional.extend_jointly(
                        m, rng, context, 4 * t, hop=joint_hop or t // 2, start=chain, start_time=t0, **kw
                    ),
                )
        if stride and "keyframes" in tasks:
            label = f"keyframes_s{stride}" + (f"_kc{key_context}" if key_context > 1 else "") + ("_km" if km else "")
            for c in dict.fromkeys((1, candidates if name != "replacement" else 1)):
                run(
                    f"{label}_{name}" + (f"_best_of{c}" if c > 1 else ""),
                    lambda m=m, km=km, kw=kwargs, c=c: keyframes.keyframes_then_interpolate(
                        m, rng, context, 4 * t, stride, keyframe_model=km, key_context=key_context, candidates=c, **kw
                    ),
                )
        if "from_nothing" in tasks and name != "replacement":  # long videos with no real frame: temporal metrics
            run(
                f"from_nothing_extend4x_{name}",
                lambda m=m, kw=kwargs: conditional.extend(m, rng, empty, 4 * t, overlap=overlap, **kw),
                False,
            )
            if km is not None:
                run(
                    f"from_nothing_keyframes_s{stride}_kc{key_context}_km_{name}",
                    lambda m=m, km=km, kw=kwargs: keyframes.keyframes_then_interpolate(
                        m, rng, empty, 4 * t, stride, keyframe_model=km, key_context=key_context, **kw
                    ),
                    False,
                )
    results["real_4T"] = summarise(real, context, real, examples, k)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--stage", choices=["train", "eval", "all"], default="all")
    parser.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    parser.add_argument("--num", type=int, default=16, help="test clips to condition on")
    parser.add_argument("--k", type=int, default=2, help="conditioning frames")
    parser.add_argument("--weights", default="2,10,50", help="reconstruction-guidance weights w_r to compare")
    parser.add_argument(
        "--frame_weights", default="", help="frame-conditioned models: frame-guidance weights w_f > 0 to compare too"
    )
    parser.add_argument(
        "--extend_with",
        default="auto",
        help="method for extension and keyframes besides replacement: e.g. reconstruction_w10, network_fg2; auto: the "
        "guided one with the highest prediction object permanence",
    )
    parser.add_argument("--overlap", type=int, default=4, help="extension: frames shared by consecutive chunks")
    parser.add_argument(
        "--memory",
        type=int,
        default=0,
        help="extension also with this many far-back known frames per chunk and overlap - memory recent ones (the "
        "same new frames per chunk; a model trained with data.long_range_prob > 0)",
    )
    parser.add_argument(
        "--chains",
        default=",".join(CHAINS),
        help="the extend task's 4x chains, a comma-separated subset of plain (each chunk knows the last --overlap "
        "frames) and memory (with --memory > 0); --candidates applies to each",
    )
    parser.add_argument(
        "--stride", type=int, default=2, help="keyframes-then-interpolation frame stride (0: skip that experiment)"
    )
    parser.add_argument(
        "--keyframe_workdir",
        default="",
        help="keyframes from this run's model (trained at --stride times the frame run's data.frame_stride) instead "
        "of the frame model",
    )
    parser.add_argument(
        "--key_context",
        type=int,
        default=1,
        help="keyframes: condition the keyframe chunk on this many keyframes, the frame model first continuing the "
        "context to keyframe key_context - 1 where it is shorter (2: the keyframe model sees the motion)",
    )
    parser.add_argument("--samples_dir", default="", help="also write each method's videos to DIR/<name>.npz")
    parser.add_argument(
        "--candidates",
        type=int,
        default=1,
        help="> 1: also extend (and make keyframes then interpolate) keeping the likeliest of this many samples per "
        "chunk (the candidates argument of conditional.extend and keyframes_then_interpolate)",
    )
    parser.add_argument(
        "--joint_hop",
        type=int,
        default=0,
        help="> 0: also make the 4T frames at once by temporal co-denoising, windows every this many frames "
        "(conditional.extend_jointly; the extend task)",
    )
    parser.add_argument(
        "--refine_times",
        default="",
        help="comma-separated t0 in (0, 1): also re-draw the chain's videos from their noised version at each t0 by "
        "co-denoising (windows every --joint_hop frames, default T/2; the extend task)",
    )
    parser.add_argument(
        "--conditioning",
        choices=CONDITIONING,
        default="clip",
        help="class- or caption-conditioned models: each test clip's own label and caption (clip), or the null "
        "label and the empty caption (null: the same model told nothing, its control)",
    )
    parser.add_argument(
        "--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)} (prediction always runs)"
    )
    args = parser.parse_args()
    config = experiment_config(args.workdir, args.set)
    if args.stage in ("train", "all"):
        print(json.dumps({"train_seconds": round(train(config, args.workdir), 1)}))
    if args.stage in ("eval", "all"):
        weights = [float(w) for w in args.weights.split(",")]
        tasks = tuple(args.tasks.split(","))
        if not set(tasks) <= set(TASKS):
            parser.error(f"--tasks={args.tasks}: choose from {','.join(TASKS)}")
        chains = tuple(args.chains.split(","))
        if not set(chains) <= set(CHAINS):
            parser.error(f"--chains={args.chains}: choose from {','.join(CHAINS)}")
        if chains == ("memory",) and not args.memory:
            parser.error("--chains=memory needs --memory > 0 (the far-back frames per chunk)")
        if args.refine_times and "plain" not in chains:
            parser.error("--refine_times re-draws the plain chain's videos: keep plain in --chains")
        out = evaluate(
            config,
            args.workdir,
            num=args.num,
            k=args.k,
            weights=weights,
            overlap=args.overlap,
            memory=args.memory,
            chains=chains,
            stride=args.stride,
            tasks=tasks,
            frame_weights=tuple(float(w) for w in args.frame_weights.split(",") if w),
            extend_with=args.extend_with,
            samples_dir=args.samples_dir,
            candidates=args.candidates,
            joint_hop=args.joint_hop,
            refine_times=tuple(float(t) for t in args.refine_times.split(",") if t),
            keyframe_workdir=args.keyframe_workdir,
            overrides=tuple(args.set),
            key_context=args.key_context,
            conditioning=args.conditioning,
        )
        print(json.dumps(out, indent=1))
