"""The command-line contract: main.py flags, config loading and overrides, and the README <-> CI commands."""

import dataclasses
import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest

from vdm_jax import configuration

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_main(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.mark.parametrize("name", ["diffusion", "models", "data", "parallel", "train", "evaluation", "configuration"])
def test_every_subpackage_imports(name):
    module = importlib.import_module(f"vdm_jax.{name}")
    assert module.__doc__, f"vdm_jax.{name} has no module docstring"


def test_main_help_lists_the_contract():
    out = run_main("--help")
    assert "Traceback" not in out.stderr, out.stderr
    for flag in ("--config", "--workdir", "--mode", "distributed", "train|sample|evaluate"):
        assert flag in out.stdout, flag


def test_unknown_override_key_is_rejected_clearly(tmp_path):
    out = run_main("--config=configs/default.py", f"--workdir={tmp_path}", "--config.train.no_such_key=1")
    assert out.returncode != 0
    assert "config.train.no_such_key" in out.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written for a rejected config"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num_processes=2"], "--num_processes only apply with --distributed"),
        (["--num_samples=3"], "--num_samples only apply to --mode=sample, not --mode=train"),
        (["--mode=evaluate", "--caption=x", "--label=2"], "--caption, --label only apply to --mode=sample"),
        (["--checkpoint_step=5"], "--checkpoint_step only applies to --mode=sample/evaluate"),
        (["--mode=sample", "--candidates=4"], "--candidates applies to sampling chunk by chunk"),
        (["--mode=sample", "--num_frames=8", "--candidates=4"], "--candidates applies"),  # 8: the model's own
        (["--mode=sample", "--cond_index=3"], "--cond_index picks clips of --cond_split"),
        (["--mode=sample", "--num_cond_frames=3"], "--num_cond_frames counts frames of --cond_video or --cond_split"),
        (["--mode=sample", "--key_context=1"], "--key_context applies to keyframes"),
        (["--mode=sample", "--num_samples=0"], "--num_samples=0 must be at least 1"),
    ],
)
def test_flags_the_mode_would_ignore_are_refused(tmp_path, flags, message):
    out = run_main("--config=configs/default.py", f"--workdir={tmp_path}", *flags)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "devices, flags, message",
    [
        (1, ["--config.parallel.mesh_shape=(2,1,1)"], "uses 2 devices but 1 are available"),
        (3, ["--config.parallel.mesh_shape=(-1,1,1)"], "micro-batches of 8, which the mesh's data x fsdp = 3"),
    ],
)
def test_mesh_the_devices_or_batch_cannot_fill_is_a_clear_error(tmp_path, devices, flags, message):
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    out = run_main("--config=configs/default.py", f"--workdir={tmp_path / 'run'}", *flags, env=env)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "config, overrides, message",
    [
        ("configs/nope.py", [], "cannot load --config=configs/nope.py: [Errno 2] No such file or directory"),
        ("configs/nope.py", ["--config.seed=3"], "cannot load --config=configs/nope.py: [Errno 2] No such file"),
        ("{tmp}/broken.py", [], "--config={tmp}/broken.py fails to run (line 2): NameError: name 'nonsense'"),
        # TypeError / ValueError reach main.py wrapped in absl's flag error, as a bad override's do.
        ("{tmp}/typo.py", [], "--config={tmp}/typo.py fails to run (line 3): TypeError: can only concatenate str"),
        ("{tmp}/value.py", ["--config.seed=3"], "--config={tmp}/value.py fails to run (line 2): ValueError: invalid"),
        # The file's own error, not the one it was raised from.
        ("{tmp}/chained.py", [], "--config={tmp}/chained.py fails to run (line 5): ValueError: say which key"),
    ],
)
def test_unloadable_config_file_is_one_line_before_any_heavy_import(tmp_path, config, overrides, message):
    """A config file that does not exist (ml_collections defers that error until the config is first read; with
    overrides it comes at once) or whose code fails: one line naming the path, before JAX or TensorFlow load (they
    are blocked here: importing either would fail loudly)."""
    blocked = tmp_path / "blocked"
    for module in ("tensorflow", "jax"):
        (blocked / module).mkdir(parents=True)
        (blocked / module / "__init__.py").write_text(f"raise ImportError('{module} imported')\n")
    (tmp_path / "broken.py").write_text("def get_config():\n    return nonsense\n")
    (tmp_path / "typo.py").write_text("def get_config():\n    steps = '10'\n    return steps + 1\n")
    (tmp_path / "value.py").write_text("def get_config():\n    return int('ten')\n")
    chained = "def get_config():\n    try:\n        return {}['b']\n    except KeyError as e:\n"
    (tmp_path / "chained.py").write_text(chained + "        raise ValueError('say which key') from e\n")
    config, message = config.format(tmp=tmp_path), message.format(tmp=tmp_path)
    out = run_main(f"--config={config}", f"--workdir={tmp_path / 'run'}", *overrides, env={"PYTHONPATH": str(blocked)})
    assert out.returncode != 0
    assert message in out.stderr, out.stderr[-3000:]
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr[-3000:]
    if "nope" in config:
        assert "configs/{bair.py,default.py," in out.stderr  # the config files there are
    assert not (tmp_path / "run").exists()


