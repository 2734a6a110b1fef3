"""The training system end to end, through main.py as a user runs it: checkpoints, samples, resume after SIGKILL,
SIGTERM, sharded == single device, two processes, and clear errors on bad input."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import jax
import numpy as np

from tests.train import runs
from vdm_jax.train.checkpoint import Checkpointer


def final_state(workdir) -> dict:
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    state = ckpt.restore_raw(ckpt.latest_step())
    ckpt.close()
    return state


def assert_trees_close(a, b, rtol, atol):
    la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb, strict=True):
        np.testing.assert_allclose(
            np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path)
        )


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def assert_resume_is_exact(tmp_path, common: tuple[str, ...], data_dir: str) -> dict:
    """Runs main.py with `common` flags for 4 steps straight, and for 2 then resumed to 4; asserts both end at the same
    parameters and EMA parameters and returns the straight run's final state."""
    ok(runs.run(tmp_path / "straight", *common, "--config.train.num_steps=4", data_dir=data_dir))
    ok(runs.run(tmp_path / "resumed", *common, "--config.train.num_steps=2", data_dir=data_dir))
    ok(runs.run(tmp_path / "resumed", *common, "--config.train.num_steps=4", data_dir=data_dir))
    straight, resumed = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert int(straight["step"]) == int(resumed["step"]) == 4
    assert_trees_close(straight["params"], resumed["params"], rtol=1e-5, atol=1e-6)
    assert_trees_close(straight["ema_params"], resumed["ema_params"], rtol=1e-5, atol=1e-6)  # what samples use
    return straight


def test_default_config_trains_checkpoints_and_samples(tmp_path, moving_shapes_dir):
    workdir = tmp_path / "run"
    # The default model, data and sampler; only the step counts are cut (a sampling step costs ~0.25 s here).
    steps = ("--config.train.num_steps=2", "--config.sampler.num_steps=10")
    ok(runs.run(workdir, *runs.SMALL_SPLITS, *steps, data_dir=moving_shapes_dir))
    assert os.path.isdir(workdir / "checkpoints" / "2")
    samples = sorted(os.listdir(workdir / "samples"))
    assert any(s.endswith(".gif") for s in samples) and any(s.endswith(".mp4") for s in samples), samples
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))
    state = final_state(workdir)
    assert int(state["step"]) == 2


def test_sharded_fsdp_equals_single_device(tmp_path, moving_shapes_dir):
    common = (*runs.TINY, "--config.train.num_steps=3", "--config.train.checkpoint_every=3")
    ok(runs.run(tmp_path / "one", *common, data_dir=moving_shapes_dir, devices=1))
    sharded = ("--config.parallel.mesh_shape=(4,2,1)", "--config.parallel.rules=fsdp")
    ok(runs.run(tmp_path / "eight", *common, *sharded, data_dir=moving_shapes_dir, devices=8))
    one, eight = final_state(tmp_path / "one"), final_state(tmp_path / "eight")
    # Same maths, different reduction order across devices: float32 round-off only.
    assert_trees_close(one["params"], eight["params"], rtol=1e-4, atol=1e-5)
    assert_trees_close(one["ema_params"], eight["ema_params"], rtol=1e-4, atol=1e-5)


