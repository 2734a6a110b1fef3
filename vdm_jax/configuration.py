"""The typed boundary: an `ml_collections.ConfigDict` becomes frozen dataclasses, once, at start-up.

Each group of `configs/default.py` has the dataclass of the subpackage that uses it; an unknown group or key, a wrong
type or an impossible combination fails here with one message naming the key, before any data or model is built.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from vdm_jax.data import DataConfig
from vdm_jax.diffusion import DiffusionConfig, SamplerConfig
from vdm_jax.errors import UserError
from vdm_jax.evaluation import EvalConfig
from vdm_jax.models import ModelConfig
from vdm_jax.train.config import ParallelConfig, TrainConfig


class ConfigError(UserError, ValueError):
    """A config that cannot run; the message names the key and the fix."""


_GROUPS = {
    "data": DataConfig,
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "sampler": SamplerConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "parallel": ParallelConfig,
}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    seed: int
    data: DataConfig
    model: ModelConfig
    diffusion: DiffusionConfig
    sampler: SamplerConfig
    train: TrainConfig
    eval: EvalConfig
    parallel: ParallelConfig

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def _plain(value: Any) -> Any:
    """ConfigDict values -> plain Python (lists become tuples so the dataclasses stay hashable)."""
    if isinstance(value, ml_collections.ConfigDict | dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def from_config_dict(config: ml_collections.ConfigDict | dict) -> ExperimentConfig:
    """Validates and converts a whole experiment config."""
    raw = _plain(config)
    expected = set(_GROUPS) | {"seed"}
    unknown, missing = set(raw) - expected, expected - set(raw)
    if unknown or missing:
        raise ConfigError(
            f"config groups: unknown {sorted(unknown)}, missing {sorted(missing)}; "
            "start from configs/default.py and override only what differs"
        )
    groups = {}
    for name, cls in _GROUPS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(raw[name]) - fields)
        if bad:
            raise ConfigError(f"config.{name}: unknown key(s) {bad}; valid keys are {sorted(fields)}")
        try:
            groups[name] = cls(**raw[name])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config.{name}: {e}") from e
    if not isinstance(raw["seed"], int):
        raise ConfigError(f"config.seed must be an int, got {raw['seed']!r}")
    exp = ExperimentConfig(seed=raw["seed"], **groups)
    _check_across_groups(exp)
    return exp


def _check_across_groups(cfg: ExperimentConfig) -> None:
    """Settings that are only wrong in combination."""
    from vdm_jax.data import check_channels

    try:
        check_channels(cfg.data, cfg.model.channels)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    try:
        cfg.model.validate_input(num_frames=cfg.data.num_frames, resolution=cfg.data.resolution)
    except ValueError as e:
        raise ConfigError(
            f"config.model does not fit the data ({cfg.data.num_frames} frames of "
            f"{cfg.data.resolution}x{cfg.data.resolution}): {e}"
        ) from e
    if cfg.train.batch_size % cfg.train.grad_accum_steps:
        raise ConfigError(
            f"config.train.batch_size={cfg.train.batch_size} is not divisible by "
            f"config.train.grad_accum_steps={cfg.train.grad_accum_steps}"
        )
    steps, grid = cfg.sampler.num_steps, cfg.diffusion.timesteps
    if grid and grid % steps:
        raise ConfigError(
            f"config.diffusion.timesteps={grid} trains at t in {{1/{grid}, ..., 1}} only, and the sampler's "
            f"{steps} steps (config.sampler.num_steps) would ask the model at times between them; use a "
            f"num_steps that divides {grid} (e.g. {max(d for d in range(1, min(steps, grid) + 1) if grid % d == 0)}), "
            "or timesteps=0 (continuous time)"
        )
    if cfg.data.long_range_prob > 0 and not cfg.model.frame_conditioning:
        raise ConfigError(
            "config.data.long_range_prob > 0 trains on far-back known frames: it needs a frame-conditioned model "
            "(config.model.frame_conditioning=True)"
        )
    if cfg.data.long_range_prob > 0 and cfg.train.context_pool:
        raise ConfigError(
            "config.data.long_range_prob > 0 and config.train.context_pool both choose known frames per clip; use one"
        )
    if cfg.eval.num_cond_frames >= cfg.data.num_frames:
        raise ConfigError(
            f"config.eval.num_cond_frames={cfg.eval.num_cond_frames}: prediction must leave frames to predict of the "
            f"{cfg.data.num_frames}-frame clips (config.data.num_frames); use 1 .. {cfg.data.num_frames - 1}, or 0"
        )
    if cfg.sampler.guidance_weight and not cfg.model.label_or_text:
        raise ConfigError(
            "config.sampler.guidance_weight > 0 needs a conditional model "
            "(config.model.num_classes > 0 or config.model.text_conditioning != 'none')"
        )
    if cfg.sampler.guidance_weight and cfg.model.cond_drop_prob == 0:
        raise ConfigError(
            "config.sampler.guidance_weight > 0 mixes in the model told the null class / empty caption, which "
            "config.model.cond_drop_prob=0 never trains; train with cond_drop_prob > 0 (e.g. 0.1) or set "
            "guidance_weight=0"
        )
    if cfg.sampler.frame_guidance_weight and not cfg.model.frame_conditioning:
        raise ConfigError(
            "config.sampler.frame_guidance_weight > 0 guides a model that reads known frames: it needs "
            "config.model.frame_conditioning=True (or set it to 0)"
        )


def check_dataset_conditioning(cfg: ExperimentConfig, spec) -> None:
    """Raises ConfigError unless the dataset (`vdm_jax.data.dataset_spec(cfg.data)`) gives the class labels and
    captions the model is conditioned on: labels 0 .. num_classes - 1 exactly (a label >= num_classes would be the
    null class or out of the embedding's range), and captions for the built-in text encoder."""
    name, classes = cfg.data.name, cfg.model.num_classes
    if classes > 0 and spec.label_key is None:
        raise ConfigError(
            f"config.model.num_classes={classes} but data.name={name!r} has no class labels; "
            "set config.model.num_classes=0 (or use a labelled dataset)"
        )
    if classes > 0 and classes != spec.num_classes:
        raise ConfigError(
            f"config.model.num_classes={classes} but data.name={name!r} has {spec.num_classes} classes (labels 0 .. "
            f"{spec.num_classes - 1}); set config.model.num_classes={spec.num_classes}"
        )
    if cfg.model.text_conditioning == "builtin" and spec.caption_key is None:
        raise ConfigError(
            f"config.model.text_conditioning='builtin' but data.name={name!r} has no captions "
            "(video_folder: set config.data.captions_file); set config.model.text_conditioning='none'"
        )


def check_runnable_from_main(cfg: ExperimentConfig) -> None:
    """Raises ConfigError for a model that training, sampling and evaluation here cannot feed: precomputed text
    embeddings come from no dataset, so `text_conditioning='precomputed'` is for library use only."""
    if cfg.model.text_conditioning == "precomputed":
        raise ConfigError(
            "config.model.text_conditioning='precomputed' takes text embeddings that no dataset here supplies: it is "
            "for library use (vdm_jax.train.conditional.sample_with_known(..., cond={'text_embeddings': ...})), not "
            "for training, sampling or evaluation runs; use 'builtin' (captions) or 'none'"
        )


def from_json(text: str) -> ExperimentConfig:
    """The config a run saved (`<workdir>/config.json`), validated again."""
    return from_config_dict(json.loads(text))


def load_config_file(path: str, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """A config file's `get_config()` with `key.sub=value` overrides, as `--config.key.sub=value` works in main.py.

    Values are parsed as Python literals (falling back to strings) and must keep the key's type; unknown keys fail.
    For notebooks, benchmarks and tests that need a config without a command line.
    """
    import importlib.util
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)  # So that configs/*.py can import `configs.default`.
    spec = importlib.util.spec_from_file_location(f"_vdm_config_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load config file {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return apply_overrides(module.get_config(), overrides)


def load_run_config(workdir: str, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """The config a training run saved (`<workdir>/config.json`) with `key.sub=value` overrides (e.g. sampler
    settings): the model, data and diffusion of that run, whatever config file started it."""
    import os

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(
            f"{path} does not exist: {workdir!r} is not the workdir of a training run (main.py writes it)"
        )
    with open(path, encoding="utf-8") as f:
        return apply_overrides(ml_collections.ConfigDict(_plain(json.load(f))), overrides)


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: list[str] | tuple[str, ...]
) -> ml_collections.ConfigDict:
    """`config` with each `key.sub=value` (or `--config.key.sub=value`) override applied, then locked."""
    import ast

    for item in overrides:
        key, sep, text = item.removeprefix("--config.").partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            if p not in node:
                raise ConfigError(f"unknown config key config.{key}")
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"unknown config key config.{key}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        old = node[leaf]
        if isinstance(old, str) and not isinstance(value, str):
            value = text  # A string key takes the text as given (a folder named 2024), as main.py's flags do.
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        if type(old) is not type(value):
            raise ConfigError(f"config.{key}={text!r}: expected a {type(old).__name__}, got {type(value).__name__}")
        node[leaf] = value
    config.lock()
    return config
