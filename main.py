"""vdm_jax command line: train, sample from, or evaluate a video diffusion model.

  python main.py --config=configs/default.py --workdir=runs/default                  # train (resumes if possible)
  python main.py --config=configs/default.py --workdir=runs/default --mode=sample    # videos from the latest checkpoint
  python main.py ... --mode=sample --cond_split=test --num_cond_frames=2 --num_frames=64   # predict / extend clips
  python main.py ... --mode=sample --num_frames=32                                  # long videos from nothing
  python main.py ... --mode=sample --caption="a red circle moving up"               # text-to-video (text models)
  python main.py ... --mode=sample --num_frames=32 --keyframe_stride=4 --keyframe_workdir=runs/key4  # keyframes first
  python main.py --config=configs/default.py --workdir=runs/default --mode=evaluate  # metrics -> <workdir>/eval/

Any config key can be overridden: --config.train.num_steps=100 --config.model.channel_mults='(1,2,4)'.
The logic lives in `vdm_jax` so that notebooks can call it; this file only parses flags.
"""

import logging as pylogging
import os
import sys
import traceback

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/<name>.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, samples and evaluations.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "sample", "evaluate"], "What to run.")
_CHECKPOINT = flags.DEFINE_integer("checkpoint_step", None, "sample/evaluate: the checkpoint step (default: latest).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 8, "sample: how many videos to write.")
_COND_VIDEO = flags.DEFINE_string("cond_video", "", "sample: continue the first frames of this video file.")
_COND_SPLIT = flags.DEFINE_string("cond_split", "", "sample: continue clips of this dataset split (e.g. test).")
_COND_INDEX = flags.DEFINE_integer("cond_index", 0, "sample: first clip of --cond_split (one clip per sample).")
_NUM_COND_FRAMES = flags.DEFINE_integer("num_cond_frames", 1, "sample: conditioning frames taken from the clip.")
_CAPTION = flags.DEFINE_string(
    "caption",
    "",
    "sample: the caption of every video, for a caption-conditioned model (default: the --cond_split clips' own, "
    "the empty caption with --cond_video, else the first test clips').",
)
_LABEL = flags.DEFINE_integer(
    "label",
    None,
    "sample: the class of every video, for a class-conditional model (default: the --cond_split clips' own, the "
    "null class with --cond_video, else the classes in turn).",
)
_NUM_FRAMES = flags.DEFINE_integer(
    "num_frames",
    0,
    "sample: total frames (0: the model's); longer videos are made chunk by chunk, from nothing or not.",
)
_CANDIDATES = flags.DEFINE_integer(
    "candidates", 1, "sample chunk by chunk: keep the likeliest of this many samples of each chunk (cost x N)."
)
_MEMORY = flags.DEFINE_integer(
    "memory",
    0,
    "sample chunk by chunk: also give each chunk after the first this many frames from far back (a model trained with "
    "data.long_range_prob > 0); each chunk then adds model frames - memory - num_cond_frames new ones.",
)
_KEYFRAME_STRIDE = flags.DEFINE_integer(
    "keyframe_stride",
    0,
    "sample: make long videos by keyframes at this frame stride, then the frames between them "
    "(0: extend autoregressively).",
)
_KEYFRAME_WORKDIR = flags.DEFINE_string(
    "keyframe_workdir",
    "",
    "sample with --keyframe_stride=s: the keyframes from this run, trained at data.frame_stride = s times this "
    "run's (default: this run's model; its keyframes move at its own speed: slow motion).",
)
_KEY_CONTEXT = flags.DEFINE_integer(
    "key_context",
    2,
    "sample with --keyframe_stride: keyframes the keyframe model is given (the model first continues the "
    "conditioning frames to that many; 0 without any: the keyframe model starts from nothing); 2 shows it the motion.",
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize(): Cloud TPU slices, SLURM and Open MPI are detected; elsewhere give "
    "--coordinator_address, --num_processes and --process_id.",
)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "distributed: host:port of process 0 (if not auto).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "distributed: number of processes (if not auto).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "distributed: this process's index (if not auto).")
flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed() -> None:
    import jax

    if _COORDINATOR.value and _COORDINATOR.value.split(":")[0] in ("127.0.0.1", "localhost"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # Several CPU processes on one machine.
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value
    )


