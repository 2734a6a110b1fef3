"""Conditional generation with one video diffusion model: prediction, long videos, keyframes then interpolation
(Ho et al. 2022, "Video Diffusion Models", §3.1 and §4.3).

Known frames x^a (a mask over the T frames of a sample) enter in one of three ways, `method`:
  replacement     before each model call z^a <- a fresh draw of q(z_t^a | x^a) (Song et al. 2021b; VDM §3.1);
  reconstruction  replacement plus x̃^b = x̂^b − (w_r α_t / 2) ∇_{z^b} ‖x^a − x̂^a(z_t)‖² (VDM eq. 7), w_r from
                  config.sampler.recon_guidance_weight (VDM: BAIR 50, Kinetics 9) or a λ-dependent function;
  network         a frame-conditioned model (config.model.frame_conditioning) reads x^a and the mask as inputs; z^a is
                  still replaced by draws of q(z_t^a | x^a), which is what the model saw in training.
  auto            network for a frame-conditioned model, else reconstruction when recon_guidance_weight > 0, else
                  replacement.
Every sample returns the known frames exactly. The sampler is config.sampler (any of them).

Long videos (VDM §4.3.3, 16 -> 64 frames): `extend` samples chunks of the model's T frames, each conditioned on the
last `overlap` frames of the video so far; with `candidates` > 1 each chunk keeps the likeliest of that many samples
under the model (`chunk_nll`: the diffusion NLL of the chunk given its known frames). Keyframes then interpolation:
`keyframes_then_interpolate` samples every stride-th frame first, then fills the frames between keyframes in windows
that each see the keyframes on both sides.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdm_jax.data.config import max_far_frames
from vdm_jax.diffusion import diffusion_nll, sample, window_starts, windowed_denoiser
from vdm_jax.models import null_conditioning, with_text_mask
from vdm_jax.parallel import call_padded, current_layout

METHODS = ("auto", "replacement", "reconstruction", "network")
Weight = float | Callable[[jax.Array], jax.Array] | None


class SamplingModel(NamedTuple):
    """What sampling needs of a trained model: the NNX graph, its (EMA) parameters and other state, the config."""

    graphdef: nnx.GraphDef
    params: Any
    rest: Any
    cfg: Any  # ExperimentConfig


def load_model(cfg, workdir: str, step: int | None = None) -> tuple[SamplingModel, int]:
    """The EMA parameters of `workdir`'s latest (or given) checkpoint -> (SamplingModel, step)."""
    from vdm_jax.train.loop import restore_for_inference

    graphdef, params, rest, step = restore_for_inference(cfg, workdir, step)
    return SamplingModel(graphdef, params, rest, cfg), step


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
    return load_model(keyframe_config(model.cfg, workdir, stride, overrides), workdir, step)


