"""ModelConfig: the typed boundary of config.model fails early and clearly."""

import dataclasses

import pytest
from flax import nnx
from unet_helpers import tiny_config

from configs.default import get_config
from vdm_jax.models import ModelConfig, UNet3D


def test_fields_are_exactly_the_config_keys():
    config = get_config()
    cfg = ModelConfig(**config.model)
    assert {f.name for f in dataclasses.fields(cfg)} == set(config.model.keys())
    assert cfg == ModelConfig.from_config(config.model)
    assert cfg.channel_mults == tuple(config.model.channel_mults)
    cfg.validate_input(config.data.num_frames, config.data.resolution)


def test_unknown_key_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="num_chanels"):
        ModelConfig(num_chanels=3)


def test_frozen():
    cfg = tiny_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.head_dim = 4
    assert dataclasses.replace(cfg, head_dim=4).head_dim == 4


@pytest.mark.parametrize(
    "overrides, key",
    [
        (dict(dtype="float16"), "dtype"),
        (dict(remat_policy="sometimes"), "remat_policy"),
        (dict(text_conditioning="clip"), "text_conditioning"),
        (dict(channel_mults=()), "channel_mults"),
        (dict(dropout=1.0), "dropout"),
        (dict(cond_drop_prob=1.5), "cond_drop_prob"),
        (dict(frame_conditioning=True, known_frames_noise=-0.1), "known_frames_noise"),
        (dict(known_frames_noise=0.3), "known_frames_noise"),  # without frame_conditioning there is nothing to noise
        (dict(num_classes=-1), "num_classes"),
        (dict(head_dim=0), "head_dim"),
        (dict(text_conditioning="builtin", text_embed_dim=20, head_dim=8), "text_embed_dim"),
        (dict(text_conditioning="builtin", text_embed_dim=15, head_dim=5), "text_embed_dim"),  # odd: no sin/cos pairs
        (dict(emb_dim=33), "emb_dim"),
        (dict(attention_impl="cudnn", dtype="float32"), "attention_impl"),
        (dict(attention_impl="cudnn", dtype="bfloat16", head_dim=12), "head_dim"),  # cuDNN: a multiple of 8
        (dict(attention_impl="cudnn", dtype="bfloat16", head_dim=264), "head_dim"),  # cuDNN: at most 256
        (dict(spatial_attention="performer"), "spatial_attention"),
        (dict(temporal_attn_resolutions=(0,)), "temporal_attn_resolutions"),
    ],
)
def test_invalid_values_name_the_key(overrides, key):
    with pytest.raises(ValueError, match=f"config.model.{key}"):
        tiny_config(**overrides)


def test_attention_resolution_never_reached():
    cfg = tiny_config(attn_resolutions=(12,))
    with pytest.raises(ValueError, match=r"\[12\] never reached"):
        cfg.validate_input(4, 16)
    with pytest.raises(ValueError, match="never reached"):
        UNet3D(cfg, resolution=16, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"temporal_attn_resolutions=\(4,\): \[4\] never reached"):
        tiny_config(temporal_attn_resolutions=(4,)).validate_input(4, 16)


def test_size_not_divisible_by_downsampling():
    cfg = tiny_config(channel_mults=(1, 2, 2))
    with pytest.raises(ValueError, match="not divisible by 2\\^2=4"):
        cfg.validate_input(4, 18)
    with pytest.raises(ValueError, match="width 10"):
        cfg.validate_input(4, 16, width=10)


def test_head_dim_must_divide_channels_where_attention_runs():
    cfg = tiny_config(base_channels=12, head_dim=16, attn_resolutions=(8,))  # level 1 has 24 channels
    with pytest.raises(ValueError, match="head_dim=16 does not divide the 24 channels"):
        UNet3D(cfg, resolution=16, rngs=nnx.Rngs(0))
    tiny_config(base_channels=12, head_dim=16, attn_resolutions=()).validate_input(4, 16)  # no attention: fine
    # A level with temporal attention alone needs it too, unless temporal attention is off.
    temporal_only = dict(base_channels=12, head_dim=8, attn_resolutions=(), temporal_attn_resolutions=(16,))
    with pytest.raises(ValueError, match="head_dim=8 does not divide the 12 channels of level 0"):
        tiny_config(**temporal_only).validate_input(4, 16)
    tiny_config(**temporal_only, temporal_attention=False).validate_input(4, 16)
