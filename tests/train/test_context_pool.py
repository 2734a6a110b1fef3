"""Training on the model's own context (vdm_jax.train.context_pool): the pool's examples, how they enter batches and
the train step, and a pooled run that resumes exactly."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.train import runs
from tests.train.test_train import assert_resume_is_exact, final_state, ok
from vdm_jax import configuration
from vdm_jax.train.context_pool import ContextPool, ContextPoolError, own_context_examples, save_pool

T, R = 4, 8
TINY = ["data.num_frames=4", "data.resolution=8", "model.base_channels=8", "model.channel_mults=(1,)"]
TINY += ["model.attn_resolutions=(8,)", "model.head_dim=8", "model.emb_dim=16", "model.frame_conditioning=True"]


def config(*extra: str):
    return configuration.from_config_dict(configuration.load_config_file("configs/default.py", [*TINY, *extra]))


def pool_file(tmp_path, n: int = 5, t: int = T, r: int = R, known: int = 2) -> str:
    video = np.random.default_rng(0).uniform(-1, 1, (n, t, r, r, 3)).astype(np.float32)
    video += np.arange(n, dtype=np.float32)[:, None, None, None, None] * 10  # Row i is recognisable by its offset.
    mask = np.zeros((n, t), np.float32)
    mask[:, :known] = 1
    path = str(tmp_path / "pool.npz")
    save_pool(path, video, mask)
    return path


def local_batch(b: int = 8) -> dict[str, np.ndarray]:
    return {"video": np.full((b, T, R, R, 3), -5.0, np.float32), "segment_ids": np.zeros((b, T), np.int32)}


def test_mix_replaces_the_last_rows_with_pool_examples_reproducibly(tmp_path):
    pool = ContextPool(pool_file(tmp_path), config(), fraction=0.5, seed=3)
    out = pool.mix(local_batch(), step=7)
    np.testing.assert_array_equal(out["video"][:4], -5.0)  # The dataset's rows are kept as they were.
    rows = np.round(out["video"][4:].mean(axis=(1, 2, 3, 4)) / 10).astype(int)  # Which pool example each row is.
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(out["video"][4 + i], pool.video[row])
    np.testing.assert_array_equal(out["use_known_mask"], [False] * 4 + [True] * 4)
    np.testing.assert_array_equal(out["known_mask"][:4], 0)
    np.testing.assert_array_equal(out["known_mask"][4:], [[1, 1, 0, 0]] * 4)
    np.testing.assert_array_equal(out["segment_ids"], 0)
    again = pool.mix(local_batch(), step=7)  # The draw is a function of (seed, step): a resumed run sees the same.
    np.testing.assert_array_equal(again["video"], out["video"])
    draws = {tuple(np.round(pool.mix(local_batch(), s)["video"][4:].mean(axis=(1, 2, 3, 4)) / 10)) for s in range(20)}
    assert len(draws) > 10  # ... and differs from step to step.
    assert (
        ContextPool(pool_file(tmp_path), config(), fraction=0.25, seed=3).mix(local_batch(), 0)["use_known_mask"].sum()
        == 2
    )


@pytest.mark.parametrize(
    ("kwargs", "cfg_extra", "message"),
    [
        (dict(t=5), (), "the config trains"),
        (dict(known=T), (), "at least one unknown frame"),
        (dict(), ("model.frame_conditioning=False",), "frame_conditioning=True"),
        (dict(), ("model.num_classes=3",), "unlabelled"),
    ],
)
def test_unusable_pools_are_refused_with_the_reason(tmp_path, kwargs, cfg_extra, message):
    with pytest.raises(ContextPoolError, match=message):
        ContextPool(pool_file(tmp_path, **kwargs), config(*cfg_extra), fraction=0.5, seed=0)
    with pytest.raises(ContextPoolError, match="own_context.py"):
        ContextPool(str(tmp_path / "missing.npz"), config(), fraction=0.5, seed=0)


def test_a_pool_that_would_fill_no_row_or_holds_no_example_is_refused(tmp_path):
    """round(fraction x local batch) = 0 (0.5 of 1 row, 0.1 of 4) would log the fraction and never train on the
    pool; an empty pool would fail at the first step's draw. Both are refused when the pool is opened, before any
    step; the smallest batches that do take a row still work."""
    path = pool_file(tmp_path)
    for fraction, batch in [(0.5, 1), (0.1, 4), (0.1, 5)]:
        with pytest.raises(ContextPoolError, match=rf"context_pool_fraction={fraction} of a process-local batch of "):
            ContextPool(path, config(f"train.batch_size={batch}"), fraction=fraction, seed=0)
    for fraction, batch, rows in [(0.5, 3, 2), (0.1, 6, 1), (1.0, 1, 1)]:
        pool = ContextPool(path, config(f"train.batch_size={batch}"), fraction=fraction, seed=0)
        assert pool.rows == rows
        assert pool.mix(local_batch(batch), step=0)["use_known_mask"].sum() == rows
    empty = str(tmp_path / "empty.npz")
    save_pool(empty, np.zeros((0, T, R, R, 3), np.float32), np.zeros((0, T), np.float32))
    with pytest.raises(ContextPoolError, match="holds no example"):
        ContextPool(empty, config(), fraction=0.5, seed=0)


def test_own_context_pool_builder_checks_overlap_before_sampling(monkeypatch, tmp_path):
    """benchmarks/own_context.py: --overlap outside 0 < overlap < T exits with the reason before any clip is read
    or sampled, on both paths (--renoise_from too: overlap 0 wrote examples with no known frame)."""
    from benchmarks import own_context
    from vdm_jax import data as vdm_data

    def no_data(cfg):
        raise AssertionError("read the dataset before checking the arguments")

    monkeypatch.setattr(vdm_data, "prepare", no_data)
    (tmp_path / "config.json").write_text(config().to_json())
    base = ["--workdir", str(tmp_path), "--out", str(tmp_path / "pool.npz")]
    for extra in (
        ["--overlap=0"],
        [f"--overlap={T}"],
        ["--overlap=0", "--renoise_from=0.5"],
        ["--overlap=4", "--renoise_from=0.5"],
    ):
        with pytest.raises(SystemExit, match=r"--overlap=\d+: each example needs a known frame"):
            own_context.main([*base, *extra])
    with pytest.raises(SystemExit, match=r"--renoise_from=1.5 must be in \(0, 1\)"):
        own_context.main([*base, "--overlap=2", "--renoise_from=1.5"])
    with pytest.raises(SystemExit, match=r"--k=4: the first chunk"):
        own_context.main([*base, "--overlap=2", "--k=4"])

    class Model:
        cfg = config()

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before checking the overlap")

    from vdm_jax.train import conditional

    monkeypatch.setattr(conditional, "sample_with_known", no_sampling)
    clips = np.zeros((2, T, R, R, 3), np.float32)
    with pytest.raises(SystemExit, match="--overlap=0"):
        own_context.renoised_examples(Model(), jax.random.key(0), clips, 0.5, 0)


def test_own_context_examples_are_the_second_chunk_of_an_extension(monkeypatch):
    """The example window starts at T - overlap: the model's frames there are known, the real clip's after them are
    the targets (a stand-in for `predict` marks which frames it generated)."""

    class Model:
        cfg = config()

    seen = {}

    def fake_predict(model, rng, context):
        seen["context"] = context
        out = np.full((context.shape[0], T, R, R, 3), 7.0, np.float32)  # "generated"
        out[:, : context.shape[1]] = context
        return out

    from vdm_jax.train import conditional

    monkeypatch.setattr(conditional, "predict", fake_predict)
    clips = np.arange(3 * 6, dtype=np.float32).reshape(3, 6, 1, 1, 1) * np.ones((1, 1, R, R, 3), np.float32)
    video, mask = own_context_examples(Model(), jax.random.key(0), clips, num_cond_frames=1, overlap=2)
    np.testing.assert_array_equal(seen["context"], clips[:, :1])
    np.testing.assert_array_equal(video[:, :2], 7.0)  # frames 2, 3 of the prediction
    np.testing.assert_array_equal(video[:, 2:], clips[:, 4:6])  # the real frames that follow them
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0]] * 3)
    with pytest.raises(ValueError, match="2T - overlap"):
        own_context_examples(Model(), jax.random.key(0), clips[:, :5], num_cond_frames=1, overlap=2)


def test_train_step_conditions_pool_rows_on_their_own_frames(monkeypatch):
    """Rows flagged `use_known_mask` give the network their known frames and take no loss on them; the other rows
    keep their random masks (a spy in place of the diffusion loss sees what the step hands it)."""
    from vdm_jax.train import state as train_state
    from vdm_jax.train import step as train_step
    from vdm_jax.train.compile import new_model

    seen = {}
    real_loss = train_step.diffusion_loss

    def spy(denoise_fn, x, rng, cfg, **kw):
        seen.update(x=x, **kw)
        return real_loss(denoise_fn, x, rng, cfg, **kw)

    monkeypatch.setattr(train_step, "diffusion_loss", spy)
    cfg = config()
    tx = train_state.make_optimizer(cfg.train)
    graphdef, state = train_state.init_state(new_model(cfg), tx)
    fn = train_step.make_train_step(graphdef, cfg, tx, train_state.learning_rate_schedule(cfg.train))
    video = jax.random.uniform(jax.random.key(1), (8, T, R, R, 3), minval=-1, maxval=1)
    given = np.zeros((8, T), np.float32)
    given[4:, :3] = 1.0  # 3 known frames: a mask the random draw gives with probability 1/9 per row.
    use = np.arange(8) >= 4

    @jax.jit
    def masks(batch):  # The spy's values are tracers of this jit (they do not depend on the parameters): return them.
        fn(state, batch, jax.random.key(2))
        return seen["cond"]["known_mask"], seen["cond"]["known_frames"], seen["loss_mask"]

    random_mask, _, _ = masks({"video": video})
    mask, known, loss_mask = masks({"video": video, "known_mask": given, "use_known_mask": use})
    np.testing.assert_array_equal(mask[4:], given[4:])
    np.testing.assert_array_equal(mask[:4], random_mask[:4])  # Same rng: the dataset's rows draw what they drew.
    np.testing.assert_array_equal(known, np.asarray(video) * mask[:, :, None, None, None])
    np.testing.assert_array_equal(np.asarray(loss_mask), 1.0 - mask)


def test_pooled_run_resumes_exactly(tmp_path, moving_shapes_dir):
    """A run with a context pool, stopped after 2 steps and resumed to 4, ends where an uninterrupted one does."""
    rng = np.random.default_rng(1)
    video = rng.uniform(-1, 1, (6, 4, 16, 16, 3)).astype(np.float32)
    mask = np.zeros((6, 4), np.float32)
    mask[:, :2] = 1
    path = str(tmp_path / "pool.npz")
    save_pool(path, video, mask)
    common = (*runs.TINY, "--config.model.frame_conditioning=True", f"--config.train.context_pool={path}")
    straight = assert_resume_is_exact(tmp_path, common, moving_shapes_dir)
    # ... and the pool changed the run: the same run without it ends elsewhere.
    ok(runs.run(tmp_path / "plain", *common[:-1], "--config.train.num_steps=4", data_dir=moving_shapes_dir))
    plain = final_state(tmp_path / "plain")
    diff = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(jax.tree.leaves(plain["params"]), jax.tree.leaves(straight["params"]), strict=True)
    )
    assert diff > 1e-4