def test_wrong_type_override_is_rejected(tmp_path):
    out = run_main("--config=configs/default.py", f"--workdir={tmp_path}", "--config.train.num_steps=many")
    assert out.returncode != 0
    assert "num_steps" in out.stderr


load_config_file = configuration.load_config_file


def test_default_config_loads_and_overrides_apply():
    config = load_config_file(str(ROOT / "configs/default.py"), ["train.num_steps=7", "seed=3"])
    cfg = configuration.from_config_dict(config)
    assert cfg.train.num_steps == 7 and cfg.seed == 3
    assert cfg.data.name == "moving_shapes"
    assert cfg.train.batch_size == config.train.batch_size


def test_library_defaults_are_the_default_config():
    """A library caller's `ModelConfig()` is the model `configs/default.py` trains: every dataclass default equals the
    default config's value for that key (the config file is where defaults are written and explained)."""
    cfg = configuration.from_config_dict(load_config_file(str(ROOT / "configs/default.py"), []))
    differ = []
    for group, cls in configuration._GROUPS.items():
        fields = dataclasses.fields(cls)
        required = {f.name: getattr(getattr(cfg, group), f.name) for f in fields if f.default is dataclasses.MISSING}
        built = cls(**required)
        differ += [
            f"{group}.{f.name}: {getattr(built, f.name)!r} != {getattr(getattr(cfg, group), f.name)!r}"
            for f in fields
            if getattr(built, f.name) != getattr(getattr(cfg, group), f.name)
        ]
    assert not differ, differ


def test_string_keys_take_text_that_reads_as_a_number():
    """`--config.data.video_dir=2024` names a folder in main.py; load_config_file must read it the same way."""
    config = load_config_file(
        str(ROOT / "configs/default.py"), ["data.video_dir=2024", "train.init_from=1e3", "model.dtype='bfloat16'"]
    )
    assert (config.data.video_dir, config.train.init_from, config.model.dtype) == ("2024", "1e3", "bfloat16")
    with pytest.raises(configuration.ConfigError, match="expected a int"):
        load_config_file(str(ROOT / "configs/default.py"), ["train.num_steps=abc"])


def test_typed_boundary_names_the_bad_key():
    config = load_config_file(str(ROOT / "configs/default.py"), [])
    with config.unlocked():
        config.model.not_a_model_key = 1
    with pytest.raises(configuration.ConfigError, match="not_a_model_key"):
        configuration.from_config_dict(config)
    config = load_config_file(str(ROOT / "configs/default.py"), ["train.lr_schedule=triangle"])
    with pytest.raises(configuration.ConfigError, match="lr_schedule"):
        configuration.from_config_dict(config)
    with pytest.raises(configuration.ConfigError, match="config.train.nope"):
        load_config_file(str(ROOT / "configs/default.py"), ["train.nope=1"])
    with pytest.raises(configuration.ConfigError, match="expected a int"):
        load_config_file(str(ROOT / "configs/default.py"), ["train.num_steps=many"])
    config = load_config_file(str(ROOT / "configs/default.py"), ["sampler.frame_guidance_weight=1.0"])
    with pytest.raises(configuration.ConfigError, match="frame_guidance_weight > 0 .* needs .*frame_conditioning=True"):
        configuration.from_config_dict(config)
    config = load_config_file(str(ROOT / "configs/default.py"), ["parallel.mesh_shape=(1,1,4)"])
    with pytest.raises(configuration.ConfigError, match="the tensor axis"):
        configuration.from_config_dict(config)


def test_discrete_time_training_needs_a_sampler_on_its_grid():
    """timesteps = N trains at t in {1/N, ..., 1}; the sampler's uniform grid of K steps lands on it iff K divides N."""
    base = ["diffusion.timesteps=1000"]
    for steps in (1000, 250, 8):
        configuration.from_config_dict(
            load_config_file(str(ROOT / "configs/default.py"), [*base, f"sampler.num_steps={steps}"])
        )
    config = load_config_file(str(ROOT / "configs/default.py"), [*base, "sampler.num_steps=64"])
    with pytest.raises(configuration.ConfigError, match=r"timesteps=1000 .* num_steps that divides 1000 \(e.g. 50\)"):
        configuration.from_config_dict(config)


