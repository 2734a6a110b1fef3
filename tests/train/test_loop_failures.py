"""The training loop when something goes wrong, in process: a non-finite step between metric writes must not reach a
checkpoint, an exception while a checkpoint is being written must not lose it, a preemption notice at the last step
still finishes the run, and a checkpoint is restored only under its run's defining settings."""

from __future__ import annotations

import dataclasses
import json
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


@pytest.mark.parametrize("every", [("train.checkpoint_every=2",), ("train.checkpoint_every=4", "train.sample_every=2")])
def test_nonfinite_step_between_writes_stops_before_the_checkpoint(tmp_path, moving_shapes_dir, monkeypatch, every):
    """Step 1 fails; metrics are written every 4 steps, checkpoints (or samples) every 2: the run stops at step 2
    without saving it (or writing samples labelled step 2 from the state of step 1), and rerunning resumes from nothing
    saved (trains all 4 steps) instead of failing on a mislabelled checkpoint."""
    cfg = _config(moving_shapes_dir, "train.num_steps=4", "train.log_every=4", *every)
    workdir = str(tmp_path / "run")
    _failing_step(monkeypatch, {1})
    with pytest.raises(loop.TrainingError, match="non-finite loss or gradients before step 2"):
        loop.train_and_evaluate(cfg, workdir)
    assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == []
    assert not os.path.exists(os.path.join(workdir, "samples", "step_0000002.gif"))
    monkeypatch.undo()
    state = loop.train_and_evaluate(cfg, workdir)
    assert int(state.step) == 4
    assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == ([2, 4] if len(every) == 1 else [4])


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


@pytest.mark.parametrize("signal_step", [1, 2])
def test_sigterm_saves_and_the_restart_finishes_the_run(tmp_path, moving_shapes_dir, monkeypatch, signal_step):
    """A preemption notice after step 1 of 2 saves step 1 and stops; after the last step it saves that step and skips
    the final samples, as a real SIGTERM does (`requested` set). The restart trains what is left, or only writes the
    final samples the last step owes."""
    cfg = _config(moving_shapes_dir, "train.num_steps=2", "train.checkpoint_every=100")
    workdir = tmp_path / "run"

    def stop(self, step: int) -> bool:  # What the SIGTERM handler and the sync point leave behind.
        self.requested = self.requested or step == signal_step
        return self.requested

    monkeypatch.setattr(loop._Preemption, "stop", stop)
    state = loop.train_and_evaluate(cfg, str(workdir))
    assert int(state.step) == signal_step
    assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == [signal_step]
    assert not list(workdir.glob("samples/step_0000002*"))
    monkeypatch.undo()
    state = loop.train_and_evaluate(cfg, str(workdir))
    assert int(state.step) == 2
    assert Checkpointer(os.path.join(workdir, "checkpoints")).all_steps() == sorted({signal_step, 2})
    assert list(workdir.glob("samples/step_0000002*"))


def test_a_run_is_restored_only_under_its_own_defining_settings(tmp_path, moving_shapes_dir):
    """Sampling, evaluating or resuming a checkpoint under settings that change what its weights compute (same
    shapes, so the shape check cannot see it) is refused, naming each setting and the flags that restore it."""
    from vdm_jax.train.checkpoint import CheckpointMismatchError

    runs.write_checkpoint(tmp_path, *runs.TINY, "--config.diffusion.parameterization=eps")
    same = _config(moving_shapes_dir, "diffusion.parameterization=eps", "sampler.num_steps=7")  # sampler: free
    assert loop.restore_for_inference(same, str(tmp_path), None)[3] == 1
    other = _config(moving_shapes_dir, "diffusion.schedule=linear")
    with pytest.raises(CheckpointMismatchError) as err:
        loop.restore_for_inference(other, str(tmp_path), None)
    message = str(err.value)
    assert "diffusion.schedule='cosine' there, 'linear' here" in message
    assert "diffusion.parameterization='eps' there, 'v' here" in message
    assert "--config.diffusion.schedule=cosine --config.diffusion.parameterization=eps" in message
    with pytest.raises(CheckpointMismatchError, match="diffusion.parameterization"):
        loop.train_and_evaluate(_config(moving_shapes_dir, "train.num_steps=2"), str(tmp_path))
    # A setting that only matters under another one (the shift of the shifted cosine) is free where neither uses it.
    free = _config(moving_shapes_dir, "diffusion.parameterization=eps", "diffusion.shift_base_resolution=32")
    assert loop.restore_for_inference(free, str(tmp_path), None)[3] == 1


