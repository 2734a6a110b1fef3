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
under the model (`chunk_nll`: the diffusion NLL of the chunk given its known frames). Keyframes then interpolation,
the two-stage route, builds on these in `vdm_jax.train.keyframes`.
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


def check_frames(cfg, frames: jax.Array, name: str) -> None:
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
    check_frames(cfg, frames, "frames")
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
    check_frames(cfg, frames, "frames")
    frame_times = _check_times(frame_times, frames)
    fn = _compiled_nll(model.graphdef, cfg, levels, current_layout())
    return call_padded(fn, (model.params, model.rest, rng), (frames, mask, cond, frame_times))


def best_of(
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
    check_frames(cfg, context, "context")
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
    run = lambda key, frames, mask, times=None: best_of(  # noqa: E731
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
    check_frames(cfg, context, "context")
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
