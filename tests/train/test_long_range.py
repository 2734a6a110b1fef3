"""Training on long-range windows (config.data.long_range_prob): the settings it needs, the frame times reaching the
network in the train step, and a long-range run that resumes exactly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.train import runs
from tests.train.test_train import assert_resume_is_exact
from vdm_jax import configuration

T, R = 4, 8
TINY = ["data.num_frames=4", "data.resolution=8", "model.base_channels=8", "model.channel_mults=(1,)"]
TINY += ["model.attn_resolutions=(8,)", "model.head_dim=8", "model.emb_dim=16", "model.frame_conditioning=True"]


def config(*extra: str):
    return configuration.from_config_dict(configuration.load_config_file("configs/default.py", [*TINY, *extra]))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("model.frame_conditioning=False",), "frame-conditioned model"),
        (("train.context_pool=pool.npz",), "use one"),
        (("data.long_range_span=4",), "must exceed data.num_frames"),
        (("data.long_range_null_prob=1.0",), "no window that teaches far-back context"),
    ],
)
def test_long_range_settings_that_cannot_work_are_refused(extra, message):
    with pytest.raises(configuration.ConfigError, match=message):
        config("data.long_range_prob=0.5", *extra)


def test_train_step_gives_the_network_the_frame_times():
    """The same batch, rng and known frames: consecutive frame_times give the loss of a batch without them; the same
    frames spread over time give another."""
    from vdm_jax.train import state as train_state
    from vdm_jax.train import step as train_step
    from vdm_jax.train.compile import new_model

    cfg = config("data.long_range_prob=0.5")
    tx = train_state.make_optimizer(cfg.train)
    graphdef, state = train_state.init_state(new_model(cfg), tx)
    leaves, tree = jax.tree.flatten(state.params)  # the zero-initialised output layer would hide the inputs
    keys = jax.random.split(jax.random.key(0), len(leaves))
    noisy = [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    state = state.replace(params=jax.tree.unflatten(tree, noisy))
    fn = jax.jit(train_step.make_train_step(graphdef, cfg, tx, train_state.learning_rate_schedule(cfg.train)))
    batch = {
        "video": jax.random.uniform(jax.random.key(1), (8, T, R, R, 3), minval=-1, maxval=1),
        "segment_ids": jnp.zeros((8, T), jnp.int32),
        "known_mask": jnp.tile(jnp.array([1.0, 1.0, 0.0, 0.0]), (8, 1)),
        "use_known_mask": jnp.ones((8,), bool),
    }

    def loss(times=None):
        b = batch if times is None else {**batch, "frame_times": jnp.asarray(times, jnp.int32)}
        return float(fn(state, b, jax.random.key(2))[1].compute()["loss"])

    consecutive = loss(np.tile(np.arange(T), (8, 1)))
    assert consecutive == pytest.approx(loss(), rel=1e-5)
    assert abs(loss(np.tile([0, 12, 13, 14], (8, 1))) - consecutive) > 1e-4 * abs(consecutive)


def test_long_range_run_resumes_exactly(tmp_path, moving_shapes_dir):
    """Long-range windows come from stateless per-example draws: a run stopped after 2 steps and resumed to 4 ends
    where an uninterrupted one does."""
    common = (
        *runs.TINY,
        "--config.model.frame_conditioning=True",
        "--config.data.long_range_prob=0.5",
        "--config.data.long_range_span=16",
    )
    assert_resume_is_exact(tmp_path, common, moving_shapes_dir)
