"""The input pipeline: TFDS records -> tf.data (one pipeline per JAX process) -> global `jax.Array` batches.

Per process p of P: read a disjoint 1/P of the split (`tfds.even_splits`, equal sizes), shuffle the files and a buffer
of examples, then for each example pick a clip (random start, frame stride), decode only its frames, resize, flip (a
mirrored clip's caption swaps left and right), normalise to [-1, 1] and append independent image frames (joint
video-image training, VDM §4.3.1, Ho et al. 2022); batch, prefetch, and assemble the global batch with
`jax.make_array_from_process_local_data`, sharded over the mesh axes ("data", "fsdp").

Determinism and resumption. Epoch e of process p is a pure function of (seed, e, p): its file order, its shuffle
buffer and every per-example random draw (stateless ops keyed by the example's position in the epoch) derive from
them. The iterator's state is therefore just (epoch, batches taken in that epoch), a small JSON dict. Restoring
rebuilds epoch e and skips the consumed examples *before* decoding (reading records is cheap; decoding is not), so a
resumed run sees exactly the batches an uninterrupted run would. We chose this over checkpointing the tf.data iterator
(`tf.train.Checkpoint`): that serialises whole shuffle and prefetch buffers (hundreds of MB of frames for UCF-101),
while this state is a few bytes and does not depend on TensorFlow internals. Each epoch drops its last partial batch,
so every process takes the same number of batches per epoch. The state also records what the stream depends on (seed,
batch size, process count, dataset, and the `STREAM_KEYS` of `config.data`); a state of another stream is refused
(`stream_state.check_state`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vdm_jax.data.catalog import DatasetSpec, clip_frames, dataset_spec, hide_accelerators_from_tf
from vdm_jax.data.config import DataConfig, max_far_frames
from vdm_jax.data.stream_state import (  # noqa: F401  (DataStateMismatchError, STREAM_KEYS: imported from here before)
    STATE_VERSION,
    STREAM_KEYS,
    DataStateMismatchError,
    check_state,
    stream_settings,
)

BATCH_AXES = ("data", "fsdp")


def _stream_seed(*parts: int) -> int:
    """A 31-bit seed from integers (numpy's SeedSequence mixes them; neighbouring inputs give unrelated seeds)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def _op_seed(base: int, index: tf.Tensor, salt: int) -> tf.Tensor:
    """Stateless-op seed [2] for element `index` of a stream and one random decision (`salt`)."""
    return tf.stack([tf.constant(base, tf.int64) * 8 + salt, tf.cast(index, tf.int64)])


def long_range_window(
    num_frames: int, span: int | tf.Tensor, prob: float, seed: tf.Tensor, null_prob: float = 0.0
) -> dict[str, tf.Tensor]:
    """Which `num_frames` frames of a `span`-frame clip one training example holds, and which of them are known.

    With probability `prob`, a long-range window: m ~ U{1 .. min(3, T - 2)} known frames drawn without replacement
    from anywhere before a window of T - m consecutive frames (start s ~ U{m .. span - T + m}), whose first
    o ~ U{1 .. T - m - 1} frames are known too. It is what autoregressive extension with memory
    (`vdm_jax.train.conditional.extend(memory=...)`) asks of the model: new frames given the last frames and a few from
    far back. With probability `null_prob` a long-range window knows no frame, so the unconditional branch of frame
    guidance (`vdm_jax.diffusion.frame_guidance`) meets in training the far-apart times it is asked at sampling (the
    window's times are drawn alike either way). Otherwise T consecutive frames from a random start, whose known
    frames the train step draws as usual (`vdm_jax.train.frame_masks`). `span` >= T may be a scalar tensor (the frames
    one video has). Returns times int32 [T] (frame indices into the span, increasing), known_mask float32 [T] and
    use_known_mask bool [] (True for a long-range window).
    """
    t = num_frames
    s_coin, s_m, s_start, s_far, s_known, s_plain = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    coin = tf.random.stateless_uniform([], s_coin) < prob
    m = tf.random.stateless_uniform([], s_m, 1, max_far_frames(t) + 1, tf.int32)
    w = t - m
    start = tf.random.stateless_uniform([], s_start, m, span - w + 1, tf.int32)
    frame = tf.range(span)
    order = tf.argsort(tf.where(frame < start, tf.random.stateless_uniform([span], s_far), 2.0))
    far = tf.sort(order[:m])  # m distinct frames before the window
    o = tf.random.stateless_uniform([], s_known, 1, w, tf.int32)
    times_far = tf.ensure_shape(tf.concat([far, start + tf.range(w)], 0), [t])
    known_far = tf.ensure_shape(tf.cast(tf.concat([tf.ones([m], tf.bool), tf.range(w) < o], 0), tf.float32), [t])
    # Its own stream (folded in, not a seventh split), so the other draws stay those of a run without it.
    null = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 6)) < null_prob
    known_far = tf.where(null, tf.zeros([t]), known_far)
    plain = tf.random.stateless_uniform([], s_plain, 0, span - t + 1, tf.int32) + tf.range(t)
    return {
        "times": tf.where(coin, times_far, plain),
        "known_mask": tf.where(coin, known_far, tf.zeros([t])),
        "use_known_mask": coin,
    }


