"""Gradient accumulation: micro-batches weighted by their counted frames give the whole batch's loss and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.train.test_context_pool import R, T, config
from vdm_jax.train.step import accumulate_gradients


def _masked_loss(w, batch, rng):
    """A frame-conditioned loss in miniature: the mean of (x . w)^2 over the frames the mask counts, plus a part."""
    del rng
    per_frame = jnp.square(batch["x"] @ w)  # [B, T]
    mask = batch["mask"]
    counted = jnp.sum(mask)
    loss = jnp.sum(per_frame * mask) / jnp.maximum(counted, 1.0)
    frames = jnp.asarray(per_frame.size, jnp.float32)
    parts = {"video_loss": jnp.sum(per_frame) / frames}
    return loss, (parts, {"loss": counted, "video_loss": frames})


def test_micro_batches_weighted_by_their_counted_frames_equal_one_batch():
    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.standard_normal(5), jnp.float32)
    x = jnp.asarray(rng.standard_normal((4, 6, 5)), jnp.float32)
    mask = np.zeros((4, 6), np.float32)
    mask[0, 5:] = 1.0  # micro-batch 0 (rows 0-1) counts 1 + 2 frames ...
    mask[1, 4:] = 1.0
    mask[2:, 1:] = 1.0  # ... micro-batch 1 (rows 2-3) counts 10
    batch = {"x": x, "mask": jnp.asarray(mask)}
    grad_fn = jax.value_and_grad(_masked_loss, has_aux=True)
    fn = lambda mb, key: grad_fn(w, mb, key)
    (loss1, (parts1, _)), g1 = fn(batch, jax.random.key(0))
    (loss2, (parts2, counts2)), g2 = jax.jit(lambda b: accumulate_gradients(fn, b, jax.random.key(0), 2))(batch)
    np.testing.assert_allclose(loss2, loss1, rtol=1e-6)
    np.testing.assert_allclose(g2, g1, rtol=1e-5)
    np.testing.assert_allclose(parts2["video_loss"], parts1["video_loss"], rtol=1e-6)
    assert float(counts2["loss"]) == 13.0
    # Not vacuous: the plain mean of the two micro-batches' losses is another number.
    halves = [fn({k: v[i : i + 2] for k, v in batch.items()}, None)[0][0] for i in (0, 2)]
    assert abs(float(np.mean(halves)) - float(loss1)) > 0.05 * abs(float(loss1))
    # One micro-batch is the function itself.
    (loss_n1, _), g_n1 = accumulate_gradients(fn, batch, jax.random.key(0), 1)
    assert float(loss_n1) == float(loss1) and np.array_equal(g_n1, g1)


def test_real_step_with_accumulation_trains_a_frame_conditioned_model():
    """The train step with grad_accum_steps = 2 (never run by the launch tests): one finite update."""
    from vdm_jax.train import state as train_state
    from vdm_jax.train import step as train_step
    from vdm_jax.train.compile import new_model

    cfg = config("train.grad_accum_steps=2", "train.warmup_steps=0")
    tx = train_state.make_optimizer(cfg.train)
    graphdef, state = train_state.init_state(new_model(cfg), tx)
    fn = jax.jit(train_step.make_train_step(graphdef, cfg, tx, train_state.learning_rate_schedule(cfg.train)))
    video = jax.random.uniform(jax.random.key(1), (8, T, R, R, 3), minval=-1, maxval=1)
    new, metrics = fn(state, {"video": video}, jax.random.key(2))
    values = train_step.metrics_to_host(metrics)
    assert int(new.step) == 1 and values["nonfinite_steps"] == 0 and np.isfinite(values["loss"])
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.params, state.params))
    assert max(moved) > 0