def test_guidance_needs_a_trained_null_conditioning():
    """Classifier-free guidance mixes in the model told the null class / empty caption; with cond_drop_prob = 0
    training never shows it that, so the combination is refused (with dropout it is accepted)."""
    base = ["model.num_classes=3", "sampler.guidance_weight=2.0"]
    configuration.from_config_dict(
        load_config_file(str(ROOT / "configs/default.py"), [*base, "model.cond_drop_prob=0.1"])
    )
    config = load_config_file(str(ROOT / "configs/default.py"), [*base, "model.cond_drop_prob=0.0"])
    with pytest.raises(configuration.ConfigError, match="guidance_weight > 0 .*cond_drop_prob=0 never trains"):
        configuration.from_config_dict(config)


def test_prediction_evaluation_must_leave_frames_to_predict():
    ok = load_config_file(str(ROOT / "configs/default.py"), ["eval.num_cond_frames=7"])
    assert configuration.from_config_dict(ok).eval.num_cond_frames == 7
    config = load_config_file(str(ROOT / "configs/default.py"), ["eval.num_cond_frames=8"])
    with pytest.raises(configuration.ConfigError, match="num_cond_frames=8: prediction must leave frames"):
        configuration.from_config_dict(config)


def test_run_config_round_trips_and_takes_overrides(tmp_path):
    """A run's saved config.json (tuples stored as JSON lists) comes back as the same ExperimentConfig, and typed
    overrides of tuple and scalar keys apply to it as they do to a config file."""
    cfg = configuration.from_config_dict(
        load_config_file(
            str(ROOT / "configs/default.py"), ["model.frame_conditioning=True", "model.attn_resolutions=(16, 8)"]
        )
    )
    (tmp_path / "config.json").write_text(cfg.to_json())
    assert configuration.from_config_dict(configuration.load_run_config(str(tmp_path))) == cfg
    changed = configuration.from_config_dict(
        configuration.load_run_config(str(tmp_path), ["sampler.num_steps=25", "model.temporal_attn_resolutions=(16,)"])
    )
    assert changed == dataclasses.replace(
        cfg,
        sampler=dataclasses.replace(cfg.sampler, num_steps=25),
        model=dataclasses.replace(cfg.model, temporal_attn_resolutions=(16,)),
    )
    with pytest.raises(configuration.ConfigError, match="expected a int"):
        configuration.load_run_config(str(tmp_path), ["sampler.num_steps=many"])
    with pytest.raises(configuration.ConfigError, match="not the workdir of a training run"):
        configuration.load_run_config(str(tmp_path / "elsewhere"))


def test_every_config_file_loads():
    for path in sorted(p for p in (ROOT / "configs").glob("*.py") if not p.name.startswith("_")):
        configuration.from_config_dict(load_config_file(str(path), []))


_CHECK_WITHOUT_TF = """
import sys
from vdm_jax import configuration
for path in sys.argv[1:]:
    configuration.from_config_dict(configuration.load_config_file(path, []))
bad = configuration.load_config_file("configs/moving_mnist.py", ["model.channels=3"])
try:
    configuration.from_config_dict(bad)
except configuration.ConfigError as e:
    print("rejected:", e)
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_datasets")))
"""


def test_configs_are_checked_without_importing_tensorflow():
    """Every config file is checked (the channel count of its dataset included) without TensorFlow, so a bad config
    fails in a second and machines without TensorFlow (an inference or GPU box) can check configs."""
    paths = sorted(str(p) for p in (ROOT / "configs").glob("*.py") if not p.name.startswith("_"))
    out = subprocess.run(
        [sys.executable, "-c", _CHECK_WITHOUT_TF, *paths], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rejected:" in out.stdout and "--config.model.channels=1" in out.stdout
    assert "loaded: []" in out.stdout


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    commands = re.findall(r"^(python3 -m venv .*pytest.*)$", readme, flags=re.M)
    assert len(commands) == 1, "the README must show exactly one test command"
    assert commands[0] in ci, "the README's test command and .ci/run have drifted apart"


def test_library_info_chatter_is_filtered_and_warnings_pass():
    """Records carry the standard library's levels (absl's logging.WARNING is -1: compared with it, every INFO line
    of Orbax and TFDS passed the filter)."""
    import logging

    import main

    quiet = main._QuietLibraries()

    def record(level, path):
        return logging.LogRecord("absl", level, path, 1, "a message", None, None)

    assert not quiet.filter(record(logging.INFO, "/site-packages/orbax/checkpoint/checkpoint_manager.py"))
    assert quiet.filter(record(logging.WARNING, "/site-packages/orbax/checkpoint/checkpoint_manager.py"))
    assert quiet.filter(record(logging.INFO, "/repo/vdm_jax/train/loop.py"))
