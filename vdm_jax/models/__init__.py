"""Flax NNX modules of the video U-Net (VDM §3, Ho et al. 2022); no noise maths here.

Build: ``UNet3D(ModelConfig(**config.model), resolution=config.data.resolution, rngs=make_rngs(seed))``
(``make_rngs``: ``nnx.Rngs`` whose key draws trace in linear time; plain ``nnx.Rngs`` works too).
"""

from vdm_jax.models.conditioning import check_conditioning, drop_conditioning, null_conditioning, with_text_mask
from vdm_jax.models.config import ModelConfig
from vdm_jax.models.rng import make_rngs
from vdm_jax.models.text import VOCAB_SIZE, detokenize, tokenize
from vdm_jax.models.transfer import INPUT_KERNEL, TransferReport, load_matching_params
from vdm_jax.models.unet import UNet3D

__all__ = [
    "INPUT_KERNEL",
    "VOCAB_SIZE",
    "ModelConfig",
    "TransferReport",
    "UNet3D",
    "check_conditioning",
    "detokenize",
    "drop_conditioning",
    "load_matching_params",
    "make_rngs",
    "null_conditioning",
    "tokenize",
    "with_text_mask",
]
