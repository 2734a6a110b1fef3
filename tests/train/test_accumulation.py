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
    mask[0, 5:] = 1.0  # micro-batch 0 (rows 0 and 2: every 2nd row) counts 1 + 2 frames ...
    mask[2, 4:] = 1.0
    mask[1::2, 1:] = 1.0  # ... micro-batch 1 (rows 1 and 3) counts 10
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
    halves = [fn({k: v[i::2] for k, v in batch.items()}, None)[0][0] for i in (0, 1)]
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


_SHARDED_SCRIPT = """
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from vdm_jax.train.step import accumulate_gradients

def loss(w, batch, rng):
    per_row = jnp.square(batch["x"] @ w).mean((1, 2)) * (1.0 + jax.random.uniform(rng, ()))
    return per_row.mean(), ({}, {"loss": jnp.asarray(per_row.size, jnp.float32)})

grad = jax.value_and_grad(loss, has_aux=True)
run = lambda w, batch: accumulate_gradients(lambda mb, key: grad(w, mb, key), batch, jax.random.key(0), 2)
rng = np.random.default_rng(0)
x, w = rng.standard_normal((16, 8, 32), np.float32), rng.standard_normal((32, 4), np.float32)
mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
xs = jax.device_put(x, NamedSharding(mesh, P("data")))
ws = jax.device_put(w, NamedSharding(mesh, P()))
compiled = jax.jit(run).lower(ws, {"x": xs}).compile()
hlo = compiled.as_text()
(loss_s, _), g_s = compiled(ws, {"x": xs})
(loss_1, _), g_1 = jax.jit(run, device=jax.devices()[0])(w, {"x": x})
ops = ("all-gather", "all-to-all", "collective-permute")
moves = {op: hlo.count(f" {op}(") + hlo.count(f" {op}-start(") for op in ops}
print(json.dumps({"moves": moves, "all_reduce": hlo.count(" all-reduce("), "loss": [float(loss_s), float(loss_1)],
                  "grad_diff": float(np.abs(np.asarray(g_s) - np.asarray(g_1)).max())}))
"""


def test_micro_batches_of_a_data_sharded_batch_move_no_data_between_devices():
    """Accumulating over a batch split across 4 devices: each device holds its rows of every micro-batch, so the
    compiled step gathers, permutes or exchanges no batch data (contiguous micro-batches compiled to 1 all-gather
    per micro-step here, 3 all-gathers and 10 collective-permutes in the tiny real step on 4 devices); gradients are
    all-reduced, and the sharded result equals the single-device one."""
    import json
    import subprocess
    import sys

    from tests.train import runs

    out = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT], env=runs.env(devices=4), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["moves"] == {"all-gather": 0, "all-to-all": 0, "collective-permute": 0}, row
    assert row["all_reduce"] >= 1  # the gradients' sum over devices: the data parallelism is real
    np.testing.assert_allclose(row["loss"][0], row["loss"][1], rtol=1e-5)
    assert row["grad_diff"] < 1e-4
