"""Training masks of frame-conditioned models, and the noise augmentation of their known frames."""

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.train.frame_masks import noise_known_frames, random_known_frames

B, T, R = 600, 8, 2


def video(b: int = B, t: int = T) -> jax.Array:
    """Distinct non-zero constant frames: frame f of example e is (e * T + f + 1) / (b * T)."""
    values = (jnp.arange(b * t, dtype=jnp.float32).reshape(b, t) + 1) / (b * t)
    return jnp.broadcast_to(values[:, :, None, None, None], (b, t, R, R, 3))


def classify(mask: np.ndarray) -> str:
    """Which of the three tasks a [T] mask is."""
    known = np.flatnonzero(mask)
    if known.size == 0:
        return "unconditional"
    if np.array_equal(known, np.arange(known.size)) and known.size < mask.size:
        return "prediction"
    stride = known[1] - known[0] if known.size > 1 else 0
    assert stride >= 2 and np.array_equal(known, np.arange(0, mask.size, stride)), f"mask {mask} is neither task"
    return "interpolation"


def test_masks_are_the_three_tasks_in_equal_shares_and_known_frames_are_the_video():
    x = video()
    known, mask = random_known_frames(x, None, jax.random.key(0))
    mask, known = np.asarray(mask), np.asarray(known)
    kinds = [classify(m) for m in mask]
    for kind in ("unconditional", "prediction", "interpolation"):  # 1/3 each: 200 ± 3σ (σ ≈ 11.5)
        assert abs(kinds.count(kind) - B / 3) < 35, (kind, kinds.count(kind))
    # Prediction never knows every frame (something is left to predict); "first frame only" occurs.
    lengths = {int(m.sum()) for m, k in zip(mask, kinds, strict=True) if k == "prediction"}
    assert lengths == set(range(1, T))
    np.testing.assert_array_equal(known, np.asarray(x) * mask[:, :, None, None, None])


def test_appended_image_frames_are_never_known():
    segment_ids = jnp.broadcast_to(jnp.array([0, 0, 0, 0, 0, 0, 1, 2]), (B, T))
    _, mask = random_known_frames(video(), segment_ids, jax.random.key(1))
    mask = np.asarray(mask)
    assert mask[:, 6:].sum() == 0
    assert mask[:, :6].sum(axis=1).max() == 5  # prediction over the 6 video frames knows at most 5


def test_noise_touches_known_frames_only_with_a_per_clip_level_up_to_the_maximum():
    x = video()
    known, mask = random_known_frames(x, None, jax.random.key(2))
    noisy = noise_known_frames(known, mask, jax.random.key(3), 0.5)
    delta = np.asarray(noisy - known)
    mask = np.asarray(mask)
    assert np.all(delta[mask == 0] == 0)  # unknown frames stay exactly zero
    has_known = mask.sum(axis=1) > 0
    std = np.array([delta[i][mask[i] > 0].std() for i in np.flatnonzero(has_known)])
    n = np.array([mask[i].sum() * R * R * 3 for i in np.flatnonzero(has_known)])
    # Each clip's noise std is its own σ ~ U(0, 0.5): none above the maximum (beyond sampling error), spread over it.
    assert np.all(std <= 0.5 * (1 + 4 / np.sqrt(2 * n)))
    assert abs(std.mean() - 0.25) < 0.03 and std.min() < 0.05 and std.max() > 0.45
    np.testing.assert_allclose(np.std(std), 0.5 / np.sqrt(12), rtol=0.15)  # the spread of U(0, 0.5)


def test_zero_noise_is_the_identity():
    known, mask = random_known_frames(video(4), None, jax.random.key(4))
    assert noise_known_frames(known, mask, jax.random.key(5), 0.0) is known


def test_train_step_gives_the_network_noised_known_frames(monkeypatch):
    """The step noises known frames by config.model.known_frames_noise (and only then): a spy in place of the noise
    records the level it is given, and the gradients move with it (the loss alone cannot: a new U-Net's output layer
    is zero, so its loss ignores the input; the output layer's gradient does not)."""
    from vdm_jax import configuration
    from vdm_jax.train import state as train_state
    from vdm_jax.train import step as train_step
    from vdm_jax.train.compile import new_model

    tiny = ["data.num_frames=4", "data.resolution=8", "model.base_channels=8", "model.channel_mults=(1,)"]
    tiny += ["model.attn_resolutions=(8,)", "model.head_dim=8", "model.emb_dim=16", "model.frame_conditioning=True"]
    levels = []
    real = train_step.noise_known_frames

    def spy(known, mask, rng, max_std):
        levels.append(max_std)
        return real(known, mask, rng, max_std)

    monkeypatch.setattr(train_step, "noise_known_frames", spy)

    def grad_norm(noise: float) -> float:
        raw = configuration.load_config_file("configs/default.py", [*tiny, f"model.known_frames_noise={noise}"])
        cfg = configuration.from_config_dict(raw)
        tx = train_state.make_optimizer(cfg.train)
        graphdef, state = train_state.init_state(new_model(cfg), tx)
        fn = train_step.make_train_step(graphdef, cfg, tx, train_state.learning_rate_schedule(cfg.train))
        batch = {"video": jax.random.uniform(jax.random.key(6), (8, 4, 8, 8, 3), minval=-1, maxval=1)}
        _, metrics = fn(state, batch, jax.random.key(7))
        return train_step.metrics_to_host(metrics)["grad_norm"]

    clean, noisy = grad_norm(0.0), grad_norm(1.0)
    assert levels == [0.0, 1.0]
    assert abs(noisy - clean) > 1e-4 * clean