class _QuietLibraries:
    """Keeps INFO chatter of checkpointing and dataset libraries out of the run's log (warnings still show)."""

    NOISY = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/xla_bridge", "/tensorstore/")
    # Orbax warns that a checkpoint directory opened for reading (sampling, init_from) is read only: as intended.
    EXPECTED = ("Given directory is read only", "CheckpointManagerOptions.read_only=True")

    def filter(self, record) -> bool:
        if "/orbax/" in record.pathname and any(m in record.getMessage() for m in self.EXPECTED):
            return False
        # Records carry the standard library's levels (absl's logging.WARNING is -1, its own numbering).
        return record.levelno >= pylogging.WARNING or not any(n in record.pathname for n in self.NOISY)


_SAMPLE_ONLY = (
    _NUM_SAMPLES,
    _COND_VIDEO,
    _COND_SPLIT,
    _COND_INDEX,
    _NUM_COND_FRAMES,
    _CAPTION,
    _LABEL,
    _NUM_FRAMES,
    _CANDIDATES,
    _MEMORY,
    _KEYFRAME_STRIDE,
    _KEYFRAME_WORKDIR,
    _KEY_CONTEXT,
)


def _given(*holders) -> list[str]:
    return ["--" + h.name for h in holders if flags.FLAGS[h.name].present]


def _check_flags_apply() -> None:
    """A flag the chosen mode would ignore is an error, not a silent no-op."""
    if not _DISTRIBUTED.value and (stray := _given(_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)):
        raise app.UsageError(f"{', '.join(stray)} only apply with --distributed (add it, or drop them)")
    mode = _MODE.value
    if mode != "sample" and (stray := _given(*_SAMPLE_ONLY)):
        raise app.UsageError(f"{', '.join(stray)} only apply to --mode=sample, not --mode={mode}")
    if mode == "train" and (stray := _given(_CHECKPOINT)):
        raise app.UsageError(
            f"{stray[0]} only applies to --mode=sample/evaluate; training resumes from the latest checkpoint"
        )
    if mode == "sample":
        conditioned = _COND_VIDEO.value or _COND_SPLIT.value
        if _NUM_SAMPLES.value < 1:
            raise app.UsageError(f"--num_samples={_NUM_SAMPLES.value} must be at least 1")
        if _given(_COND_INDEX) and not _COND_SPLIT.value:
            raise app.UsageError("--cond_index picks clips of --cond_split; give --cond_split too")
        if _given(_NUM_COND_FRAMES) and not conditioned:
            raise app.UsageError(
                "--num_cond_frames counts frames of --cond_video or --cond_split clips; give one of them too"
            )
        if _given(_KEY_CONTEXT) and not _KEYFRAME_STRIDE.value:
            raise app.UsageError("--key_context applies to keyframes: give --keyframe_stride too")
        longer = _NUM_FRAMES.value not in (0, _CONFIG.value.data.num_frames)
        chunked = conditioned or longer or _KEYFRAME_STRIDE.value or _KEYFRAME_WORKDIR.value or _MEMORY.value
        if _CANDIDATES.value != 1 and not chunked:
            raise app.UsageError(
                "--candidates applies to sampling chunk by chunk: with --cond_split / --cond_video, or "
                "--num_frames beyond the model's"
            )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected positional arguments: {argv[1:]}")
    _check_flags_apply()
    logging.get_absl_handler().addFilter(_QuietLibraries())
    from vdm_jax import configuration
    from vdm_jax.errors import UserError

    # The typed boundary: unknown keys and bad values fail here, before anything heavy starts.
    try:
        cfg = configuration.from_config_dict(_CONFIG.value)
    except configuration.ConfigError as e:
        sys.exit(f"Config error: {e}")
    if _DISTRIBUTED.value:
        _initialize_distributed()
    logging.info("Config:\n%s", _CONFIG.value)
    try:
        _run(cfg)
    except UserError as e:
        sys.exit(f"Error: {e}")


