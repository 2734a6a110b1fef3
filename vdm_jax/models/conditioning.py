"""Conditioning of the video U-Net: noise level, class labels, text and known frames; and their null versions.

The ``cond`` dict a caller passes to ``UNet3D`` holds, depending on ``ModelConfig``:

- ``label: int32 [B]`` (``num_classes > 0``); the value ``num_classes`` is the learned null class.
- ``text_tokens: int32 [B, L]`` (``text_conditioning='builtin'``), byte ids from :func:`vdm_jax.models.text.tokenize`,
  0 = padding; an all-padding caption is the null caption.
- ``text_embeddings: float [B, L, text_embed_dim]`` and optionally ``text_mask: bool [B, L]``
  (``text_conditioning='precomputed'``); a mask of all False is the null caption.
- ``known_frames: [B, T, H, W, C]`` and ``known_mask: float [B, T]`` (``frame_conditioning``): 1 where a frame is given.

Label and text are what classifier-free guidance (Ho & Salimans 2022) drops: :func:`drop_conditioning` nulls them
per example with probability p in training, and :func:`null_conditioning` nulls them all for the guidance branch.
Known frames are observations, not guidance conditioning, and are never dropped.

Text enters in two ways (as in Imagen, Saharia et al. 2022): cross-attention from the U-Net's attention blocks to the
token sequence, and a masked mean of the tokens added to the FiLM embedding. A learned null token is always
prepended to the sequence, so the null caption attends to (and pools) exactly that token.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdm_jax.models.config import ModelConfig
from vdm_jax.models.layers import dense, sinusoidal_embedding
from vdm_jax.models.text import TextEncoder

Cond = dict[str, jax.Array]


def expected_keys(cfg: ModelConfig) -> dict[str, str]:
    """The cond keys ``cfg`` requires, each with the config setting that asks for it."""
    keys: dict[str, str] = {}
    if cfg.num_classes > 0:
        keys["label"] = f"num_classes={cfg.num_classes}"
    if cfg.text_conditioning == "builtin":
        keys["text_tokens"] = "text_conditioning='builtin'"
    if cfg.text_conditioning == "precomputed":
        keys["text_embeddings"] = "text_conditioning='precomputed'"
    if cfg.frame_conditioning:
        keys["known_frames"] = keys["known_mask"] = "frame_conditioning=True"
    return keys


def check_conditioning(cond: Cond | None, cfg: ModelConfig) -> Cond:
    """Raises ValueError for a missing or unexpected cond key; returns the dict (``{}`` for None)."""
    cond = {} if cond is None else dict(cond)
    needed = expected_keys(cfg)
    optional = {"text_mask"} if cfg.text_conditioning == "precomputed" else set()
    unexpected = sorted(set(cond) - set(needed) - optional)
    if unexpected:
        raise ValueError(
            f"cond has key(s) {unexpected} that this model does not use; the config asks for "
            f"{sorted(needed) or 'none'} "
            "(config.model.num_classes / text_conditioning / frame_conditioning decide which)"
        )
    missing = sorted(set(needed) - set(cond))
    if missing:
        raise ValueError(
            f"cond lacks {missing}, required by config.model "
            + ", ".join(sorted({needed[k] for k in missing}))
            + "; for unconditional calls pass vdm_jax.models.null_conditioning(cond, cfg)"
        )
    return cond


def check_condition_shapes(cond: Cond, cfg: ModelConfig, video_shape: tuple[int, ...]) -> None:
    """Raises ValueError naming the cond key whose shape does not fit videos ``z: video_shape = [B, T, H, W, C]``.

    ``label: [B]``; ``text_tokens: [B, L]``; ``text_embeddings: [B, L, text_embed_dim]`` with ``text_mask: [B, L]``;
    ``known_frames`` shaped like ``z``; ``known_mask: [B, T]``. Caption length L is free.
    """
    b, t = video_shape[:2]
    shapes = {key: tuple(np.shape(value)) for key, value in cond.items()}  # a Python scalar: ()

    def fail(key: str, expected: str) -> None:
        raise ValueError(f"UNet3D: cond['{key}'] must be {expected}, got shape {shapes[key]}")

    if "label" in shapes and shapes["label"] != (b,):
        fail("label", f"[B]=({b},) (one class id per video)")
    if "text_tokens" in shapes and (len(shapes["text_tokens"]) != 2 or shapes["text_tokens"][0] != b):
        fail("text_tokens", f"[B, L]=({b}, L) (byte ids from vdm_jax.models.tokenize)")
    if "text_embeddings" in shapes:
        emb = shapes["text_embeddings"]
        if len(emb) != 3 or emb[0] != b or emb[2] != cfg.text_embed_dim:
            fail(
                "text_embeddings",
                f"[B, L, text_embed_dim]=({b}, L, {cfg.text_embed_dim}) (config.model.text_embed_dim)",
            )
        if "text_mask" in shapes and shapes["text_mask"] != emb[:2]:
            fail("text_mask", f"[B, L]={emb[:2]}, the first two dimensions of cond['text_embeddings']")
    if "known_frames" in shapes and shapes["known_frames"] != tuple(video_shape):
        fail("known_frames", f"[B, T, H, W, C]={tuple(video_shape)}, the shape of z")
    if "known_mask" in shapes and shapes["known_mask"] != (b, t):
        fail("known_mask", f"[B, T]=({b}, {t}) (1 where the frame is given)")


def _keep(cond: Cond, keep: jax.Array, cfg: ModelConfig) -> Cond:
    """Label and text where ``keep: bool [B]``, null elsewhere; other entries unchanged."""
    out = dict(cond)
    if "label" in cond:
        out["label"] = jnp.where(keep, cond["label"], cfg.num_classes).astype(jnp.int32)
    if "text_tokens" in cond:
        out["text_tokens"] = jnp.where(keep[:, None], cond["text_tokens"], 0).astype(jnp.int32)
    if "text_embeddings" in cond:
        emb = cond["text_embeddings"]
        out["text_embeddings"] = jnp.where(keep[:, None, None], emb, jnp.zeros((), emb.dtype))
        mask = cond.get("text_mask", jnp.ones(emb.shape[:2], bool))
        out["text_mask"] = jnp.logical_and(mask, keep[:, None])
    return out


def drop_conditioning(cond: Cond | None, rng: jax.Array, p: float, cfg: ModelConfig) -> Cond | None:
    """Classifier-free guidance training: each example's label and text become null with probability ``p``.

    One Bernoulli draw per example drops label and text together, so the null branch is fully unconditional.
    """
    if cond is None or p <= 0.0:
        return cond
    batch = next(iter(v.shape[0] for k, v in cond.items() if k in ("label", "text_tokens", "text_embeddings")), None)
    if batch is None:
        return cond
    keep = jax.random.bernoulli(rng, 1.0 - p, (batch,))
    return _keep(cond, keep, cfg)


def null_conditioning(cond: Cond | None, cfg: ModelConfig) -> Cond | None:
    """The same dict with every label the null class and every caption empty (the guidance's unconditional branch)."""
    if cond is None:
        return None
    batch = next(iter(v.shape[0] for v in cond.values()), 0)
    return _keep(cond, jnp.zeros((batch,), bool), cfg)


def with_text_mask(cond: Cond | None) -> Cond | None:
    """``cond`` with an explicit all-valid ``text_mask`` where precomputed ``text_embeddings`` come without one (what
    the model assumes then), so that a guidance batch and its null branch, which needs a mask, hold the same keys."""
    if cond is None or "text_embeddings" not in cond or "text_mask" in cond:
        return cond
    return {**cond, "text_mask": jnp.ones(cond["text_embeddings"].shape[:2], bool)}


class ConditionEmbedding(nnx.Module):
    """Noise level + class + pooled text -> FiLM embedding ``[B, emb_dim]``; plus the text sequence for cross-attention.

    The log-SNR gets Fourier features and a SiLU MLP of ``emb_mlp_layers`` dense layers (Ho et al. 2020 embed t the
    same way with two; VDM's UCF-101 model has four); the class embedding and the projected text pool are added to it.
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dtype, e = cfg.compute_dtype, cfg.emb_dim
        self.noise_in = dense(e, e, ("embed", "mlp"), dtype=dtype, rngs=rngs)
        hidden = [dense(e, e, ("embed", "mlp"), dtype=dtype, rngs=rngs) for _ in range(cfg.emb_mlp_layers - 2)]
        self.noise_hidden = nnx.List(hidden) if hidden else None  # Two layers: the parameter tree of before.
        self.noise_out = dense(e, e, ("mlp", "embed"), dtype=dtype, rngs=rngs)
        label_init = nnx.with_partitioning(nnx.initializers.normal(1.0), ("vocab", "embed"))
        self.label_embed = (
            nnx.Embed(cfg.num_classes + 1, e, embedding_init=label_init, rngs=rngs) if cfg.num_classes > 0 else None
        )
        self.text_encoder = (
            TextEncoder(
                cfg.text_embed_dim,
                cfg.text_encoder_layers,
                cfg.head_dim,
                dtype=dtype,
                impl=cfg.attention_impl,
                rngs=rngs,
            )
            if cfg.text_conditioning == "builtin"
            else None
        )
        text = cfg.text_conditioning != "none"
        token = nnx.initializers.normal(1.0)(rngs.params(), (1, cfg.text_embed_dim))
        self.null_token = nnx.Param(token, out_sharding=(None, "embed")) if text else None
        self.text_pool = dense(cfg.text_embed_dim, e, ("embed", "mlp"), dtype=dtype, rngs=rngs) if text else None

    def __call__(self, logsnr: jax.Array, cond: Cond) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """``logsnr: [B]`` -> ``(emb [B, E] float32, context [B, 1+L, D], context_mask bool [B, 1+L])``.

        Without text conditioning, context and context_mask are None.
        """
        cfg = self.cfg
        h = jax.nn.silu(self.noise_in(sinusoidal_embedding(logsnr, cfg.emb_dim)))
        for layer in self.noise_hidden or ():
            h = jax.nn.silu(layer(h))
        emb = self.noise_out(h)
        emb = emb.astype(jnp.float32)
        if self.label_embed is not None:
            emb = emb + self.label_embed(cond["label"]).astype(jnp.float32)
        if self.null_token is None:
            return emb, None, None
        if self.text_encoder is not None:
            text, mask = self.text_encoder(cond["text_tokens"])
        else:
            text = cond["text_embeddings"].astype(jnp.float32)
            mask = cond.get("text_mask", jnp.ones(text.shape[:2], bool)).astype(bool)
        b = text.shape[0]
        null = jnp.broadcast_to(self.null_token[...][None], (b, 1, text.shape[-1]))
        context = jnp.concatenate([null, text], axis=1)
        context_mask = jnp.concatenate([jnp.ones((b, 1), bool), mask], axis=1)
        weights = context_mask.astype(jnp.float32)[..., None]
        pooled = (context * weights).sum(1) / weights.sum(1)
        emb = emb + self.text_pool(pooled).astype(jnp.float32)
        return emb, context, context_mask
