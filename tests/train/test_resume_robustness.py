"""Resuming a run that stopped at an awkward moment, in process: samples and evaluations cut short by a kill or a
SIGTERM are written on the next start (and only once); a SIGTERM stops sampling between batches; a complete run,
or one asked for fewer steps than it has, trains nothing and keeps its config; settings that change the learning
rate or are ignored on resume are reported; a damaged checkpoint or a failed save is named with its fix."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.train import runs
from vdm_jax import configuration
from vdm_jax import data as vdm_data
from vdm_jax.train import loop
from vdm_jax.train.checkpoint import Checkpointer, CheckpointMismatchError


def _config(data_dir: str, *extra: str):
    flags = [o.removeprefix("--config.") for o in runs.TINY] + [f"data.data_dir={data_dir}", *extra]
    return configuration.from_config_dict(configuration.load_config_file(str(runs.ROOT / "configs/default.py"), flags))


class _Stop(Exception):
    """Raised by a patched function to end a run at a known point."""


def _stop_at_prepare(monkeypatch):
    """Ends train_and_evaluate where it would prepare the dataset (the first expensive work)."""

    def prepare(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(vdm_data, "prepare", prepare)


def _forbid(monkeypatch, name: str):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"{name} called")

    monkeypatch.setattr(loop, name, forbidden)


def _samples(workdir: pathlib.Path) -> list[str]:
    return sorted(p.name for p in (workdir / "samples").glob("*.gif")) if (workdir / "samples").is_dir() else []


def test_sigterm_stops_sampling_between_batches_and_cut_outputs_are_written_once_on_restart(
    tmp_path, moving_shapes_dir, monkeypatch
):
    """Samples every step, two sample batches each. A SIGTERM during step 1's first batch stops there (the second
    batch is not run, nor step 2) with step 1 saved; the next start writes step 1's samples before training on and
    finishes; a rerun of the complete run compiles and samples nothing and keeps its config.json; a final sample
    cut short by a kill (its done marker missing) is written by the next start, without training."""
    workdir = tmp_path / "run"
    common = ("train.sample_every=1", "train.checkpoint_every=100", "eval.batch_size=1")
    cfg = _config(moving_shapes_dir, "train.num_steps=2", *common)
    real = loop.make_sample_fn
    calls = []

    def make_sample_fn(*args, **kwargs):
        fn = real(*args, **kwargs)

        def terminated_in_first_batch(*a, **k):
            calls.append(1)
            out = fn(*a, **k)
            if len(calls) == 1:
                os.kill(os.getpid(), signal.SIGTERM)  # The loop's handler: as a preemption notice does.
            return out

        return terminated_in_first_batch

    with monkeypatch.context() as m:
        m.setattr(loop, "make_sample_fn", make_sample_fn)
        state = loop.train_and_evaluate(cfg, str(workdir))
    assert len(calls) == 1  # Before: both batches, then a training step more.
    assert int(state.step) == 1
    assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [1]
    assert _samples(workdir) == []

    state = loop.train_and_evaluate(cfg, str(workdir))  # Writes step 1's samples first, then trains step 2.
    assert int(state.step) == 2
    assert _samples(workdir) == ["step_0000001.gif", "step_0000002.gif"]

    # Complete: no compile, no sampling, config.json kept (a changed setting is not recorded as how it trained).
    config_json = (workdir / "config.json").read_text()
    with monkeypatch.context() as m:
        _forbid(m, "compile_train_step")
        _forbid(m, "sample_for_eval")
        done = _config(moving_shapes_dir, "train.num_steps=2", *common, "train.log_every=3")
        assert int(loop.train_and_evaluate(done, str(workdir)).step) == 2
    assert (workdir / "config.json").read_text() == config_json

    # Killed during the final samples (after step 2's checkpoint): its marker and samples are missing.
    os.remove(workdir / "outputs_done" / "step_0000002")
    os.remove(workdir / "samples" / "step_0000002.gif")
    with monkeypatch.context() as m:
        _forbid(m, "compile_train_step")
        assert int(loop.train_and_evaluate(cfg, str(workdir)).step) == 2
    assert _samples(workdir) == ["step_0000001.gif", "step_0000002.gif"]
    assert (workdir / "outputs_done" / "step_0000002").exists()


def test_fewer_steps_than_the_checkpoint_are_refused_before_the_data(tmp_path, moving_shapes_dir, monkeypatch):
    """A workdir at step 4 asked for num_steps=2: an error naming both numbers and how to go on, before the
    dataset is prepared and without rewriting config.json (before: exit 0, config.json rewritten)."""
    runs.write_checkpoint(tmp_path, *runs.TINY, step=4)
    _stop_at_prepare(monkeypatch)
    with pytest.raises(loop.TrainingError) as err:
        loop.train_and_evaluate(_config(moving_shapes_dir, "train.num_steps=2"), str(tmp_path))
    message = str(err.value)
    assert "checkpoint of step 4" in message and "--config.train.num_steps=2" in message
    assert "num_steps above 4" in message
    assert not (tmp_path / "config.json").exists()


def test_resume_reports_a_changed_learning_rate_schedule_and_an_ignored_init_from(
    tmp_path, moving_shapes_dir, monkeypatch, caplog
):
    """A complete 4-step cosine run extended to 8 steps: the warning names the setting, both values and the
    learning rate of the next step before (0: the cosine ended) and after (half the peak: cos(pi / 2) = 0). An
    init_from on a workdir with checkpoints is reported as ignored. A constant schedule given more steps is silent."""
    runs.write_checkpoint(
        tmp_path / "cos", *runs.TINY, "--config.train.lr_schedule=cosine", "--config.train.num_steps=4", step=4
    )
    _stop_at_prepare(monkeypatch)
    extended = _config(moving_shapes_dir, "train.lr_schedule=cosine", "train.num_steps=8", "train.init_from=/elsewhere")
    with caplog.at_level("WARNING"), pytest.raises(_Stop):
        loop.train_and_evaluate(extended, str(tmp_path / "cos"))
    said = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "config.train.num_steps=4 there, 8 here" in said
    assert "next step is 0 under this run's schedule and 0.0005 under the new one" in said
    assert "--config.train.init_from=/elsewhere is ignored" in said and "resumes from its step 4" in said

    caplog.clear()
    runs.write_checkpoint(tmp_path / "const", *runs.TINY, step=4)  # TINY: constant schedule.
    with caplog.at_level("WARNING"), pytest.raises(_Stop):
        loop.train_and_evaluate(_config(moving_shapes_dir, "train.num_steps=8"), str(tmp_path / "const"))
    assert not [r for r in caplog.records if "learning-rate" in r.getMessage()]


def test_gradient_clipping_on_or_off_is_named_as_the_runs_setting(tmp_path, moving_shapes_dir, monkeypatch):
    """grad_clip > 0 adds a transform to the optimizer chain: turning it off on resume is refused naming the flag
    and the stored value (before: 'written by a different model ... 298 arrays missing'), before the data; another
    positive value is the same optimizer and restores."""
    runs.write_checkpoint(tmp_path, *runs.TINY, "--config.train.grad_clip=1.0", step=4)
    _stop_at_prepare(monkeypatch)
    with pytest.raises(CheckpointMismatchError) as err:
        loop.train_and_evaluate(_config(moving_shapes_dir, "train.grad_clip=0.0", "train.num_steps=8"), str(tmp_path))
    assert "train.grad_clip=1.0 there, 0.0 here" in str(err.value)
    assert "--config.train.grad_clip=1.0" in str(err.value)
    assert "different model" not in str(err.value)
    other = _config(moving_shapes_dir, "train.grad_clip=0.5", "train.num_steps=8")
    with pytest.raises(_Stop):  # Reaches the data: accepted.
        loop.train_and_evaluate(other, str(tmp_path))
    assert loop.restore_for_inference(other, str(tmp_path), None)[3] == 4


def test_a_damaged_latest_checkpoint_is_named_with_the_older_steps_and_the_fix(tmp_path, moving_shapes_dir):
    """The largest file of step 4's arrays truncated: a TrainingError naming step 4, the intact step 2 and the
    `mv` that sets step 4 aside (before: a raw ValueError from TensorStore); after that move, step 2 is the latest."""
    runs.write_checkpoint(tmp_path, *runs.TINY, step=2)
    runs.write_checkpoint(tmp_path, *runs.TINY, step=4)
    files = [p for p in (tmp_path / "checkpoints" / "4" / "state" / "d").iterdir() if p.is_file()]
    largest = max(files, key=lambda p: p.stat().st_size)
    os.truncate(largest, largest.stat().st_size // 2)
    with pytest.raises(loop.TrainingError) as err:
        loop.train_and_evaluate(_config(moving_shapes_dir, "train.num_steps=6"), str(tmp_path))
    message = str(err.value)
    assert "checkpoint of step 4" in message and "steps [2]" in message and "resume from step 2" in message
    move = message.split("`")[1]
    assert move.startswith("mv ")
    subprocess.run(move, shell=True, check=True)
    assert Checkpointer(os.path.join(tmp_path, "checkpoints")).latest_step() == 2


FOUND_BY = {
    # The next check, without waiting for another save.
    "check": """
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                ckpt.raise_if_save_failed()
            except CheckpointWriteError as e:
                print("NAMED:", " ".join(str(e).split()))
                break
            time.sleep(0.05)
        else:
            print("NO ERROR")
        """,
    # The next save, at once: it waits for step 2's, which fails meanwhile (before: Orbax's raw ValueError
    # 'OUT_OF_RANGE: Error writing ... in OCDBT database', which the loop does not turn into a TrainingError).
    "next save": """
        try:
            ckpt.save(3, {"w": np.zeros(8, np.float32)}, config_json="{}", data_state=None, force=True)
            print("NO ERROR")
        except CheckpointWriteError as e:
            print("NAMED:", " ".join(str(e).split()))
        except Exception as e:
            print("RAW:", type(e).__name__, " ".join(str(e).split())[:300])
        """,
}


@pytest.mark.parametrize("found_by", sorted(FOUND_BY))
def test_a_failed_asynchronous_save_is_named_at_once(tmp_path, found_by):
    """A save that fails in the background (the file size limit: as a full disk does) is reported by whatever
    comes next, the loop's check after a step or the next save: which step, where, the OS reason, and the intact last
    good step."""
    script = textwrap.dedent(
        f"""
        import resource, sys, time
        import numpy as np
        sys.path.insert(0, {str(runs.ROOT)!r})
        from vdm_jax.train.checkpoint import Checkpointer, CheckpointWriteError
        ckpt = Checkpointer({str(tmp_path / "checkpoints")!r})
        ckpt.save(1, {{"w": np.zeros(8, np.float32)}}, config_json="{{}}", data_state=None, force=True)
        ckpt.wait()
        resource.setrlimit(resource.RLIMIT_FSIZE, (150 * 1024, resource.RLIM_INFINITY))
        noise = np.random.default_rng(0).random(1_000_000, np.float32)  # 4 MB that do not compress
        ckpt.save(2, {{"w": noise}}, config_json="{{}}", data_state=None, force=True)
        """
    ) + textwrap.dedent(FOUND_BY[found_by])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=runs.env())
    said = [x for x in out.stdout.splitlines() if x.startswith(("NAMED:", "RAW:", "NO ERROR"))]
    line = said[0] if said else out.stderr[-3000:]
    assert line.startswith("NAMED:"), line
    assert f"checkpoint of step 2 to {tmp_path / 'checkpoints'}/2" in line and "File too large" in line
    assert "The last good checkpoint (step 1) is intact" in line
    assert Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [1]
