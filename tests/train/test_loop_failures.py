"""The training loop when something goes wrong, in process: a non-finite step between metric writes must not reach a
checkpoint, and an exception while a checkpoint is being written must not lose it."""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import pytest

from tests.train import runs
from vdm_jax import configuration
from vdm_jax.train import loop
from vdm_jax.train.checkpoint import Checkpointer
from vdm_jax.train.step import TrainMetrics


def _config(data_dir: str, *extra: str):
    flags = [o.removeprefix("--config.") for o in runs.TINY] + [f"data.data_dir={data_dir}", *extra]
    return configuration.from_config_dict(configuration.load_config_file(str(runs.ROOT / "configs/default.py"), flags))


def _failing_step(monkeypatch, bad_calls: set[int]):
    """The real compiled step, except that the calls in `bad_calls` act as a non-finite step does: the state is
    kept and the step counted as non-finite."""
    real = loop.compile_train_step
    calls = [0]

    def patched(*args, **kwargs):
        built = real(*args, **kwargs)

        def compiled(state, batch, rng):
            calls[0] += 1
            if calls[0] in bad_calls:
                nan = jnp.float32(jnp.nan)
                metrics = TrainMetrics.single_from_model_output(
                    loss=nan, grad_norm=nan, learning_rate=0.0, nonfinite=1.0, video_loss=nan, image_loss=nan
                )
                return state, metrics
            return built.compiled(state, batch, rng)

        return dataclasses.replace(built, compiled=compiled)

    monkeypatch.setattr(loop, "compile_train_step", patched)


def test_nonfinite_step_between_writes_stops_before_the_checkpoint(tmp_path, moving_shapes_dir, monkeypatch):
    """Step 1 fails; metrics are written every 4 steps, checkpoints every 2: the run stops at step 2 without saving
    it, and rerunning resumes from nothing saved (trains all 4 steps) instead of failing on a mislabelled checkpoint."""
    cfg = _config(moving_shapes_dir, "train.num_steps=4", "train.log_every=4", "train.checkpoint_every=2")
    workdir = str(tmp_path / "run")
    _failing_step(monkeypatch, {1})
    with pytest.raises(loop.TrainingError, match="non-finite loss or gradients before step 2"):
        loop.train_and_evaluate(cfg, workdir)
    assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == []
    monkeypatch.undo()
    state = loop.train_and_evaluate(cfg, workdir)
    assert int(state.step) == 4
    assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [2, 4]


def test_exception_after_a_save_keeps_the_checkpoint(tmp_path, moving_shapes_dir, monkeypatch):
    """The evaluation right after step 2's (asynchronous) save raises: the save still completes."""
    cfg = _config(
        moving_shapes_dir, "train.num_steps=4", "train.checkpoint_every=2", "train.eval_every=2", "eval.metrics=()"
    )
    workdir = str(tmp_path / "run")

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(loop, "sample_for_eval", broken)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        loop.train_and_evaluate(cfg, workdir)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    assert ckpt.all_steps() == [2]
    assert not [p for p in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in p]