def resolve_method(cfg, method: str, recon_weight: Weight = None) -> str:
    """`method` with "auto" resolved (see the module docstring); ValueError for a combination that cannot work."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose one of {METHODS}")
    weight = cfg.sampler.recon_guidance_weight if recon_weight is None else recon_weight
    if method == "auto":
        if cfg.model.frame_conditioning:
            return "network"
        return "reconstruction" if callable(weight) or weight > 0 else "replacement"
    if method == "network" and not cfg.model.frame_conditioning:
        raise ValueError(
            "method='network' needs a frame-conditioned model (config.model.frame_conditioning=True); "
            "for an unconditional model use 'replacement' or 'reconstruction'"
        )
    if method == "reconstruction" and not (callable(weight) or weight > 0):
        raise ValueError(
            "method='reconstruction' needs a weight: set config.sampler.recon_guidance_weight > 0 "
            "(VDM: BAIR 50, Kinetics 9) or pass recon_weight"
        )
    return method


def _denoiser(graphdef: nnx.GraphDef, params, rest, cond, frames, mask, known_as_inputs: bool, frame_times=None):
    """(denoise_fn(z, logsnr, c), the conditioning to give it): the model in inference mode, and `cond` plus the known
    frames and their mask as inputs when the model reads them (a frame-conditioned model). A frame-conditioned model
    sampled by replacement or reconstruction guidance instead (`known_as_inputs=False`) is told that no frame is
    known, its unconditional mode (a third of its training clips). frame_times [N, T]: the frames' times in the
    video, for windows that are not consecutive frames (guidance's wider batches repeat them)."""
    model = nnx.merge(graphdef, params, rest)
    full = dict(cond or {})
    if model.cfg.frame_conditioning:
        shown = mask if known_as_inputs else jnp.zeros_like(mask)
        full.update(known_frames=frames * shown[:, :, None, None, None], known_mask=shown)

    def denoise_fn(z, logsnr, c):
        times = frame_times
        if times is not None and z.shape[0] != times.shape[0]:
            times = jnp.concatenate([times] * (z.shape[0] // times.shape[0]), axis=0)
        return model(z, logsnr, c or None, frame_times=times, train=False)

    return denoise_fn, full or None


@functools.lru_cache(maxsize=16)
def _compiled_sampler(
    graphdef: nnx.GraphDef, cfg, method: str, recon_weight: Weight, start_time: float, hop: int, layout: tuple
):
    """A jitted fn(params, rest, rng, frames, mask, cond, start) -> samples; cached so chunks of one video compile
    once. hop > 0: frames may be longer than the model's, which denoises them in windows (`windowed_denoiser`).
    layout: `parallel.current_layout()`, a key only (the mesh and rules the activations are annotated with)."""
    weight = cfg.sampler.recon_guidance_weight if recon_weight is None else recon_weight
    constant = 0.0 if method != "reconstruction" or callable(weight) else float(weight)
    sampler_cfg = dataclasses.replace(cfg.sampler, recon_guidance_weight=constant)
    if cfg.model.frame_conditioning and method != "network":  # Told no frame, frame guidance is a no-op.
        sampler_cfg = dataclasses.replace(sampler_cfg, frame_guidance_weight=0.0)
    weight_fn = weight if method == "reconstruction" and callable(weight) else None

    def fn(params, rest, rng, frames, mask, cond, start, frame_times):
        cond = with_text_mask(cond)
        denoise_fn, full = _denoiser(graphdef, params, rest, cond, frames, mask, method == "network", frame_times)
        if hop:
            denoise_fn = windowed_denoiser(denoise_fn, cfg.data.num_frames, hop)
        return sample(
            denoise_fn,
            frames.shape,
            rng,
            cfg.diffusion,
            sampler_cfg,
            resolution=cfg.data.resolution,
            cond=full,
            null_cond=null_conditioning(cond, cfg.model) if cond else None,
            known={"frames": frames, "mask": mask},
            recon_weight_fn=weight_fn,
            start=start,
            start_time=start_time,
        )

    return jax.jit(fn)


def _check_frames(cfg, frames: jax.Array, name: str) -> None:
    r, c = cfg.data.resolution, cfg.model.channels
    if frames.ndim != 5 or tuple(frames.shape[2:]) != (r, r, c):
        raise ValueError(
            f"{name} must be [N, T, {r}, {r}, {c}] (config.data.resolution, config.model.channels) in [-1, 1]; "
            f"got shape {tuple(frames.shape)}"
        )


def sample_with_known(
    model: SamplingModel,
    rng: jax.Array,
    frames: jax.Array,
    mask: jax.Array,
    *,
    method: str = "auto",
    recon_weight: Weight = None,
    cond: dict | None = None,
    start: jax.Array | None = None,
    start_time: float = 1.0,
    frame_times: jax.Array | None = None,
) -> jax.Array:
    """One batch of samples with known frames: frames [N, T, H, W, C] in [-1, 1] (any value where unknown),
    mask [N, T] (1 = known) -> [N, T, H, W, C], equal to `frames` where mask = 1.

    cond: the model's other conditioning (labels / captions, leading dim N), or None.
    start, start_time: SDEdit, a re-draw of the videos `start` [N, T, H, W, C] from their noised version at t0 =
      start_time in (0, 1) (`vdm_jax.diffusion.sample`); known frames still hold where mask = 1.
    frame_times: int [N, T], each frame's time in the video when the T frames are not consecutive (far-back known
      frames, `extend(memory=...)`); None: consecutive.
    Under a mesh (`sampling.on_mesh`) the batch is padded to a multiple of the data x fsdp devices, so that each
    samples its share (`parallel.call_padded`); the N videos are those one device gives.
    """
    cfg = model.cfg
    frames, mask = jnp.asarray(frames, jnp.float32), jnp.asarray(mask, jnp.float32)
    _check_frames(cfg, frames, "frames")
    if mask.shape != frames.shape[:2]:
        raise ValueError(f"mask must be [N, T]={tuple(frames.shape[:2])}; got {tuple(mask.shape)}")
    frame_times = _check_times(frame_times, frames)
    method = resolve_method(cfg, method, recon_weight)
    if start is not None:
        start = jnp.asarray(start, jnp.float32)
        if start.shape != frames.shape:
            raise ValueError(f"start must be shaped like frames, {tuple(frames.shape)}; got {tuple(start.shape)}")
    fn = _compiled_sampler(model.graphdef, cfg, method, recon_weight, float(start_time), 0, current_layout())
    return call_padded(fn, (model.params, model.rest, rng), (frames, mask, cond, start, frame_times))


def _check_times(frame_times, frames: jax.Array) -> jax.Array | None:
    if frame_times is None:
        return None
    frame_times = jnp.asarray(frame_times)
    if frame_times.shape != frames.shape[:2] or not jnp.issubdtype(frame_times.dtype, jnp.integer):
        raise ValueError(
            f"frame_times must be integer [N, T]={tuple(frames.shape[:2])}; got {frame_times.dtype} "
            f"{tuple(frame_times.shape)}"
        )
    return frame_times.astype(jnp.int32)


@functools.lru_cache(maxsize=8)
def _compiled_nll(graphdef: nnx.GraphDef, cfg, levels: int, layout: tuple):
    """A jitted fn(params, rest, rng, frames, mask, cond, frame_times) -> NLL per video; `layout` as in
    `_compiled_sampler`."""

    def fn(params, rest, rng, frames, mask, cond, frame_times):
        fc = cfg.model.frame_conditioning
        denoise_fn, full = _denoiser(graphdef, params, rest, cond, frames, mask, fc, frame_times)
        return diffusion_nll(
            denoise_fn,
            frames,
            rng,
            cfg.diffusion,
            resolution=cfg.data.resolution,
            cond=full,
            frame_mask=1.0 - mask if fc else None,
            levels=levels,
        )

    return jax.jit(fn)


def chunk_nll(
    model: SamplingModel,
    rng: jax.Array,
    frames: jax.Array,
    mask: jax.Array,
    *,
    cond: dict | None = None,
    levels: int = 16,
    frame_times: jax.Array | None = None,
) -> jax.Array:
    """How unlikely the model finds each video given its known frames: frames [N, T, H, W, C], mask [N, T] -> [N]
    nats, lower is likelier (`vdm_jax.diffusion.diffusion_nll`, no guidance).

    A frame-conditioned model scores the unknown frames given the known ones as its inputs, −log p(x^b | x^a); any
    other model scores the whole window, −log p(x^a, x^b), which ranks candidates x^b for the same x^a alike. Every
    video shares each level's noise, so compare videos with the same known frames under one `rng`. frame_times: as
    for `sample_with_known`.
    """
    cfg = model.cfg
    frames, mask = jnp.asarray(frames, jnp.float32), jnp.asarray(mask, jnp.float32)
    _check_frames(cfg, frames, "frames")
    frame_times = _check_times(frame_times, frames)
    fn = _compiled_nll(model.graphdef, cfg, levels, current_layout())
    return call_padded(fn, (model.params, model.rest, rng), (frames, mask, cond, frame_times))


def _best_of(
    sampler, model: SamplingModel, rng: jax.Array, frames, mask, cond, candidates: int, frame_times=None
) -> jax.Array:
    """`candidates` samples of every video in one batch of `sampler(rng, frames, mask, cond=, frame_times=)`; per
    video, the one of lowest `chunk_nll`."""
    if candidates == 1:
        return sampler(rng, frames, mask, cond=cond, frame_times=frame_times)
    n = frames.shape[0]
    tile = lambda a: jnp.concatenate([a] * candidates, axis=0)  # noqa: E731  [C·N, ...], candidate-major
    tiled_cond = jax.tree.map(tile, cond) if cond else cond
    times = None if frame_times is None else tile(frame_times)
    samples = sampler(rng, tile(frames), tile(mask), cond=tiled_cond, frame_times=times)
    score_rng = jax.random.fold_in(rng, 1 << 20)
    nll = chunk_nll(model, score_rng, samples, tile(mask), cond=tiled_cond, frame_times=times).reshape(candidates, n)
    best = jnp.argmin(nll, axis=0)
    return samples.reshape(candidates, n, *samples.shape[1:])[best, jnp.arange(n)]


def _chunk_with_context(context: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
    """context [N, k, ...] -> (frames [N, chunk, ...] with the context first, mask [N, chunk])."""
    n, k = context.shape[:2]
    frames = jnp.zeros((n, chunk, *context.shape[2:]), jnp.float32).at[:, :k].set(context)
    mask = jnp.zeros((n, chunk), jnp.float32).at[:, :k].set(1.0)
    return frames, mask


def extend(
    model: SamplingModel,
    rng: jax.Array,
    context: jax.Array,
    total_frames: int,
    *,
    chunk: int | None = None,
    overlap: int | None = None,
    method: str = "auto",
    recon_weight: Weight = None,
    cond: dict | None = None,
    candidates: int = 1,
    memory: int = 0,
) -> jax.Array:
    """Autoregressive extension (VDM §4.3.3): context [N, k, H, W, C] -> video [N, total_frames, H, W, C].

    The first chunk of `chunk` frames (default config.data.num_frames) is conditioned on the k context frames (k = 0:
    an unconditional sample, for long videos from nothing); each later chunk on the last `overlap` frames (default
    k, or half a chunk when k = 0) of the video so far and adds chunk − overlap new frames.
    The video starts with the context, exactly. total_frames <= chunk is plain prediction.
    candidates > 1: each chunk is sampled that many times (one batch of candidates · N) and the candidate the model
    finds likeliest given the known frames is kept (`chunk_nll`); costs about `candidates` times a plain chunk.
    memory > 0: each later chunk also holds `memory` known frames from far back (`memory_frames`: evenly spaced
    from frame 0 to just before the overlap), with their times, and adds chunk − memory − overlap new frames. That
    needs a frame-conditioned model trained on such windows (config.data.long_range_prob > 0).
    """
    cfg = model.cfg
    context = jnp.asarray(context, jnp.float32)
    _check_frames(cfg, context, "context")
    chunk = cfg.data.num_frames if chunk is None else chunk
    k = context.shape[1]
    overlap = (k or chunk // 2) if overlap is None else overlap
    if not 0 <= k < chunk:
        raise ValueError(f"context has {k} frames; give 0 .. chunk - 1 = {chunk - 1} (chunk = model frames {chunk})")
    if not 1 <= overlap < chunk:
        raise ValueError(f"overlap={overlap} must be in 1 .. chunk - 1 = {chunk - 1}")
    if total_frames < k:
        raise ValueError(f"total_frames={total_frames} is shorter than the {k} context frames")
    if candidates < 1:
        raise ValueError(f"candidates={candidates} must be >= 1 (1: one sample per chunk)")
    check_memory(cfg, memory, overlap, chunk)
    sampler = functools.partial(sample_with_known, model, method=method, recon_weight=recon_weight)
    run = lambda key, frames, mask, times=None: _best_of(  # noqa: E731
        sampler, model, key, frames, mask, cond, candidates, times
    )
    video = run(jax.random.fold_in(rng, 0), *_chunk_with_context(context, chunk))
    i = 1
    while video.shape[1] < total_frames:
        start = video.shape[1] - overlap  # the first frame the chunk overlaps
        far = memory_frames(start, memory)
        known = jnp.concatenate([video[:, far], video[:, start:]], axis=1)
        times = None
        if memory:
            times = np.concatenate([far, start + np.arange(chunk - memory)]).astype(np.int32)
            times = jnp.broadcast_to(times, (video.shape[0], chunk))
        out = run(jax.random.fold_in(rng, i), *_chunk_with_context(known, chunk), times)
        video = jnp.concatenate([video, out[:, memory + overlap :]], axis=1)
        i += 1
    return video[:, :total_frames]


def memory_frames(before: int, memory: int) -> np.ndarray:
    """The far-back frames a chunk of `extend(memory=...)` keeps: `memory` frames evenly spaced over 0 .. before − 1,
    frame 0 first (before = the first frame the chunk overlaps). memory = 0: none."""
    return np.floor(np.arange(memory) * before / max(memory, 1)).astype(np.int64)


def check_memory(cfg, memory: int, overlap: int, chunk: int) -> None:
    """Raises ValueError unless chunks of `chunk` frames can hold `memory` far-back frames besides `overlap` recent
    ones, with a model trained for it: on long-range windows, which hold at most min(3, T - 2) far frames."""
    if memory == 0:
        return
    if memory < 0 or memory + overlap >= chunk:
        raise ValueError(
            f"memory={memory} with overlap={overlap}: give memory >= 0 and memory + overlap < chunk = {chunk}, so "
            "that every chunk adds new frames"
        )
    if not (cfg.model.frame_conditioning and cfg.data.long_range_prob > 0):
        raise ValueError(
            "memory > 0 needs a frame-conditioned model trained on long-range windows (config.model."
            "frame_conditioning=True and config.data.long_range_prob > 0); this model has never seen far-back frames"
        )
    most = max_far_frames(cfg.data.num_frames)  # what `long_range_window` draws: m ~ U{1 .. most}
    if memory > most:
        raise ValueError(
            f"memory={memory}: training on {cfg.data.num_frames}-frame windows showed the model at most {most} "
            f"far-back frames (vdm_jax.data.pipeline.long_range_window); give memory <= {most}"
        )


def extend_jointly(
    model: SamplingModel,
    rng: jax.Array,
    context: jax.Array,
    total_frames: int,
    *,
    hop: int | None = None,
    method: str = "auto",
    recon_weight: Weight = None,
    cond: dict | None = None,
    start: jax.Array | None = None,
    start_time: float = 1.0,
) -> jax.Array:
    """A long video sampled all at once: context [N, k, H, W, C] -> [N, total_frames, H, W, C] (0 <= k < T).

    Temporal co-denoising (`vdm_jax.diffusion.windows`): one sampler run over all total_frames frames, the model
    denoising windows of its T frames every `hop` frames (default T // 2) in one batch at every step and each frame
    taking the mean of its windows' predictions. The context is the known frames of the first window(s), entering by
    `method` as in `sample_with_known`; windows without a known frame are unconditional. Where `extend` conditions
    each chunk on frames it can no longer change, here every frame stays noisy, open to revision by both of its
    neighbours' windows, until the last step. Costs about W = len(window_starts(total_frames, T, hop)) model
    calls per step, the same as `extend` with overlap T − hop.

    The averaging is not exact even with a perfect model: with exact 4-frame windows on a stationary AR(1) video it
    shrinks the variance and drops correlation beyond a window (tests/diffusion/test_windows.py), where a chain of
    exact conditionals would be exact. start, start_time: SDEdit (as in `sample_with_known`), e.g. a video made by
    `extend` re-drawn from its noised version at t0 = start_time, every frame revised by the windows on both sides.
    """
    cfg = model.cfg
    context = jnp.asarray(context, jnp.float32)
    _check_frames(cfg, context, "context")
    chunk = cfg.data.num_frames
    hop = chunk // 2 if hop is None else hop
    n, k = context.shape[:2]
    if not 0 <= k < chunk:
        raise ValueError(f"context has {k} frames; give 0 .. chunk - 1 = {chunk - 1} (chunk = model frames {chunk})")
    window_starts(total_frames, chunk, hop)  # ValueError for a video shorter than a window or a hop out of range
    frames = jnp.zeros((n, total_frames, *context.shape[2:]), jnp.float32).at[:, :k].set(context)
    mask = jnp.zeros((n, total_frames), jnp.float32).at[:, :k].set(1.0)
    method = resolve_method(cfg, method, recon_weight)
    if start is not None:
        start = jnp.asarray(start, jnp.float32)
        if start.shape != frames.shape:
            raise ValueError(f"start must be [N, total_frames, ...] = {tuple(frames.shape)}; got {tuple(start.shape)}")
    fn = _compiled_sampler(model.graphdef, cfg, method, recon_weight, float(start_time), hop, current_layout())
    return call_padded(fn, (model.params, model.rest, rng), (frames, mask, cond, start, None))


def predict(
    model: SamplingModel,
    rng: jax.Array,
    context: jax.Array,
    num_frames: int | None = None,
    **kwargs,
) -> jax.Array:
    """Video prediction: context [N, k, H, W, C] (the first k frames) -> [N, num_frames, H, W, C] (default: the model's
    T frames) starting with the context (BAIR 1 -> 15, Kinetics-600 5 -> 11 in VDM). Longer videos are extended
    autoregressively (see `extend`, which takes the same keyword arguments)."""
    return extend(model, rng, context, model.cfg.data.num_frames if num_frames is None else num_frames, **kwargs)


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
    _check_frames(cfg, context, "context")
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
        context = extend(model, lead_rng, context, lead_in, cond=cond, candidates=candidates, **guide)
    n, k = context.shape[:2]
    known_keys = context[:, ::stride]  # the context frames on keyframe positions
    overlap = max(known_keys.shape[1], key_chunk // 2) if keyframe_overlap is None else keyframe_overlap
    key_rng, fill_rng = jax.random.split(rng)
    keyframes = extend(
        key_model, key_rng, known_keys, len(keys), overlap=overlap, cond=cond, candidates=candidates, **guide
    )

    position = np.arange(total_frames)
    known = (position % stride == 0) | (position < k)
    video = jnp.zeros((n, total_frames, *context.shape[2:]), jnp.float32).at[:, keys].set(keyframes)
    video = video.at[:, :k].set(context)
    frames = jnp.concatenate([video[:, s : s + chunk] for s, _, _ in windows], axis=0)  # [W·N, chunk, ...]
    mask = np.concatenate([np.broadcast_to(known[s : s + chunk], (n, chunk)) for s, _, _ in windows], axis=0)
    window_cond = jax.tree.map(lambda a: jnp.concatenate([a] * len(windows), axis=0), cond) if cond else cond
    sampler = functools.partial(sample_with_known, model, **guide)
    filled = _best_of(sampler, model, fill_rng, frames, jnp.asarray(mask), window_cond, candidates)
    for j, (start, lo, hi) in enumerate(windows):
        video = video.at[:, lo:hi].set(filled[j * n : (j + 1) * n, lo - start : hi - start])
    return video
