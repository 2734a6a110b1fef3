"""What a data iterator's saved position depends on, and the check that a resumed run's stream is the same.

The state (`DataIterator.get_state`) records the seed, batch size, process count, dataset and the `STREAM_KEYS` of
`config.data`; `check_state` refuses a state of another stream with one line naming the `--config` flags that restore
the saved settings.
"""

from __future__ import annotations

import shlex
from typing import Any

from vdm_jax.data.config import DataConfig
from vdm_jax.errors import UserError

STATE_VERSION = 1


class DataStateMismatchError(UserError, ValueError):
    """A saved data position from a stream with other settings; the message names the flags that restore them."""


# Keys of `config.data` that decide which examples, clips, frames and flips batch b of epoch e holds (with the seed,
# the batch size and the process count). A resumed run must have the same: else the saved position points into
# another stream. Keys in `_STREAM_APPLIES` are recorded only where they matter.
STREAM_KEYS = (
    "name",
    "video_dir",
    "captions_file",
    "moving_shapes_train_size",
    "moving_shapes_test_size",
    "num_frames",
    "frame_stride",
    "resolution",
    "num_image_frames",
    "random_flip",
    "shuffle_buffer",
    "long_range_prob",
    "long_range_span",
    "long_range_null_prob",
)
_STREAM_APPLIES = {
    "moving_shapes_train_size": lambda cfg: cfg.name == "moving_shapes",
    "moving_shapes_test_size": lambda cfg: cfg.name == "moving_shapes",
    "long_range_span": lambda cfg: cfg.long_range_prob > 0,
    "long_range_null_prob": lambda cfg: cfg.long_range_prob > 0,
}
# The flag that sets each other entry of the state, or what to do where no flag does.
_STATE_FLAGS = {"seed": "seed", "global_batch_size": "train.batch_size"}
_STATE_HINTS = {
    "process_count": "run on {saved} JAX processes",
    "dataset": "the stored dataset changed (another folder listing or TFDS version)",
    "source_split": "this version of vdm_jax reads another stored split for it",
    "conditioned": "model.num_classes / model.text_conditioning as the run had them",
    "version": "a data state of another format",
}


def stream_settings(cfg: DataConfig) -> dict[str, Any]:
    """The `STREAM_KEYS` of `cfg` that apply to it (JSON values), as `get_state` records them."""
    return {k: getattr(cfg, k) for k in STREAM_KEYS if _STREAM_APPLIES.get(k, lambda _: True)(cfg)}


def _flag_value(value: Any) -> str:
    return shlex.quote(value) if isinstance(value, str) else str(value)


def check_state(
    state: dict[str, Any], expect: dict[str, Any], cfg: DataConfig, batches_per_epoch: int
) -> tuple[int, int]:
    """(epoch, batch) of a saved `state` whose entries equal `expect`'s and whose recorded `config.data` settings
    equal `cfg`'s; else `DataStateMismatchError` naming each difference and the flags that restore it."""
    diff = [(k, state.get(k), v) for k, v in expect.items() if state.get(k) != v]
    saved_data = state.get("data") or {}
    diff += [
        (f"data.{k}", v, getattr(cfg, k)) for k, v in saved_data.items() if k in STREAM_KEYS and v != getattr(cfg, k)
    ]
    if diff:
        raise DataStateMismatchError(_mismatch_message(state, diff))
    epoch, batch = int(state["epoch"]), int(state["batch"])
    if not 0 <= batch <= batches_per_epoch:
        raise DataStateMismatchError(
            f"the saved data position (batch {batch} of epoch {epoch}) lies outside this stream's "
            f"0..{batches_per_epoch} batches per epoch: the data changed since it was saved; restore it, "
            "or use a new --workdir to start afresh"
        )
    return epoch, batch


def _mismatch_message(state: dict[str, Any], diff: list[tuple[str, Any, Any]]) -> str:
    said, flags, hints = [], [], []
    data_changed = any(key.startswith("data.") for key, _, _ in diff)
    for key, saved, now in diff:
        flag = key if key.startswith("data.") else _STATE_FLAGS.get(key)
        said.append(f"{key}{f' (config.{flag})' if flag and flag != key else ''}: {saved!r} saved, {now!r} now")
        if flag and saved is not None:
            flags.append(f"--config.{flag}={_flag_value(saved)}")
        elif key in _STATE_HINTS and not (key == "dataset" and data_changed):  # then it follows from data.*
            hints.append(_STATE_HINTS[key].format(saved=saved))
    fix = "; ".join(filter(None, [" ".join(flags), *hints])) or "the same data config"
    return (
        f"the saved data position (batch {state.get('batch')} of epoch {state.get('epoch')}) belongs to a data "
        f"stream with other settings: {'; '.join(said)}. Resume with the run's own settings ({fix}), or use a "
        "new --workdir to start afresh"
    )
