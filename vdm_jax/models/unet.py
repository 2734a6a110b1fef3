"""The video U-Net of "Video Diffusion Models" (Ho et al. 2022, §3): a 3-D U-Net factorised over space and time.

Layout (following the 2-D U-Net of Ho et al. 2020 with the VDM changes):
``conv_in -> [ResBlock (+ attention)] x num_res_blocks per level, Downsample between levels -> middle
(ResBlock (+ attention), ResBlock) -> mirrored up path with num_res_blocks + 1 blocks per level fed by skip
connections, Upsample between levels -> GroupNorm, SiLU, conv_out``. The middle's attention is that of the lowest
level: full attention if its size is in ``attn_resolutions``, temporal alone if it is only in
``temporal_attn_resolutions``, none otherwise. Convolutions are 1x3x3 (space only); each attention block is
spatial self-attention, optional text cross-attention, then temporal self-attention across frames (absent with
``temporal_attention=False``; at T = 1 a frame attends only to itself, as an image frame appended to a video does in
joint training, so no attention is computed). Levels in ``temporal_attn_resolutions`` but not in ``attn_resolutions``
carry temporal attention alone (cheap: it mixes only T frames per pixel). ``spatial_attention="linear"`` makes the
spatial attention outside the middle block linear in H*W. Noise-level and conditioning enter every ResBlock by FiLM.
The network is given a log-SNR and returns a tensor shaped like ``z``; what it predicts (eps, v, x) is the diffusion
code's business.

Logical axis names (mapped to mesh axes by ``config.parallel.rules``, see ``vdm_jax.parallel``):

- activations: ``batch, time, height, width, embed`` for videos ``[B, T, H, W, C]``.
- parameters: ``conv_in, conv_out`` (convolution kernels ``[3, 3, in, out]`` and biases); ``embed`` (channel / feature
  width of dense and attention weights), ``mlp`` (hidden width of MLPs), ``heads, kv`` (attention heads and head
  dimension), ``vocab`` (rows of class / byte embedding tables), ``norm`` (GroupNorm / LayerNorm scales and biases),
  ``rel_pos`` (relative-position buckets). Names absent from the rules are replicated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vdm_jax.models.attention import CrossAttention, SpatialAttention, TemporalAttention
from vdm_jax.models.conditioning import Cond, ConditionEmbedding, check_condition_shapes, check_conditioning
from vdm_jax.models.config import ModelConfig
from vdm_jax.models.layers import VIDEO_AXES, Downsample, ResBlock, Upsample, conv, frames, group_norm, videos
from vdm_jax.models.rng import make_rngs
from vdm_jax.parallel import constrain


class AttentionBlock(nnx.Module):
    """Spatial self-attention (if ``spatial``), then text cross-attention (if any), then temporal self-attention (if
    ``temporal``). A temporal-only block (``temporal_attn_resolutions``) has neither spatial nor cross-attention."""

    def __init__(
        self,
        channels: int,
        cfg: ModelConfig,
        *,
        rngs: nnx.Rngs,
        spatial: bool,
        temporal: bool,
        middle: bool = False,
    ):
        dtype, impl = cfg.compute_dtype, cfg.attention_impl
        linear = cfg.spatial_attention == "linear" and not middle
        self.spatial = (
            SpatialAttention(channels, cfg.head_dim, dtype=dtype, impl=impl, rngs=rngs, linear=linear)
            if spatial
            else None
        )
        text = cfg.text_conditioning != "none"
        self.cross = (
            CrossAttention(channels, cfg.text_embed_dim, cfg.head_dim, dtype=dtype, impl=impl, rngs=rngs)
            if text and spatial
            else None
        )
        self.temporal = (
            TemporalAttention(
                channels, cfg.head_dim, identity_init=cfg.temporal_identity_init, dtype=dtype, impl=impl, rngs=rngs
            )
            if temporal
            else None
        )

    def __call__(self, x, context, context_mask, segment_ids, frame_times) -> jax.Array:
        if self.spatial is not None:
            x = self.spatial(x)
        if self.cross is not None:
            x = self.cross(x, context, context_mask)
        if self.temporal is not None:
            x = self.temporal(x, segment_ids, frame_times)
        return constrain(x, VIDEO_AXES)


class Stage(nnx.Module):
    """One ResBlock and, where the level has attention, one AttentionBlock: the unit of rematerialisation.

    ``attention``: spatial (+ cross) attention; ``temporal``: temporal attention (``ModelConfig.temporal_levels``).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        attention: bool,
        cfg: ModelConfig,
        *,
        rngs: nnx.Rngs,
        temporal: bool = False,
        middle: bool = False,
    ):
        self.res = ResBlock(in_ch, out_ch, cfg.emb_dim, cfg.dropout, dtype=cfg.compute_dtype, rngs=rngs)
        self.attn = (
            AttentionBlock(out_ch, cfg, rngs=rngs, spatial=attention, temporal=temporal, middle=middle)
            if attention or temporal
            else None
        )

    def __call__(self, x, emb, context, context_mask, segment_ids, frame_times, rngs, train: bool):
        x = self.res(x, emb, train=train, rngs=rngs)
        if self.attn is not None:
            x = self.attn(x, context, context_mask, segment_ids, frame_times)
        return x


