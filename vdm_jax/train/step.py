"""The jitted train step: `train_step(state, batch, rng) -> (state, metrics)`.

One pure function: conditioning dropout (for classifier-free guidance), the diffusion loss of `vdm_jax.diffusion`
with the U-Net as denoiser, optional gradient accumulation over micro-batches (`lax.scan`, weighted as one batch),
AdamW, and the EMA.
A step whose loss or gradients are not finite leaves the state unchanged and is counted in the metrics, so the last
good state is never overwritten (the loop stops the run with a message).
"""

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metrics as clu_metrics
from flax import nnx

from vdm_jax.diffusion import diffusion_loss
from vdm_jax.models import drop_conditioning, make_rngs
from vdm_jax.train.frame_masks import noise_known_frames, random_known_frames
from vdm_jax.train.state import TrainState, ema_update

Batch = dict[str, jax.Array]


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    video_loss: clu_metrics.Average.from_output("video_loss")
    image_loss: clu_metrics.Average.from_output("image_loss")
    grad_norm: clu_metrics.Average.from_output("grad_norm")
    learning_rate: clu_metrics.LastValue.from_output("learning_rate")
    nonfinite_steps: clu_metrics.Average.from_output("nonfinite")


def model_conditioning(batch: Batch, model_cfg) -> dict[str, jax.Array] | None:
    """The conditioning inputs this model uses, taken from a batch (labels and/or caption tokens)."""
    cond = {}
    if model_cfg.num_classes > 0:
        if "label" not in batch:
            raise ValueError("config.model.num_classes > 0 but the dataset provides no labels")
        cond["label"] = batch["label"]
    if model_cfg.text_conditioning == "builtin":
        if "text_tokens" not in batch:
            raise ValueError("config.model.text_conditioning='builtin' but the dataset provides no captions")
        cond["text_tokens"] = batch["text_tokens"]
    return cond or None


def make_train_step(
    graphdef: nnx.GraphDef, cfg, tx: optax.GradientTransformation, lr_schedule: optax.Schedule
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, TrainMetrics]]:
    """Builds the step for an `ExperimentConfig`; jit it with shardings (see `vdm_jax.train.loop`)."""
    model_cfg, train_cfg = cfg.model, cfg.train
    resolution = cfg.data.resolution

    def loss_fn(params, rest, batch: Batch, rng: jax.Array):
        model = nnx.merge(graphdef, params, rest)
        drop_rng, loss_rng, dropout_rng, mask_rng = jax.random.split(rng, 4)
        cond = model_conditioning(batch, model_cfg)
        if cond is not None and model_cfg.cond_drop_prob > 0:
            cond = drop_conditioning(cond, drop_rng, model_cfg.cond_drop_prob, model_cfg)
        segment_ids = batch.get("segment_ids")
        if model_cfg.frame_conditioning:
            known, known_mask = random_known_frames(batch["video"], segment_ids, mask_rng)
            if "use_known_mask" in batch:  # Rows that bring their own mask (context pool, long-range windows).
                known_mask = jnp.where(batch["use_known_mask"][:, None], batch["known_mask"], known_mask)
                known = batch["video"] * known_mask[:, :, None, None, None]
            aug_rng = jax.random.fold_in(mask_rng, 1)  # Its own stream: the masks stay those of runs without noise.
            known = noise_known_frames(known, known_mask, aug_rng, model_cfg.known_frames_noise)
            cond = {**(cond or {}), "known_frames": known, "known_mask": known_mask}

        def denoise_fn(z, logsnr, c):
            return model(
                z,
                logsnr,
                c,
                segment_ids=segment_ids,
                frame_times=batch.get("frame_times"),
                train=True,
                rngs=make_rngs(dropout=dropout_rng),
            )

        loss_mask = None
        if model_cfg.frame_conditioning:  # Known frames are given, not generated: no loss on them.
            loss_mask = 1.0 - cond["known_mask"]
        loss, aux = diffusion_loss(
            denoise_fn, batch["video"], loss_rng, cfg.diffusion, resolution=resolution, cond=cond, loss_mask=loss_mask
        )
        frame_loss = aux["frame_loss"]  # [B, T], zero on the frames loss_mask leaves out
        is_image = (segment_ids > 0) if segment_ids is not None else jnp.zeros(frame_loss.shape, bool)
        # Each part is a mean over its own counted frames (a frame-conditioned model's unknown ones), as `loss` is:
        # with no image frames, video_loss is loss.
        counted = jnp.ones(frame_loss.shape, jnp.float32) if loss_mask is None else loss_mask.astype(jnp.float32)
        frames_video = jnp.sum(jnp.where(is_image, 0.0, counted))
        frames_image = jnp.sum(jnp.where(is_image, counted, 0.0))
        parts = {
            "video_loss": jnp.sum(jnp.where(is_image, 0.0, frame_loss)) / jnp.maximum(frames_video, 1.0),
            "image_loss": jnp.sum(jnp.where(is_image, frame_loss, 0.0)) / jnp.maximum(frames_image, 1.0),
        }
        # How many frames each mean is over: accumulation weights micro-batches by them (`accumulate_gradients`).
        counts = {"loss": jnp.sum(counted), "video_loss": frames_video, "image_loss": frames_image}
        return loss, (parts, counts)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def gradients(state: TrainState, batch: Batch, rng: jax.Array):
        fn = lambda mb, key: grad_fn(state.params, state.rest, mb, key)
        (loss, (parts, _)), grads = accumulate_gradients(fn, batch, rng, train_cfg.grad_accum_steps)
        return (loss, parts), grads

    def train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, TrainMetrics]:
        rng = jax.random.fold_in(rng, state.step)
        (loss, parts), grads = gradients(state, batch, rng)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = state.replace(
            step=state.step + 1,
            params=params,
            ema_params=ema_update(
                state.ema_params, params, train_cfg.ema_decay, state.step, warmup=train_cfg.ema_warmup
            ),
            opt_state=opt_state,
        )
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        # Keep the last good state on a non-finite step (the loop reports it and stops).
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state.replace(step=state.step))
        metrics = TrainMetrics.single_from_model_output(
            loss=loss,
            grad_norm=grad_norm,
            learning_rate=lr_schedule(state.step),
            nonfinite=(~finite).astype(jnp.float32),
            **parts,
        )
        return new, metrics

    return train_step


