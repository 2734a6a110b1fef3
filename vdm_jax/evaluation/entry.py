"""The `--mode=evaluate` entry point, and the evaluation the training loop runs periodically.

`evaluate_checkpoint(cfg, workdir)`: the EMA parameters of the latest (or a given) checkpoint sample
`config.eval.num_samples` videos with the configured sampler; the configured metrics are computed (FVD against the
dataset's test split, with real-data statistics cached per dataset / split / resolution / frame count); results go to
`<workdir>/eval/step_<N>.json` (metric -> value, plus sampler, NFE, N, seconds), a sample grid, and TensorBoard;
evaluating step N again replaces its files, with a warning.
With `config.eval.num_cond_frames = k > 0` the evaluation is of video prediction, as in the paper's BAIR and
Kinetics-600 protocols: sample i continues the first k frames of test clip i // samples_per_clip (its own label and
caption too), and FVD compares the whole videos with those clips.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np
from absl import logging

from vdm_jax.evaluation.fvd import RealStatsKey, cached_real_stats, i3d_features, real_stats, resolve_cache_dir
from vdm_jax.evaluation.metrics import compute_metrics

REAL_SPLIT = "test"


def evaluate_videos(cfg, videos: np.ndarray, *, mesh=None, progress: bool = False) -> dict[str, float]:
    """The configured metrics of sampled `videos` [N, T, H, W, C] in [-1, 1]; FVD compares with the test split.

    FVD's real side is computed once from the first eval.num_real_clips test clips, then read from the cache. With
    several hosts, process 0's cache is the one that counts: its statistics are sent to every host, or, when it has
    none, every host computes them (the I3D batches are sharded over all of them) and process 0 saves them.
    """
    stats = None
    if "fvd" in cfg.eval.metrics:
        key = real_stats_key(cfg)
        cache_dir = resolve_cache_dir(cfg.eval.cache_dir, cfg.data.data_dir)
        stats = cached_real_stats(key, cache_dir)
        if jax.process_count() > 1:
            stats = from_process_0(stats)
        if stats is None:
            from vdm_jax import data as vdm_data

            real = vdm_data.load_examples(cfg.data, split=REAL_SPLIT, num=cfg.eval.num_real_clips)["video"]
            features = lambda: i3d_features(real, batch_size=cfg.eval.batch_size, mesh=mesh, progress=progress)
            stats = real_stats(key, cache_dir, features, num_samples=len(real), read_cache=False)
    return compute_metrics(
        videos, cfg.eval, real_statistics=stats, mesh=mesh, data_dir=cfg.data.data_dir, progress=progress
    )


def from_process_0(stats: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Process 0's real-data (mu [D], cov [D, D]) on every process (None on all if it has none), bit for bit: the
    float64 values travel as their uint32 halves (JAX arrays are 32-bit here)."""
    from jax.experimental import multihost_utils

    mine = stats is not None and jax.process_index() == 0
    # Whether process 0 has statistics, and their feature width (I3D's 400 logits; any width travels).
    flag = np.array([mine, len(stats[0]) if mine else 0], np.int32)
    have, d = (int(v) for v in multihost_utils.broadcast_one_to_all(flag))
    if not have:
        return None
    if jax.process_index() == 0:
        flat = np.concatenate([np.ravel(stats[0]), np.ravel(stats[1])]).astype(np.float64)
    else:
        flat = np.zeros(d + d * d, np.float64)
    bits = np.asarray(multihost_utils.broadcast_one_to_all(flat.view(np.uint32)), np.uint32)
    flat = bits.view(np.float64)
    return flat[:d], flat[d:].reshape(d, d)


def real_stats_key(cfg) -> RealStatsKey:
    """The cache key of the real clips FVD compares with: the first eval.num_real_clips test clips of this dataset as
    stored (its TFDS builder's full name), at the configured frames, stride and size. Reading the key needs no
    prepared dataset, so cached statistics serve where the data is absent."""
    from vdm_jax.data.catalog import get_builder

    return RealStatsKey(
        cfg.data.name,
        REAL_SPLIT,
        cfg.data.resolution,
        cfg.data.num_frames,
        frame_stride=cfg.data.frame_stride,
        num_samples=cfg.eval.num_real_clips,
        source=get_builder(cfg.data).info.full_name,
    )


