"""Video data: TFDS builders (embedded `moving_shapes`, user video folders, catalog datasets) and the input pipeline.

`DataConfig` and the channel checks are importable without TensorFlow, so configs are checked without it; everything
else is loaded on first use (TensorFlow takes ~3 s to import), so `from vdm_jax.data import make_iterator` works as
usual.
"""

from __future__ import annotations

import importlib

from vdm_jax.data.config import DATASETS, DataConfig, check_channels, num_channels

_LAZY = {
    "prepare": "vdm_jax.data.catalog",
    "dataset_spec": "vdm_jax.data.catalog",
    "DatasetNotPreparedError": "vdm_jax.data.catalog",
    "make_iterator": "vdm_jax.data.pipeline",
    "DataIterator": "vdm_jax.data.pipeline",
    "load_examples": "vdm_jax.data.examples",
    "render": "vdm_jax.data.shapes_render",
    "caption": "vdm_jax.data.shapes_render",
}

__all__ = ["DATASETS", "DataConfig", "check_channels", "num_channels", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vdm_jax.data' has no attribute {name!r}")
