"""Which TFDS builder serves a `DataConfig`, how its features map onto videos, and `prepare`.

Every dataset reduces to the same description (`DatasetSpec`): a TFDS builder, the feature holding the encoded frames
(a `Video` or a `Sequence` of `Image`s: one encoded PNG/JPEG per frame), optional label and caption features (a
caption per video and, where the dataset has them, one per frame: `frame_captions`, the motion at that frame), and
the TFDS split that serves our `train` / `test`. The input pipeline (`vdm_jax.data.pipeline`) needs nothing else.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from vdm_jax.data import moving_shapes, video_folder
from vdm_jax.data.config import CATALOG, DataConfig
from vdm_jax.errors import UserError


class DatasetNotPreparedError(UserError, FileNotFoundError):
    """A catalog dataset is missing from data_dir; the message holds the command that prepares it."""


# moving_shapes stores at least this many frames, so that clip starts and strides have room.
MOVING_SHAPES_MIN_FRAMES = 16


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything the pipeline needs to read one dataset. `splits` maps 'train'/'test' to TFDS split strings;
    `frame_stride` is the step between the stored frames a clip takes: data.frame_stride, or 1 where the builder
    stored every frame_stride-th source frame already (video_folder). `frame_captions_key`, where set, names a
    `Sequence(Text)` feature with one caption per stored frame; a clip then takes the caption of its first frame
    instead of `caption_key`'s (which describes frame 0)."""

    builder: tfds.core.DatasetBuilder
    frames_key: str
    label_key: str | None
    caption_key: str | None
    channels: int
    num_classes: int
    splits: dict[str, str]
    frame_stride: int
    frame_captions_key: str | None = None

    def tfds_split(self, split: str) -> str:
        if split not in self.splits:
            raise ValueError(f"split={split!r}: this dataset has {sorted(self.splits)}")
        return self.splits[split]


def hide_accelerators_from_tf() -> None:
    """Keeps TensorFlow on the CPU: the GPUs/TPUs belong to JAX. A no-op once TF has initialised its devices."""
    for kind in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], kind)
        except (RuntimeError, ValueError):
            pass  # already initialised, or no such device type


def _data_dir(cfg: DataConfig) -> str | None:
    return os.path.expanduser(cfg.data_dir) if cfg.data_dir else None


def clip_frames(cfg: DataConfig) -> int:
    """Frames a training clip is cut from: num_frames, or long_range_span when long-range windows are on."""
    return cfg.long_range_span if cfg.long_range_prob > 0 else cfg.num_frames


def moving_shapes_frames(cfg: DataConfig) -> int:
    """Frames stored per moving_shapes example: enough for one clip (`clip_frames`) at frame_stride, at least 16."""
    return max(MOVING_SHAPES_MIN_FRAMES, (clip_frames(cfg) - 1) * cfg.frame_stride + 1)


def get_builder(cfg: DataConfig) -> tfds.core.DatasetBuilder:
    """The TFDS builder for `cfg` (nothing is read or written)."""
    hide_accelerators_from_tf()
    data_dir = _data_dir(cfg)
    if cfg.name == "moving_shapes":
        sizes = (moving_shapes_frames(cfg), cfg.resolution, cfg.moving_shapes_train_size, cfg.moving_shapes_test_size)
        name = moving_shapes.config_name(*sizes)
        registered = {c.name for c in moving_shapes.MovingShapes.BUILDER_CONFIGS}
        config = name if name in registered else moving_shapes.make_config(*sizes)
        return moving_shapes.MovingShapes(config=config, data_dir=data_dir)
    if cfg.name == "video_folder":
        config = video_folder.make_config(
            cfg.video_dir, clip_frames(cfg), cfg.frame_stride, cfg.resolution, captions_file=cfg.captions_file
        )
        return video_folder.VideoFolder(config=config, data_dir=data_dir)
    return tfds.builder(CATALOG[cfg.name].tfds_name, data_dir=data_dir)


def not_prepared_message(cfg: DataConfig) -> str:
    entry = CATALOG[cfg.name]
    where = cfg.data_dir or "~/tensorflow_datasets"
    name, _, config = entry.tfds_name.partition("/")
    command = f"tfds build {name}" + (f" --config {config}" if config else "") + f" --data_dir {where}"
    notes = f" Note: {entry.notes}." if entry.notes else ""
    return (
        f"Dataset {entry.tfds_name!r} is not prepared in data_dir={where!r}. Prepare it once with\n"
        f"    {command}\n"
        f"which needs {entry.disk}.{notes} Or point --config.data.data_dir at a directory where it is prepared."
    )


def prepare(cfg: DataConfig) -> None:
    """Makes the dataset of `cfg` ready to read.

    moving_shapes and video_folder are built into data_dir if they are not there yet (moving_shapes 16x32x32 with the
    default 4096/512 split: ~15 s on 2 CPU cores). Catalog datasets (ucf101, bair_robot_pushing_small, moving_mnist)
    are never downloaded implicitly: if missing, one DatasetNotPreparedError says which command prepares them and the
    disk they need. With several JAX processes, process 0 builds first and the others then find it (shared data_dir)
    or build their own copy (local disks).
    """
    builder = get_builder(cfg)
    if cfg.name in CATALOG:
        if not builder.is_prepared():
            raise DatasetNotPreparedError(not_prepared_message(cfg))
        return
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        if jax.process_index() == 0:
            _build(builder)
        multihost_utils.sync_global_devices(f"vdm_jax.data.prepare:{builder.info.full_name}")
    _build(builder)


def _build(builder: tfds.core.DatasetBuilder) -> None:
    if builder.is_prepared():
        return
    logging.info("Building %s into %s", builder.info.full_name, builder.data_dir)
    builder.download_and_prepare()


def dataset_spec(cfg: DataConfig, *, require_prepared: bool = True) -> DatasetSpec:
    """The `DatasetSpec` of a prepared dataset (call `prepare(cfg)` first)."""
    builder = get_builder(cfg)
    if require_prepared and not builder.is_prepared():
        if cfg.name in CATALOG:
            raise DatasetNotPreparedError(not_prepared_message(cfg))
        raise DatasetNotPreparedError(
            f"{builder.info.full_name} is not built in {builder.data_dir_root}; call vdm_jax.data.prepare(cfg) first"
        )
    features = builder.info.features
    if cfg.name in CATALOG:
        entry = CATALOG[cfg.name]
        frames_key, label_key, channels, splits = entry.frames_key, entry.label_key, entry.channels, entry.splits
    else:
        frames_key, channels = "video", 3
        label_key = "label" if "label" in features else None
        splits = {"train": "train", "test": "test" if cfg.name == "moving_shapes" else "train"}
    caption_key = "caption" if "caption" in features else None
    frame_captions_key = "frame_captions" if caption_key and "frame_captions" in features else None
    num_classes = features[label_key].num_classes if label_key else 0
    stride = 1 if cfg.name == "video_folder" else cfg.frame_stride
    return DatasetSpec(
        builder, frames_key, label_key, caption_key, channels, num_classes, splits, stride, frame_captions_key
    )
