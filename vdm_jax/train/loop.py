"""The training loop: `train_and_evaluate(cfg, workdir)`.

Reads top to bottom: mesh, dataset (the labels and captions the model reads), workdir, input, model and state
shardings, checkpoint (resume / init_from), the compiled step, then the loop with metrics, checkpoints, samples and
evaluations. A killed run resumes from its last checkpoint and sees exactly the batches an uninterrupted run would;
SIGTERM saves the current step and exits cleanly, between two sample batches if it comes while sampling. A step's
samples and evaluation end with a marker (`<workdir>/outputs_done/`): a step checkpointed without it has them written
first by the next start. Cheap checks of a resumed run (its defining settings, `num_steps`, a changed learning-rate
schedule) come before the dataset is prepared; a complete run, rerun, trains and writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

import jax
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from jax.sharding import NamedSharding, PartitionSpec

from vdm_jax import configuration
from vdm_jax import data as vdm_data
from vdm_jax.evaluation.entry import check_eval_setup, evaluate_videos, sample_for_eval
from vdm_jax.models import INPUT_KERNEL, load_matching_params
from vdm_jax.parallel import make_mesh, use_mesh
from vdm_jax.train import media
from vdm_jax.train.checkpoint import Checkpointer, CheckpointUnreadableError, CheckpointWriteError
from vdm_jax.train.compile import abstract_batch, build_abstract, compile_train_step, new_model
from vdm_jax.train.context_pool import ContextPool
from vdm_jax.train.resume import (  # noqa: F401  (TrainingError: raised here too, and imported from here)
    TrainingError,
    check_resume,
    check_workdir,
    done_marker,
    outputs_due,
    outputs_pending,
)
from vdm_jax.train.sampling import make_sample_fn
from vdm_jax.train.sharding import to_global, train_state_shardings, with_shardings
from vdm_jax.train.state import TrainState, init_state, make_optimizer
from vdm_jax.train.step import metrics_to_host


class _Interrupted(Exception):
    """SIGTERM arrived between two sample batches."""


def conditioning_batch(cfg, num: int, *, labels=None, captions=None):
    """Conditioning for `num` samples of a class- or caption-conditioned model (None for a model with neither).

    labels: int [num] (e.g. the labels of the clips being continued), default the classes in turn; captions: `num`
    strings, default the captions of the first `num` test examples (cycling through the split when it holds fewer).
    A model of precomputed text embeddings is refused (ConfigError): no dataset supplies them.
    """
    configuration.check_runnable_from_main(cfg)
    cond = {}
    if cfg.model.num_classes > 0:
        default = np.arange(num) % cfg.model.num_classes
        cond["label"] = np.asarray(default if labels is None else labels, np.int32).reshape(num)
    if cfg.model.text_conditioning == "builtin":
        from vdm_jax.models.text import tokenize

        if captions is None:
            available = vdm_data.load_examples(cfg.data, split="test", num=num)["caption"]
            captions = available[np.arange(num) % len(available)]
        if len(captions) != num:
            raise ValueError(f"{len(captions)} captions for {num} samples")
        cond["text_tokens"] = np.asarray(tokenize(list(captions), cfg.data.text_max_length))
    return cond or None


def restore_for_inference(cfg, workdir: str, step: int | None):
    """(graphdef, EMA params, rest, step) of a run's latest (or given) checkpoint, for sampling and evaluation."""
    tx = make_optimizer(cfg.train)
    graphdef, abstract = build_abstract(cfg, tx)
    with contextlib.closing(Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)) as ckpt:
        steps = ckpt.all_steps()
        if not steps:
            raise TrainingError(f"no checkpoint in {workdir}/checkpoints; train first (--mode=train)")
        step = max(steps) if step is None else step
        if step not in steps:
            raise TrainingError(f"no checkpoint of step {step} in {workdir}/checkpoints; available: {steps}")
        mesh = make_mesh(cfg.parallel.mesh_shape)
        shardings = train_state_shardings(abstract, mesh, cfg.parallel.rule_list)
        state, _, _ = ckpt.restore(step, with_shardings(abstract, shardings), cfg)
    return graphdef, state.ema_params, state.rest, step