def accumulate_gradients(grad_fn: Callable, batch: Batch, rng: jax.Array, n: int):
    """``grad_fn(batch, rng) -> ((loss, (parts, counts)), grads)`` over ``n`` micro-batches (``lax.scan``), as over
    the whole batch.

    ``loss`` and each of ``parts`` are means over ``counts`` frames (the loss's unknown frames of a frame-conditioned
    model, which random masks make differ between micro-batches), so each micro-batch's loss, parts and gradients are
    weighted by its counts: the sums over frames add up, and one division at the end gives the whole batch's mean.
    Micro-batch i is rows i, i + n, i + 2n, ... and draws its randomness from ``fold_in(rng, i)``; ``n = 1`` is
    ``grad_fn(batch, rng)`` itself.
    """
    if n == 1:
        return grad_fn(batch, rng)
    # Micro-batch i is rows i, i + n, i + 2n, ...: a batch sharded over devices in contiguous blocks (of a multiple
    # of n rows each: `loop._check_batch_fits_mesh`) then holds every micro-batch's share on every device, and the
    # split moves no data between devices (contiguous micro-batches would be gathered from their devices per step).
    micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // n, n, *x.shape[1:]), 0, 1), batch)

    def step(carry, inputs):
        i, mb = inputs
        (loss, (parts, counts)), grads = grad_fn(mb, jax.random.fold_in(rng, i))
        c = counts["loss"]
        summed = (loss * c, {k: v * counts[k] for k, v in parts.items()}, jax.tree.map(lambda g: g * c, grads))
        return jax.tree.map(jnp.add, carry, (summed, counts)), None

    abstract = jax.eval_shape(grad_fn, jax.tree.map(lambda x: x[0], micro), rng)
    (_, (parts0, counts0)), grads0 = abstract
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), ((abstract[0][0], parts0, grads0), counts0))
    ((loss, parts, grads), counts), _ = jax.lax.scan(step, zeros, (jnp.arange(n), micro))
    total = jnp.maximum(counts["loss"], 1.0)  # all frames known: zero loss and gradients, as in one batch
    parts = {k: v / jnp.maximum(counts[k], 1.0) for k, v in parts.items()}
    return (loss / total, (parts, counts)), jax.tree.map(lambda g: g / total, grads)


def metrics_to_host(metrics: Any) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.compute().items()}
