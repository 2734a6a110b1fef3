"""Temporal attention against a naive oracle, and the relative-position buckets."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdm_jax.models.attention import MAX_REL_DISTANCE, NUM_REL_BUCKETS, TemporalAttention, relative_position_buckets
from vdm_jax.models.layers import num_groups


def test_buckets_depend_only_on_the_offset_and_clip():
    b = relative_position_buckets(300)
    assert b.shape == (300, 300) and b.min() >= 0 and b.max() < NUM_REL_BUCKETS
    for off in (-200, -5, 0, 3, 150):  # Toeplitz: constant along each diagonal
        assert len(set(np.diagonal(b, off))) == 1
    small = [b[0, k] for k in range(8)] + [b[8, 8 - k] for k in range(1, 8)]
    assert len(set(small)) == 15  # offsets -7..7 each get their own bucket
    assert b[0, MAX_REL_DISTANCE] == b[0, 299] and b[299, 0] == b[MAX_REL_DISTANCE, 0]  # clipped far away
    assert b[0, 20] != b[20, 0]  # direction matters
    np.testing.assert_array_equal(relative_position_buckets(5), b[:5, :5])  # same table for any T


def naive_temporal(block: TemporalAttention, x: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """Per position: softmax(q k^T / sqrt(d) + bias[offset] masked to the segment) v, in float64 numpy."""
    b, t, h, w, c = x.shape
    groups = num_groups(c)  # GroupNorm per frame over (H, W, channels of a group), float64 here
    xf = x.reshape(b * t, h * w, groups, c // groups).astype(np.float64)
    mean, var = xf.mean(axis=(1, 3), keepdims=True), xf.var(axis=(1, 3), keepdims=True)
    xn = ((xf - mean) / np.sqrt(var + 1e-5)).reshape(x.shape)
    qkv = np.asarray(block.qkv[...], np.float64)
    q, k, v = (np.einsum("btyxc,cnd->byxntd", xn, qkv[i]) for i in range(3))
    rel = np.asarray(block.rel_bias[...], np.float64)[relative_position_buckets(t)]  # [T, T, heads]
    logits = np.einsum("byxntd,byxnsd->byxnts", q, k) / np.sqrt(q.shape[-1]) + rel.transpose(2, 0, 1)
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    logits = np.where(same[:, None, None, None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("byxnts,byxnsd->btyxnd", p, v)
    out = np.einsum("btyxnd,ndc->btyxc", o, np.asarray(block.out_kernel[...], np.float64))
    return x + out + np.asarray(block.out_bias[...])


def test_temporal_attention_matches_naive_oracle():
    block = TemporalAttention(48, 8, identity_init=False, dtype=jnp.float32, impl="xla", rngs=nnx.Rngs(0))
    block.rel_bias[...] = jax.random.normal(jax.random.key(1), block.rel_bias.shape)  # make the bias matter
    x = np.asarray(jax.random.normal(jax.random.key(2), (2, 5, 3, 2, 48)))
    seg = np.array([[0, 0, 0, 1, 2], [0, 0, 0, 0, 0]], np.int32)
    got = np.asarray(nnx.jit(lambda m, a, s: m(a, s))(block, jnp.asarray(x), jnp.asarray(seg)))
    np.testing.assert_allclose(got, naive_temporal(block, x, seg), atol=2e-5, rtol=1e-4)
