"""The real train step's EMA, learning rate and non-finite guard (tests of the step elsewhere check its loss parts,
and the loop's failure tests stand in a fake step for a non-finite one), and the loop's message for a non-finite
step before any checkpoint."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.train.test_context_pool import R, T, config
from vdm_jax.train import loop
from vdm_jax.train import state as train_state
from vdm_jax.train import step as train_step
from vdm_jax.train.checkpoint import Checkpointer
from vdm_jax.train.compile import new_model

LR = 1e-3


def make_stepper(*extra: str):
    """(jitted real train step, initial state, cfg): constant learning rate, no warm-up, clipping or weight decay."""
    cfg = config(
        f"train.learning_rate={LR}",
        "train.warmup_steps=0",
        "train.lr_schedule=constant",
        "train.grad_clip=0",
        "train.weight_decay=0",
        *extra,
    )
    tx = train_state.make_optimizer(cfg.train)
    graphdef, state = train_state.init_state(new_model(cfg), tx)
    fn = jax.jit(train_step.make_train_step(graphdef, cfg, tx, train_state.learning_rate_schedule(cfg.train)))
    return fn, state, cfg


@pytest.fixture(scope="module")
def stepper():
    return make_stepper()


def _batch(seed: int):
    return {"video": jax.random.uniform(jax.random.key(seed), (8, T, R, R, 3), minval=-1, maxval=1)}


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def test_the_step_moves_by_the_learning_rate_and_averages_the_new_parameters_into_the_ema(stepper):
    """Adam's first update is lr · g / (|g| + eps): every parameter moves by lr or (zero gradient) not at all, and
    the logged learning rate is lr. At step s the EMA becomes d · ema + (1 − d) · (the step's new parameters) with
    d = min(decay, (1 + s) / (10 + s)) (VDM-style warm-up): here s = 3, d = 4/13."""
    fn, state, cfg = stepper
    first, metrics = fn(state, _batch(1), jax.random.key(0))
    pairs = zip(_leaves(first.params), _leaves(state.params), strict=True)
    moved = np.concatenate([np.abs(a - b).ravel() for a, b in pairs])
    assert moved.max() == pytest.approx(LR, rel=1e-3)
    assert np.all((moved < 1e-3 * LR) | (np.abs(moved - LR) < 1e-2 * LR)), np.unique(moved.round(8))
    assert train_step.metrics_to_host(metrics)["learning_rate"] == pytest.approx(LR)

    for s in (2, 3):
        first, _ = fn(first, _batch(s), jax.random.key(0))
    assert int(first.step) == 3
    new, _ = fn(first, _batch(4), jax.random.key(0))
    assert int(new.step) == 4
    d = min(cfg.train.ema_decay, 4 / 13)
    old_ema, old_params, new_params = _leaves(first.ema_params), _leaves(first.params), _leaves(new.params)
    for got, e, p in zip(_leaves(new.ema_params), old_ema, new_params, strict=True):
        np.testing.assert_allclose(got, d * e + (1 - d) * p, rtol=1e-5, atol=1e-9)
    # Not vacuous: the EMA of the parameters before the step, or with the next step's d, is another value.
    wrong_params = [d * e + (1 - d) * p for e, p in zip(old_ema, old_params, strict=True)]
    d_next = min(cfg.train.ema_decay, 5 / 14)
    wrong_d = [d_next * e + (1 - d_next) * p for e, p in zip(old_ema, new_params, strict=True)]
    got = _leaves(new.ema_params)
    for wrong in (wrong_params, wrong_d):
        assert max(np.abs(g - w).max() for g, w in zip(got, wrong, strict=True)) > 1e-5


def test_without_the_ema_warm_up_the_step_uses_the_configured_decay():
    """train.ema_warmup=False (the paper configs): at step 0 the EMA moves by (1 − decay) toward the new parameters,
    where the warm-up would give d = 0.1."""
    fn, state, cfg = make_stepper("train.ema_warmup=False", "train.ema_decay=0.9")
    new, _ = fn(state, _batch(1), jax.random.key(0))
    for got, e, p in zip(_leaves(new.ema_params), _leaves(state.ema_params), _leaves(new.params), strict=True):
        np.testing.assert_allclose(got, 0.9 * e + 0.1 * p, rtol=1e-5, atol=1e-9)


def test_a_non_finite_step_keeps_the_whole_state_and_is_counted(stepper):
    """A batch with a NaN gives a non-finite loss: the step returns its input state unchanged (step count, params,
    EMA and optimizer moments), so the last good state is never overwritten, and counts itself as non-finite."""
    fn, state, _ = stepper
    good, _ = fn(state, _batch(1), jax.random.key(0))
    video = _batch(2)["video"].at[0, 0, 0, 0, 0].set(jnp.nan)
    new, metrics = fn(good, {"video": video}, jax.random.key(0))
    assert train_step.metrics_to_host(metrics)["nonfinite_steps"] == 1.0
    assert int(new.step) == int(good.step) == 1
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(good), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The same state with a finite batch is a real step (the comparison above can see a change).
    moved, metrics = fn(good, _batch(2), jax.random.key(0))
    assert train_step.metrics_to_host(metrics)["nonfinite_steps"] == 0.0 and int(moved.step) == 2


def test_a_non_finite_step_before_any_checkpoint_says_a_rerun_starts_over(tmp_path):
    """The run stops on a non-finite step; with no checkpoint yet the message says a rerun starts from step 0
    (before: 'the last good checkpoint (step None) is intact'); with one, it names that step."""
    ckpt = Checkpointer(str(tmp_path / "checkpoints"))
    with pytest.raises(loop.TrainingError) as err:
        loop._stop_if_nonfinite({"nonfinite_steps": 0.5}, 7, ckpt)
    assert "before step 7" in str(err.value) and "None" not in str(err.value)
    assert "a rerun starts from step 0" in str(err.value)
    ckpt.save(4, {"w": np.zeros(2, np.float32)}, config_json="{}", data_state=None, force=True)
    with pytest.raises(loop.TrainingError, match=r"last good checkpoint \(step 4\) is intact"):
        loop._stop_if_nonfinite({"nonfinite_steps": 0.5}, 7, ckpt)
    loop._stop_if_nonfinite({"nonfinite_steps": 0.0}, 8, ckpt)  # a clean stretch passes
    ckpt.close()