def check_eval_setup(cfg) -> None:
    """Raises ConfigError for an evaluation that would fail when it first runs (training evaluates every
    eval_every steps and always at its end): FVD without the pretrained I3D, with clips I3D cannot read (fewer than
    `i3d.MIN_FRAMES` frames, not RGB) or with fewer than 2 videos a side (a covariance needs 2); and a test split
    with fewer clips than FVD's real side or prediction's contexts ask for. Called before training or sampling
    starts, not at the first evaluation."""
    from vdm_jax.configuration import ConfigError
    from vdm_jax.evaluation.i3d import MIN_FRAMES, i3d_weights_path

    ev, fvd = cfg.eval, "fvd" in cfg.eval.metrics
    if fvd:
        drop = "; or drop fvd from config.eval.metrics"
        try:
            i3d_weights_path()
        except (ImportError, FileNotFoundError) as e:
            raise ConfigError(f"config.eval.metrics has fvd: {e}") from e
        if cfg.data.num_frames < MIN_FRAMES:
            raise ConfigError(
                f"config.eval.metrics has fvd, whose I3D needs clips of at least {MIN_FRAMES} frames; "
                f"config.data.num_frames={cfg.data.num_frames}{drop}"
            )
        if cfg.model.channels != 3:
            raise ConfigError(
                f"config.eval.metrics has fvd, whose I3D takes RGB videos; {cfg.data.name} has "
                f"{cfg.model.channels} channel(s){drop}"
            )
        if min(ev.num_samples, ev.num_real_clips) < 2:
            raise ConfigError(
                f"config.eval.metrics has fvd, which compares the covariances of >= 2 videos a side; "
                f"config.eval.num_samples={ev.num_samples} samples continue {ev.num_real_clips} test clip(s) "
                "(num_samples / samples_per_clip): give at least 2 of each"
            )
    if not (fvd or ev.num_cond_frames):
        return
    from vdm_jax.data.catalog import dataset_spec

    spec = dataset_spec(cfg.data)
    have = spec.builder.info.splits[spec.tfds_split(REAL_SPLIT)].num_examples
    if have < ev.num_real_clips:
        use = "FVD's real side" if not ev.num_cond_frames else "prediction's contexts"
        raise ConfigError(
            f"config.eval: {ev.num_samples} samples at {ev.samples_per_clip} per clip need {ev.num_real_clips} test "
            f"clips ({use}), but the {REAL_SPLIT} split of {cfg.data.name} holds {have}; lower "
            "config.eval.num_samples or raise config.eval.samples_per_clip"
        )


