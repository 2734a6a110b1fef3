"""--mode=sample and --mode=evaluate on a 2-step checkpoint, and the checkpoint notebook executed against it."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from tests.train import runs

# One worker runs the module: its fixtures train models once (one main.py launch each, a minute on 2 busy cores).
pytestmark = pytest.mark.xdist_group("modes")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, moving_shapes_dir):
    workdir = tmp_path_factory.mktemp("modes") / "run"
    out = runs.run(workdir, *runs.TINY, "--config.train.num_steps=2", data_dir=moving_shapes_dir)
    assert out.returncode == 0, out.stderr[-4000:]
    return workdir, moving_shapes_dir


def test_sample_mode_writes_videos(tiny_run):
    workdir, data_dir = tiny_run
    out = runs.run(workdir, *runs.TINY, "--mode=sample", "--num_samples=3", data_dir=data_dir)
    assert out.returncode == 0, out.stderr[-4000:]
    import numpy as np

    videos = np.load(workdir / "samples" / "sample_step2.npz")["videos"]
    assert videos.shape == (3, 4, 16, 16, 3)
    assert np.all(np.abs(videos) <= 1.0 + 1e-6)
    assert (workdir / "samples" / "sample_step2.gif").stat().st_size > 0


def test_sampling_and_evaluation_restore_the_ema_parameters(tiny_run):
    """restore_for_inference (behind --mode=sample, --mode=evaluate and conditional sampling) gives the checkpoint's
    EMA parameters, which after 2 steps differ from the trained ones."""
    import jax
    import numpy as np

    from vdm_jax import configuration
    from vdm_jax.train.checkpoint import Checkpointer
    from vdm_jax.train.loop import restore_for_inference

    workdir, _ = tiny_run
    cfg = configuration.from_config_dict(configuration.load_run_config(str(workdir)))
    _, params, _, step = restore_for_inference(cfg, str(workdir), None)
    ckpt = Checkpointer(str(workdir / "checkpoints"))
    stored = ckpt.restore_raw(step)
    ckpt.close()
    restored = [np.asarray(x) for x in jax.tree.leaves(params)]
    ema, trained = (list(map(np.asarray, jax.tree.leaves(stored[k]))) for k in ("ema_params", "params"))
    assert step == 2 and len(restored) == len(ema) == len(trained)
    for r, e in zip(restored, ema, strict=True):
        np.testing.assert_array_equal(r, e)
    assert max(float(np.max(np.abs(r - t))) for r, t in zip(restored, trained, strict=True)) > 1e-4


def test_sample_flags_the_model_cannot_use_are_clear_errors(tiny_run):
    """--caption and --label reach the sampler: on this unconditional model each is refused by name, no traceback."""
    workdir, data_dir = tiny_run
    for flag, message in (("--caption=a red circle", "--caption needs"), ("--label=1", "--label=1: this model is not")):
        out = runs.run(workdir, *runs.TINY, "--mode=sample", flag, "--cond_split=test", data_dir=data_dir)
        assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


_SHARDED_SAMPLING = """
import json, os, sys
import jax
import numpy as np
from vdm_jax import configuration
from vdm_jax.train import conditional, sampling, super_resolution

workdir, data_dir = sys.argv[1], sys.argv[2]
overrides = [a.removeprefix("--config.") for a in json.loads(sys.argv[3])]
overrides += [f"data.data_dir={data_dir}", "parallel.mesh_shape=(4,2,1)", "parallel.rules=fsdp"]
cfg = configuration.from_config_dict(configuration.load_config_file("configs/default.py", overrides))
specs = []

def recording(make):  # each compiled sampler's output sharding, as the entry points call them
    def made(*args, **kwargs):
        fn = make(*args, **kwargs)
        def call(*a):
            out = fn(*a)
            specs.append(str(out.sharding.spec))
            return out
        return call
    return made

# The same sampler outside the mesh, then inside it: the cached compiled function must not keep the first layout.
model, _ = conditional.load_model(cfg, workdir)
frames, mask = np.zeros((8, 4, 16, 16, 3), np.float32), np.zeros((8, 4), np.float32)
outside = conditional.sample_with_known(model, jax.random.key(0), frames, mask).sharding.spec
with sampling.on_mesh(cfg):
    inside = conditional.sample_with_known(model, jax.random.key(0), frames, mask).sharding.spec
