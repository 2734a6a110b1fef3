"""DiffusionConfig / SamplerConfig: built from configs/default.py; unknown keys and bad values fail with a message."""

import pytest

from configs import default
from vdm_jax.diffusion import DiffusionConfig, SamplerConfig


def test_default_config_blocks_build():
    config = default.get_config()
    d = DiffusionConfig(**config.diffusion)
    s = SamplerConfig(**config.sampler)
    assert set(config.diffusion.keys()) == set(d.__dataclass_fields__)
    assert set(config.sampler.keys()) == set(s.__dataclass_fields__)
    hash(d), hash(s)  # static-argument friendly


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (DiffusionConfig, {"schedule": "cosin"}, "schedule='cosin' is not one of"),
        (DiffusionConfig, {"parameterization": "score"}, "parameterization"),
        (DiffusionConfig, {"logsnr_min": 5.0, "logsnr_max": 1.0}, "logsnr_min=5.0 must be < logsnr_max"),
        (DiffusionConfig, {"timesteps": -1}, "timesteps=-1 must be >= 0"),
        (SamplerConfig, {"name": "euler"}, "name='euler'"),
        (SamplerConfig, {"eta": 1.5}, r"eta=1.5 must lie in \[0, 1\]"),
        (SamplerConfig, {"num_steps": 0}, "num_steps=0 must be >= 1"),
        (SamplerConfig, {"dynamic_threshold": 0.3}, "dynamic_threshold=0.3"),
    ],
)
def test_bad_values_raise_value_error(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_wrong_types_and_unknown_keys_raise_type_error():
    with pytest.raises(TypeError, match="low_discrepancy must be True or False"):
        DiffusionConfig(low_discrepancy=1)
    with pytest.raises(TypeError, match="num_steps must be an int"):
        SamplerConfig(num_steps=10.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_step'"):
        SamplerConfig(num_step=10)
    with pytest.raises(TypeError, match=r"unknown key\(s\) \['schedul'\]; valid keys are"):
        DiffusionConfig.from_mapping({"schedul": "cosine"})
    assert DiffusionConfig(logsnr_min=-10).logsnr_min == -10.0  # ints are accepted as floats
