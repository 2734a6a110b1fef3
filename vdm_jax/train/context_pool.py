"""Training a frame-conditioned model on its own context: a pool of clips whose known frames the model generated.

A long video is extended chunk by chunk (`vdm_jax.train.conditional.extend`), each chunk conditioned on the last
frames of the one before: after the first chunk the known frames are the model's own, with its flaws (objects a
little off their tracks, fragments where two objects met). A model trained only on real known frames continues
those flaws as if they were real. Here part of each training batch shows it what the chain shows it: the known
frames are the model's own continuation of a real clip (or its rendering of the real frames) and the frames to
generate are the real clip's next frames.

Build a pool with `own_context_examples` (or `benchmarks/own_context.py`, which writes the npz), then train with
`--config.train.context_pool=pool.npz` (`config.train.context_pool_fraction` of each batch, default one half, is
drawn from it; the rest is the dataset's, with its random masks). The pool file holds
  video       float32 [N, T, H, W, C] in [-1, 1]
  known_mask  float32 [N, T]  1 on the frames given as known (the generated ones), 0 on the frames to generate.
The draw is a function of (seed, step, process), so a resumed run sees the batches an uninterrupted one would.

Measured on the embedded data (docs/conditional_results.md, 32 clips against a control): a pool of the model's own
continuations made long videos worse (the real continuation does not follow from the model's frames, so the model
learns to jump away from its context); a pool of real frames re-noised and denoised by the model
(`benchmarks/own_context.py --renoise_from`) made one-chunk prediction a little better and the chain no better
beyond the noise. Off by default.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from vdm_jax.errors import UserError


class ContextPoolError(UserError, ValueError):
    """A context pool file that cannot be used with this config (missing, wrong shapes, no frame to generate)."""


def own_context_examples(
    model, rng: jax.Array, clips: np.ndarray, num_cond_frames: int, overlap: int
) -> tuple[np.ndarray, np.ndarray]:
    """The second chunk of an extension, as training examples: clips [N, 2T - overlap, H, W, C] (real, in [-1, 1])
    -> (video [N, T, ...], known_mask [N, T]).

    The model predicts frames num_cond_frames .. T - 1 of each clip from its first num_cond_frames real frames (with
    the sampler settings of `model.cfg`, as `extend` samples its first chunk); the example is the window that starts
    at T - overlap: its first `overlap` frames are the model's own (known), its last T - overlap frames the real
    clip's (to generate), exactly what `extend(..., overlap=overlap)` conditions its second chunk on."""
    from vdm_jax.train.conditional import predict

    t = model.cfg.data.num_frames
    if not 0 < overlap < t or not 0 < num_cond_frames < t:
        raise ValueError(f"need 0 < overlap={overlap} < T={t} and 0 < num_cond_frames={num_cond_frames} < T")
    if clips.ndim != 5 or clips.shape[1] != 2 * t - overlap:
        raise ValueError(f"clips must be [N, 2T - overlap = {2 * t - overlap}, H, W, C], got {clips.shape}")
    generated = np.asarray(predict(model, rng, clips[:, :num_cond_frames]), np.float32)
    start = t - overlap
    video = np.concatenate([generated[:, start:], clips[:, t:]], axis=1).astype(np.float32)
    known_mask = np.zeros(video.shape[:2], np.float32)
    known_mask[:, :overlap] = 1.0
    return video, known_mask


def save_pool(path: str, video: np.ndarray, known_mask: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, video=np.asarray(video, np.float32), known_mask=np.asarray(known_mask, np.float32))


def pool_rows(fraction: float, local_batch: int) -> int:
    """How many rows of a process-local batch of `local_batch` rows a pool fills: round(fraction * local_batch).
    Raises ContextPoolError where that is 0 (the pool would never enter training)."""
    n = int(round(fraction * local_batch))
    if n < 1:
        raise ContextPoolError(
            f"config.train.context_pool_fraction={fraction} of a process-local batch of {local_batch} rows is "
            f"round({fraction * local_batch:g}) = 0 pool rows: no pool example would ever be trained on. Raise "
            f"context_pool_fraction above {0.5 / local_batch:g} or config.train.batch_size (one pool row needs "
            "fraction x local batch > 0.5)"
        )
    return n


class ContextPool:
    """Mixes pool examples into training batches: the last round(fraction * b) rows of each process-local batch
    (b = config.train.batch_size / processes; at least one row, else ContextPoolError)."""

    def __init__(self, path: str, cfg, *, fraction: float, seed: int):
        if not os.path.exists(path):
            raise ContextPoolError(
                f"config.train.context_pool={path!r} does not exist; build one with benchmarks/own_context.py"
            )
        with np.load(path) as f:
            if "video" not in f or "known_mask" not in f:
                raise ContextPoolError(f"{path}: a context pool holds 'video' and 'known_mask', found {sorted(f)}")
            self.video = np.asarray(f["video"], np.float32)
            self.known_mask = np.asarray(f["known_mask"], np.float32)
        t, r, c = cfg.data.num_frames, cfg.data.resolution, cfg.model.channels
        if self.video.ndim != 5 or self.video.shape[1:] != (t, r, r, c):
            raise ContextPoolError(f"{path}: video is {self.video.shape}; the config trains [N, {t}, {r}, {r}, {c}]")
        if len(self.video) == 0:
            raise ContextPoolError(f"{path} holds no example (video is {self.video.shape}); build it again")
        if self.known_mask.shape != self.video.shape[:2]:
            raise ContextPoolError(f"{path}: known_mask is {self.known_mask.shape}, expected {self.video.shape[:2]}")
        known = self.known_mask.astype(bool)
        if not np.array_equal(self.known_mask, known) or known.all(axis=1).any():
            raise ContextPoolError(f"{path}: known_mask must be 0/1 with at least one unknown frame per example")
        if not cfg.model.frame_conditioning:
            raise ContextPoolError("config.train.context_pool needs config.model.frame_conditioning=True")
        if cfg.data.num_image_frames or cfg.model.label_or_text:
            raise ContextPoolError(
                "config.train.context_pool holds unlabelled clips: it does not combine with "
                "config.data.num_image_frames > 0, config.model.num_classes > 0 or text conditioning"
            )
        self.fraction, self.seed = float(fraction), int(seed)
        self.rows = pool_rows(self.fraction, cfg.train.batch_size // jax.process_count())

    def __len__(self) -> int:
        return len(self.video)

    def mix(self, batch: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
        """A process-local batch with its last rows replaced by pool examples, plus `known_mask` [b, T] and
        `use_known_mask` [b] (True on the pool rows), which the train step uses in place of a random mask."""
        b, t = batch["video"].shape[:2]
        n = pool_rows(self.fraction, b)
        rng = np.random.default_rng((self.seed, step, jax.process_index()))
        index = rng.integers(0, len(self), n)
        video = np.array(batch["video"], np.float32, copy=True)
        video[b - n :] = self.video[index]
        known_mask = np.zeros((b, t), np.float32)
        known_mask[b - n :] = self.known_mask[index]
        use = np.zeros((b,), bool)
        use[b - n :] = True
        return {**batch, "video": video, "known_mask": known_mask, "use_known_mask": use}