print("LAYOUTS", json.dumps([str(outside), str(inside)]))

# Library calls with 3 videos, which 8 devices do not divide: outside the mesh (device 0), then inside it (padded).
context = np.random.default_rng(0).uniform(-1, 1, (3, 2, 16, 16, 3)).astype(np.float32)
low_res = context[:, :1].reshape(3, 1, 8, 2, 8, 2, 3).mean(axis=(3, 5))
library = {
    "extend, 2 candidates per chunk": lambda: conditional.extend(model, jax.random.key(1), context, 6, candidates=2),
    "super_resolve": lambda: super_resolution.super_resolve(model, jax.random.key(2), low_res, weight=4.0),
}
alone = {name: np.asarray(call()) for name, call in library.items()}

sampling.make_sample_fn = recording(sampling.make_sample_fn)
for name in ("_compiled_sampler", "_compiled_nll"):
    setattr(conditional, name, recording(getattr(conditional, name)))
super_resolution._compiled_super_resolver = recording(super_resolution._compiled_super_resolver)
with sampling.on_mesh(cfg):
    gaps = {name: float(np.abs(np.asarray(call()) - alone[name]).max()) for name, call in library.items()}
print("LIBRARY", json.dumps(gaps))
sampling.sample_from_checkpoint(cfg, workdir, num_samples=3)  # padded to 8: one video per device
os.replace(f"{workdir}/samples/sample_step2.npz", f"{workdir}/samples/three.npz")
sampling.sample_from_checkpoint(cfg, workdir, num_samples=8)
sampling.sample_conditional_from_checkpoint(cfg, workdir, num_samples=3, cond_split="test", num_cond_frames=2)
os.replace(f"{workdir}/samples/cond_step2.npz", f"{workdir}/samples/cond_three.npz")
sampling.sample_conditional_from_checkpoint(cfg, workdir, num_samples=8, cond_split="test", num_cond_frames=2)
print("SPECS", json.dumps(specs))
"""


def test_sample_mode_splits_the_videos_over_the_mesh_and_equals_one_device(tiny_run):
    """--mode=sample on 8 devices (data 4 x fsdp 2, parameters sharded): each sampler's videos come out split over
    the data axes (every device sampling every video was the failure; 3 videos are padded to 8 to split), and equal
    one device's to float round-off, unconditional and with reconstruction guidance. So do the library's extension
    (2 candidates per chunk: 6 videos and their NLLs padded to 8) and super-resolution of 3 videos."""
    import subprocess
    import sys

    import jax
    import numpy as np

    workdir, data_dir = tiny_run
    samples = workdir / "samples"
    one = {}
    for name, flags in (("sample_step2", ()), ("cond_step2", ("--cond_split=test", "--num_cond_frames=2"))):
        out = runs.run(workdir, *runs.TINY, "--mode=sample", "--num_samples=8", *flags, data_dir=data_dir)
        assert out.returncode == 0, out.stderr[-4000:]
        one[name] = np.load(samples / f"{name}.npz")["videos"]
    args = [workdir, data_dir, json.dumps(list(runs.TINY))]
    out = subprocess.run(
        [sys.executable, "-c", _SHARDED_SAMPLING, *map(str, args)],
        cwd=runs.ROOT,
        env=runs.env(devices=8),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    specs = json.loads(out.stdout.split("SPECS", 1)[1])
    split = str(jax.sharding.PartitionSpec(("data", "fsdp")))
    layouts = json.loads(out.stdout.split("LAYOUTS", 1)[1].split("\n", 1)[0])
    assert layouts == [str(jax.sharding.PartitionSpec()), split], layouts  # one sampler, traced once per layout
    assert len(specs) >= 8 and all(s == split for s in specs), specs
    gaps = json.loads(out.stdout.split("LIBRARY", 1)[1].split("\n", 1)[0])
    assert len(gaps) == 2 and all(gap < 1e-5 for gap in gaps.values()), gaps
    for name, videos in one.items():
        np.testing.assert_allclose(np.load(samples / f"{name}.npz")["videos"], videos, atol=1e-5, err_msg=name)
    for name, three in (("sample_step2", "three"), ("cond_step2", "cond_three")):
        videos = np.load(samples / f"{three}.npz")["videos"]
        np.testing.assert_allclose(videos, one[name][:3], atol=1e-5, err_msg=f"{name}: 3 videos, padded")


def test_evaluate_mode_writes_json(tiny_run):
    workdir, data_dir = tiny_run
    out = runs.run(workdir, *runs.TINY, "--mode=evaluate", "--config.eval.num_samples=3", data_dir=data_dir)
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads((workdir / "eval" / "step_2.json").read_text())
    assert result["step"] == 2 and result["num_samples"] == 3 and result["nfe"] == 2
    assert set(result["metrics"]) >= {"object_permanence", "color_constancy", "motion_smoothness", "cleanliness"}
    assert all(0.0 <= v <= 1.0 for v in result["metrics"].values())
    assert (workdir / "eval" / "step_2.gif").exists()


def test_evaluate_without_checkpoint_is_a_clear_error(tmp_path, moving_shapes_dir):
    out = runs.run(tmp_path / "empty", *runs.TINY, "--mode=evaluate", data_dir=moving_shapes_dir)
    assert out.returncode != 0
    assert "no checkpoint" in out.stderr and "Traceback" not in out.stderr


def test_notebook_executes_against_a_run(tiny_run):
    import nbformat
    from nbclient import NotebookClient

    workdir, _ = tiny_run
    path = pathlib.Path(runs.ROOT, "notebooks", "evaluate_checkpoint.ipynb")
    nb = nbformat.read(path, as_version=4)
    os.environ["VDM_WORKDIR"] = str(workdir)
    os.environ["VDM_NUM_SAMPLES"] = "2"
    try:
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    finally:
        os.environ.pop("VDM_WORKDIR")
        os.environ.pop("VDM_NUM_SAMPLES")
    outputs = "".join(
        o.get("text", "") + json.dumps(o.get("data", {}))
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    assert "image/gif;base64" in outputs  # the samples are shown inline
    assert "object_permanence" in outputs  # the metrics were computed


# ---------------------------------------------------------------- --mode=sample: keyframes, then interpolation
@pytest.fixture(scope="module")
def keyframe_run(tiny_run, tmp_path_factory):
    """The tiny run's checkpoint under a config that says it was trained at data.frame_stride = 2: a keyframe run for
    keyframes at stride 2 (same weights; what is tested is which run's config and checkpoint are loaded)."""
    import shutil

    workdir, _ = tiny_run
    key_dir = tmp_path_factory.mktemp("keyframes") / "run"
    shutil.copytree(workdir, key_dir, ignore=shutil.ignore_patterns("samples", "eval"))
    config = json.loads((key_dir / "config.json").read_text())
    assert config["data"]["frame_stride"] == 1
    config["data"]["frame_stride"] = 2
    (key_dir / "config.json").write_text(json.dumps(config))
    return key_dir


def tiny_config(data_dir: str):
    """The ExperimentConfig main.py builds from the tiny run's flags, for calling the sample entry point in-process."""
    from vdm_jax import configuration

    overrides = [a.removeprefix("--config.") for a in runs.TINY] + [f"data.data_dir={data_dir}"]
    return configuration.from_config_dict(configuration.load_config_file("configs/default.py", overrides))


def test_sample_mode_makes_long_videos_by_keyframes_then_interpolation(tiny_run, keyframe_run):
    import numpy as np

    workdir, data_dir = tiny_run
    flags = ("--mode=sample", "--cond_split=test", "--num_cond_frames=1", "--num_frames=8", "--num_samples=2")
    out = runs.run(
        workdir, *runs.TINY, *flags, "--keyframe_stride=2", f"--keyframe_workdir={keyframe_run}", data_dir=data_dir
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert f"keyframes at stride 2 from {keyframe_run} (step 2), then interpolation" in out.stdout
    saved = np.load(workdir / "samples" / "cond_step2.npz")
    assert saved["videos"].shape == (2, 8, 16, 16, 3)
    np.testing.assert_array_equal(saved["videos"][:, :1], saved["context"])
    np.testing.assert_array_equal(saved["keyframes"], [1, 0, 1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(saved["marked"], np.arange(8)[None].repeat(2, 0) < 1)  # the context frame


def test_sample_mode_makes_long_videos_from_nothing(tiny_run):
    """--num_frames beyond the model's without conditioning frames: an unconditional first chunk, then extension."""
    import numpy as np

    workdir, data_dir = tiny_run
    out = runs.run(workdir, *runs.TINY, "--mode=sample", "--num_frames=7", "--num_samples=2", data_dir=data_dir)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "from 0 conditioning frame(s) (replacement; autoregressive)" in out.stdout
    saved = np.load(workdir / "samples" / "sample_step2_7f.npz")
    assert saved["videos"].shape == (2, 7, 16, 16, 3) and not saved["marked"].any()
    assert np.all(np.abs(saved["videos"]) <= 1.0) and saved["videos"].std() > 0.1


def test_keyframes_from_nothing(tiny_run, keyframe_run, monkeypatch):
    """key_context = 0 without conditioning frames: the keyframe run makes frames 0, 2, 4, 6 from nothing."""
    import numpy as np

    from vdm_jax.train import keyframes, sampling

    workdir, data_dir = tiny_run
    cfg = tiny_config(data_dir)
    calls, real = [], keyframes.keyframes_then_interpolate

    def spy(model, rng, context, *args, **kwargs):
        calls.append((context.shape, kwargs["keyframe_model"].cfg.data.frame_stride, kwargs["key_context"]))
        return real(model, rng, context, *args, **kwargs)

    monkeypatch.setattr(keyframes, "keyframes_then_interpolate", spy)
    sampling.sample_conditional_from_checkpoint(
        cfg,
        str(workdir),
        num_samples=2,
        num_frames=8,
        keyframe_stride=2,
        keyframe_workdir=str(keyframe_run),
        key_context=0,
    )
    assert calls == [((2, 0, 16, 16, 3), 2, 0)]
    saved = np.load(workdir / "samples" / "sample_step2_8f.npz")
    assert saved["videos"].shape == (2, 8, 16, 16, 3) and saved["context"].shape == (2, 0, 16, 16, 3)
    np.testing.assert_array_equal(saved["keyframes"], [1, 0, 1, 0, 1, 0, 1, 0])


def test_keyframe_flags_that_cannot_work_are_clear_errors(tiny_run, keyframe_run, tmp_path):
    """Checked in-process (the flags reach this function as they are, see the test above): each error names the flag
    and the fix, and a keyframe run of another stride or conditioning is refused before any checkpoint loads."""
    import shutil

    from vdm_jax import configuration
    from vdm_jax.train import sampling
    from vdm_jax.train.context import ContextError

    workdir, data_dir = tiny_run
    cfg = tiny_config(data_dir)
    labelled = tmp_path / "labelled"  # a stride-2 run of a class-conditional model
    shutil.copytree(keyframe_run, labelled)
    config = json.loads((labelled / "config.json").read_text())
    config["model"]["num_classes"] = 5
    (labelled / "config.json").write_text(json.dumps(config))
    base = {"num_samples": 1, "cond_split": "test", "num_frames": 8, "step": 99}  # step 99: any load would fail
    cases = [
        ({"keyframe_workdir": str(keyframe_run)}, ContextError, "--keyframe_workdir needs --keyframe_stride"),
        ({"memory": 2}, ContextError, "--memory=2: memory > 0 needs a frame-conditioned model trained on long-range"),
        ({"memory": 1, "keyframe_stride": 2}, ContextError, "--memory is for extension chunk by chunk"),
        ({"memory": 1, "num_frames": 4}, ContextError, r"--memory=1 applies to the chunks after the first.*> 4"),
        ({"keyframe_stride": 4}, ContextError, r"--keyframe_stride=4 must be in 2 \.\. 3"),
        ({"keyframe_stride": 2, "num_frames": 3}, ContextError, "--num_frames=3: keyframes then interpolation"),
        ({"keyframe_stride": 2, "key_context": 5}, ContextError, r"--key_context=5 must be in 0 \.\. 4"),
        ({"keyframe_stride": 2, "key_context": 4}, ContextError, "gives the keyframe model 4 keyframes; it makes 4"),
        (
            {"keyframe_stride": 2, "keyframe_workdir": str(workdir)},
            configuration.ConfigError,
            "was trained at data.frame_stride=1; keyframes at stride 2",
        ),
        (
            {"keyframe_stride": 3, "keyframe_workdir": str(keyframe_run)},
            configuration.ConfigError,
            "or make keyframes at stride 2, the one it fits",
        ),
        (
            {"keyframe_stride": 2, "keyframe_workdir": str(labelled)},
            configuration.ConfigError,
            "model.num_classes 0 here, 5 there",
        ),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            sampling.sample_conditional_from_checkpoint(cfg, str(workdir), **{**base, **kwargs})
