"""Factorised space-time attention of the video U-Net (VDM §3, Ho et al. 2022).

Spatial attention mixes the H*W positions of each frame; temporal attention mixes the T frames at each position, with
a learned bias per head over (bucketed) frame offsets, so it runs on frame counts not seen in training, and on
frames that are not consecutive (``frame_times``: long-range context, far-back known frames in one window). Segment ids
keep appended image frames (joint image-video training, VDM §3 and §4.3.1) out of each other's and the video's temporal
attention. Cross-attention attends from every position to text tokens. All attention is computed by
``jax.nn.dot_product_attention`` (or, for spatial attention on request, linear attention), so the fused cuDNN kernel
can be chosen on GPUs; calls whose shapes cuDNN refuses fall back to XLA (see :func:`attend`).

Projections are einsums into the layout the attention needs, one per q, k and v; temporal attention moves frames to
the sequence axis once, on its C-wide normalised input.
Parameter shapes and logical names: ``qkv [3, C, heads, head_dim]`` (None, embed, heads, kv) and
``out [heads, head_dim, C]`` (heads, kv, embed).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdm_jax.models.layers import group_norm, norm_frames, zeros_init

NUM_REL_BUCKETS = 32
MAX_REL_DISTANCE = 128


def relative_position_buckets(
    num_frames: int, num_buckets: int = NUM_REL_BUCKETS, max_distance: int = MAX_REL_DISTANCE
) -> np.ndarray:
    """Bucket index of every frame offset ``j - i``: ``int32 [T, T]`` (numpy, static).

    Half the buckets hold negative offsets, half non-negative. Within a half, offsets below ``num_buckets // 4`` get a
    bucket each; larger ones share logarithmically spaced buckets up to ``max_distance``, beyond which they clip
    (the scheme of T5, Raffel et al. 2020, App. B). Any T therefore maps into the same learned table.
    """
    rel = np.arange(num_frames)[None, :] - np.arange(num_frames)[:, None]
    return offset_buckets(rel, np, num_buckets, max_distance)


def offset_buckets(rel, xp=np, num_buckets: int = NUM_REL_BUCKETS, max_distance: int = MAX_REL_DISTANCE):
    """Bucket index of each integer frame offset in ``rel`` (any shape), computed with ``xp`` (numpy or jax.numpy):
    the scheme of :func:`relative_position_buckets`, for offsets that are not those of consecutive frames."""
    half = num_buckets // 2
    exact = half // 2
    sign_offset = xp.where(rel < 0, half, 0)
    dist = xp.abs(rel)
    log_ratio = xp.log(xp.maximum(dist, 1).astype(xp.float32) / exact) / np.float32(math.log(max_distance / exact))
    large = exact + (log_ratio * (half - exact)).astype(xp.int32)
    large = xp.minimum(large, half - 1)
    return (sign_offset + xp.where(dist < exact, dist, large)).astype(xp.int32)


def _qkv_param(channels: int, heads: int, head_dim: int, rngs: nnx.Rngs) -> nnx.Param:
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=(2, 3), batch_axis=0)
    value = init(rngs.params(), (3, channels, heads, head_dim))
    return nnx.Param(value, out_sharding=(None, "embed", "heads", "kv"))


def _out_params(heads: int, head_dim: int, channels: int, zero: bool, rngs: nnx.Rngs) -> tuple[nnx.Param, nnx.Param]:
    fan_in = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=(0, 1), out_axis=2)
    init = zeros_init if zero else fan_in
    kernel = nnx.Param(init(rngs.params(), (heads, head_dim, channels)), out_sharding=("heads", "kv", "embed"))
    bias = nnx.Param(jnp.zeros((channels,)), out_sharding=("embed",))
    return kernel, bias


def cudnn_can_run(q, k, *, bias=None, mask=None) -> bool:
    """Whether jax's fused cuDNN attention accepts this call's shapes, in the forward pass and in training.

    ``q: [N, Lq, heads, d]``, ``k: [N, Lk, heads, d]``; ``bias``/``mask`` broadcastable to ``[N, heads, Lq, Lk]``.
    jax 0.10 folds the mask into the bias and then requires (``jax._src.cudnn.fused_attention_stablehlo``):

    - the bias's last two dimensions to be exactly ``[Lq, Lk]``: a mask broadcast over queries, such as the
      ``[B, 1, 1, S]`` key-padding mask of cross-attention, is refused ("Bias must have same seq length as QKV");
    - in training, ``Lq`` and ``Lk`` even ("Unsupported sequence length"). jax means this for biased attention only,
      but its training check sees a stand-in bias on every call, so it refuses odd lengths without a bias too.
      Whether a call is differentiated is not known here, so odd lengths are refused in the forward pass as well.

    Head dimension and dtype are checked once by ``ModelConfig`` (``head_dim``, ``dtype``), not here.
    """
    lq, lk = q.shape[1], k.shape[1]
    if lq % 2 or lk % 2:
        return False
    return all(x.ndim >= 2 and tuple(x.shape[-2:]) == (lq, lk) for x in (bias, mask) if x is not None)


def attend(q, k, v, *, bias=None, mask=None, impl: str = "xla") -> jax.Array:
    """Multi-head attention ``softmax(q k^T / sqrt(d) + bias) v`` over ``[N, L, heads, d]`` arrays.

    ``impl="cudnn"`` uses the fused cuDNN kernel where :func:`cudnn_can_run` says it accepts the shapes, and falls
    back to ``"xla"`` (the same maths, unfused) where it does not: cross-attention's key-padding mask (broadcast over
    queries), and attention over an odd number of queries or keys (temporal attention over an odd number of frames,
    the builtin text encoder on odd caption lengths, spatial attention over an odd number of pixels).
    """
    if bias is not None:
        bias = bias.astype(q.dtype)
    if impl == "cudnn" and not cudnn_can_run(q, k, bias=bias, mask=mask):
        impl = "xla"
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation=impl)


def linear_attend(q, k, v) -> jax.Array:
    """Linear ("efficient") attention of Shen et al. 2021 over ``[N, L, heads, d]`` arrays, in O(L d^2).

    Queries are normalised by a softmax over their d features, keys by a softmax over the L positions, and the output
    is ``q (k^T v)``. Each output is therefore a convex combination of the values (weights ``sum_j q_i . k_j = 1``),
    like softmax attention, but without the ``[L, L]`` score matrix. Softmaxes run in float32.
    """
    q = jax.nn.softmax(q.astype(jnp.float32), axis=-1).astype(v.dtype)
    k = jax.nn.softmax(k.astype(jnp.float32), axis=1).astype(v.dtype)
    context = jnp.einsum("nlhd,nlhe->nhde", k, v)
    return jnp.einsum("nlhd,nhde->nlhe", q, context)


class SpatialAttention(nnx.Module):
    """Self-attention among the H*W positions of each frame: ``[B, T, H, W, C] -> same``, residual.

    ``linear=True`` replaces softmax attention by :func:`linear_attend` (same parameters), whose cost grows linearly
    with H*W: the spatial attention of video-diffusion-pytorch's U-Net outside its middle block.
    """

    def __init__(self, channels: int, head_dim: int, *, dtype, impl: str, rngs: nnx.Rngs, linear: bool = False):
        self.heads, self.dtype, self.impl, self.linear = channels // head_dim, dtype, impl, linear
        self.norm = group_norm(channels, rngs=rngs)
        self.qkv = _qkv_param(channels, self.heads, head_dim, rngs)
        self.out_kernel, self.out_bias = _out_params(self.heads, head_dim, channels, False, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        xn = norm_frames(self.norm, x, self.dtype).reshape((b * t, h * w, c))
        w_qkv = self.qkv[...].astype(self.dtype)
        # One matmul per projection: a single einsum with q, k, v stacked in front ("nlc,schd->snlhd") makes XLA
        # transpose the stacked [3, N*L, C] gradient for the weight gradient (3% of a train step on a CPU).
        q, k, v = (jnp.einsum("nlc,chd->nlhd", xn, w_qkv[i]) for i in range(3))
        o = linear_attend(q, k, v) if self.linear else attend(q, k, v, impl=self.impl)
        o = jnp.einsum("nlhd,hdc->nlc", o, self.out_kernel[...].astype(self.dtype))
        return x + (o + self.out_bias[...].astype(self.dtype)).reshape(x.shape).astype(x.dtype)


class TemporalAttention(nnx.Module):
    """Self-attention among the T frames at each spatial position, with relative position bias: ``[B, T, H, W, C]``.

    With ``identity_init`` the output projection starts at zero, so the block is the identity until trained
    (image -> video initialisation). Frames attend only to frames of the same segment.
    """

    def __init__(self, channels: int, head_dim: int, *, identity_init: bool, dtype, impl: str, rngs: nnx.Rngs):
        self.heads, self.dtype, self.impl = channels // head_dim, dtype, impl
        self.norm = group_norm(channels, rngs=rngs)
        self.qkv = _qkv_param(channels, self.heads, head_dim, rngs)
        self.out_kernel, self.out_bias = _out_params(self.heads, head_dim, channels, identity_init, rngs)
        table = nnx.initializers.normal(0.02)(rngs.params(), (NUM_REL_BUCKETS, self.heads))
        self.rel_bias = nnx.Param(table, out_sharding=("rel_pos", "heads"))

    def position_bias(self, num_frames: int, frame_times: jax.Array | None = None) -> jax.Array:
        """The learned bias of each frame offset: ``[1, heads, T, T]`` for consecutive frames, or ``[B, heads, T, T]``
        for the offsets between ``frame_times: int [B, T]``."""
        if frame_times is None:
            buckets = jnp.asarray(relative_position_buckets(num_frames))
            return jnp.transpose(self.rel_bias[...][buckets], (2, 0, 1))[None]
        times = frame_times.astype(jnp.int32)
        buckets = offset_buckets(times[:, None, :] - times[:, :, None], jnp)  # [B, T, T]
        return jnp.transpose(self.rel_bias[...][buckets], (0, 3, 1, 2))

    def __call__(
        self, x: jax.Array, segment_ids: jax.Array | None = None, frame_times: jax.Array | None = None
    ) -> jax.Array:
        """``x: [B, T, H, W, C]``, ``segment_ids: int [B, T]`` or None (all frames one video); ``frame_times: int
        [B, T]``, each frame's time in its video (frames need not be consecutive), or None (0, 1, ..., T - 1)."""
        b, t, h, w, c = x.shape
        xn = norm_frames(self.norm, x, self.dtype).reshape(x.shape)
        # Frames to the sequence axis once, on the C-wide input: transposing the 3x wider q, k, v instead (and their
        # gradients in the backward pass) cost 15% of a 16x32x32 train step on a CPU. Then one matmul per projection.
        xt = jnp.transpose(xn, (0, 2, 3, 1, 4)).reshape((b * h * w, t, c))
        w_qkv = self.qkv[...].astype(self.dtype)
        if t == 1:
            # One key: its softmax weight is 1 whatever q, k and the bias are, so the block returns x + out(v). This
            # is exactly what an appended image frame gets in joint training (it attends only to itself), so a
            # jointly trained model computes the same function on an image at T = 1 as inside a video batch.
            o = jnp.einsum("ntc,chd->nthd", xt, w_qkv[2])
            return self._project(x, o, (b, h, w, t))
        q, k, v = (jnp.einsum("ntc,chd->nthd", xt, w_qkv[i]) for i in range(3))
        mask = None
        if segment_ids is not None:
            same = segment_ids[:, :, None] == segment_ids[:, None, :]  # [B, T, T]
            mask = jnp.broadcast_to(same[:, None, None, :, :], (b, h * w, 1, t, t)).reshape((b * h * w, 1, t, t))
        bias = self.position_bias(t, frame_times)
        if frame_times is not None:  # [B, heads, T, T] -> one per sequence, [B*H*W, heads, T, T]
            bias = jnp.broadcast_to(bias[:, None], (b, h * w, *bias.shape[1:])).reshape((b * h * w, *bias.shape[1:]))
        return self._project(x, attend(q, k, v, bias=bias, mask=mask, impl=self.impl), (b, h, w, t))

    def _project(self, x: jax.Array, o: jax.Array, bhwt: tuple[int, int, int, int]) -> jax.Array:
        """The residual output ``x + o W_out + b_out`` of the heads ``o: [B*H*W, T, heads, d]``."""
        o = o.reshape((*bhwt, self.heads, -1))
        o = jnp.einsum("byxtnd,ndc->btyxc", o, self.out_kernel[...].astype(self.dtype))
        return x + (o + self.out_bias[...].astype(self.dtype)).astype(x.dtype)