def _wait_for(predicate, proc, timeout=300.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}):\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_resume_after_sigkill_equals_uninterrupted(tmp_path, moving_shapes_dir):
    common = (
        *runs.TINY,
        "--config.train.num_steps=6",
        "--config.train.checkpoint_every=3",
        "--config.train.sample_every=3",  # Sampling after the step-3 checkpoint gives a window to kill in.
        "--config.sampler.num_steps=32",
        "--config.train.log_every=4",  # Not a multiple of checkpoint_every: the logged means must still agree.
    )
    ok(runs.run(tmp_path / "straight", *common, data_dir=moving_shapes_dir))

    killed = tmp_path / "killed"
    proc = runs.start(killed, *common, data_dir=moving_shapes_dir)
    _wait_for(lambda: os.path.isdir(killed / "checkpoints" / "3" / "state"), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Checkpointer(os.path.join(killed, "checkpoints")).all_steps() == [3]
    ok(runs.run(killed, *common, data_dir=moving_shapes_dir))

    straight, resumed = final_state(tmp_path / "straight"), final_state(killed)
    assert int(resumed["step"]) == 6
    assert_trees_close(straight["params"], resumed["params"], rtol=1e-6, atol=1e-7)
    assert_trees_close(straight["opt_state"], resumed["opt_state"], rtol=1e-6, atol=1e-7)
    assert_trees_close(straight["ema_params"], resumed["ema_params"], rtol=1e-6, atol=1e-7)
    # The training curve: the same steps, each the mean of the same steps' losses (a step the killed run had logged
    # past its checkpoint would appear twice in TensorBoard; the later value is compared).
    logged_straight, logged_resumed = _logged(tmp_path / "straight", "loss"), _logged(killed, "loss")
    assert sorted(logged_straight) == sorted(logged_resumed) == [3, 4, 6]
    for step, value in logged_straight.items():
        np.testing.assert_allclose(logged_resumed[step], value, rtol=1e-5, err_msg=f"loss logged at step {step}")


def _logged(workdir, tag: str) -> dict[int, float]:
    """The scalar `tag` as TensorBoard reads the run's directory (every event file): step -> its last value."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(str(workdir), size_guidance={"tensors": 0})
    acc.Reload()
    return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}


def test_sigterm_saves_current_step_and_next_start_resumes(tmp_path, moving_shapes_dir):
    workdir = tmp_path / "run"
    common = (*runs.TINY, "--config.train.checkpoint_every=100000")
    proc = runs.start(workdir, *common, "--config.train.num_steps=100000", data_dir=moving_shapes_dir)
    _wait_for(lambda: len(list(workdir.glob("events.out.tfevents*"))) > 0 and _logged_steps(workdir) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out[-4000:]
    steps = Checkpointer(os.path.join(workdir, "checkpoints")).all_steps()
    assert len(steps) == 1 and 3 <= steps[0] < 100000
    resumed = runs.run(workdir, *common, f"--config.train.num_steps={steps[0] + 2}", data_dir=moving_shapes_dir)
    ok(resumed)
    assert f"Resuming from step {steps[0]}" in resumed.stderr
    assert int(final_state(workdir)["step"]) == steps[0] + 2


def _logged_steps(workdir) -> int:
    """How many steps the run has finished, from its TensorBoard scalar events."""
    from tensorboard.backend.event_processing import event_accumulator

    steps = 0
    for path in workdir.glob("events.out.tfevents*"):
        acc = event_accumulator.EventAccumulator(str(path), size_guidance={"tensors": 0})
        acc.Reload()
        if "loss" in acc.Tags().get("tensors", []):
            steps = max(steps, max(e.step for e in acc.Tensors("loss")))
    return steps


def _start_two_processes(workdir, *args, data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = (*args, "--distributed", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2")
    return [runs.start(workdir, *common, f"--process_id={i}", data_dir=data_dir, devices=2) for i in range(2)]


def test_two_processes_train_and_checkpoint(tmp_path, moving_shapes_dir):
    """Two processes, FSDP across them, started from another run's weights (init_from builds global arrays from
    the loaded values and keeps the rest, which span both hosts, on the devices)."""
    source = tmp_path / "source"
    runs.write_checkpoint(source, *runs.TINY)
    workdir = tmp_path / "run"
    args = (
        *runs.TINY,
        "--config.train.num_steps=2",
        "--config.train.checkpoint_every=2",
        "--config.parallel.mesh_shape=(1,-1,1)",
        "--config.parallel.rules=fsdp",
        f"--config.train.init_from={source / 'checkpoints'}",
    )
    procs = _start_two_processes(workdir, *args, data_dir=moving_shapes_dir)
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [2]
    # Sampling from frames on the same two hosts: the videos, split over both, are gathered before writing. 3 videos
    # on 4 devices are padded to 4, and the second chunk pads the first's output, a global array of both hosts.
    cond = ("--mode=sample", "--cond_split=test", "--num_cond_frames=2", "--num_samples=3", "--num_frames=6")
    procs = _start_two_processes(workdir, *args, *cond, data_dir=moving_shapes_dir)
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    written = np.load(workdir / "samples" / "cond_step2.npz")
    videos = written["videos"]
    assert videos.shape == (3, 6, 16, 16, 3) and np.all(np.isfinite(videos))
    np.testing.assert_allclose(videos[:, :2], written["context"], atol=1e-6)  # the conditioning frames, kept


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path, moving_shapes_dir):
    """A preemption notice reaching one host only: both save the same step and exit cleanly (the distributed
    runtime's preemption sync), instead of one saving while the other waits in the next step's collectives."""
    workdir = tmp_path / "run"
    args = (*runs.TINY, "--config.train.num_steps=100000", "--config.train.checkpoint_every=100000")
    procs = _start_two_processes(workdir, *args, data_dir=moving_shapes_dir)
    _wait_for(lambda: len(list(workdir.glob("events.out.tfevents*"))) > 0 and _logged_steps(workdir) >= 3, procs[0])
    procs[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    stopped = [int(re.search(r"Stopped at step (\d+) after SIGTERM", out).group(1)) for out in outs]
    assert stopped[0] == stopped[1] >= 3
    assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [stopped[0]]


def test_unwritable_workdir_is_a_clear_error(tmp_path, moving_shapes_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = runs.run(blocker / "run", *runs.TINY, "--config.train.num_steps=1", data_dir=moving_shapes_dir)
    assert out.returncode != 0
    assert "cannot write to --workdir" in out.stderr
    assert "Traceback" not in out.stderr


def test_checkpoint_of_another_model_is_refused_and_kept(tmp_path, moving_shapes_dir):
    workdir = tmp_path / "run"
    ok(runs.run(workdir, *runs.TINY, "--config.train.num_steps=1", data_dir=moving_shapes_dir))
    before = {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").rglob("*") if p.is_file()}
    out = runs.run(
        workdir, *runs.TINY, "--config.train.num_steps=2", "--config.model.base_channels=16", data_dir=moving_shapes_dir
    )
    assert out.returncode != 0
    # The setting that changed the shapes is named with the flag that restores it (checked before the shapes).
    assert "model.base_channels=8 there, 16 here" in out.stderr and "--config.model.base_channels=8" in out.stderr
    assert "Traceback" not in out.stderr
    after = {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").rglob("*") if p.is_file()}
    assert before == after


def test_init_from_image_model_into_video_model(tmp_path, moving_shapes_dir):
    """An image model (no temporal layers) starts a video model with identity-initialised temporal layers: every
    image parameter is loaded, only the temporal ones are reported missing, and the loaded values arrive."""
    image = tmp_path / "image"
    runs.write_checkpoint(image, *runs.TINY, "--config.model.temporal_attention=False")
    video = tmp_path / "video"
    out = runs.run(
        video,
        *runs.TINY,
        "--config.train.num_steps=1",
        "--config.train.learning_rate=1e-12",  # One step that barely moves the weights.
        "--config.model.temporal_identity_init=true",
        f"--config.train.init_from={image / 'checkpoints'}",
        data_dir=moving_shapes_dir,
    )
    ok(out)
    assert f"init_from {image / 'checkpoints'} step 1" in out.stdout
    src, dst = final_state(image)["params"], final_state(video)["params"]
    src_leaves = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(src)[0]}
    dst_leaves = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(dst)[0]}
    assert set(src_leaves) < set(dst_leaves)
    assert all("temporal" in k for k in set(dst_leaves) - set(src_leaves))
    for key, value in src_leaves.items():
        np.testing.assert_allclose(dst_leaves[key], value, atol=1e-6, err_msg=key)


def test_init_from_unconditional_model_into_frame_conditioned_model(tmp_path, moving_shapes_dir):
    """`init_from` an unconditional run into a frame-conditioned model: the input kernel is zero-extended (the
    source fills the z channels, the known-frame and mask channels start at zero) and everything else is loaded."""
    uncond = tmp_path / "uncond"
    runs.write_checkpoint(uncond, *runs.TINY)
    fc = tmp_path / "fc"
    out = runs.run(
        fc,
        *runs.TINY,
        "--config.train.num_steps=1",
        "--config.train.learning_rate=1e-12",
        "--config.model.frame_conditioning=true",
        f"--config.train.init_from={uncond / 'checkpoints'}",
        data_dir=moving_shapes_dir,
    )
    ok(out)
    assert "1 zero-extended in input channels [conv_in/kernel]" in out.stdout
    assert "0 missing" in out.stdout and "0 with other shapes" in out.stdout
    src, dst = final_state(uncond)["ema_params"], final_state(fc)["ema_params"]
    src_kernel, dst_kernel = (np.asarray(p["conv_in"]["kernel"]["value"]) for p in (src, dst))
    assert dst_kernel.shape == (*src_kernel.shape[:2], 7, src_kernel.shape[3])
    np.testing.assert_allclose(dst_kernel[:, :, :3], src_kernel, atol=1e-6)
    np.testing.assert_allclose(dst_kernel[:, :, 3:], 0.0, atol=1e-6)