def prediction_context(cfg, num: int) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """What `num` evaluation samples are conditioned on when config.eval.num_cond_frames = k > 0 (else None):
    ``(first, which, own)``: the first k frames of the test clips they continue, float32 [M, k, H, W, C] in [-1, 1]
    (M = the clips `num` samples reach, at most num_real_clips: only those are read); ``which`` int [num], sample i
    continuing clip (i // samples_per_clip) mod M; and each sample's clip's own labels / captions
    (`conditioning_batch`'s keyword arguments)."""
    from vdm_jax.train.context import context_from_dataset

    k = cfg.eval.num_cond_frames
    if k == 0:
        return None
    spc = cfg.eval.samples_per_clip
    clips = min(cfg.eval.num_real_clips, math.ceil(num / spc))
    first, own = context_from_dataset(cfg, REAL_SPLIT, 0, clips, k)
    which = (np.arange(num) // spc) % clips
    return first, which, {name: v[which] for name, v in own.items()}


def sample_for_eval(cfg, sample_fn, params, rest, *, num: int, seed: int, progress: bool = False) -> np.ndarray:
    """`num` videos in batches of `config.eval.batch_size` (one compiled shape), each batch with its own key;
    continuations of test clips when config.eval.num_cond_frames > 0 (`prediction_context`).

    `sample_fn` comes from `vdm_jax.train.sampling.make_sample_fn` (built once, so it compiles once).
    """
    from vdm_jax.train.loop import conditioning_batch
    from vdm_jax.train.sampling import generate

    batch = min(cfg.eval.batch_size, num)
    videos = []
    batches = math.ceil(num / batch)
    context = prediction_context(cfg, batches * batch)
    own = context[2] if context is not None else {}
    every = conditioning_batch(cfg, batches * batch, **own)  # one label / caption per sample, read once
    part = lambda tree, i: None if tree is None else {k: v[i * batch : (i + 1) * batch] for k, v in tree.items()}
    for i in range(batches):
        rng = jax.random.fold_in(jax.random.key(seed), i)
        videos.append(
            generate(
                sample_fn,
                params,
                rest,
                rng,
                num=batch,
                num_frames=cfg.data.num_frames,
                cond=part(every, i),
                known=_known(cfg, context, slice(i * batch, (i + 1) * batch)),
            )
        )
        if progress:
            logging.info("Sampled batch %d / %d", i + 1, batches)
    return np.concatenate(videos)[:num]


def _known(cfg, context, rows: slice) -> dict | None:
    """The known frames of samples `rows` ({"frames": [n, T, ...], zero after the first k; "mask": [n, T]})."""
    if context is None:
        return None
    first, which, _ = context
    index = which[rows]
    n, k = len(index), first.shape[1]
    frames = np.zeros((n, cfg.data.num_frames, *first.shape[2:]), np.float32)
    frames[:, :k] = first[index]
    mask = np.zeros((n, cfg.data.num_frames), np.float32)
    mask[:, :k] = 1.0
    return {"frames": frames, "mask": mask}


def evaluate_checkpoint(cfg, workdir: str, *, step: int | None = None) -> dict:
    """`--mode=evaluate`; returns what it writes to `<workdir>/eval/step_<N>.json`."""
    from clu import metric_writers

    from vdm_jax.diffusion import num_function_evals
    from vdm_jax.parallel import make_mesh, use_mesh
    from vdm_jax.train import media
    from vdm_jax.train.loop import restore_for_inference
    from vdm_jax.train.sampling import make_sample_fn

    check_eval_setup(cfg)
    graphdef, params, rest, step = restore_for_inference(cfg, workdir, step)
    mesh = make_mesh(cfg.parallel.mesh_shape)
    sample_fn = make_sample_fn(graphdef, cfg, num_frames=cfg.data.num_frames)
    t0 = time.perf_counter()
    with use_mesh(mesh, cfg.parallel.rule_list):
        videos = sample_for_eval(
            cfg, sample_fn, params, rest, num=cfg.eval.num_samples, seed=cfg.seed + 2, progress=True
        )
    sample_seconds = time.perf_counter() - t0
    metrics = evaluate_videos(cfg, videos, mesh=mesh, progress=True)
    result = {
        "step": step,
        "metrics": metrics,
        "sampler": cfg.sampler.name,
        "sampler_steps": cfg.sampler.num_steps,
        "nfe": num_function_evals(cfg.sampler),
        "guidance_weight": cfg.sampler.guidance_weight,
        "num_samples": int(len(videos)),
        "num_cond_frames": cfg.eval.num_cond_frames,
        "samples_per_clip": cfg.eval.samples_per_clip,
        "sample_seconds": sample_seconds,
        "seconds": time.perf_counter() - t0,
    }
    if jax.process_index() == 0:
        out_dir = os.path.join(workdir, "eval")
        os.makedirs(out_dir, exist_ok=True)
        name = f"step_{step}"
        # The names say only the step: evaluating it again (other sampler, metrics, seed) replaces the earlier files.
        files = [f"{name}.{ext}" for ext in ("json", "gif", "mp4")]
        earlier = [f for f in files if os.path.exists(os.path.join(out_dir, f))]
        if earlier:
            logging.warning(
                "Replacing the earlier evaluation %s in %s (copy them away to keep them)", ", ".join(earlier), out_dir
            )
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(result, f, indent=2)
        media.save_sample_grid(out_dir, name, videos[: cfg.train.num_samples])
        writer = metric_writers.create_default_writer(workdir)
        writer.write_scalars(step, {f"evaluate/{k}": v for k, v in metrics.items()})
        writer.flush()
        print(json.dumps(result, indent=2))
    return result
