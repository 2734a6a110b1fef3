"""Launching main.py the way a user does, with a tiny model, for the training tests."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from tests.conftest import SMALL_SPLITS

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A tiny but complete model and data setting: every code path of the real run, seconds per compile.
TINY = (
    *SMALL_SPLITS,
    "--config.data.num_frames=4",
    "--config.data.resolution=16",
    "--config.model.base_channels=8",
    "--config.model.channel_mults=(1,2)",
    "--config.model.attn_resolutions=(8,)",
    "--config.model.head_dim=8",
    "--config.model.emb_dim=16",
    "--config.train.batch_size=8",
    "--config.train.learning_rate=1e-3",
    "--config.train.warmup_steps=0",
    "--config.train.lr_schedule=constant",
    "--config.train.log_every=1",
    "--config.train.num_samples=2",
    "--config.train.sample_every=0",
    "--config.train.eval_every=0",
    "--config.eval.num_samples=2",
    "--config.sampler.num_steps=2",
)


def env(devices: int = 1, data_dir: str | None = None) -> dict[str, str]:
    e = dict(os.environ)
    e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    e["PYTHONPATH"] = str(ROOT)
    e.pop("PYTEST_CURRENT_TEST", None)
    return e


def main_cmd(workdir, *overrides: str, config: str = "configs/default.py", data_dir: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "main.py"),
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        *overrides,
    ]


def run(workdir, *overrides: str, data_dir: str, devices: int = 1, timeout: float = 600, **kw):
    return subprocess.run(
        main_cmd(workdir, *overrides, data_dir=data_dir),
        cwd=ROOT,
        env=env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def start(workdir, *overrides: str, data_dir: str, devices: int = 1, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        main_cmd(workdir, *overrides, data_dir=data_dir),
        cwd=ROOT,
        env=env(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def write_checkpoint(workdir, *overrides: str, step: int = 1, seed: int = 0) -> None:
    """`<workdir>/checkpoints/<step>` as a run of main.py with these `--config.` flags writes it (the same
    Checkpointer, train state and config), with random parameters that differ from the model's initialisation, and
    EMA parameters equal to them (as at a run's start, so that a step of training leaves both where they were). For
    tests that need some run's weights, not its training: a launch costs about a minute on two busy cores, this a
    few seconds."""
    import jax
    import numpy as np

    from vdm_jax import configuration
    from vdm_jax.train.checkpoint import Checkpointer
    from vdm_jax.train.compile import new_model
    from vdm_jax.train.state import init_state, make_optimizer

    flags = [o.removeprefix("--config.") for o in overrides]
    cfg = configuration.from_config_dict(configuration.load_config_file(str(ROOT / "configs/default.py"), flags))
    tx = make_optimizer(cfg.train)
    state = jax.jit(lambda: init_state(new_model(cfg), tx)[1])()
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda p: p + rng.normal(0.0, 0.01, p.shape).astype(p.dtype), state.params)
    state = state.replace(step=np.int32(step), params=params, ema_params=params)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    ckpt.save(step, state, config_json=cfg.to_json(), data_state=None, force=True)
    ckpt.close()
