"""Byte-level captions: a tokenizer with no vocabulary file, and a small transformer encoder trained with the U-Net.

Token ids: 0 is padding, a UTF-8 byte ``b`` is ``b + 1`` (so ids lie in [1, 256]); ``VOCAB_SIZE = 257``.
The data pipeline imports :func:`tokenize` from here; the U-Net's builtin text mode embeds these ids with
:class:`TextEncoder`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdm_jax.models.attention import attend
from vdm_jax.models.layers import dense, sinusoidal_embedding
from vdm_jax.parallel import constrain

TEXT_AXES = ("batch", None, "embed")  # [B, L, D] caption activations

PAD_ID = 0
VOCAB_SIZE = 257


def tokenize(texts: Sequence[str], max_length: int) -> np.ndarray:
    """UTF-8 bytes shifted by +1, truncated or padded with 0 to ``max_length``: ``int32 [N, max_length]``."""
    if max_length < 1:
        raise ValueError(f"tokenize: max_length={max_length} must be >= 1")
    out = np.zeros((len(texts), max_length), np.int32)
    for i, text in enumerate(texts):
        ids = np.frombuffer(text.encode("utf-8"), np.uint8)[:max_length].astype(np.int32) + 1
        out[i, : len(ids)] = ids
    return out


def detokenize(tokens: np.ndarray) -> list[str]:
    """Inverse of :func:`tokenize` for ``[N, L]`` ids (padding dropped; a cut multi-byte character is replaced)."""
    tokens = np.asarray(tokens)
    return [bytes((row[row != PAD_ID] - 1).astype(np.uint8).tolist()).decode("utf-8", "replace") for row in tokens]


def _layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        dim,
        dtype=jnp.float32,
        scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("norm",)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("norm",)),
        rngs=rngs,
    )


class TextEncoderLayer(nnx.Module):
    """Pre-LayerNorm transformer layer: self-attention over tokens, then a GELU MLP of width 4D."""

    def __init__(self, dim: int, head_dim: int, *, dtype, impl: str, rngs: nnx.Rngs):
        self.heads, self.dtype, self.impl = dim // head_dim, dtype, impl
        self.norm1 = _layer_norm(dim, rngs)
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=(2, 3), batch_axis=0)
        qkv = init(rngs.params(), (3, dim, self.heads, head_dim))
        self.qkv = nnx.Param(qkv, out_sharding=(None, "embed", "heads", "kv"))
        out_init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=(0, 1), out_axis=2)
        out = out_init(rngs.params(), (self.heads, head_dim, dim))
        self.out = nnx.Param(out, out_sharding=("heads", "kv", "embed"))
        self.norm2 = _layer_norm(dim, rngs)
        self.mlp_in = dense(dim, 4 * dim, ("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.mlp_out = dense(4 * dim, dim, ("mlp", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """``x: [B, L, D]`` float32, ``mask: bool [B, L]`` -> ``[B, L, D]``."""
        length = x.shape[1]
        h = self.norm1(x).astype(self.dtype)
        q, k, v = jnp.einsum("bld,sdhk->sblhk", h, self.qkv[...].astype(self.dtype))
        # Each token sees the valid tokens and itself, so an all-padding caption has no empty softmax row.
        attn_mask = mask[:, None, None, :] | jnp.eye(length, dtype=bool)[None, None]
        o = attend(q, k, v, mask=attn_mask, impl=self.impl)
        x = x + jnp.einsum("blhk,hkd->bld", o, self.out[...].astype(self.dtype)).astype(jnp.float32)
        h = self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x).astype(self.dtype))))
        return x + h.astype(jnp.float32)


class TextEncoder(nnx.Module):
    """Byte embeddings + sinusoidal positions + ``num_layers`` transformer layers + final LayerNorm.

    ``tokens: int32 [B, L]`` -> ``(embeddings [B, L, D] float32, mask bool [B, L])``, mask False on padding. Positions
    are sinusoidal, so any caption length works.
    """

    def __init__(self, dim: int, num_layers: int, head_dim: int, *, dtype, impl: str, rngs: nnx.Rngs):
        self.dim = dim
        self.embed = nnx.Embed(
            VOCAB_SIZE,
            dim,
            embedding_init=nnx.with_partitioning(nnx.initializers.normal(1.0), ("vocab", "embed")),
            rngs=rngs,
        )
        self.layers = nnx.List(
            [TextEncoderLayer(dim, head_dim, dtype=dtype, impl=impl, rngs=rngs) for _ in range(num_layers)]
        )
        self.norm = _layer_norm(dim, rngs)

    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        mask = tokens != PAD_ID
        length = tokens.shape[1]
        pos = sinusoidal_embedding(jnp.arange(length, dtype=jnp.float32), self.dim, min_period=2.0, max_period=1e4)
        # Annotated like the video activations: split by caption over the data and fsdp axes (unannotated, XLA
        # split them over data only and repeated the encoder on each fsdp group).
        x = constrain(self.embed(tokens) + pos[None], TEXT_AXES)
        for layer in self.layers:
            x = constrain(layer(x, mask), TEXT_AXES)
        return self.norm(x), mask
