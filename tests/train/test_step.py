"""The real train step's logged loss parts (means over the frames the loss counts) and its classifier-free guidance
dropout of labels and captions (one draw per example, label and text together)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.train.test_context_pool import R, T, config
from vdm_jax import configuration
from vdm_jax.models import UNet3D, tokenize
from vdm_jax.train import state as train_state
from vdm_jax.train import step as train_step
from vdm_jax.train.compile import new_model


def _step(cfg, state=None):
    """(jitted make_train_step of cfg, its initial state, the graphdef)."""
    tx = train_state.make_optimizer(cfg.train)
    graphdef, initial = train_state.init_state(new_model(cfg), tx)
    fn = train_step.make_train_step(graphdef, cfg, tx, train_state.learning_rate_schedule(cfg.train))
    return fn, initial if state is None else state


@pytest.mark.parametrize("accum", [1, 2])
def test_video_loss_of_a_frame_conditioned_model_is_the_loss_without_image_frames(monkeypatch, accum):
    """loss is the mean over the unknown frames; with no image frames video_loss is that same mean (it was the sum
    over the unknown frames divided by all frames: loss x the unknown share). Two micro-batches, whose random masks
    leave different numbers of unknown frames, are weighted by those numbers for video_loss as for loss."""
    unknown = []  # per call of the loss (micro-batch): how many frames it counts, handed to the host by a spy
    real_loss = train_step.diffusion_loss

    def spy(*args, **kw):
        jax.debug.callback(lambda m: unknown.append(float(np.sum(m))), kw["loss_mask"])
        return real_loss(*args, **kw)

    monkeypatch.setattr(train_step, "diffusion_loss", spy)
    fn, state = _step(config(f"train.grad_accum_steps={accum}", "train.warmup_steps=0"))
    batch = {"video": jax.random.uniform(jax.random.key(1), (8, T, R, R, 3), minval=-1, maxval=1)}
    values = train_step.metrics_to_host(jax.jit(fn)(state, batch, jax.random.key(6))[1])
    assert np.isfinite(values["loss"]) and values["loss"] > 0
    np.testing.assert_allclose(values["video_loss"], values["loss"], rtol=1e-5)
    assert values["image_loss"] == 0.0
    # Not vacuous: the masks know frames (the old division was off by the unknown share, here under 3/4), and the
    # micro-batches count different numbers of frames (weighting them equally would give another mean).
    assert len(unknown) == accum and sum(unknown) < 0.75 * 8 * T
    assert accum == 1 or unknown[0] != unknown[1]


def test_loss_parts_are_means_over_their_own_unknown_frames(monkeypatch):
    """With 2 appended image frames per clip (never known), video_loss is the per-frame loss summed over the clip's
    unknown frames over their number, image_loss the same over the image frames (a spy hands the step's per-frame
    loss and mask to the host, from which the parts are recomputed)."""
    seen = {}
    real_loss = train_step.diffusion_loss

    def spy(*args, **kw):
        loss, aux = real_loss(*args, **kw)
        keep = lambda frame_loss, mask: seen.update(frame_loss=np.asarray(frame_loss), loss_mask=np.asarray(mask))
        jax.debug.callback(keep, aux["frame_loss"], kw["loss_mask"])
        return loss, aux

    monkeypatch.setattr(train_step, "diffusion_loss", spy)
    cfg = config("data.num_image_frames=2", "train.warmup_steps=0")
    fn, state = _step(cfg)
    video = jax.random.uniform(jax.random.key(1), (8, T + 2, R, R, 3), minval=-1, maxval=1)
    segment_ids = jnp.broadcast_to(jnp.asarray([0] * T + [1, 2], jnp.int32), (8, T + 2))

    metrics = train_step.metrics_to_host(
        jax.jit(fn)(state, {"video": video, "segment_ids": segment_ids}, jax.random.key(2))[1]
    )
    frame_loss, loss_mask = seen["frame_loss"].astype(np.float64), seen["loss_mask"].astype(np.float64)
    is_image = np.asarray(segment_ids) > 0
    video_frames = np.sum(loss_mask[~is_image])
    assert 0 < video_frames < (~is_image).sum() and np.all(loss_mask[is_image] == 1)  # some clip frames known
    np.testing.assert_allclose(metrics["video_loss"], frame_loss[~is_image].sum() / video_frames, rtol=1e-5)
    np.testing.assert_allclose(metrics["image_loss"], frame_loss[is_image].sum() / is_image.sum(), rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], frame_loss.sum() / loss_mask.sum(), rtol=1e-5)


# A class- and caption-conditioned model (no frame conditioning).
LABELLED = ["data.num_frames=4", "data.resolution=8", "model.base_channels=8", "model.channel_mults=(1,)"]
LABELLED += ["model.attn_resolutions=(8,)", "model.head_dim=8", "model.emb_dim=16", "model.num_classes=3"]
LABELLED += ["model.text_conditioning=builtin", "model.text_embed_dim=16", "data.text_max_length=8"]
CAPTIONS = ["a red circle", "two squares", "a blue triangle up", "circle left", "x", "a square", "up", "green"]


def _labelled(p: float):
    return configuration.from_config_dict(
        configuration.load_config_file("configs/default.py", [*LABELLED, f"model.cond_drop_prob={p}"])
    )


def _labelled_batch(label=None, tokens=None):
    video = jax.random.uniform(jax.random.key(1), (8, T, R, R, 3), minval=-1, maxval=1)
    label = np.arange(8, dtype=np.int32) % 3 if label is None else label
    tokens = tokenize(CAPTIONS, 8) if tokens is None else tokens
    return {"video": video, "label": jnp.asarray(label, jnp.int32), "text_tokens": jnp.asarray(tokens, jnp.int32)}


def test_dropout_nulls_label_and_caption_together_and_keeps_the_rest(monkeypatch):
    """With cond_drop_prob = 0.5 the network (a spy on UNet3D.__call__) sees, per example, either the null class
    (index num_classes) and the empty caption together, or the example's own label and caption."""
    seen = {}
    real_call = UNet3D.__call__

    def spy(self, z, logsnr, cond=None, **kw):
        seen["cond"] = cond
        return real_call(self, z, logsnr, cond, **kw)

    monkeypatch.setattr(UNet3D, "__call__", spy)
    fn, state = _step(_labelled(0.5))
    batch = _labelled_batch()

    @jax.jit
    def given(b):
        fn(state, b, jax.random.key(3))
        return seen["cond"]["label"], seen["cond"]["text_tokens"]

    label, tokens = (np.asarray(x) for x in given(batch))
    own_label, own_tokens = np.asarray(batch["label"]), np.asarray(batch["text_tokens"])
    assert np.all(own_tokens.any(axis=1))  # every caption non-empty: a dropped one is recognisable
    dropped = label == 3
    assert 0 < dropped.sum() < 8, dropped  # both kinds of rows in this draw
    np.testing.assert_array_equal(tokens[dropped], 0)  # the caption is dropped with the label ...
    np.testing.assert_array_equal(label[~dropped], own_label[~dropped])  # ... and kept with it
    np.testing.assert_array_equal(tokens[~dropped], own_tokens[~dropped])


