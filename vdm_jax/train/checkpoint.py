"""Orbax checkpoints: the train state, the config (JSON) and the data-iterator position, saved together.

Saves are asynchronous (training continues while the arrays are written); the last `keep` are kept. Restoring takes
an abstract state whose leaves carry the target shardings, so a checkpoint restores onto any mesh shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from vdm_jax.errors import UserError


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint that does not fit the model being built."""


class CheckpointUnreadableError(UserError, RuntimeError):
    """A checkpoint whose files cannot be read (cut short, truncated, damaged)."""


class CheckpointWriteError(UserError, RuntimeError):
    """An asynchronous save that failed (disk full, file size limit, permissions)."""


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _shape_table(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """'/'-joined paths -> (shape, dtype), the same for a live state and for the metadata Orbax stored
    (attributes, dict keys and sequence indices all become plain names)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): (tuple(leaf.shape), str(leaf.dtype)) for path, leaf in leaves}


# Settings that define what a checkpoint's weights compute; inference and resumed training must use the run's own.
# (Shapes are checked separately; these are the ones a shape check cannot see.)
DEFINING = {
    "model": (
        "channels",
        "base_channels",
        "channel_mults",
        "num_res_blocks",
        "attn_resolutions",
        "temporal_attn_resolutions",
        "head_dim",
        "emb_dim",
        "emb_mlp_layers",
        "temporal_attention",
        "num_classes",
        "text_conditioning",
        "text_embed_dim",
        "text_encoder_layers",
        "frame_conditioning",
        "spatial_attention",
    ),
    "diffusion": ("schedule", "logsnr_min", "logsnr_max", "shift_base_resolution", "parameterization"),
    "data": ("resolution",),
}


# Defining settings added after runs were saved without them: what those runs computed.
BEFORE_IT_EXISTED = {"model.emb_mlp_layers": 2}


def check_same_run(stored: dict, cfg, directory: str) -> None:
    """Raises `CheckpointMismatchError` naming each defining setting (`DEFINING`) whose value in the checkpoint's
    stored config (`stored`, the run's config as a dict) differs from `cfg`'s, with the flags that restore them."""
    plain = lambda v: list(v) if isinstance(v, (list, tuple)) else v
    # Keys that only matter under another setting: compared only where either run has that setting.
    applies = {
        "diffusion.shift_base_resolution": lambda c: c.get("diffusion", {}).get("schedule") == "shifted_cosine",
        "model.text_embed_dim": lambda c: c.get("model", {}).get("text_conditioning", "none") != "none",
        "model.text_encoder_layers": lambda c: c.get("model", {}).get("text_conditioning") == "builtin",
    }
    current = {group: dataclasses.asdict(getattr(cfg, group)) for group in DEFINING}
    differ = []
    for group, keys in DEFINING.items():
        for key in keys:
            name = f"{group}.{key}"
            if name in applies and not (applies[name](stored) or applies[name](current)):
                continue
            theirs, mine = stored.get(group, {}).get(key, BEFORE_IT_EXISTED.get(name)), current[group][key]
            if theirs is not None and plain(theirs) != plain(mine):
                differ.append((name, theirs, mine))
    # Gradient clipping on or off adds or removes a transform of the optimizer chain (`state.make_optimizer`), which
    # moves every optimizer-state array: a defining setting as on / off; one positive value for another is free.
    theirs, mine = stored.get("train", {}).get("grad_clip"), cfg.train.grad_clip
    if theirs is not None and (theirs > 0) != (mine > 0):
        differ.append(("train.grad_clip", theirs, mine))
    if differ:
        said = "; ".join(f"{name}={theirs!r} there, {mine!r} here" for name, theirs, mine in differ)
        as_flag = lambda v: str(tuple(v)).replace(" ", "") if isinstance(v, list) else str(v)
        flags = " ".join(f"--config.{name}={as_flag(theirs)}" for name, theirs, _ in differ)
        clip = ""
        if any(name == "train.grad_clip" for name, _, _ in differ):
            clip = " (or, for gradient clipping on / off, the layout of its optimizer state: any positive grad_clip is "
            clip += "clipping on, 0 is off)"
        raise CheckpointMismatchError(
            f"the checkpoint at {directory} was trained with other settings that define what its weights compute"
            f"{clip}: {said}. Pass the run's own ({flags}), or use a new --workdir for a new model."
        )


def _reason(e: BaseException) -> str:
    """An exception as one short line: its type and the start of its message (TensorStore's run to kilobytes)."""
    text = " ".join(str(e).split()) or repr(e)
    short = f"{type(e).__name__}: {text[:400]}{'...' if len(text) > 400 else ''}"
    found = re.search(r": ([^:]+?) \[os_error_code='?(\d+)", text)  # TensorStore's OS error, at the end.
    return f"{found[1]} (errno {found[2]}; {short})" if found else short


class Checkpointer:
    """The run's `CheckpointManager` under `<workdir>/checkpoints`."""

    def __init__(self, directory: str, *, keep: int = 3, async_save: bool = True, read_only: bool = False):
        """``read_only``: for restoring another run's checkpoints (sampling, ``init_from``): creates no directory
        (a mistyped path stays an error, not a new empty folder) and never saves or deletes."""
        self.directory = os.path.abspath(directory)
        self._closed = False
        self._saving: int | None = None  # The step of the save in flight (or last launched), until checked.
        if read_only:
            options = ocp.CheckpointManagerOptions(create=False, read_only=True)
        else:
            options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "config": ocp.JsonCheckpointHandler(),
            "data": ocp.JsonCheckpointHandler(),
        }
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, *, config_json: str, data_state: Any, force: bool = False) -> bool:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(json.loads(config_json)),
            data=ocp.args.JsonSave({"iterator": data_state}),
        )
        # The previous save's error, named, not Orbax's at the start of this one: Orbax waits for a save in flight
        # before it starts the next, so waiting here costs nothing and also catches one that fails while waited for.
        self.raise_if_save_failed(wait=True)
        saved = self.manager.save(step, args=args, force=force)
        self._saving = step if saved else self._saving
        return saved

    def raise_if_save_failed(self, *, wait: bool = False) -> None:
        """Raises `CheckpointWriteError` if the last asynchronous save has failed (a cheap look at its background
        thread; with `wait`, waits for it to end first), naming the step, the directory, the OS reason, and the
        last good step, which stays intact."""
        if self._saving is None:
            return
        step = self._saving
        if not wait and not self._save_failed():
            return
        try:
            self.manager.wait_until_finished()
            self.manager.check_for_errors()
        except Exception as e:  # noqa: BLE001 -- any failure of the write is reported the same way.
            self._saving = None
            good = [s for s in self.all_steps() if s < step]
            kept = (
                f"The last good checkpoint (step {max(good)}) is intact, and a rerun resumes from it"
                if good
                else "No earlier checkpoint exists, so a rerun starts from step 0"
            )
            raise CheckpointWriteError(
                f"could not write the checkpoint of step {step} to {self.directory}/{step}: {_reason(e)}. {kept} "
                "once the cause is fixed (free disk space, raise the file size limit `ulimit -f`, or fix the "
                "permissions of the --workdir)."
            ) from e
        if wait:
            self._saving = None

    def _save_failed(self) -> bool:
        """Whether the save in flight has ended with an error (Orbax keeps it on its finalize thread)."""
        ref = getattr(self.manager, "_finalize_thread", None)  # Orbax 0.12: a ref to the thread, or to None
        try:
            return bool(ref.map(lambda t: t is not None and not t.is_alive() and t.exception is not None))
        except AttributeError:  # Another Orbax version: the public check, which sees the background commit's error.
            try:
                self.manager.check_for_errors()
            except Exception:  # noqa: BLE001
                return True
            return False

    def check_compatible(self, step: int, abstract_state: Any) -> None:
        """Raises `CheckpointMismatchError` listing the arrays whose paths or shapes differ."""
        stored = self.manager.item_metadata(step)["state"]
        stored = getattr(stored, "tree", stored)
        want, have = _shape_table(abstract_state), _shape_table(stored)
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        shapes = sorted(k for k in set(want) & set(have) if want[k][0] != have[k][0])
        if missing or extra or shapes:
            lines = [f"{k}: checkpoint {have[k][0]} vs model {want[k][0]}" for k in shapes[:5]]
            raise CheckpointMismatchError(
                f"the checkpoint at {self.directory} (step {step}) was written by a different model: "
                f"{len(shapes)} shape mismatch(es) {lines}, {len(missing)} array(s) missing {missing[:3]}, "
                f"{len(extra)} unexpected {extra[:3]}. Use a new --workdir for a new model (with "
                f"--config.train.init_from={self.directory} there to start from the weights that match; a workdir "
                "that holds checkpoints resumes them and ignores init_from)."
            )

    def stored_config(self, step: int) -> dict:
        """The config (as a dict) of the run that wrote `step`."""
        with self._reading(step):
            return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

    @contextlib.contextmanager
    def _reading(self, step: int):
        """Turns a failure to read `step`'s files into `CheckpointUnreadableError`: which step, the error, the
        older steps and how to set the damaged one aside (never a silent fall-back to an older step)."""
        try:
            yield
        except (CheckpointMismatchError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 -- Orbax / TensorStore raise ValueError, OSError, KeyError...
            older = sorted(s for s in self.all_steps() if s < step)
            aside = os.path.join(os.path.dirname(self.directory), f"checkpoint_{step}.bad")
            fix = (
                f"The older checkpoints (steps {older}) are untouched: move the damaged one aside "
                f"(`mv {self.directory}/{step} {aside}`) and rerun to resume from step {older[-1]}"
                if older
                else f"There is no older checkpoint: move it aside (`mv {self.directory}/{step} {aside}`) to start "
                "over, or use a new --workdir"
            )
            raise CheckpointUnreadableError(
                f"cannot read the checkpoint of step {step} at {self.directory}/{step}, which is damaged or "
                f"incomplete (e.g. cut short by a full disk, or truncated in a copy): {_reason(e)}. {fix}."
            ) from e

    def restore(self, step: int, abstract_state: Any, cfg=None) -> tuple[Any, Any, dict]:
        """Returns (state, data-iterator state, config dict) of `step`, placed per `abstract_state`'s shardings.

        With `cfg`, the run's defining settings are checked first (`check_same_run`): a run restored under other
        settings is told which flags restore them, also where those settings change the arrays' shapes too (which
        `check_compatible` would otherwise report as another model)."""
        if cfg is not None:
            check_same_run(self.stored_config(step), cfg, self.directory)
        with self._reading(step):
            self.check_compatible(step, abstract_state)
            restored = self.manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    config=ocp.args.JsonRestore(),
                    data=ocp.args.JsonRestore(),
                ),
            )
        logging.info("Restored checkpoint step %d from %s", step, self.directory)
        return restored["state"], restored["data"]["iterator"], restored["config"]

    def restore_raw(self, step: int) -> dict:
        """The stored train state as nested dicts of arrays on one local device, whatever model or mesh wrote it
        (for init_from and for inspecting a run)."""
        with self._reading(step):
            stored = self.manager.item_metadata(step)["state"]
            stored = getattr(stored, "tree", stored)
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), stored)
            return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]

    def wait(self) -> None:
        """Waits for the save in flight; raises `CheckpointWriteError` if it failed."""
        self.raise_if_save_failed(wait=True)

    def close(self) -> None:
        """Waits for a save in flight, then releases the manager; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self.raise_if_save_failed(wait=True)
        finally:
            self.manager.close()