def _load_init_from(state: TrainState, path: str, *, temporal_identity_init: bool = False) -> TrainState:
    """Starts from another run's weights: copies every parameter whose path and shape match, reports the rest. A
    frame-conditioned model started from an unconditional one gets its input kernel with the new (known-frame and
    mask) input channels at zero, so it starts as the unconditional model. With `temporal_identity_init`, temporal
    layers the source has too replace the identity initialisation: a warning says so (the video model then does not
    start as the image model frame by frame; train the image model with temporal_attention=False). Without it, a
    source lacking every temporal layer (an image model) gets a warning that they start random, not as the identity."""
    ckpt = Checkpointer(path, read_only=True)
    step = ckpt.latest_step()
    if step is None:
        raise TrainingError(f"--config.train.init_from={path}: no checkpoint there (expected a run's checkpoints dir)")
    source = ckpt.restore_raw(step)
    ckpt.close()
    params, report = load_matching_params(state.params, source["params"], zero_extend=(INPUT_KERNEL,))
    ema, _ = load_matching_params(state.ema_params, source["ema_params"], zero_extend=(INPUT_KERNEL,))
    logging.info("init_from %s (step %d): %s", path, step, report)
    print(f"init_from {path} step {step}: {report}")
    temporal = [p for p in report.loaded if "/temporal/" in f"/{p}/"]
    if temporal_identity_init and temporal:
        logging.warning(
            "config.model.temporal_identity_init: %d temporal arrays of %s (e.g. %s) were loaded over the identity "
            "initialisation, so the model does not start as the image model applied frame by frame; start from an "
            "image model trained with config.model.temporal_attention=False for that",
            len(temporal),
            path,
            temporal[0],
        )
    missing_temporal = [p for p in report.missing if "/temporal/" in f"/{p}/"]
    if not temporal_identity_init and missing_temporal and len(missing_temporal) == len(report.missing):
        logging.warning(
            "init_from %s: the source lacks every temporal layer (%d arrays, e.g. %s), as an image model does, and "
            "config.model.temporal_identity_init is False, so the temporal layers start random, not as the "
            "identity: the video model does not start as the image model frame by frame. Pass "
            "--config.model.temporal_identity_init=True for that",
            path,
            len(missing_temporal),
            missing_temporal[0],
        )
    return state.replace(params=params, ema_params=ema)


