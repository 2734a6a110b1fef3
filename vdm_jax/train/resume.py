"""A run's workdir before training resumes: the checks that need only its stored config (cheap, so they come
before the dataset is prepared), and which checkpointed step still owes its samples and evaluation.

`check_resume` refuses a run asked for fewer steps than its checkpoint and warns of a changed learning-rate schedule
or an ignored init_from; the defining settings are `checkpoint.check_same_run`'s. A step's samples and evaluation
end with a marker file (`done_marker`); a checkpointed step without one was stopped between its checkpoint and their
end, and `outputs_pending` says so, the same on every process.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import jax
import numpy as np
from absl import logging

from vdm_jax.errors import UserError
from vdm_jax.train.checkpoint import Checkpointer, CheckpointUnreadableError, check_same_run
from vdm_jax.train.state import learning_rate_schedule


class TrainingError(UserError, RuntimeError):
    """The run cannot go on (diverged, unwritable workdir...); the message says why and what to do."""


def check_workdir(workdir: str, *, create: bool = True) -> None:
    """Raises TrainingError if `workdir` cannot be written. Without `create`, writes nothing that stays: the
    nearest existing directory on its path is tried instead (a run refused later leaves no empty workdir)."""
    path = workdir
    if not create:
        path = os.path.abspath(workdir)
        while not os.path.isdir(path):
            if os.path.exists(path):
                raise TrainingError(f"cannot write to --workdir={workdir}: {path} is a file, not a directory")
            path = os.path.dirname(path)
    try:
        if create:
            os.makedirs(workdir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as e:
        raise TrainingError(f"cannot write to --workdir={workdir} ({e.strerror}); choose a writable directory") from e


# Train settings that shape the learning-rate schedule (`state.learning_rate_schedule`).
SCHEDULE_SETTINGS = ("num_steps", "warmup_steps", "lr_schedule", "learning_rate")


def check_resume(cfg, workdir: str) -> int | None:
    """The latest checkpoint step in `workdir` (None: a new run), after the checks that need only its stored config
    (cheap; before the dataset is prepared): the run's defining settings, a `num_steps` below it (an error), a
    changed learning-rate schedule and an ignored init_from (warnings)."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return None
    ckpt = Checkpointer(directory, read_only=True)
    try:
        latest = ckpt.latest_step()
        if latest is None:
            return None
        try:
            stored = ckpt.stored_config(latest)
        except CheckpointUnreadableError as e:
            raise TrainingError(str(e)) from e
    finally:
        ckpt.close()
    check_same_run(stored, cfg, directory)
    train = cfg.train
    if latest > train.num_steps:
        raise TrainingError(
            f"--workdir={workdir} holds a checkpoint of step {latest}, past --config.train.num_steps="
            f"{train.num_steps}: nothing to train, and the run is not rewound. To train on, set "
            f"--config.train.num_steps above {latest} (a changed num_steps changes a cosine learning-rate schedule: "
            f"the warning at the start says how); to train {train.num_steps} steps, use a new --workdir."
        )
    if train.init_from:
        logging.warning(
            "--config.train.init_from=%s is ignored: --workdir=%s holds checkpoints, and the run resumes from its "
            "step %d. Use a new --workdir to start from %s.",
            train.init_from,
            workdir,
            latest,
            train.init_from,
        )
    warn_if_schedule_changed(stored.get("train", {}), train, latest)
    return latest


def warn_if_schedule_changed(stored: dict, train, step: int) -> None:
    """Logs a warning naming the learning-rate settings that differ from the checkpoint's run, with the learning
    rate of the next step under the run's schedule and under this one (extending a run is legitimate, but a
    cosine schedule stretched to more steps jumps back up)."""
    differ = {
        k: (stored[k], getattr(train, k)) for k in SCHEDULE_SETTINGS if k in stored and stored[k] != getattr(train, k)
    }
    if not differ:
        return
    old = dataclasses.replace(train, **{k: theirs for k, (theirs, _) in differ.items()})
    if set(differ) == {"num_steps"} and old.lr_schedule == train.lr_schedule == "constant":
        return  # A constant schedule does not depend on the step count: more steps of the same run.
    before, after = (float(learning_rate_schedule(t)(step)) for t in (old, train))
    logging.warning(
        "Resuming from step %d with a different learning-rate schedule: %s. The learning rate of the next step is "
        "%.6g under this run's schedule and %.6g under the new one.",
        step,
        "; ".join(f"config.train.{k}={theirs!r} there, {mine!r} here" for k, (theirs, mine) in differ.items()),
        before,
        after,
    )


def outputs_due(cfg, step: int, *, final: bool) -> tuple[bool, bool]:
    """(samples, evaluation): whether step `step` writes them."""
    do_sample = final or bool(cfg.train.sample_every and step % cfg.train.sample_every == 0)
    do_eval = final or bool(cfg.train.eval_every and step % cfg.train.eval_every == 0)
    return do_sample, do_eval


def done_marker(workdir: str, step: int) -> str:
    """The file that says step `step`'s samples and evaluation were all written (its absence after a restart:
    the run stopped between that step's checkpoint and their end, and the next start writes them)."""
    return os.path.join(workdir, "outputs_done", f"step_{step:07d}")


def outputs_pending(cfg, workdir: str, step: int) -> bool:
    """Whether the checkpointed `step` owes samples or an evaluation that were not completed: process 0's answer
    for every process (all must then sample, or none)."""
    pending = any(outputs_due(cfg, step, final=step == cfg.train.num_steps))
    pending = pending and not os.path.exists(done_marker(workdir, step))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        pending = bool(multihost_utils.broadcast_one_to_all(np.int32(pending)))
    return pending