def test_dropping_every_example_trains_the_null_conditioning():
    """cond_drop_prob = 1: the step's loss is that of the same step (same rng) given the null class and the empty
    caption outright, and differs from the loss given the real ones (the parameters are perturbed so that the
    conditioning reaches the output; the zero-initialised output layer would hide it)."""
    _, state = _step(_labelled(0.0))
    leaves, tree = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    noisy = [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    state = state.replace(params=jax.tree.unflatten(tree, noisy))

    def loss(p, batch):
        fn, _ = _step(_labelled(p), state)
        return float(train_step.metrics_to_host(jax.jit(fn)(state, batch, jax.random.key(3))[1])["loss"])

    null = _labelled_batch(label=np.full(8, 3), tokens=np.zeros((8, 8)))
    all_dropped, given_null, given_real = loss(1.0, _labelled_batch()), loss(0.0, null), loss(0.0, _labelled_batch())
    np.testing.assert_allclose(all_dropped, given_null, rtol=1e-6)
    assert abs(given_real - given_null) > 1e-3 * given_null


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_learning_rate_warms_up_linearly_then_decays_by_the_cosine_to_zero(schedule):
    """lr(s) = lr·s/W for s < W, then lr·½(1 + cos(π (s − W)/(N − W))) (cosine) or lr (constant)."""
    cfg = configuration.from_config_dict(
        configuration.load_config_file(
            "configs/default.py",
            [
                "train.learning_rate=0.004",
                "train.warmup_steps=100",
                "train.num_steps=1100",
                f"train.lr_schedule={schedule}",
            ],
        )
    ).train
    lr = train_state.learning_rate_schedule(cfg)
    steps = np.array([0, 1, 50, 99, 100, 350, 600, 850, 1099, 1100])
    warm = 0.004 * np.minimum(steps, 100) / 100
    after = 0.004 * (0.5 * (1 + np.cos(np.pi * (steps - 100) / 1000)) if schedule == "cosine" else 1.0)
    expected = np.where(steps < 100, warm, after)
    np.testing.assert_allclose([float(lr(s)) for s in steps], expected, rtol=1e-5, atol=1e-9)


def test_ema_is_the_warmed_up_exponential_average():
    """e ← d·e + (1 − d)·p with d = min(decay, (1 + s)/(10 + s)): 0.1 at step 0 (the EMA nearly jumps to the
    parameters), the configured decay once (1 + s)/(10 + s) exceeds it."""
    ema = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
    params = {"w": jnp.array([0.0, 2.0]), "b": jnp.array(-1.0)}
    for step, d in ((0, 0.1), (8, 0.5), (100_000, 0.999)):
        out = train_state.ema_update(ema, params, 0.999, jnp.asarray(step))
        flat = train_state.ema_update(ema, params, 0.999, jnp.asarray(step), warmup=False)  # the paper configs
        for k in ema:
            np.testing.assert_allclose(out[k], d * np.asarray(ema[k]) + (1 - d) * np.asarray(params[k]), rtol=1e-6)
            np.testing.assert_allclose(flat[k], 0.999 * np.asarray(ema[k]) + 0.001 * np.asarray(params[k]), rtol=1e-6)