class _Preemption:
    """When to save and stop after SIGTERM (a preemption notice): `stop(step)` is checked after each step.

    One process: a SIGTERM handler sets a flag, and the run saves the step it has just finished. Several processes
    (`jax.distributed`): each notices the signal at its own step, and one that saved while another went on into the
    next step's collectives would hang both. There the distributed runtime's preemption sync (which catches SIGTERM
    itself, so no Python handler is installed) tells every process the same step to stop at, the first that all
    can still reach (`multihost_utils.reached_preemption_sync_point`).
    """

    def __init__(self):
        self.requested = False
        self._previous = None
        self._synced = jax.process_count() > 1

    def __enter__(self):
        if hasattr(signal, "SIGTERM") and not self._synced:
            try:
                self._previous = signal.signal(signal.SIGTERM, self._handle)
            except ValueError:  # Not the main thread (e.g. inside a notebook worker): no handler.
                self._previous = None
        return self

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and stopping.")
        self.requested = True

    def stop(self, step: int) -> bool:
        if self._synced:
            from jax.experimental import multihost_utils

            self.requested = self.requested or multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train_and_evaluate(cfg, workdir: str) -> TrainState:
    """Trains (or resumes training) the configured model in `workdir`; returns the final state."""
    configuration.check_runnable_from_main(cfg)
    # ---------------------------------------------------------------- mesh (a shape that cannot work writes nothing)
    mesh = make_mesh(cfg.parallel.mesh_shape)
    rules = cfg.parallel.rule_list
    _check_batch_fits_mesh(cfg, mesh)
    logging.info("Mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size, jax.process_count())
    replicated = NamedSharding(mesh, PartitionSpec())

    # ---------------------------------------------------------------- workdir and its run (cheap: before the data)
    check_workdir(workdir, create=False)
    latest = check_resume(cfg, workdir)  # Stored config only: no arrays read yet.
    complete = latest == cfg.train.num_steps

    # ---------------------------------------------------------------- dataset (labels, captions the model reads)
    vdm_data.prepare(cfg.data)
    configuration.check_dataset_conditioning(cfg, vdm_data.dataset_spec(cfg.data))
    check_eval_setup(cfg)  # an evaluation that cannot run fails now, not at its first step

    # ---------------------------------------------------------------- workdir, logs
    check_workdir(workdir)
    is_chief = jax.process_index() == 0
    pending = latest is not None and outputs_pending(cfg, workdir, latest)
    if complete and not pending:
        logging.info(
            "The run in %s is complete (step %d of --config.train.num_steps=%d, with its final samples and "
            "evaluation): nothing to do. Raise num_steps to train on.",
            workdir,
            latest,
            cfg.train.num_steps,
        )
    config_json = cfg.to_json()

    # ---------------------------------------------------------------- input
    train_iter = pool = None
    if not complete:
        train_iter = vdm_data.make_iterator(
            cfg.data,
            split="train",
            global_batch_size=cfg.train.batch_size,
            mesh=mesh,
            seed=cfg.seed,
            text_max_length=None if cfg.model.text_conditioning == "builtin" else 0,  # 0: no tokenizing
            conditioned=cfg.model.label_or_text,  # image frames from the row's own video: its label / caption hold
        )
        if cfg.train.context_pool:  # Part of each batch: clips whose known frames the model generated itself.
            pool = ContextPool(cfg.train.context_pool, cfg, fraction=cfg.train.context_pool_fraction, seed=cfg.seed)
            logging.info(
                "Context pool %s: %d examples, %d rows of each local batch",
                cfg.train.context_pool,
                len(pool),
                pool.rows,
            )
    batch_keys = set(abstract_batch(cfg, cfg.train.batch_size, mesh))  # What the step takes from a batch.

    # ---------------------------------------------------------------- model, optimizer, shardings
    tx = make_optimizer(cfg.train)
    graphdef, abstract = build_abstract(cfg, tx)
    shardings = train_state_shardings(abstract, mesh, rules)
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))

    # ---------------------------------------------------------------- checkpoint: resume, or init (+ init_from)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=cfg.train.keep_checkpoints)
    if latest is not None:
        try:
            # No cfg: `check_resume` above checked the defining settings against this checkpoint's config.
            state, data_state, _ = ckpt.restore(latest, with_shardings(abstract, shardings))
        except CheckpointUnreadableError as e:
            ckpt.close()
            raise TrainingError(str(e)) from e
        if train_iter is not None:
            train_iter.set_state(data_state)
        logging.info("Resuming from step %d", latest)
    else:
        create = lambda: init_state(new_model(cfg), tx)[1]
        state = jax.jit(create, out_shardings=shardings)()
        if cfg.train.init_from:
            state = to_global(
                _load_init_from(state, cfg.train.init_from, temporal_identity_init=cfg.model.temporal_identity_init),
                shardings,
            )
    start = int(state.step)
    if complete and not pending:
        ckpt.close()
        return state
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
    # Only now: a run refused above (e.g. another model's checkpoint) overwrites nothing; a complete run keeps the
    # config it was trained with.
    if is_chief and not complete:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config_json)

    # ---------------------------------------------------------------- the compiled step (none for a complete run)
    compiled = None
    if not complete:
        rng = jax.jit(lambda: jax.random.key(cfg.seed), out_shardings=replicated)()
        step_fn = compile_train_step(cfg, mesh, tx=tx, built=(graphdef, abstract))
        compiled = step_fn.compiled
        logging.info("Parameters: %d; FLOPs per train step (XLA): %.3g", num_params, step_fn.flops)
        if is_chief:
            writer.write_hparams({"num_params": num_params, "flops_per_step": step_fn.flops})

    # ---------------------------------------------------------------- samples and evaluation
    sample_fn = make_sample_fn(graphdef, cfg, num_frames=cfg.data.num_frames)

    def samples_and_eval(step: int, *, final: bool) -> bool:
        """Writes step `step`'s samples and evaluation (where due), then its done marker; False if a SIGTERM cut
        them short (checked before sampling, between sample batches and before evaluating: the step's checkpoint
        is saved, and the next start writes them)."""
        do_sample, do_eval = outputs_due(cfg, step, final=final)
        if not (do_sample or do_eval):
            return True
        if metrics is not None:  # Outputs labelled `step` need every step up to it good: a failed one stops here.
            write_metrics(step)
        what = " and ".join(w for w, due in (("samples", do_sample), ("evaluation", do_eval)) if due)

        def skipped(part: str) -> bool:
            logging.warning(
                "SIGTERM: skipped the %s of step %d; the next start resumes from step %d and writes them first.",
                part,
                step,
                step,
            )
            return False

        def sample_batch(*args, **kwargs):  # `sample_for_eval` calls it once per batch.
            if preemption.requested:  # Multi-host: set only at a synced step, so every process agrees.
                raise _Interrupted
            return sample_fn(*args, **kwargs)

        if preemption.requested:
            return skipped(what)
        num = max(cfg.eval.num_samples if do_eval else 0, cfg.train.num_samples if do_sample else 0)
        try:
            with use_mesh(mesh, rules):  # The same key every time: samples are comparable across steps.
                videos = sample_for_eval(cfg, sample_batch, state.ema_params, state.rest, num=num, seed=cfg.seed + 1)
        except _Interrupted:
            return skipped(what)
        if is_chief and do_sample:
            grid = videos[: cfg.train.num_samples]
            paths = media.save_sample_grid(os.path.join(workdir, "samples"), f"step_{step:07d}", grid)
            writer.write_images(step, {"samples": media.filmstrip(grid)[None]})
            logging.info("Samples of step %d: %s", step, paths["gif"])
        if do_eval:
            if preemption.requested:
                return skipped("evaluation")
            results = evaluate_videos(cfg, videos[: cfg.eval.num_samples], mesh=mesh)
            if is_chief:
                writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
                logging.info("Eval at step %d: %s", step, results)
        if is_chief:
            writer.flush()
            marker = done_marker(workdir, step)
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            with open(marker + ".tmp", "w") as f:
                json.dump({"samples": do_sample, "evaluation": do_eval}, f)
            os.replace(marker + ".tmp", marker)
        return True

    # ---------------------------------------------------------------- the loop
    report = periodic_actions.ReportProgress(num_train_steps=cfg.train.num_steps, writer=writer)
    progress = None
    if is_chief and sys.stderr.isatty() and not complete:
        from tqdm import tqdm

        progress = tqdm(total=cfg.train.num_steps, initial=start, desc="train", dynamic_ncols=True)
    metrics = None

    def write_metrics(step: int) -> None:
        """Writes the mean metrics of the steps since the last write, and stops the run if one of them failed.
        Every checkpoint, sample grid and evaluation is also a write: a failed step never reaches one of them, and
        a run resumed from a checkpoint logs the means of the same steps as a run never interrupted."""
        nonlocal metrics
        values = metrics_to_host(metrics)
        metrics = None
        _stop_if_nonfinite(values, step, ckpt)
        if cfg.data.num_image_frames == 0:
            values.pop("image_loss")
        if is_chief:
            writer.write_scalars(step, values)

    batch = None
    try:
        # closing: however the loop ends (an exception from an evaluation, Ctrl-C, a data error), a save in flight
        # finishes.
        with _Preemption() as preemption, contextlib.closing(ckpt):
            if pending:  # Killed or preempted after this step's checkpoint, before its samples / evaluation ended.
                logging.warning(
                    "Step %d's samples / evaluation were not completed before the run stopped: writing them first.",
                    latest,
                )
                if not samples_and_eval(latest, final=complete):
                    logging.warning("Stopped at step %d after SIGTERM; the next start resumes from it.", latest)
                    start = cfg.train.num_steps  # No training.
            for step in range(start + 1, cfg.train.num_steps + 1):
                if batch is None:
                    if pool is None:
                        batch = next(train_iter)
                    else:
                        batch = train_iter.globalize(pool.mix(train_iter.next_local(), step))
                    batch = {k: v for k, v in batch.items() if k in batch_keys}
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    state, step_metrics = compiled(state, batch, rng)
                batch = None
                ckpt.raise_if_save_failed()  # A failed background save, now (not at the next save).
                metrics = step_metrics if metrics is None else metrics.merge(step_metrics)
                report(step, time.time())
                if progress is not None:
                    progress.update(1)
                last = step == cfg.train.num_steps
                stop = preemption.stop(step)
                save = step % cfg.train.checkpoint_every == 0 or last or stop
                if step % cfg.train.log_every == 0 or save:
                    write_metrics(step)
                if save:
                    ckpt.save(step, state, config_json=config_json, data_state=train_iter.get_state(), force=True)
                if stop:
                    ckpt.wait()
                    if not last:
                        logging.warning("Stopped at step %d after SIGTERM; the next start resumes from it.", step)
                        break
                    logging.warning("SIGTERM at the last step %d: saved.", step)
                if not samples_and_eval(step, final=last):  # SIGTERM during them: save this step (if not yet), stop.
                    if not save:
                        if metrics is not None:
                            write_metrics(step)
                        ckpt.save(step, state, config_json=config_json, data_state=train_iter.get_state(), force=True)
                    ckpt.wait()
                    logging.warning("Stopped at step %d after SIGTERM; the next start resumes from it.", step)
                    break
    except CheckpointWriteError as e:
        raise TrainingError(str(e)) from e
    if progress is not None:
        progress.close()
    writer.flush()
    return state