class UNet3D(nnx.Module):
    """The VDM video U-Net: ``(z [B, T, H, W, C], logsnr [B], cond) -> [B, T, H, W, C]``.

    ``resolution`` is the frame size the attention resolutions refer to (``config.data.resolution``); it fixes which
    levels carry attention, and the model then runs on any T and any H, W divisible by 2^(levels - 1).
    """

    def __init__(self, cfg: ModelConfig, *, resolution: int, rngs: nnx.Rngs):
        cfg.validate_input(1, resolution)
        self.cfg = cfg
        self.resolution = resolution
        dtype = cfg.compute_dtype
        attn, temp = cfg.attention_levels(resolution), cfg.temporal_levels(resolution)
        chans = cfg.level_channels
        self.cond_embed = ConditionEmbedding(cfg, rngs=rngs)
        self.conv_in = conv(cfg.in_channels, cfg.base_channels, dtype=dtype, rngs=rngs)

        down, skips, ch = [], [cfg.base_channels], cfg.base_channels
        for level, out_ch in enumerate(chans):
            for _ in range(cfg.num_res_blocks):
                down.append(Stage(ch, out_ch, attn[level], cfg, rngs=rngs, temporal=temp[level]))
                ch = out_ch
                skips.append(ch)
            if level < cfg.num_levels - 1:
                down.append(Downsample(ch, dtype=dtype, rngs=rngs))
                skips.append(ch)
        self.down = nnx.List(down)

        self.mid1 = Stage(ch, ch, attn[-1], cfg, rngs=rngs, temporal=temp[-1], middle=True)
        self.mid2 = Stage(ch, ch, False, cfg, rngs=rngs)

        up = []
        for level in reversed(range(cfg.num_levels)):
            for _ in range(cfg.num_res_blocks + 1):
                up.append(Stage(ch + skips.pop(), chans[level], attn[level], cfg, rngs=rngs, temporal=temp[level]))
                ch = chans[level]
            if level > 0:
                up.append(Upsample(ch, dtype=dtype, rngs=rngs))
        self.up = nnx.List(up)

        self.norm_out = group_norm(ch, rngs=rngs)
        self.conv_out = conv(ch, cfg.channels, zero=True, dtype=dtype, rngs=rngs)

    def _stage(self, stage: Stage, x, emb, context, context_mask, segment_ids, frame_times, rngs, train):
        if self.cfg.remat_policy == "none":
            return stage(x, emb, context, context_mask, segment_ids, frame_times, rngs, train)
        fn = nnx.remat(Stage.__call__, policy=self.cfg.remat, static_argnums=(8,))
        return fn(stage, x, emb, context, context_mask, segment_ids, frame_times, rngs, train)

    def __call__(
        self,
        z: jax.Array,
        logsnr: jax.Array,
        cond: Cond | None = None,
        *,
        segment_ids: jax.Array | None = None,
        frame_times: jax.Array | None = None,
        train: bool = False,
        rngs: nnx.Rngs | jax.Array | None = None,
    ) -> jax.Array:
        """Denoiser network.

        Args:
          z: ``[B, T, H, W, C]`` noisy video (T = 1: images).
          logsnr: ``[B]`` log signal-to-noise ratio of ``z``.
          cond: conditioning dict (see :mod:`vdm_jax.models.conditioning`), or None for an unconditional model.
          segment_ids: ``int [B, T]``; temporal attention mixes only frames with equal ids (the video 0, appended
            image frames 1, 2, ...). None: all frames are one video.
          frame_times: ``int [B, T]``, each frame's time in its video, for windows of frames that are not consecutive
            (far-back known frames and recent ones: long-range context); temporal attention's position bias reads
            the offsets between them. None: consecutive frames 0 .. T - 1.
          train: dropout on (needs ``rngs``).
          rngs: ``nnx.Rngs`` with a ``dropout`` stream, or a PRNG key; used only when ``train``.
        Returns:
          ``[B, T, H, W, C]`` in ``z``'s dtype.
        """
        cfg = self.cfg
        self._check_inputs(z, logsnr, segment_ids, frame_times)
        cond = check_conditioning(cond, cfg)
        check_condition_shapes(cond, cfg, z.shape)
        b = z.shape[0]
        if not train:
            rngs = None
        elif isinstance(rngs, jax.Array):
            rngs = make_rngs(dropout=rngs)
        if train and cfg.dropout > 0 and rngs is None:
            raise ValueError(
                "UNet3D(train=True) with dropout > 0 needs rngs= (an nnx.Rngs with a 'dropout' stream, or a key)"
            )

        emb, context, context_mask = self.cond_embed(logsnr, cond)
        emb = jax.nn.silu(emb).astype(cfg.compute_dtype)
        x = z
        if cfg.frame_conditioning:
            mask = cond["known_mask"].astype(z.dtype)[:, :, None, None, None]  # [B, T, 1, 1, 1]
            known = cond["known_frames"].astype(z.dtype) * mask
            x = jnp.concatenate([z, known, jnp.broadcast_to(mask, (*z.shape[:4], 1))], axis=-1)
        x = constrain(x.astype(cfg.compute_dtype), VIDEO_AXES)

        h = videos(self.conv_in(frames(x)), b)
        args = (emb, context, context_mask, segment_ids, frame_times, rngs, train)
        hs = [h]
        for module in self.down:
            h = module(h) if isinstance(module, Downsample) else self._stage(module, h, *args)
            hs.append(h)
        h = self._stage(self.mid1, h, *args)
        h = self._stage(self.mid2, h, *args)
        for module in self.up:
            if isinstance(module, Upsample):
                h = module(h)
            else:
                h = self._stage(module, jnp.concatenate([h, hs.pop()], axis=-1), *args)
        h = jax.nn.silu(self.norm_out(frames(h).astype(jnp.float32)).astype(cfg.compute_dtype))
        out = videos(self.conv_out(h), b)
        return out.astype(z.dtype)

    def _check_inputs(self, z, logsnr, segment_ids, frame_times) -> None:
        cfg = self.cfg
        if z.ndim != 5 or z.shape[-1] != cfg.channels:
            raise ValueError(f"UNet3D: z must be [B, T, H, W, {cfg.channels}], got shape {tuple(z.shape)}")
        factor = 2 ** (cfg.num_levels - 1)
        if z.shape[2] % factor or z.shape[3] % factor:
            raise ValueError(
                f"UNet3D: frame size {z.shape[2]}x{z.shape[3]} is not divisible by 2^{cfg.num_levels - 1}={factor} "
                f"(channel_mults={cfg.channel_mults})"
            )
        if logsnr.shape != (z.shape[0],):
            raise ValueError(f"UNet3D: logsnr must be [B]=({z.shape[0]},), got shape {tuple(logsnr.shape)}")
        if segment_ids is not None and segment_ids.shape != z.shape[:2]:
            raise ValueError(f"UNet3D: segment_ids must be [B, T]={tuple(z.shape[:2])}, got {tuple(segment_ids.shape)}")
        if frame_times is not None and frame_times.shape != z.shape[:2]:
            raise ValueError(f"UNet3D: frame_times must be [B, T]={tuple(z.shape[:2])}, got {tuple(frame_times.shape)}")