def test_a_run_restored_without_its_shape_changing_settings_is_told_the_flags(tmp_path, moving_shapes_dir):
    """Sampling a frame-conditioned run without --config.model.frame_conditioning=True changes the input kernel's
    shape too: the message names the setting and its flag (before: 'written by a different model ... use a new
    --workdir', wrong advice for sampling)."""
    from vdm_jax.train.checkpoint import CheckpointMismatchError

    runs.write_checkpoint(tmp_path, *runs.TINY, "--config.model.frame_conditioning=True")
    with pytest.raises(CheckpointMismatchError) as err:
        loop.restore_for_inference(_config(moving_shapes_dir), str(tmp_path), None)
    assert "--config.model.frame_conditioning=True" in str(err.value)
    assert "different model" not in str(err.value)


def test_a_setting_added_later_is_compared_as_what_older_runs_computed(tmp_path):
    """A run saved before model.emb_mlp_layers existed had the 2-layer MLP: restored under 4 layers, the message
    names the setting (not 'a different model'); under the default it is the same run."""
    from vdm_jax.train.checkpoint import CheckpointMismatchError, check_same_run

    cfg = _config(str(tmp_path))
    stored = json.loads(cfg.to_json())
    del stored["model"]["emb_mlp_layers"]
    check_same_run(stored, cfg, "old_run")
    deeper = _config(str(tmp_path), "model.emb_mlp_layers=4")
    with pytest.raises(CheckpointMismatchError, match="model.emb_mlp_layers=2 there, 4 here"):
        check_same_run(stored, deeper, "old_run")


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        # moving_shapes labels its clips 0 .. 2: label 2 would be the null class of a 2-class model.
        (("model.num_classes=2",), configuration.ConfigError, "has 3 classes .* set config.model.num_classes=3"),
        (("model.num_classes=4",), configuration.ConfigError, "has 3 classes"),
        (("model.text_conditioning=precomputed", "model.text_embed_dim=16"), configuration.ConfigError, "library use"),
    ],
)
def test_conditioning_the_dataset_cannot_supply_is_refused_before_compiling(
    tmp_path, moving_shapes_dir, monkeypatch, extra, error, message
):
    """A class count other than the dataset's, or text embeddings no dataset gives, is a ConfigError before the
    step is compiled and before the workdir is written (the matching count trains: tests/train/test_step.py)."""

    def not_reached(*args, **kwargs):
        raise AssertionError("compiled the step of a config the dataset cannot feed")

    monkeypatch.setattr(loop, "compile_train_step", not_reached)
    workdir = tmp_path / "run"
    with pytest.raises(error, match=message):
        loop.train_and_evaluate(_config(moving_shapes_dir, *extra), str(workdir))
    assert not workdir.exists()


def test_dataset_conditioning_check_names_what_the_dataset_lacks(moving_shapes_dir):
    """Labels or captions the model reads and the dataset does not have; what it has is accepted."""
    import types

    from vdm_jax import data as vdm_data

    labelled = _config(moving_shapes_dir, "model.num_classes=3", "model.text_conditioning=builtin")
    vdm_data.prepare(labelled.data)
    configuration.check_dataset_conditioning(labelled, vdm_data.dataset_spec(labelled.data))  # 3 classes, captions
    bare = types.SimpleNamespace(label_key=None, num_classes=0, caption_key=None)
    with pytest.raises(configuration.ConfigError, match="num_classes=3 but data.name='moving_shapes' has no class"):
        configuration.check_dataset_conditioning(labelled, bare)
    with pytest.raises(configuration.ConfigError, match="'builtin' but data.name='moving_shapes' has no captions"):
        configuration.check_dataset_conditioning(_config(moving_shapes_dir, "model.text_conditioning=builtin"), bare)
    configuration.check_dataset_conditioning(_config(moving_shapes_dir), bare)  # an unconditional model: anything