def _check_batch_fits_mesh(cfg, mesh) -> None:
    """Each micro-batch is split over the data and fsdp axes: it must divide evenly (no device idles or repeats)."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    micro = cfg.train.batch_size // cfg.train.grad_accum_steps
    if micro % shards:
        raise TrainingError(
            f"config.train.batch_size={cfg.train.batch_size} over grad_accum_steps={cfg.train.grad_accum_steps} "
            f"gives micro-batches of {micro}, which the mesh's data x fsdp = {shards} devices cannot split evenly; "
            f"use a multiple of {shards} per micro-batch"
        )


def _stop_if_nonfinite(values: dict[str, float], step: int, ckpt: Checkpointer) -> None:
    """Stops the run if a step since the last check had a non-finite loss or gradients (the step kept the state
    before it, so the state is good but the step count is not the loop's)."""
    if values["nonfinite_steps"] > 0:
        ckpt.wait()
        latest = ckpt.latest_step()
        kept = (
            f"the last good checkpoint (step {latest}) is intact"
            if latest is not None
            else "no checkpoint was written before it, so a rerun starts from step 0"
        )
        raise TrainingError(
            f"non-finite loss or gradients before step {step}; {kept}. Lower config.train.learning_rate or enable "
            "config.train.grad_clip, then rerun to resume."
        )
