"""Keyframes, then interpolation: the two-stage route to long videos (Ho et al. 2022, "Video Diffusion Models", §4.3).

`keyframes_then_interpolate` samples every stride-th frame first (autoregressively, with `conditional.extend`, by
the frame model or a keyframe model trained at a larger frame stride: `load_keyframe_model`), then fills the frames
between keyframes in windows that each see the keyframes on both sides (`interpolation_windows`), all windows in one
batch. Known frames enter as in `vdm_jax.train.conditional` (`method`: replacement, reconstruction guidance or a
frame-conditioned network).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.train import conditional
from vdm_jax.train.conditional import SamplingModel, Weight


def keyframe_config(cfg, workdir: str, stride: int, overrides: tuple[str, ...] = ()):
    """The config to sample the keyframe run in `workdir` with, as the keyframe model of a model configured by `cfg`
    (`keyframes_then_interpolate(..., stride, keyframe_model=)`): the config that run saved (config.json, plus
    `key.sub=value` overrides) with `cfg`'s sampler and parallel settings, so both stages sample alike on this
    machine's devices (frame guidance off if the keyframe model does not read known frames).

    Its clips must step `stride` times as far as `cfg`'s (data.frame_stride = stride · cfg's: it makes every
    stride-th frame of `cfg`'s videos), with the same frame size and conditioning (classes, captions); a ConfigError
    says what differs.
    """
    from vdm_jax import configuration

    key_cfg = configuration.from_config_dict(configuration.load_run_config(workdir, overrides))
    have, want = key_cfg.data.frame_stride, stride * cfg.data.frame_stride
    if have != want:
        ratio, rest = divmod(have, cfg.data.frame_stride)
        hint = f", or make keyframes at stride {ratio}, the one it fits" if not rest and ratio >= 2 else ""
        raise configuration.ConfigError(
            f"the keyframe run {workdir} was trained at data.frame_stride={have}; keyframes at stride {stride} of a "
            f"model trained at data.frame_stride={cfg.data.frame_stride} need a run at {want} (train one with "
            f"--config.data.frame_stride={want}{hint})"
        )
    fields = {
        "data.resolution": (cfg.data.resolution, key_cfg.data.resolution),
        "model.channels": (cfg.model.channels, key_cfg.model.channels),
        "model.num_classes": (cfg.model.num_classes, key_cfg.model.num_classes),
        "model.text_conditioning": (cfg.model.text_conditioning, key_cfg.model.text_conditioning),
        "data.text_max_length": (cfg.data.text_max_length, key_cfg.data.text_max_length),
    }
    if cfg.model.text_conditioning == "precomputed":  # both stages are given the same embeddings [N, L, D]
        fields["model.text_embed_dim"] = (cfg.model.text_embed_dim, key_cfg.model.text_embed_dim)
    differ = [f"{k} {mine!r} here, {theirs!r} there" for k, (mine, theirs) in fields.items() if mine != theirs]
    if differ:
        raise configuration.ConfigError(
            f"the keyframe run {workdir} cannot make this model's keyframes: {'; '.join(differ)}"
        )
    sampler = cfg.sampler
    if not key_cfg.model.frame_conditioning:
        sampler = dataclasses.replace(sampler, frame_guidance_weight=0.0)
    return dataclasses.replace(key_cfg, sampler=sampler, parallel=cfg.parallel)


def load_keyframe_model(
    model: SamplingModel, workdir: str, stride: int, step: int | None = None, overrides: tuple[str, ...] = ()
) -> tuple[SamplingModel, int]:
    """The keyframe run in `workdir` (latest or given checkpoint, EMA parameters) under `keyframe_config` -> (the
    keyframe model for `keyframes_then_interpolate(model, ..., stride, keyframe_model=)`, its step)."""
    return conditional.load_model(keyframe_config(model.cfg, workdir, stride, overrides), workdir, step)


def keyframe_indices(total_frames: int, stride: int) -> np.ndarray:
    """Positions of the keyframes of a total_frames video at frame stride `stride`: 0, s, 2s, ... < total_frames."""
    if stride < 1 or total_frames < 1:
        raise ValueError(f"stride={stride} and total_frames={total_frames} must be >= 1")
    return np.arange(0, total_frames, stride)


def interpolation_windows(total_frames: int, chunk: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows of `chunk` frames that fill the gaps between keyframes: [(start, write_from, write_to)].

    Window j starts on keyframe w_j = j·step, step = stride·⌊(chunk − 1)/stride⌋, so it holds the keyframes at both
    ends of each gap it writes: frames [w_j, w_j + step] (the last window: through the end, its start moved back to
    total_frames − chunk if it would run past the end). The windows depend only on the keyframes, so they are
    sampled in one batch.
    """
    if stride > chunk - 1:
        raise ValueError(f"stride={stride} must be <= chunk - 1 = {chunk - 1}: a window must hold two keyframes")
    if total_frames < chunk:
        raise ValueError(f"total_frames={total_frames} must be >= the model's {chunk} frames for interpolation")
    step = stride * ((chunk - 1) // stride)
    windows, w = [], 0
    while True:
        last = w + chunk >= total_frames
        windows.append((min(w, total_frames - chunk), w, total_frames if last else w + step + 1))
        if last:
            return windows
        w += step


def lead_in_frames(stride: int, key_context: int) -> int:
    """The frames a video must hold before its keyframe chunk, so that it knows `key_context` keyframes: through frame
    stride·(key_context − 1); none for key_context = 0."""
    return stride * (key_context - 1) + 1 if key_context else 0


def known_keyframes(context_frames: int, stride: int, key_context: int) -> int:
    """How many keyframes the keyframe chunk knows: those among the context frames and the lead-in."""
    return -(-max(context_frames, lead_in_frames(stride, key_context)) // stride)


def keyframes_then_interpolate(
    model: SamplingModel,
    rng: jax.Array,
    context: jax.Array,
    total_frames: int,
    stride: int,
    *,
    keyframe_model: SamplingModel | None = None,
    keyframe_overlap: int | None = None,
    key_context: int = 1,
    method: str = "auto",
    recon_weight: Weight = None,
    cond: dict | None = None,
    candidates: int = 1,
) -> jax.Array:
    """The two-stage long-video approach: context [N, k, H, W, C] -> [N, total_frames, H, W, C].

    0. Lead-in (only where the context holds fewer than `key_context` keyframes): `model` first continues the
       context to frame s·(key_context − 1), so that the keyframe model sees that many keyframes, and with two or
       more, the motion between them (from frames 0 and 1 alone it would see one keyframe, and no velocity).
       The context may be empty (k = 0): the lead-in is then an unconditional sample, or with key_context = 0 there
       is none and the keyframe model starts from nothing.
    1. Keyframes: the frames at positions 0, s, 2s, ... (s = stride), conditioned on the context frames that fall on
       keyframe positions, extended autoregressively with `keyframe_model` (ideally one trained at
       data.frame_stride = s; default `model`) and `keyframe_overlap` (default: the known keyframes or half its
       chunk, whichever is more).
    2. Interpolation: every other frame from `model`, in windows that hold the keyframes (and context frames) on
       both sides of their gaps, all windows in one batch.
    Context frames, lead-in frames and keyframes appear in the result exactly. `cond` (labels / captions, leading
    dim N) conditions every stage; `candidates` > 1 keeps, for every chunk of every stage, the likeliest of that many
    samples (as in `extend`).
    """
    cfg = model.cfg
    context = jnp.asarray(context, jnp.float32)
    conditional.check_frames(cfg, context, "context")
    chunk = cfg.data.num_frames
    windows = interpolation_windows(total_frames, chunk, stride)
    keys = keyframe_indices(total_frames, stride)
    lead_in = lead_in_frames(stride, key_context)
    if key_context < 0 or lead_in > total_frames:
        raise ValueError(f"key_context={key_context} must be in 0 .. {len(keys)} (the keyframes of the video)")
    if candidates < 1:
        raise ValueError(f"candidates={candidates} must be >= 1 (1: one sample per chunk)")
    key_model = model if keyframe_model is None else keyframe_model
    key_chunk = key_model.cfg.data.num_frames
    given = known_keyframes(context.shape[1], stride, key_context)
    if given >= key_chunk:
        raise ValueError(
            f"the keyframe model would be given {given} keyframes (key_context={key_context}, {context.shape[1]} "
            f"context frames at stride {stride}), not fewer than its {key_chunk} frames: give fewer"
        )
    guide = {"method": method, "recon_weight": recon_weight}
    if context.shape[1] < lead_in:
        lead_rng = jax.random.fold_in(rng, 2)  # rng itself splits as without a lead-in: same keys for the rest
        context = conditional.extend(model, lead_rng, context, lead_in, cond=cond, candidates=candidates, **guide)
    n, k = context.shape[:2]
    known_keys = context[:, ::stride]  # the context frames on keyframe positions
    overlap = max(known_keys.shape[1], key_chunk // 2) if keyframe_overlap is None else keyframe_overlap
    key_rng, fill_rng = jax.random.split(rng)
    keyframes = conditional.extend(
        key_model, key_rng, known_keys, len(keys), overlap=overlap, cond=cond, candidates=candidates, **guide
    )

    position = np.arange(total_frames)
    known = (position % stride == 0) | (position < k)
    video = jnp.zeros((n, total_frames, *context.shape[2:]), jnp.float32).at[:, keys].set(keyframes)
    video = video.at[:, :k].set(context)
    frames = jnp.concatenate([video[:, s : s + chunk] for s, _, _ in windows], axis=0)  # [W·N, chunk, ...]
    mask = np.concatenate([np.broadcast_to(known[s : s + chunk], (n, chunk)) for s, _, _ in windows], axis=0)
    window_cond = jax.tree.map(lambda a: jnp.concatenate([a] * len(windows), axis=0), cond) if cond else cond
    sampler = functools.partial(conditional.sample_with_known, model, **guide)
    filled = conditional.best_of(sampler, model, fill_rng, frames, jnp.asarray(mask), window_cond, candidates)
    for j, (start, lo, hi) in enumerate(windows):
        video = video.at[:, lo:hi].set(filled[j * n : (j + 1) * n, lo - start : hi - start])
    return video
