"""Sampling videos from a model's (EMA) parameters, and the `--mode=sample` entry point."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from vdm_jax.diffusion import sample
from vdm_jax.models import null_conditioning, with_text_mask
from vdm_jax.parallel import pad_rows, padded_batch


def make_sample_fn(graphdef: nnx.GraphDef, cfg, *, num_frames: int, progress: Callable | None = None):
    """A jitted `fn(params, rest, rng, cond, segment_ids, known) -> videos [N, T, H, W, C]` for an ExperimentConfig.

    `cond` (labels / caption tokens with leading dim N) switches on classifier-free guidance when
    `config.sampler.guidance_weight > 0`; `known` (None, or {"frames": [N, T, H, W, C], "mask": [N, T]}) conditions
    on frames. A frame-conditioned model (config.model.frame_conditioning) gets the known frames as network inputs
    (none known when `known` is None) and no reconstruction guidance; see `vdm_jax.train.conditional`.
    """
    res, ch = cfg.data.resolution, cfg.model.channels
    sampler_cfg = cfg.sampler
    if cfg.model.frame_conditioning:
        sampler_cfg = dataclasses.replace(sampler_cfg, recon_guidance_weight=0.0)

    def fn(params, rest, rng, cond, segment_ids, known):
        if not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):  # Raw key data, as `generate` passes it.
            rng = jax.random.wrap_key_data(rng)
        model = nnx.merge(graphdef, params, rest)
        n = segment_ids.shape[0]
        shape = (n, segment_ids.shape[1], res, res, ch)
        cond = with_text_mask(cond)
        null = null_conditioning(cond, cfg.model) if cond is not None else None
        if cfg.model.frame_conditioning:
            frames = known["frames"] if known is not None else jnp.zeros(shape, jnp.float32)
            mask = jnp.asarray(known["mask"], jnp.float32) if known is not None else jnp.zeros(shape[:2], jnp.float32)
            cond = {**(cond or {}), "known_frames": frames * mask[:, :, None, None, None], "known_mask": mask}

        def denoise_fn(z, logsnr, c):
            seg = segment_ids if z.shape[0] == n else jnp.concatenate([segment_ids] * (z.shape[0] // n))
            return model(z, logsnr, c, segment_ids=seg, train=False)

        return sample(
            denoise_fn,
            shape,
            rng,
            cfg.diffusion,
            sampler_cfg,
            resolution=res,
            cond=cond,
            null_cond=null,
            known=known,
            progress=progress,
        )

    return jax.jit(fn)


def generate(sample_fn, state_params, rest, rng, *, num: int, num_frames: int, cond=None, known=None) -> np.ndarray:
    """Runs `sample_fn` for `num` videos of `num_frames` frames and returns them on the host, clipped to [-1, 1].

    Inputs are passed as host numpy arrays (identical on every process) and the result is gathered from all
    processes, so the same call works on one device and in a multi-host run. Under a mesh (`on_mesh`) the batch is
    padded (repeating its last video's inputs) to a multiple of the data x fsdp devices, so that every device samples
    its share (XLA leaves a batch they do not divide unsplit); a video's noise does not depend on the batch size, so
    the first `num` are the videos an unpadded call gives.
    """
    padded = padded_batch(num)
    segment_ids = np.zeros((padded, num_frames), np.int32)
    key_data = np.asarray(jax.random.key_data(rng))
    videos = sample_fn(state_params, rest, key_data, pad_rows(cond, padded), segment_ids, pad_rows(known, padded))
    videos = multihost_utils.process_allgather(videos, tiled=True)[:num]
    return np.clip(np.asarray(videos, np.float32), -1.0, 1.0)


def sample_conditioning(
    cfg,
    num: int,
    *,
    caption: str = "",
    label: int | None = None,
    own: dict | None = None,
    unknown: bool = False,
):
    """The class and caption conditioning of `--mode=sample` for `num` videos (None for a model with neither):
    `--label` and `--caption` for every video where given, else the conditioning clips' own (`own`, from
    `context.context_from_dataset`), else the null class and the empty caption where the source says nothing
    (`unknown`: a video file), else `loop.conditioning_batch`'s defaults (the classes in turn, test captions).
    A flag the model cannot use, or a label outside its classes, is a ContextError that names the flag."""
    from vdm_jax.train.context import ContextError
    from vdm_jax.train.loop import conditioning_batch

    given = dict(own or {})
    classes = cfg.model.num_classes
    if label is not None:
        if classes == 0:
            raise ContextError(f"--label={label}: this model is not class-conditional (config.model.num_classes=0)")
        given["labels"] = np.full(num, label)
    if caption:
        if cfg.model.text_conditioning != "builtin":
            raise ContextError(
                f"--caption needs a model with the built-in text encoder (config.model.text_conditioning='builtin'); "
                f"this one has text_conditioning={cfg.model.text_conditioning!r}"
            )
        given["captions"] = [caption] * num
    elif unknown:
        given["captions"] = [""] * num  # the null caption; no test captions to read
    cond = conditioning_batch(cfg, num, **given)
    if cond is not None and "label" in cond and not np.all((cond["label"] >= 0) & (cond["label"] < classes)):
        bad = sorted(set(cond["label"].tolist()) - set(range(classes)))
        source = "--label" if label is not None else "the conditioning clips' labels"
        raise ContextError(f"{source} {bad}: this model has classes 0 .. {classes - 1} (config.model.num_classes)")
    if unknown and cond is not None:  # the model is told nothing it was not given: classifier-free guidance's null
        null = null_conditioning(cond, cfg.model)
        if label is None and "label" in cond:
            cond["label"] = np.asarray(null["label"])
        if not caption and "text_tokens" in cond:
            cond["text_tokens"] = np.asarray(null["text_tokens"])
    return cond


def sample_from_checkpoint(
    cfg, workdir: str, *, num_samples: int, step: int | None = None, caption: str = "", label: int | None = None
) -> str:
    """`--mode=sample`: the EMA parameters of the latest (or given) checkpoint -> `<workdir>/samples/` GIF, MP4, npz.
    `caption` / `label`: every video's, for a caption- / class-conditional model (default: test captions, the classes
    in turn)."""
    from vdm_jax.train.loop import restore_for_inference

    cond = sample_conditioning(cfg, num_samples, caption=caption, label=label)  # bad flags fail before loading
    graphdef, params, rest, step = restore_for_inference(cfg, workdir, step)
    sample_fn = make_sample_fn(graphdef, cfg, num_frames=cfg.data.num_frames)
    with on_mesh(cfg):
        videos = generate(
            sample_fn,
            params,
            rest,
            jax.random.key(cfg.seed + 1),
            num=num_samples,
            num_frames=cfg.data.num_frames,
            cond=cond,
        )
    paths = _write_samples(os.path.join(workdir, "samples"), f"sample_step{step}", videos)
    logging.info("Wrote %d samples of step %d to %s", num_samples, step, paths["gif"])
    if jax.process_index() == 0:
        print(f"wrote {num_samples} samples from step {step}: {paths['gif']} {paths['mp4']}")
    return paths["gif"]


def on_mesh(cfg):
    """The run's mesh and sharding rules (config.parallel) made current, so that sampling splits the videos over the
    data axes as training splits its batch (without them every device would sample every video). Enter it before the
    first call of a jitted sampler: the mesh is read when the function is traced."""
    from vdm_jax.parallel import make_mesh, use_mesh

    return use_mesh(make_mesh(cfg.parallel.mesh_shape), cfg.parallel.rule_list)


def _write_samples(out_dir: str, name: str, videos: np.ndarray, marked: np.ndarray | None = None, **arrays) -> dict:
    """`out_dir/name`.gif / .mp4 (grid; `marked` frames with a white border) and .npz (videos and `arrays`), written
    by process 0 only (every process holds the gathered videos). A later run of the same name replaces the files:
    the name says step, length and whether frames were given, not which ones; a warning names what is replaced."""
    from vdm_jax.train import media

    paths = {ext: os.path.join(out_dir, f"{name}.{ext}") for ext in ("gif", "mp4", "npz")}
    if jax.process_index() != 0:
        return paths
    if os.path.exists(paths["npz"]):
        logging.warning("Replacing the earlier samples %s.{gif,mp4,npz} (copy them away to keep them)", name)
    media.save_sample_grid(out_dir, name, videos, marked=marked)
    np.savez_compressed(paths["npz"], videos=videos, **({} if marked is None else {"marked": marked}), **arrays)
    return paths


def sample_conditional_from_checkpoint(
    cfg,
    workdir: str,
    *,
    num_samples: int,
    step: int | None = None,
    cond_video: str = "",
    cond_split: str = "",
    cond_index: int = 0,
    num_cond_frames: int = 1,
    num_frames: int = 0,
    candidates: int = 1,
    keyframe_stride: int = 0,
    keyframe_workdir: str = "",
    key_context: int = 2,
    caption: str = "",
    label: int | None = None,
    memory: int = 0,
) -> str:
    """`--mode=sample` conditioned on frames: continues the first `num_cond_frames` frames of `cond_video` (the same
    context for every sample) or of dataset clips cond_index .. cond_index + num_samples - 1 of `cond_split` to
    `num_frames` frames (0: the model's), each chunk the likeliest of `candidates` samples. With neither source the
    video starts from nothing (no conditioning frames: the first chunk is an unconditional sample), for videos longer
    than the model's (`<workdir>/samples/sample_step<step>_<num_frames>f`).

    Beyond the model's length: autoregressively (`conditional.extend`), or with `keyframe_stride` = s > 0 by
    keyframes, then interpolation (`keyframes.keyframes_then_interpolate`): every s-th frame first, from the run in
    `keyframe_workdir` (trained at data.frame_stride = s times this run's; default this run's model, whose keyframes
    then move at its own speed: slow motion), conditioned on `key_context` keyframes, then the frames between them.
    `memory` > 0: each chunk of the extension also sees that many frames from far back (`conditional.extend`), for a
    model trained on long-range windows (config.data.long_range_prob > 0).
    Writes `<workdir>/samples/cond_step<step>` GIF + MP4 (conditioning frames with a white border) and npz.
    With no conditioning frames, `key_context` = 0 has the keyframe model start from nothing; 1 or 2 have this model
    first sample the video's start through keyframe key_context − 1.
    A class- or caption-conditioned model gets `label` / `caption` for every video where given, else each
    `cond_split` clip's own label and caption, else for `cond_video` the null class and the empty caption (nothing is
    known of a file), else the defaults of `sample_conditioning`."""
    from vdm_jax.train import conditional, keyframes
    from vdm_jax.train.context import ContextError, context_from_dataset, context_from_video

    if cond_video and cond_split:
        raise ContextError("give one of --cond_video=<file> or --cond_split=<split>, not both")
    if not (cond_video or cond_split):
        num_cond_frames = 0  # from nothing
    total = num_frames or cfg.data.num_frames
    if num_cond_frames and not 1 <= num_cond_frames < min(total, cfg.data.num_frames):
        raise ContextError(
            f"--num_cond_frames={num_cond_frames} must be in 1 .. {min(total, cfg.data.num_frames) - 1} "
            f"(fewer than --num_frames={total} and the model's {cfg.data.num_frames} frames)"
        )
    if candidates < 1:
        raise ContextError(f"--candidates={candidates} must be >= 1 (1: one sample per chunk)")
    key_cfg = _check_keyframe_flags(cfg, total, num_cond_frames, keyframe_stride, keyframe_workdir, key_context)
    overlap = num_cond_frames or cfg.data.num_frames // 2  # what each later chunk keeps of the last one
    if memory and keyframe_stride:
        raise ContextError("--memory is for extension chunk by chunk; drop it or --keyframe_stride")
    if memory and total <= cfg.data.num_frames:
        raise ContextError(
            f"--memory={memory} applies to the chunks after the first, and --num_frames={total} is one chunk of the "
            f"model's {cfg.data.num_frames} frames: give --num_frames > {cfg.data.num_frames}, or drop --memory"
        )
    try:
        conditional.check_memory(cfg, memory, overlap, cfg.data.num_frames)
    except ValueError as e:
        given = "--num_cond_frames" if num_cond_frames else "half the model's frames, with no conditioning frames"
        raise ContextError(f"--memory={memory}: {e} (overlap = {given})") from e
    own = None  # the conditioning clips' labels and captions
    if cond_video:
        context = np.repeat(context_from_video(cond_video, cfg, num_cond_frames), num_samples, axis=0)
    elif cond_split:
        context, own = context_from_dataset(cfg, cond_split, cond_index, num_samples, num_cond_frames)
    else:
        r = cfg.data.resolution
        context = np.zeros((num_samples, 0, r, r, cfg.model.channels), np.float32)
    cond = sample_conditioning(cfg, num_samples, caption=caption, label=label, own=own, unknown=bool(cond_video))
    model, step = conditional.load_model(cfg, workdir, step)
    method = conditional.resolve_method(cfg, "auto")
    rng = jax.random.key(cfg.seed + 2)
    keyframe_marks = np.zeros(total, bool)
    with on_mesh(cfg):  # every device samples its share of the videos (`parallel.call_padded`)
        if keyframe_stride:
            key_model, how = None, f"keyframes at stride {keyframe_stride} from this model, then interpolation"
            if keyframe_workdir:
                key_model, key_step = conditional.load_model(key_cfg, keyframe_workdir)
                how = f"keyframes at stride {keyframe_stride} from {keyframe_workdir} (step {key_step})"
                how += ", then interpolation"
            keyframe_marks[::keyframe_stride] = True
            videos = keyframes.keyframes_then_interpolate(
                model,
                rng,
                context,
                total,
                keyframe_stride,
                keyframe_model=key_model,
                key_context=key_context,
                cond=cond,
                candidates=candidates,
            )
        else:
            how = "autoregressive" if total > cfg.data.num_frames else "one chunk"
            videos = conditional.extend(
                model,
                rng,
                context,
                total,
                overlap=overlap,
                cond=cond,
                candidates=candidates,
                memory=memory,
            )
            how += f", {memory} far-back frames per chunk" if memory else ""
    videos = np.asarray(multihost_utils.process_allgather(videos, tiled=True), np.float32)[:num_samples]  # all hosts
    marked = np.zeros(videos.shape[:2], bool)
    marked[:, :num_cond_frames] = True
    name = f"cond_step{step}" if num_cond_frames else f"sample_step{step}_{total}f"
    out_dir = os.path.join(workdir, "samples")
    paths = _write_samples(out_dir, name, videos, marked=marked, context=context, keyframes=keyframe_marks)
    logging.info("Wrote %d conditional samples (%s, %s) of step %d to %s", num_samples, method, how, step, paths["gif"])
    if jax.process_index() == 0:
        print(
            f"wrote {num_samples} samples of {total} frames from {num_cond_frames} conditioning frame(s) ({method}; "
            f"{how}), step {step}: {paths['gif']} {paths['mp4']}"
        )
    return paths["gif"]


def _check_keyframe_flags(cfg, total: int, num_cond_frames: int, stride: int, workdir: str, key_context: int):
    """The keyframe flags of `--mode=sample`, checked before any checkpoint loads -> the keyframe run's config (None:
    no keyframe run). ContextError names the flag and the fix; ConfigError says how the keyframe run differs."""
    from vdm_jax.train import keyframes
    from vdm_jax.train.context import ContextError

    t = cfg.data.num_frames
    if not stride:
        if workdir:
            raise ContextError(
                "--keyframe_workdir needs --keyframe_stride=<s>: that run's data.frame_stride over this run's"
            )
        return None
    if not 2 <= stride <= t - 1:
        raise ContextError(
            f"--keyframe_stride={stride} must be in 2 .. {t - 1}: an interpolation window of the model's {t} frames "
            "must hold the keyframes on both sides of a gap (0: extend autoregressively)"
        )
    if total < t:
        raise ContextError(f"--num_frames={total}: keyframes then interpolation needs at least the model's {t} frames")
    num_keys = len(range(0, total, stride))
    if not 0 <= key_context <= num_keys:
        raise ContextError(
            f"--key_context={key_context} must be in 0 .. {num_keys} (the keyframes of {total} frames at stride "
            f"{stride}); 2 lets the keyframe model see the motion between two keyframes"
        )
    key_cfg = keyframes.keyframe_config(cfg, workdir, stride) if workdir else None
    key_t = (key_cfg or cfg).data.num_frames
    lead_in = keyframes.lead_in_frames(stride, key_context)
    given = keyframes.known_keyframes(num_cond_frames, stride, key_context)
    if given >= key_t:
        raise ContextError(
            f"--key_context={key_context} with --num_cond_frames={num_cond_frames} gives the keyframe model "
            f"{given} keyframes; it makes {key_t} frames and needs fewer known: lower --key_context"
            + (" or --num_cond_frames" if num_cond_frames > lead_in else "")
        )
    return key_cfg