def _run(cfg) -> None:
    if _MODE.value == "train":
        from vdm_jax.train import loop

        loop.train_and_evaluate(cfg, _WORKDIR.value)
    elif _MODE.value == "sample":
        from vdm_jax.train import sampling

        long_video = (
            _NUM_FRAMES.value not in (0, cfg.data.num_frames)
            or _KEYFRAME_STRIDE.value
            or _KEYFRAME_WORKDIR.value
            or _MEMORY.value
        )
        common = {
            "num_samples": _NUM_SAMPLES.value,
            "step": _CHECKPOINT.value,
            "caption": _CAPTION.value,
            "label": _LABEL.value,
        }
        if _COND_VIDEO.value or _COND_SPLIT.value or long_video:  # from conditioning frames, or long from nothing
            sampling.sample_conditional_from_checkpoint(
                cfg,
                _WORKDIR.value,
                cond_video=_COND_VIDEO.value,
                cond_split=_COND_SPLIT.value,
                cond_index=_COND_INDEX.value,
                num_cond_frames=_NUM_COND_FRAMES.value,
                num_frames=_NUM_FRAMES.value,
                candidates=_CANDIDATES.value,
                memory=_MEMORY.value,
                keyframe_stride=_KEYFRAME_STRIDE.value,
                keyframe_workdir=_KEYFRAME_WORKDIR.value,
                key_context=_KEY_CONTEXT.value,
                **common,
            )
        else:
            sampling.sample_from_checkpoint(cfg, _WORKDIR.value, **common)
    else:
        from vdm_jax.evaluation import entry

        entry.evaluate_checkpoint(cfg, _WORKDIR.value, step=_CHECKPOINT.value)


def _config_path(argv: list[str]) -> str | None:
    """The --config flag's value (a file, with an optional ':argument')."""
    path = next((a.split("=", 1)[1] for a in argv[1:] if a.startswith("--config=")), None)
    if path is None and "--config" in argv[1:-1]:
        path = argv[argv.index("--config") + 1]
    return path


def _frames_in_config_file(argv: list[str], error: BaseException) -> list[traceback.FrameSummary]:
    file = os.path.abspath(str(_config_path(argv)).split(":")[0])
    return [f for f in traceback.extract_tb(error.__traceback__) if os.path.abspath(f.filename) == file]


def _raised_by_config_file(argv: list[str], error: BaseException) -> BaseException | None:
    """The exception in `error`'s chain that the config file's own code raised, if any (absl wraps a TypeError or
    ValueError from `get_config()` in a flag error, with the traceback in its message)."""
    while error is not None:
        if _frames_in_config_file(argv, error):
            return error
        error = error.__cause__ or error.__context__
    return None


def _config_file_error(argv: list[str], error: BaseException) -> str:
    """One line for a --config file that cannot be loaded: its path, the root cause, and the files there are."""
    path = _config_path(argv)
    # ml_collections re-raises the load failure when the config is first read; an error the file raised is its own.
    while error.__cause__ is not None and not _frames_in_config_file(argv, error):
        error = error.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not isinstance(error, OSError):  # the file's own code failed: say where
        where = _frames_in_config_file(argv, error)
        at = f" (line {where[-1].lineno})" if where else ""
        return f"Config error: --config={path} fails to run{at}: {type(error).__name__}: {' '.join(lines)}"
    configs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
    names = sorted(n for n in os.listdir(configs) if n.endswith(".py") and not n.startswith("_"))
    reason = lines[-1] if lines else type(error).__name__
    return (
        f"Config error: cannot load --config={path}: {reason}. Pass a config file (relative to the current "
        f"directory, {os.getcwd()}), e.g. one of configs/{{{','.join(names)}}}."
    )


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, with a config override that names no existing key, or a config file that cannot be loaded,
    reported in one line (not a traceback)."""
    try:
        rest = flags.FLAGS(argv)
    except (OSError, SyntaxError, NameError, ImportError) as e:  # the config file is unreadable or fails to run
        sys.exit(_config_file_error(argv, e))
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        raised = _raised_by_config_file(argv, e)
        if raised is not None:
            sys.exit(_config_file_error(argv, raised))
        bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        sys.exit(
            f"Flag error: {e}. Config overrides given: {bad}; every key must exist in the config file "
            "(see configs/default.py) and keep its type."
        )
    try:  # ml_collections defers an unreadable config file's error until the config is first read: read it now.
        getattr(_CONFIG.value, "lock", None)
    except OSError as e:
        sys.exit(_config_file_error(argv, e))
    return rest


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
