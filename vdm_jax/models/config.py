"""The typed, frozen boundary between ``config.model`` and the U-Net.

``ModelConfig(**config.model)`` checks every value once; unknown keys and impossible combinations fail here with a
message naming the key and the fix. Checks that depend on the input size (attention resolutions that are never
reached, sizes not divisible by the number of downsamplings) live in :meth:`ModelConfig.validate_input`, which
``UNet3D`` calls at construction and the trainer may call before any heavy work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

TEXT_MODES = ("none", "builtin", "precomputed")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ATTENTION_IMPLS = ("xla", "cudnn")
SPATIAL_ATTENTION = ("softmax", "linear")
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`vdm_jax.models.UNet3D`; one field per key of ``config.model``.

    See ``configs/default.py`` for the meaning of every field.
    """

    channels: int = 3
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = (8,)
    temporal_attn_resolutions: tuple[int, ...] = ()
    head_dim: int = 32
    dropout: float = 0.0
    emb_dim: int = 128
    emb_mlp_layers: int = 2
    temporal_attention: bool = True
    temporal_identity_init: bool = False
    num_classes: int = 0
    text_conditioning: str = "none"
    text_embed_dim: int = 128
    text_encoder_layers: int = 2
    frame_conditioning: bool = False
    known_frames_noise: float = 0.0
    cond_drop_prob: float = 0.1
    dtype: str = "float32"
    remat_policy: str = "none"
    attention_impl: str = "xla"
    spatial_attention: str = "softmax"

    def __init__(self, **kwargs: Any) -> None:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(
                f"ModelConfig: unknown config.model key(s) {unknown}; the known keys are {sorted(known)} "
                "(see configs/default.py)"
            )
        for f in dataclasses.fields(self):
            value = kwargs.get(f.name, f.default)
            if f.name in ("channel_mults", "attn_resolutions", "temporal_attn_resolutions"):
                value = tuple(int(v) for v in value)
            object.__setattr__(self, f.name, value)
        self._check()

    @classmethod
    def from_config(cls, model_config: Mapping[str, Any]) -> ModelConfig:
        """From ``config.model`` (a ConfigDict or any mapping)."""
        items = model_config.to_dict() if hasattr(model_config, "to_dict") else dict(model_config)
        return cls(**items)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------ derived values
    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(DTYPES[self.dtype])

    @property
    def remat(self):
        """The ``jax.checkpoint`` policy, or None for no rematerialisation."""
        return REMAT_POLICIES[self.remat_policy]

    @property
    def num_levels(self) -> int:
        return len(self.channel_mults)

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_mults)

    @property
    def in_channels(self) -> int:
        """Channels entering the first convolution: z, plus known frames and a mask channel when frame-conditioned."""
        return 2 * self.channels + 1 if self.frame_conditioning else self.channels

    def level_resolutions(self, resolution: int) -> tuple[int, ...]:
        return tuple(resolution // 2**i for i in range(self.num_levels))

    @property
    def label_or_text(self) -> bool:
        """Whether the model is conditioned on class labels or captions (one per video)."""
        return self.num_classes > 0 or self.text_conditioning != "none"

    def attention_levels(self, resolution: int) -> tuple[bool, ...]:
        """Per level: whether its blocks carry spatial (and temporal) attention, for inputs of ``resolution``."""
        return tuple(r in self.attn_resolutions for r in self.level_resolutions(resolution))

    def temporal_levels(self, resolution: int) -> tuple[bool, ...]:
        """Per level: whether its blocks carry temporal attention, for inputs of ``resolution``."""
        if not self.temporal_attention:
            return (False,) * self.num_levels
        sizes = set(self.attn_resolutions) | set(self.temporal_attn_resolutions)
        return tuple(r in sizes for r in self.level_resolutions(resolution))

    # ------------------------------------------------------------------ validation
    def _check(self) -> None:
        def fail(key: str, value: Any, why: str) -> None:
            raise ValueError(f"config.model.{key}={value!r}: {why}")

        for key in ("channels", "base_channels", "num_res_blocks", "head_dim", "emb_dim", "text_embed_dim"):
            if int(getattr(self, key)) <= 0:
                fail(key, getattr(self, key), "must be a positive integer")
        if self.emb_dim % 2:
            fail("emb_dim", self.emb_dim, "must be even (sin and cos Fourier features of the noise level)")
        if self.emb_mlp_layers < 2:
            fail("emb_mlp_layers", self.emb_mlp_layers, "must be at least 2 (the noise-level MLP's input and output)")
        if not self.channel_mults or any(m <= 0 for m in self.channel_mults):
            fail("channel_mults", self.channel_mults, "must be a non-empty tuple of positive integers, e.g. (1, 2, 2)")
        for key in ("attn_resolutions", "temporal_attn_resolutions"):
            if any(r <= 0 for r in getattr(self, key)):
                fail(key, getattr(self, key), "spatial sizes must be positive")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", self.dropout, "must be in [0, 1)")
        if not 0.0 <= self.known_frames_noise <= 2.0:
            fail("known_frames_noise", self.known_frames_noise, "must be in [0, 2] (the noise std on data in [-1, 1])")
        if self.known_frames_noise > 0 and not self.frame_conditioning:
            fail("known_frames_noise", self.known_frames_noise, "only applies with frame_conditioning=True")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            fail("cond_drop_prob", self.cond_drop_prob, "must be in [0, 1]")
        if self.num_classes < 0:
            fail("num_classes", self.num_classes, "must be >= 0 (0 = no class conditioning)")
        if self.text_conditioning not in TEXT_MODES:
            fail("text_conditioning", self.text_conditioning, f"must be one of {TEXT_MODES}")
        if self.text_conditioning == "builtin":
            if self.text_embed_dim % self.head_dim:
                fail(
                    "text_embed_dim",
                    self.text_embed_dim,
                    f"the builtin text encoder needs it divisible by head_dim={self.head_dim}",
                )
            if self.text_embed_dim % 2:
                fail("text_embed_dim", self.text_embed_dim, "the builtin encoder's position features need it even")
            if self.text_encoder_layers < 1:
                fail("text_encoder_layers", self.text_encoder_layers, "the builtin text encoder needs >= 1 layer")
        if self.dtype not in DTYPES:
            fail("dtype", self.dtype, f"must be one of {tuple(DTYPES)}")
        if self.remat_policy not in REMAT_POLICIES:
            fail("remat_policy", self.remat_policy, f"must be one of {tuple(REMAT_POLICIES)}")
        if self.attention_impl not in ATTENTION_IMPLS:
            fail("attention_impl", self.attention_impl, f"must be one of {ATTENTION_IMPLS}")
        if self.spatial_attention not in SPATIAL_ATTENTION:
            fail("spatial_attention", self.spatial_attention, f"must be one of {SPATIAL_ATTENTION}")
        if self.attention_impl == "cudnn" and self.dtype != "bfloat16":
            fail("attention_impl", "cudnn", "cuDNN fused attention needs --config.model.dtype=bfloat16")
        if self.attention_impl == "cudnn" and (self.head_dim % 8 or self.head_dim > 256):
            fail(
                "head_dim",
                self.head_dim,
                "attention_impl='cudnn' needs a multiple of 8 no larger than 256 (128 on GPUs before Hopper); "
                "change --config.model.head_dim or use --config.model.attention_impl=xla",
            )

    def validate_input(self, num_frames: int, resolution: int, width: int | None = None) -> None:
        """Raises ValueError if videos of ``num_frames`` x ``resolution`` x ``width`` cannot run through this U-Net.

        With ``width`` None the frames are square. Called by ``UNet3D`` at construction; the trainer can call it at
        start-up with ``config.data.num_frames`` and ``config.data.resolution``.
        """
        width = resolution if width is None else width
        factor = 2 ** (self.num_levels - 1)
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames}: a clip needs at least one frame")
        for name, size in (("height", resolution), ("width", width)):
            if size < 1 or size % factor:
                raise ValueError(
                    f"frame {name} {size} is not divisible by 2^{self.num_levels - 1}={factor}, the total downsampling "
                    f"of channel_mults={self.channel_mults}; change data.resolution or use fewer levels"
                )
        levels = self.level_resolutions(resolution)
        for key in ("attn_resolutions", "temporal_attn_resolutions"):
            missing = [r for r in getattr(self, key) if r not in levels]
            if missing:
                raise ValueError(
                    f"config.model.{key}={getattr(self, key)}: {missing} never reached; with resolution "
                    f"{resolution} and channel_mults={self.channel_mults} the U-Net runs at sizes {levels}"
                )
        spatial, temporal = self.attention_levels(resolution), self.temporal_levels(resolution)
        attention = [a or t for a, t in zip(spatial, temporal, strict=True)]
        for level, (ch, has_attn) in enumerate(zip(self.level_channels, attention, strict=True)):
            if has_attn and ch % self.head_dim:
                raise ValueError(
                    f"config.model.head_dim={self.head_dim} does not divide the {ch} channels of level {level} "
                    f"(size {levels[level]}), which has attention; pick a head_dim dividing {ch}"
                )