class CrossAttention(nnx.Module):
    """Attention from every position of every frame to a sequence of text tokens (residual).

    ``context: [B, L, D]`` with ``context_mask: bool [B, L]``; the caller guarantees one valid key per example
    (the learned null token), so no row is fully masked.
    """

    def __init__(self, channels: int, context_dim: int, head_dim: int, *, dtype, impl: str, rngs: nnx.Rngs):
        self.heads, self.dtype, self.impl = channels // head_dim, dtype, impl
        self.norm = group_norm(channels, rngs=rngs)
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=0, out_axis=(1, 2))
        self.q = nnx.Param(init(rngs.params(), (channels, self.heads, head_dim)), out_sharding=("embed", "heads", "kv"))
        kv_init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=(2, 3), batch_axis=0)
        self.kv = nnx.Param(
            kv_init(rngs.params(), (2, context_dim, self.heads, head_dim)), out_sharding=(None, "embed", "heads", "kv")
        )
        self.out_kernel, self.out_bias = _out_params(self.heads, head_dim, channels, False, rngs)

    def __call__(self, x: jax.Array, context: jax.Array, context_mask: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        xn = norm_frames(self.norm, x, self.dtype).reshape((b, t * h * w, c))
        q = jnp.einsum("blc,chd->blhd", xn, self.q[...].astype(self.dtype))
        k, v = jnp.einsum("bld,sdhk->sblhk", context.astype(self.dtype), self.kv[...].astype(self.dtype))
        o = attend(q, k, v, mask=context_mask[:, None, None, :], impl=self.impl)
        o = jnp.einsum("blhd,hdc->blc", o, self.out_kernel[...].astype(self.dtype))
        return x + (o + self.out_bias[...].astype(self.dtype)).reshape(x.shape).astype(x.dtype)
