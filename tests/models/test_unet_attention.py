"""Temporal and linear spatial attention against naive oracles, and the relative-position buckets."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from unet_helpers import RES, apply, build, tiny_config

from vdm_jax.models import UNet3D, make_rngs
from vdm_jax.models.attention import (
    MAX_REL_DISTANCE,
    NUM_REL_BUCKETS,
    SpatialAttention,
    TemporalAttention,
    linear_attend,
    offset_buckets,
    relative_position_buckets,
)
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


def test_offset_buckets_agree_in_numpy_and_jax():
    rel = np.arange(-400, 401)
    np.testing.assert_array_equal(np.asarray(offset_buckets(jnp.asarray(rel), jnp)), offset_buckets(rel))
    np.testing.assert_array_equal(offset_buckets(rel[400:])[:300], relative_position_buckets(300)[0])


def test_temporal_attention_on_frames_far_apart_is_the_full_video_with_the_others_left_out():
    """Frames at frame_times see each other as a full video's frames at those times do when every other frame of that
    video is in a segment of its own: the same offsets, the same biases."""
    block = TemporalAttention(48, 8, identity_init=False, dtype=jnp.float32, impl="xla", rngs=nnx.Rngs(0))
    block.rel_bias[...] = jax.random.normal(jax.random.key(1), block.rel_bias.shape)
    full = np.asarray(jax.random.normal(jax.random.key(2), (2, 30, 3, 2, 48)))
    times = np.array([[0, 3, 4, 17, 18, 29], [1, 2, 9, 10, 11, 12]], np.int32)
    seg = np.tile(np.arange(1, 31, dtype=np.int32), (2, 1))  # every frame alone ...
    for b in range(2):
        seg[b, times[b]] = 0  # ... except the chosen ones
    out_full = np.asarray(nnx.jit(lambda m, a, s: m(a, s))(block, jnp.asarray(full), jnp.asarray(seg)))
    picked = np.stack([full[b, times[b]] for b in range(2)])
    got = np.asarray(nnx.jit(lambda m, a, t: m(a, None, t))(block, jnp.asarray(picked), jnp.asarray(times)))
    np.testing.assert_allclose(got, np.stack([out_full[b, times[b]] for b in range(2)]), atol=2e-5, rtol=1e-4)
    consecutive = np.asarray(block(jnp.asarray(picked)))
    assert np.abs(consecutive - got).max() > 1e-3  # the times matter


def test_temporal_attention_matches_naive_oracle():
    block = TemporalAttention(48, 8, identity_init=False, dtype=jnp.float32, impl="xla", rngs=nnx.Rngs(0))
    block.rel_bias[...] = jax.random.normal(jax.random.key(1), block.rel_bias.shape)  # make the bias matter
    x = np.asarray(jax.random.normal(jax.random.key(2), (2, 5, 3, 2, 48)))
    seg = np.array([[0, 0, 0, 1, 2], [0, 0, 0, 0, 0]], np.int32)
    got = np.asarray(nnx.jit(lambda m, a, s: m(a, s))(block, jnp.asarray(x), jnp.asarray(seg)))
    np.testing.assert_allclose(got, naive_temporal(block, x, seg), atol=2e-5, rtol=1e-4)


def naive_linear(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per query i: sum_j w_ij v_j with w_ij = softmax_d(q_i) . softmax_l(k)_j, as explicit weights (float64)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    sq = np.exp(q - q.max(-1, keepdims=True))
    sq /= sq.sum(-1, keepdims=True)
    sk = np.exp(k - k.max(1, keepdims=True))
    sk /= sk.sum(1, keepdims=True)
    weights = np.einsum("nihd,njhd->nhij", sq, sk)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-12)  # a convex combination of the values
    return np.einsum("nhij,njhe->nihe", weights, v)


def test_linear_attention_matches_explicit_weights():
    q, k, v = (np.asarray(jax.random.normal(jax.random.key(i), (2, 37, 3, 8))) * 3.0 for i in range(3))
    got = np.asarray(jax.jit(linear_attend)(q, k, v))
    np.testing.assert_allclose(got, naive_linear(q, k, v), atol=1e-5, rtol=1e-4)
    # Constant values come back unchanged, whatever the queries and keys.
    const = np.broadcast_to(v[:, :1], v.shape)
    np.testing.assert_allclose(np.asarray(linear_attend(q, k, const)), const, atol=1e-5)


def test_linear_spatial_attention_is_per_frame_and_shares_parameters():
    kwargs = dict(dtype=jnp.float32, impl="xla", rngs=nnx.Rngs(3))
    soft = SpatialAttention(16, 8, **kwargs)
    lin = SpatialAttention(16, 8, linear=True, **kwargs)
    shapes = jax.tree.map(jnp.shape, nnx.state(soft, nnx.Param))
    assert shapes == jax.tree.map(jnp.shape, nnx.state(lin, nnx.Param))  # checkpoints move between the two
    nnx.update(lin, nnx.state(soft, nnx.Param))
    lin.out_kernel[...] = jax.random.normal(jax.random.key(4), lin.out_kernel.shape)
    x = jax.random.normal(jax.random.key(5), (2, 3, 4, 5, 16))
    full = lin(x)
    assert not np.allclose(full, x, atol=1e-3)
    # Frame t's output depends on frame t only.
    x2 = x.at[:, 1].set(jax.random.normal(jax.random.key(6), x[:, 1].shape))
    moved = np.abs(np.asarray(lin(x2) - full)).max(axis=(2, 3, 4))
    assert moved[:, 1].min() > 1e-3 and moved[:, [0, 2]].max() < 1e-6


def test_unet_linear_spatial_attention_outside_the_middle_only():
    cfg = tiny_config(spatial_attention="linear", attn_resolutions=(16, 8))
    model = nnx.eval_shape(lambda: UNet3D(cfg, resolution=RES, rngs=make_rngs(0)))  # structure only
    kinds = {path: m.linear for path, m in nnx.iter_graph(model) if isinstance(m, SpatialAttention)}
    middle = [p for p in kinds if p[0] == "mid1"]
    assert middle and not any(kinds[p] for p in middle)
    assert all(kinds[p] for p in kinds if p[0] in ("down", "up")) and len(kinds) > 2
    # The same parameters give a different function than softmax attention, and a finite one.
    soft = build(tiny_config(attn_resolutions=(16, 8)), seed=1)
    linear = build(cfg, seed=1)
    z = jax.random.normal(jax.random.key(0), (1, 3, RES, RES, 3))
    logsnr = jnp.zeros((1,))
    a, b = np.asarray(apply(soft, z, logsnr)), np.asarray(apply(linear, z, logsnr))
    assert np.all(np.isfinite(b)) and np.abs(a - b).max() > 1e-5  # float32 rounding alone: ~1e-7