def test_samples_of_a_precomputed_text_model_are_refused(moving_shapes_dir):
    """Sampling and evaluation take their conditioning from `conditioning_batch`: no dataset holds text
    embeddings, so a precomputed-text model is refused there with the library route (it returned None, and the
    model then failed on its missing input)."""
    cfg = _config(moving_shapes_dir, "model.text_conditioning=precomputed", "model.text_embed_dim=16")
    with pytest.raises(configuration.ConfigError, match=r"library use .*sample_with_known"):
        loop.conditioning_batch(cfg, 2)


@pytest.mark.parametrize("extra, conditioned", [((), False), (("model.num_classes=3",), True)])
def test_the_loop_takes_image_frames_from_the_rows_own_video_for_conditioned_models(
    tmp_path, moving_shapes_dir, monkeypatch, extra, conditioned
):
    """Joint training's image frames carry the row's label / caption: the loop asks the data for frames of the
    row's own video when the model is class- or caption-conditioned (tests/data/test_pipeline.py checks the frames)."""
    from vdm_jax import data as vdm_data

    asked = []

    class Stop(Exception):
        pass

    def spy(*args, **kwargs):
        asked.append(kwargs.get("conditioned", False))
        raise Stop

    monkeypatch.setattr(vdm_data, "make_iterator", spy)
    with pytest.raises(Stop):
        loop.train_and_evaluate(_config(moving_shapes_dir, "data.num_image_frames=2", *extra), str(tmp_path / "run"))
    assert asked == [conditioned]


@pytest.mark.parametrize("source_temporal", [False, True])
def test_identity_init_overwritten_by_the_sources_temporal_layers_is_reported(
    tmp_path, moving_shapes_dir, caplog, source_temporal
):
    """init_from an image model into a video model with temporal_identity_init: a source with temporal layers of
    its own replaces the identity start, and a warning says so; a source without them loads silently."""
    import jax

    from vdm_jax.train.compile import new_model
    from vdm_jax.train.state import init_state, make_optimizer

    runs.write_checkpoint(tmp_path, *runs.TINY, f"--config.model.temporal_attention={source_temporal}")
    cfg = _config(moving_shapes_dir, "model.temporal_identity_init=True")
    state = jax.jit(lambda: init_state(new_model(cfg), make_optimizer(cfg.train))[1])()
    with caplog.at_level("WARNING"):
        loop._load_init_from(state, str(tmp_path / "checkpoints"), temporal_identity_init=True)
    warned = [r for r in caplog.records if "temporal_identity_init" in r.getMessage()]
    assert len(warned) == int(source_temporal)


@pytest.mark.parametrize(
    "source_temporal, identity_init, expect_warning",
    [(False, False, True), (True, False, False), (False, True, False)],
)
def test_image_model_loaded_without_identity_init_is_reported(
    tmp_path, moving_shapes_dir, caplog, source_temporal, identity_init, expect_warning
):
    """init_from an image model (the source lacks every temporal layer) with temporal_identity_init=False: the
    temporal layers start random, and a warning names the flag that makes them start as the identity. A source
    with temporal layers, or identity init on, gets no such warning."""
    import jax

    from vdm_jax.train.compile import new_model
    from vdm_jax.train.state import init_state, make_optimizer

    runs.write_checkpoint(tmp_path, *runs.TINY, f"--config.model.temporal_attention={source_temporal}")
    cfg = _config(moving_shapes_dir, f"model.temporal_identity_init={identity_init}")
    state = jax.jit(lambda: init_state(new_model(cfg), make_optimizer(cfg.train))[1])()
    with caplog.at_level("WARNING"):
        loop._load_init_from(state, str(tmp_path / "checkpoints"), temporal_identity_init=identity_init)
    warned = [r.getMessage() for r in caplog.records if "start random" in r.getMessage()]
    assert len(warned) == int(expect_warning)
    if expect_warning:
        assert "--config.model.temporal_identity_init=True" in warned[0]