def decode_frames(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """Encoded PNG/JPEG frames tf.string [N] -> uint8 [N, H, W, C]."""
    return tf.map_fn(
        lambda s: tf.io.decode_image(s, channels=channels, expand_animations=False),
        encoded,
        fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8),
    )


def resize_frames(frames: tf.Tensor, resolution: int) -> tf.Tensor:
    """uint8 [N, H, W, C] -> float32 [N, R, R, C] in [0, 255]: centre square crop, antialiased bilinear resize."""
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    s = tf.minimum(h, w)
    frames = frames[:, (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    frames = tf.cast(frames, tf.float32)
    return tf.cond(
        tf.logical_and(tf.equal(s, resolution), tf.equal(h, w)),
        lambda: tf.ensure_shape(frames, [None, resolution, resolution, None]),
        lambda: tf.image.resize(frames, [resolution, resolution], method="bilinear", antialias=True),
    )


def clip_indices(length: tf.Tensor, num_frames: int, stride: int, start: tf.Tensor) -> tf.Tensor:
    """Frame indices start + j * stride, j < num_frames: int32 [num_frames].

    A video too short for the clip repeats the last frame on that grid (start + k * stride <= length - 1), so every
    step is `stride` or 0, never a shorter step to the video's very last frame.
    """
    last = start + (tf.maximum(length - 1 - start, 0) // stride) * stride
    return tf.minimum(start + tf.range(num_frames) * stride, last)


def swap_left_right(text: tf.Tensor) -> tf.Tensor:
    """The caption of a mirrored clip: the whole words left/right (and Left/Right) swapped. tf.string, any shape."""
    for left, right in (("left", "right"), ("Left", "Right")):
        marker = "\x1e" + left + "\x1e"  # a control character no caption holds: the swap needs a third name
        text = tf.strings.regex_replace(text, rf"\b{left}\b", marker)
        text = tf.strings.regex_replace(text, rf"\b{right}\b", left)
        text = tf.strings.regex_replace(text, marker, right)
    return text


class DataIterator:
    """Yields dicts of global `jax.Array`s; see `make_iterator`. Has `get_state()` / `set_state(state)`."""

    def __init__(
        self,
        cfg: DataConfig,
        spec: DatasetSpec,
        *,
        split: str,
        global_batch_size: int,
        mesh: Mesh,
        seed: int,
        text_max_length: int,
        training: bool,
        tokenizer: Callable[[list[str], int], np.ndarray] | None,
        conditioned: bool = False,
    ):
        self.cfg, self.spec, self.split, self.seed, self.training = cfg, spec, split, int(seed), training
        self.conditioned = conditioned
        self.global_batch_size = global_batch_size
        self.process_count, self.process_index = jax.process_count(), jax.process_index()
        self.local_batch_size = global_batch_size // self.process_count
        self.sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
        self.text_max_length = text_max_length
        self.tokenizer = tokenizer
        tfds_split = spec.tfds_split(split)
        self.process_split = tfds.even_splits(tfds_split, n=self.process_count, drop_remainder=True)[self.process_index]
        self.examples_per_epoch = spec.builder.info.splits[self.process_split].num_examples
        self.batches_per_epoch = self.examples_per_epoch // self.local_batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{spec.builder.info.full_name} split {tfds_split!r} gives {self.examples_per_epoch} examples per "
                f"process, fewer than one local batch of {self.local_batch_size} (global batch {global_batch_size} "
                f"over {self.process_count} processes); lower train.batch_size or use a larger split"
            )
        self.epoch, self.batch_in_epoch = 0, 0
        self._tf_iterator = None

    # ------------------------------------------------------------------ state
    def get_state(self) -> dict[str, Any]:
        """JSON-able position: the next batch is batch `batch` of epoch `epoch` (plus what it depends on)."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "batch": self.batch_in_epoch,
            "seed": self.seed,
            "dataset": self.spec.builder.info.full_name,
            "split": self.split,
            "global_batch_size": self.global_batch_size,
            "process_count": self.process_count,
            "source_split": self.spec.tfds_split(self.split),
            "conditioned": self.conditioned,
            "data": stream_settings(self.cfg),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from `state` (from `get_state`, possibly of another run with the same config and seed).

        Raises `DataStateMismatchError` when the state comes from a stream with other settings (seed, batch size,
        process count, dataset, `STREAM_KEYS`), naming the `--config.<key>=<saved value>` flags that restore them.
        Entries a state lacks (states saved before they were recorded) are not compared.
        """
        expect = {
            "version": STATE_VERSION,
            "seed": self.seed,
            "dataset": self.spec.builder.info.full_name,
            "split": self.split,
            "global_batch_size": self.global_batch_size,
            "process_count": self.process_count,
        }
        # Compared when the state has them (states written before they were recorded lack them).
        later = {"source_split": self.spec.tfds_split(self.split), "conditioned": self.conditioned}
        expect.update({k: v for k, v in later.items() if k in state})
        self.epoch, self.batch_in_epoch = check_state(state, expect, self.cfg, self.batches_per_epoch)
        self._tf_iterator = None

    # ------------------------------------------------------------------ tf.data
    def _records(self, epoch: int, stream: int, shuffle: bool) -> tf.data.Dataset:
        """The process's records for one epoch, frames still encoded, in this (epoch, stream)'s shuffled order
        (shuffle=False: the stored order)."""
        seed = _stream_seed(self.seed, epoch, self.process_index, stream)
        options = tf.data.Options()
        options.deterministic = True
        read_config = tfds.ReadConfig(shuffle_seed=seed, options=options, add_tfds_id=False)
        spec = self.spec
        keys = [k for k in (spec.frames_key, spec.label_key, spec.caption_key, spec.frame_captions_key) if k]
        ds = self.spec.builder.as_dataset(
            split=self.process_split,
            shuffle_files=shuffle,
            read_config=read_config,
            decoders={self.spec.frames_key: tfds.decode.SkipDecoding()},
        )
        ds = ds.map(lambda ex: {k: ex[k] for k in keys})
        if shuffle:
            ds = ds.shuffle(self.cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
        return ds

    def _epoch_dataset(self, epoch: int, skip_examples: int) -> tf.data.Dataset:
        cfg = self.cfg
        frame_seed = _stream_seed(self.seed, epoch, self.process_index, 2)
        image_seed = _stream_seed(self.seed, epoch, self.process_index, 3)
        ds = self._records(epoch, stream=0, shuffle=self.training).enumerate()
        if cfg.num_image_frames and self.conditioned:
            # Independent images from the clip's own video, so that its label and caption are true of them too.
            ds = ds.map(lambda i, ex: ((i, ex), self._pick_own_images(i, ex, image_seed)))
        elif cfg.num_image_frames:
            # Independent images: frames of other videos, from a second, differently shuffled pass over the data
            # (shuffled for evaluation too: in the stored order, row n's image would be a frame of its own video n).
            images = self._records(epoch, stream=1, shuffle=True).repeat().enumerate()
            images = images.map(lambda i, ex: self._pick_image(i, ex, image_seed))
            ds = tf.data.Dataset.zip(ds, images.batch(cfg.num_image_frames))
        else:
            ds = ds.map(lambda i, ex: ((i, ex), tf.zeros([0], tf.string)))
        ds = ds.skip(skip_examples)  # before decoding: resuming reads records but decodes nothing it skips
        ds = ds.map(
            lambda x, img: self._process(x[0], x[1], img, frame_seed),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        ds = ds.batch(self.local_batch_size, drop_remainder=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def _pick_image(self, index: tf.Tensor, example: dict, seed: int) -> tf.Tensor:
        frames = example[self.spec.frames_key]
        t = tf.random.stateless_uniform([], _op_seed(seed, index, 0), 0, tf.shape(frames)[0], tf.int32)
        return frames[t]

    def _pick_own_images(self, index: tf.Tensor, example: dict, seed: int) -> tf.Tensor:
        """num_image_frames encoded frames of the example's video at independent uniform times: tf.string [K]."""
        frames = example[self.spec.frames_key]
        k = self.cfg.num_image_frames
        t = tf.random.stateless_uniform([k], _op_seed(seed, index, 1), 0, tf.shape(frames)[0], tf.int32)
        return tf.gather(frames, t)

    def _process(self, index: tf.Tensor, example: dict, image_strings: tf.Tensor, seed: int) -> dict:
        cfg, spec = self.cfg, self.spec
        encoded = example[spec.frames_key]
        length = tf.shape(encoded)[0]
        long_range = cfg.long_range_prob > 0
        frames = clip_frames(cfg)  # the span a training clip is cut from (long_range_span for long-range windows)
        if long_range:
            # A video shorter than long_range_span (moving_mnist: 20 frames, BAIR: 30) gives the frames it has, so
            # frame_times are the times of the frames read; `have` = frames wherever the video is long enough.
            have = tf.minimum(frames, (length - 1) // spec.frame_stride + 1)
            span = (have - 1) * spec.frame_stride + 1
        else:
            span = (frames - 1) * spec.frame_stride + 1
        if self.training:
            start = tf.random.stateless_uniform(
                [], _op_seed(seed, index, 0), 0, tf.maximum(length - span, 0) + 1, tf.int32
            )
        else:
            start = tf.constant(0, tf.int32)
        idx = clip_indices(length, frames, spec.frame_stride, start)
        if long_range:  # Training clips carry their frames' times, and long-range ones their known frames.
            zeros = tf.zeros([cfg.num_frames])
            # A video shorter than one clip repeats its last frame, and says so in its times.
            repeat_last = tf.minimum(tf.range(cfg.num_frames), have - 1)
            plain = {"times": repeat_last, "known_mask": zeros, "use_known_mask": tf.constant(False)}
            if self.training:
                window_seed = tf.random.experimental.stateless_split(_op_seed(seed, index, 0), 2)[1]
                window = long_range_window(
                    cfg.num_frames,
                    tf.maximum(have, cfg.num_frames),
                    cfg.long_range_prob,
                    window_seed,
                    cfg.long_range_null_prob,
                )
                short = have < cfg.num_frames
                window = {k: tf.where(short, plain[k], window[k]) for k in window}
            else:
                window = plain
            idx = tf.gather(idx, window["times"])
        video = resize_frames(decode_frames(tf.gather(encoded, idx), spec.channels), cfg.resolution)
        flip_video = self._flip_coin(_op_seed(seed, index, 1))
        video = tf.cond(flip_video, lambda: tf.reverse(video, axis=[2]), lambda: video)
        parts = [video]
        if cfg.num_image_frames:
            images = resize_frames(decode_frames(image_strings, spec.channels), cfg.resolution)
            flips = [
                self._maybe_flip(images[k : k + 1], _op_seed(seed, index, 2 + k)) for k in range(cfg.num_image_frames)
            ]
            parts.extend(flips)
        out = {
            "video": tf.ensure_shape(
                tf.concat(parts, 0) / 127.5 - 1.0,
                [cfg.num_frames + cfg.num_image_frames, cfg.resolution, cfg.resolution, spec.channels],
            ),
            "segment_ids": tf.concat(
                [tf.zeros([cfg.num_frames], tf.int32), tf.range(1, cfg.num_image_frames + 1, dtype=tf.int32)], 0
            ),
        }
        if long_range:
            images = tf.zeros([cfg.num_image_frames], tf.int32)
            out["frame_times"] = tf.concat([window["times"], images], 0)
            out["known_mask"] = tf.concat([window["known_mask"], tf.cast(images, tf.float32)], 0)
            out["use_known_mask"] = window["use_known_mask"]
        if spec.label_key:
            out["label"] = tf.cast(example[spec.label_key], tf.int32)
        if spec.caption_key:
            # The caption of the clip's first frame (the motion there), where the dataset has one per frame.
            text = example[spec.frame_captions_key][idx[0]] if spec.frame_captions_key else example[spec.caption_key]
            out["caption"] = tf.cond(flip_video, lambda: swap_left_right(text), lambda: text)  # a mirrored clip
        return out

    def _flip_coin(self, op_seed: tf.Tensor) -> tf.Tensor:
        """bool []: True with probability 1/2 when training with random_flip, else False."""
        if not (self.training and self.cfg.random_flip):
            return tf.constant(False)
        return tf.random.stateless_uniform([], op_seed) < 0.5

    def _maybe_flip(self, frames: tf.Tensor, op_seed: tf.Tensor) -> tf.Tensor:
        """Flips all frames of [N, H, W, C] left-right with probability 1/2 (training with random_flip only)."""
        coin = self._flip_coin(op_seed)
        return tf.cond(coin, lambda: tf.reverse(frames, axis=[2]), lambda: frames)

    # ------------------------------------------------------------------ iteration
    def _next_local(self) -> dict[str, np.ndarray]:
        while True:
            if self.batch_in_epoch >= self.batches_per_epoch:
                if not self.training:
                    raise StopIteration
                self.epoch, self.batch_in_epoch, self._tf_iterator = self.epoch + 1, 0, None
            if self._tf_iterator is None:
                ds = self._epoch_dataset(self.epoch, self.batch_in_epoch * self.local_batch_size)
                self._tf_iterator = iter(tfds.as_numpy(ds))
            try:
                batch = next(self._tf_iterator)
            except StopIteration:
                self.batch_in_epoch = self.batches_per_epoch  # defensive: the epoch ran out early
                continue
            self.batch_in_epoch += 1
            return batch

    def next_local(self) -> dict[str, np.ndarray]:
        """One process-local batch as numpy (captions tokenised), advancing the state like `__next__`."""
        batch = self._next_local()
        if "caption" in batch:
            captions = [c.decode("utf-8") for c in batch.pop("caption")]
            if self.text_max_length > 0:
                batch["text_tokens"] = np.asarray(self.tokenizer(captions, self.text_max_length), np.int32)
        return batch

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, jax.Array]:
        return self.globalize(self.next_local())

    def globalize(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """A process-local batch (as `next_local` returns, possibly edited) -> global arrays sharded over the mesh."""
        return {
            k: jax.make_array_from_process_local_data(self.sharding, v, (self.global_batch_size, *v.shape[1:]))
            for k, v in batch.items()
        }


def _default_tokenizer():
    from vdm_jax.models.text import tokenize

    return tokenize


def make_iterator(
    cfg: DataConfig,
    *,
    split: str,
    global_batch_size: int,
    mesh: Mesh,
    seed: int,
    text_max_length: int | None = None,
    training: bool | None = None,
    tokenizer: Callable[[list[str], int], np.ndarray] | None = None,
    conditioned: bool = False,
) -> DataIterator:
    """Global batches of `cfg`'s dataset (prepared first with `prepare(cfg)`).

    Yields dicts of global jax.Arrays, batch dim sharded by NamedSharding(mesh, P(("data", "fsdp"))):
      video:       float32 [B, T + num_image_frames, H, W, C] in [-1, 1]
      segment_ids: int32 [B, T + num_image_frames]   0 for the clip's frames, 1..K for the appended images
      label:       int32 [B]                          datasets with labels only
      text_tokens: int32 [B, text_max_length]         datasets with captions, unless text_max_length=0: the caption
                   of the clip's first frame where the dataset has one per frame (moving_shapes), else the video's
      frame_times, known_mask [B, T + num_image_frames], use_known_mask [B]   with data.long_range_prob > 0 only:
                   each frame's time in its clip, and the known frames of long-range windows (`long_range_window`)
    Each process reads global_batch_size / process_count examples per batch. training (default: split == 'train')
    shuffles, picks random clip starts, flips (random_flip: a mirrored clip's caption has its words left and right
    swapped) and repeats forever; otherwise one ordered pass, clips from frame 0. `tokenizer(texts, max_length) ->
    int32 [N, L]` defaults to `vdm_jax.models.text.tokenize`. The appended images are frames of other videos (from a
    shuffled pass, in evaluation too), unless `conditioned` (a model that reads the label or caption:
    model.label_or_text): then frames of the row's own stored video (video_folder: its stored clip), at random times,
    so that the row's label and caption hold for them too.
    """
    hide_accelerators_from_tf()
    if global_batch_size < 1 or global_batch_size % jax.process_count():
        raise ValueError(
            f"global batch size {global_batch_size} must be a positive multiple of the {jax.process_count()} processes"
        )
    data_size = int(np.prod([mesh.shape[a] for a in BATCH_AXES if a in mesh.shape]))
    if global_batch_size % data_size:
        raise ValueError(
            f"global batch size {global_batch_size} is not divisible by the mesh's data x fsdp size {data_size}; "
            "set train.batch_size to a multiple of it"
        )
    spec = dataset_spec(cfg)
    text_max_length = cfg.text_max_length if text_max_length is None else int(text_max_length)
    if spec.caption_key and text_max_length > 0 and tokenizer is None:
        tokenizer = _default_tokenizer()
    return DataIterator(
        cfg,
        spec,
        split=split,
        global_batch_size=global_batch_size,
        mesh=mesh,
        seed=seed,
        text_max_length=text_max_length,
        training=(split == "train") if training is None else training,
        tokenizer=tokenizer,
        conditioned=conditioned,
    )
