"""Random known-frame masks for training frame-conditioned models (prediction, interpolation, unconditional).

One model learns all three tasks (VDM §3.1 discusses conditioning by known frames): per example we draw
  - unconditional (no frame known)            with probability 1/3,
  - prediction: the first k frames known, k ~ U{1, ..., T-1},
  - interpolation: every s-th frame known (s ~ U{2, ..., max(2, T // 2)}), the first frame included.
Appended independent image frames (segment id > 0) are never known.

Known-frame noise augmentation (`config.model.known_frames_noise` = s > 0): each clip's known frames get Gaussian
noise of its own standard deviation σ ~ U(0, s) (data in [-1, 1]). A model that extends a video chunk by chunk is
conditioned on its own, imperfect frames; one trained only on real frames trusts them exactly and errors compound.
Noise on the conditioning in training (the noise conditioning augmentation of cascaded diffusion models, Ho et al.
2021, here without a level input: σ = 0 stays in the training distribution, so sampling gives the frames as they are)
is meant to teach the model to read the scene from known frames without copying their flaws. Measured on the embedded
dataset (docs/conditional_results.md) at s = 0.5 against a control it did not help: the chain's own frames are not
noisy but off in their own ways (objects off their tracks, fragments where objects met). Off by default. Training on
the model's own context frames instead: `vdm_jax.train.context_pool`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_known_frames(video: jax.Array, segment_ids: jax.Array | None, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """video: [B, T, H, W, C] -> (known_frames [B, T, H, W, C] zero where unknown, known_mask [B, T] float32)."""
    b, t = video.shape[:2]
    is_video = (segment_ids == 0) if segment_ids is not None else jnp.ones((b, t), bool)
    num_video = jnp.sum(is_video, axis=1, keepdims=True)  # [B, 1]
    mode_rng, k_rng, s_rng = jax.random.split(rng, 3)
    mode = jax.random.randint(mode_rng, (b, 1), 0, 3)
    frame = jnp.arange(t)[None, :]
    k = jax.random.randint(k_rng, (b, 1), 1, jnp.maximum(num_video, 2))  # 1 .. T_video - 1
    stride = jax.random.randint(s_rng, (b, 1), 2, jnp.maximum(num_video // 2, 2) + 1)
    prediction = frame < k
    interpolation = (frame % stride) == 0
    mask = jnp.where(mode == 1, prediction, jnp.where(mode == 2, interpolation, False)) & is_video
    mask = mask.astype(jnp.float32)
    return video * mask[:, :, None, None, None], mask


def noise_known_frames(known: jax.Array, mask: jax.Array, rng: jax.Array, max_std: float) -> jax.Array:
    """known [B, T, H, W, C] (zero where unknown), mask [B, T] -> known + σ_b ε on known frames, σ_b ~ U(0, max_std).

    Unknown frames stay exactly zero; max_std = 0 returns `known` unchanged."""
    if max_std == 0:
        return known
    std_rng, eps_rng = jax.random.split(rng)
    std = jax.random.uniform(std_rng, (known.shape[0],), known.dtype, 0.0, max_std)
    noise = std[:, None, None, None, None] * jax.random.normal(eps_rng, known.shape, known.dtype)
    return known + noise * mask[:, :, None, None, None].astype(known.dtype)
