"""Real videos as numpy, in a fixed order: the reference set for evaluation (FVD statistics, temporal metrics)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vdm_jax.data.catalog import dataset_spec, hide_accelerators_from_tf
from vdm_jax.data.config import DataConfig
from vdm_jax.data.pipeline import clip_indices, decode_frames, resize_frames

GROUND_TRUTH_KEYS = ("num_objects", "shape", "color", "size", "position", "velocity", "index")


def load_examples(cfg: DataConfig, split: str = "test", num: int | None = None) -> dict[str, np.ndarray]:
    """The first `num` examples of `split` (all if None), clipped as the model sees them, as numpy arrays.

    Each video is cut from frame 0: frames j * frame_stride for j < num_frames (a video too short repeats its last
    frame on that grid), resized to `resolution`.
      video:   uint8 [N, T, R, R, C]
      label:   int32 [N]            datasets with labels
      caption: str   [N] (object)   datasets with captions (moving_shapes: the motion at frame 0, the clips' start)
    moving_shapes adds its ground truth (schema in `vdm_jax.data.palette`) for the same frames:
      num_objects int32 [N]; shape, color int32 [N, K]; size float32 [N, K]; position float32 [N, T, K, 2];
      velocity float32 [N, K, 2] (pixels per frame at frame 0); index int32 [N] (the generator's example number)
    so `render({k: v[i] for k, v in gt.items()}, R)` reproduces `video[i]` exactly.
    """
    hide_accelerators_from_tf()
    spec = dataset_spec(cfg)
    ds = spec.builder.as_dataset(
        split=spec.tfds_split(split),
        shuffle_files=False,
        decoders={spec.frames_key: tfds.decode.SkipDecoding()},
    )
    if num is not None:
        ds = ds.take(num)
    gt_keys = GROUND_TRUTH_KEYS if cfg.name == "moving_shapes" else ()

    def clip(example):
        encoded = example[spec.frames_key]
        idx = clip_indices(tf.shape(encoded)[0], cfg.num_frames, spec.frame_stride, tf.constant(0, tf.int32))
        frames = resize_frames(decode_frames(tf.gather(encoded, idx), spec.channels), cfg.resolution)
        out = {"video": tf.cast(tf.clip_by_value(tf.round(frames), 0, 255), tf.uint8)}
        if spec.label_key:
            out["label"] = tf.cast(example[spec.label_key], tf.int32)
        if spec.caption_key:
            out["caption"] = example[spec.caption_key]
        for key in gt_keys:
            out[key] = tf.gather(example[key], idx) if key == "position" else example[key]
        return out

    rows = list(tfds.as_numpy(ds.map(clip)))
    if not rows:
        raise ValueError(f"{spec.builder.info.full_name} split {split!r} is empty")
    result = {k: np.stack([r[k] for r in rows]) for k in rows[0] if k != "caption"}
    if spec.caption_key:
        result["caption"] = np.array([r["caption"].decode("utf-8") for r in rows], dtype=object)
    return result
