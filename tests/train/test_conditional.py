"""Conditional generation: prediction, extension, keyframes then interpolation, super-resolution, and the CLI's context.

Chunking logic is checked against a recording fake sampler; the real path runs a tiny random U-Net (plumbing and
exact reproduction of conditioning frames); observation guidance is checked on an exact Gaussian oracle whose
conditional given the low-resolution view is known in closed form.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vdm_jax import configuration
from vdm_jax.diffusion import DiffusionConfig, SamplerConfig, from_x, log_alpha_sigma_sq
from vdm_jax.train import conditional, keyframes
from vdm_jax.train.compile import new_model
from vdm_jax.train.super_resolution import avgpool_frames, sample_observed, super_resolve, upsample_nearest

TINY = [
    "data.num_frames=4",
    "data.resolution=8",
    "model.base_channels=8",
    "model.channel_mults=(1,)",
    "model.attn_resolutions=(8,)",
    "model.head_dim=8",
    "model.emb_dim=16",
    "sampler.num_steps=3",
]


def tiny_model(*overrides: str) -> conditional.SamplingModel:
    """A random U-Net (its zero-initialised output layer perturbed, so the output depends on the input)."""
    cfg = configuration.from_config_dict(configuration.load_config_file("configs/default.py", [*TINY, *overrides]))
    graphdef, params, rest = nnx.split(new_model(cfg), nnx.Param, ...)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    noisy = [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    params = jax.tree.unflatten(tree, noisy)
    return conditional.SamplingModel(graphdef, params, rest, cfg)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def context_frames(n: int, k: int, resolution: int = 8) -> jax.Array:
    """[n, k, R, R, 3] distinct constant frames in [-1, 1]."""
    values = jnp.linspace(-0.9, 0.9, n * k).reshape(n, k, 1, 1, 1)
    return jnp.broadcast_to(values, (n, k, resolution, resolution, 3))


# ---------------------------------------------------------------- the real path on a tiny model
@pytest.mark.parametrize("method", ["replacement", "reconstruction"])
def test_prediction_reproduces_the_context_exactly(model, method):
    ctx = context_frames(2, 2)
    out = conditional.predict(model, jax.random.key(1), ctx, method=method, recon_weight=2.0)
    assert out.shape == (2, 4, 8, 8, 3)
    np.testing.assert_array_equal(out[:, :2], ctx)
    assert np.all(np.isfinite(out)) and np.all(np.abs(out[:, 2:]) <= 1.05)
    other = conditional.predict(model, jax.random.key(1), -ctx, method=method, recon_weight=2.0)
    assert not np.allclose(other[:, 2:], out[:, 2:])  # the continuation depends on the context


def test_reconstruction_guidance_is_replacement_plus_its_gradient_term(model):
    """Same key: reconstruction with w = 2 moves the continuation away from replacement (mean |diff| 0.28 measured),
    w -> 0 gives replacement back (1e-6 measured), and a weight function of constant value 2 is the constant."""
    ctx, key = context_frames(2, 2), jax.random.key(1)
    replaced = conditional.predict(model, key, ctx, method="replacement")
    guided = conditional.predict(model, key, ctx, method="reconstruction", recon_weight=2.0)
    assert float(jnp.mean(jnp.abs(guided - replaced)[:, 2:])) > 0.05
    faint = conditional.predict(model, key, ctx, method="reconstruction", recon_weight=1e-6)
    np.testing.assert_allclose(faint, replaced, atol=1e-4)
    as_fn = conditional.predict(model, key, ctx, method="reconstruction", recon_weight=lambda logsnr: 2.0 + 0 * logsnr)
    np.testing.assert_allclose(as_fn, guided, atol=1e-6)


def test_frame_conditioned_model_takes_known_frames_as_inputs():
    fc = tiny_model("model.frame_conditioning=True")
    assert conditional.resolve_method(fc.cfg, "auto") == "network"
    ctx = context_frames(2, 1)
    out = conditional.predict(fc, jax.random.key(2), ctx)  # the U-Net refuses a cond without known frames
    np.testing.assert_array_equal(out[:, :1], ctx)
    # make_sample_fn (training-time samples) gives such a model an all-unknown mask when nothing is known.
    from vdm_jax.train.sampling import generate, make_sample_fn

    videos = generate(
        make_sample_fn(fc.graphdef, fc.cfg, num_frames=4), fc.params, fc.rest, jax.random.key(0), num=1, num_frames=4
    )
    assert videos.shape == (1, 4, 8, 8, 3) and np.all(np.isfinite(videos))


@pytest.mark.parametrize("method", ["replacement", "reconstruction"])
def test_frame_conditioned_model_sampled_by_guidance_is_told_no_frame(method):
    """Replacement and reconstruction guidance work with any model: a frame-conditioned one is run in its
    unconditional mode (no frame known), where frame guidance has nothing to compare and is skipped."""
    fc = tiny_model("model.frame_conditioning=True")
    ctx = context_frames(2, 1)
    out = conditional.predict(fc, jax.random.key(2), ctx, method=method, recon_weight=2.0)
    np.testing.assert_array_equal(out[:, :1], ctx)
    assert np.all(np.isfinite(out))
    guided = conditional.predict(with_frame_guidance(fc, 3.0), jax.random.key(2), ctx, method=method, recon_weight=2.0)
    np.testing.assert_array_equal(guided, out)
    network = conditional.predict(fc, jax.random.key(2), ctx, method="network")
    assert not np.allclose(network[:, 1:], out[:, 1:], atol=1e-3)


def test_guidance_with_precomputed_text_given_without_a_mask():
    """`text_mask` is optional for precomputed text embeddings; class-free guidance's null branch needs one, so the
    samplers complete the cond with an all-valid mask (what the model assumes without one)."""
    from vdm_jax.train.sampling import generate, make_sample_fn

    m = tiny_model("model.text_conditioning=precomputed", "model.text_embed_dim=16", "sampler.guidance_weight=2.0")
    emb = jax.random.normal(jax.random.key(3), (2, 5, 16))
    ctx = context_frames(2, 1)
    out = conditional.predict(m, jax.random.key(2), ctx, cond={"text_embeddings": emb})
    masked = conditional.predict(
        m, jax.random.key(2), ctx, cond={"text_embeddings": emb, "text_mask": jnp.ones((2, 5), bool)}
    )
    np.testing.assert_array_equal(out, masked)
    fn = make_sample_fn(m.graphdef, m.cfg, num_frames=4)
    videos = generate(fn, m.params, m.rest, jax.random.key(0), num=2, num_frames=4, cond={"text_embeddings": emb})
    assert videos.shape == (2, 4, 8, 8, 3) and np.all(np.isfinite(videos))


def test_keyframe_run_of_another_text_width_is_refused(tmp_path):
    """With precomputed text both stages are given the same embeddings: their width must agree."""
    frames = tiny_model("model.text_conditioning=precomputed", "model.text_embed_dim=16").cfg
    key = dataclasses.replace(frames, data=dataclasses.replace(frames.data, frame_stride=2))
    (tmp_path / "config.json").write_text(key.to_json())
    assert keyframes.keyframe_config(frames, str(tmp_path), 2).data.frame_stride == 2
    wide = dataclasses.replace(key, model=dataclasses.replace(key.model, text_embed_dim=32))
    (tmp_path / "config.json").write_text(wide.to_json())
    with pytest.raises(configuration.ConfigError, match="model.text_embed_dim 16 here, 32 there"):
        keyframes.keyframe_config(frames, str(tmp_path), 2)


def with_frame_guidance(m: conditional.SamplingModel, w: float) -> conditional.SamplingModel:
    return m._replace(
        cfg=dataclasses.replace(m.cfg, sampler=dataclasses.replace(m.cfg.sampler, frame_guidance_weight=w))
    )


def test_frame_guidance_on_a_frame_conditioned_model_keeps_the_context_and_moves_the_rest(model):
    fc = tiny_model("model.frame_conditioning=True")
    ctx = context_frames(2, 1)
    plain = conditional.predict(fc, jax.random.key(2), ctx)
    guided = conditional.predict(with_frame_guidance(fc, 3.0), jax.random.key(2), ctx)
    np.testing.assert_array_equal(guided[:, :1], ctx)
    assert np.all(np.isfinite(guided)) and not np.allclose(guided[:, 1:], plain[:, 1:], atol=1e-3)
    with pytest.raises(ValueError, match="frame_conditioning=True"):  # an unconditional model has no known-frame input
        conditional.predict(with_frame_guidance(model, 3.0), jax.random.key(2), ctx)


def test_sdedit_redraws_from_the_noised_videos(model):
    """start / start_time: from a small t0 the sample stays at the start (little noise, few steps); from a large t0
    it departs; known frames still hold; a start of the wrong shape is refused."""
    start = jnp.broadcast_to(jnp.linspace(-0.8, 0.8, 4).reshape(1, 4, 1, 1, 1), (2, 4, 8, 8, 3))
    none_known, first = jnp.zeros((2, 4)), jnp.zeros((2, 4)).at[:, 0].set(1.0)
    draw = lambda t0, mask: conditional.sample_with_known(  # noqa: E731
        model, jax.random.key(3), start * 0.5, mask, start=start, start_time=t0
    )
    near, far = draw(0.02, none_known), draw(0.9, none_known)
    assert np.abs(near - start).mean() < 0.05 and np.abs(far - start).mean() > 0.2
    np.testing.assert_array_equal(draw(0.5, first)[:, 0], start[:, 0] * 0.5)  # the known frame, not the start's
    with pytest.raises(ValueError, match="start must be"):
        conditional.sample_with_known(model, jax.random.key(3), start, none_known, start=start[:, :2], start_time=0.5)


def test_method_errors_name_the_fix(model):
    with pytest.raises(ValueError, match="frame_conditioning=True"):
        conditional.resolve_method(model.cfg, "network")
    with pytest.raises(ValueError, match="recon_guidance_weight > 0"):
        conditional.resolve_method(model.cfg, "reconstruction")
    assert conditional.resolve_method(model.cfg, "auto") == "replacement"
    assert conditional.resolve_method(model.cfg, "auto", recon_weight=50.0) == "reconstruction"
    with pytest.raises(ValueError, match=r"\[N, T, 8, 8, 3\]"):
        conditional.predict(model, jax.random.key(0), jnp.zeros((1, 1, 16, 16, 3)))
    with pytest.raises(ValueError, match="context has 4 frames"):
        conditional.extend(model, jax.random.key(0), context_frames(1, 4), 8)


def test_joint_sampling_of_one_window_is_plain_prediction(model):
    """A video as long as the model's T frames is one window: the co-denoiser is the model, bit for bit, so joint
    sampling equals prediction's first chunk with the same key (unconditional and frame-conditioned models)."""
    for m in (model, with_frame_guidance(tiny_model("model.frame_conditioning=True"), 2.0)):
        ctx = context_frames(2, 2)
        joint = conditional.extend_jointly(m, jax.random.fold_in(jax.random.key(4), 0), ctx, 4, hop=2)
        np.testing.assert_array_equal(joint, conditional.predict(m, jax.random.key(4), ctx))


def test_joint_sampling_of_a_long_video_keeps_the_context_and_depends_on_it(model):
    fc = with_frame_guidance(tiny_model("model.frame_conditioning=True"), 2.0)
    for m in (model, fc):
        ctx = context_frames(2, 2)
        out = np.asarray(conditional.extend_jointly(m, jax.random.key(5), ctx, 10))  # hop 2: windows at 0, 2, 4, 6
        assert out.shape == (2, 10, 8, 8, 3) and np.all(np.isfinite(out))
        np.testing.assert_array_equal(out[:, :2], ctx)
        other = np.asarray(conditional.extend_jointly(m, jax.random.key(5), -ctx, 10))
        assert not np.allclose(other[:, 2:4], out[:, 2:4], atol=1e-4)  # the first window reads the context
    start = jnp.broadcast_to(jnp.linspace(-0.8, 0.8, 10).reshape(1, 10, 1, 1, 1), (2, 10, 8, 8, 3))
    near = conditional.extend_jointly(model, jax.random.key(5), ctx, 10, start=start, start_time=0.02)
    np.testing.assert_array_equal(near[:, :2], ctx)  # SDEdit of a whole video: the context still holds,
    assert np.abs(near[:, 2:] - start[:, 2:]).mean() < 0.05  # and from a small t0 the rest stays near the start
    with pytest.raises(ValueError, match="start must be"):
        conditional.extend_jointly(model, jax.random.key(5), ctx, 10, start=start[:, :8], start_time=0.5)
    with pytest.raises(ValueError, match="context has 4 frames"):
        conditional.extend_jointly(model, jax.random.key(0), context_frames(1, 4), 8)
    with pytest.raises(ValueError, match="hop=5 must be in 1"):
        conditional.extend_jointly(model, jax.random.key(0), context_frames(1, 1), 8, hop=5)
    with pytest.raises(ValueError, match="total_frames=3 must be >="):
        conditional.extend_jointly(model, jax.random.key(0), context_frames(1, 1), 3)


# ---------------------------------------------------------------- chunking, against a recording fake sampler
class Calls(list):
    def __init__(self):
        super().__init__()
        self.keys = []


@pytest.fixture
def recorder(monkeypatch):
    """Replaces the sampler by one that keeps known frames and fills unknown ones with the call number (1, 2, ...);
    `calls.keys` holds each call's random key."""
    calls = Calls()

    def fake(model, rng, frames, mask, **kwargs):
        calls.append((np.asarray(frames), np.asarray(mask)))
        calls.keys.append(tuple(np.asarray(jax.random.key_data(rng)).ravel().tolist()))
        fill = jnp.full(frames.shape, float(len(calls)))
        return jnp.where(jnp.asarray(mask)[:, :, None, None, None] > 0, frames, fill)

    monkeypatch.setattr(conditional, "sample_with_known", fake)
    return calls


def test_extend_conditions_each_chunk_on_the_last_frames(model, recorder):
    ctx = context_frames(2, 1)
    out = np.asarray(conditional.extend(model, jax.random.key(0), ctx, 11, overlap=2))
    assert out.shape == (2, 11, 8, 8, 3)
    np.testing.assert_array_equal(out[:, 0], ctx[:, 0])
    # First chunk: 1 context + 3 new frames; then 2 new frames per chunk (4 - overlap): 4, 6, 8, 10, 12 -> 5 calls.
    assert len(recorder) == 5 and len(set(recorder.keys)) == 5  # each chunk draws its own noise
    np.testing.assert_array_equal(recorder[0][1], [[1, 0, 0, 0]] * 2)
    made_by = out[0, :, 0, 0, 0]
    np.testing.assert_array_equal(made_by[1:], [1, 1, 1, 2, 2, 3, 3, 4, 4, 5])
    for i, (frames, mask) in enumerate(recorder[1:], start=1):
        np.testing.assert_array_equal(mask, [[1, 1, 0, 0]] * 2)
        end = 4 + 2 * (i - 1)  # frames generated before call i
        np.testing.assert_array_equal(frames[:, :2], out[:, end - 2 : end])


def test_extend_with_memory_gives_each_chunk_far_frames_at_their_times(monkeypatch):
    """memory = 2, overlap = 1, T = 6: each later chunk holds frames memory_frames(start) and the last frame, known,
    at their times in the video. The stand-in sampler continues a ramp from the frames' times (unknown frame j gets
    the last known value + 0.01 x (times[j] - its time)), so the video is one unbroken ramp only when every chunk's
    known frames and times are the video's own."""
    m = tiny_model("model.frame_conditioning=True", "data.long_range_prob=0.5", "data.num_frames=6")
    calls = []

    def fake(model, rng, frames, mask, frame_times=None, **kwargs):
        times = np.tile(np.arange(frames.shape[1]), (frames.shape[0], 1)) if frame_times is None else frame_times
        calls.append((np.asarray(frames), np.asarray(mask), np.asarray(times)))
        last = int(np.flatnonzero(np.asarray(mask)[0])[-1])
        step = (jnp.asarray(times) - jnp.asarray(times)[:, last : last + 1]) * 0.01
        fill = frames[:, last : last + 1] + step[:, :, None, None, None]
        return jnp.where(jnp.asarray(mask)[:, :, None, None, None] > 0, frames, fill)

    monkeypatch.setattr(conditional, "sample_with_known", fake)
    ramp = -0.9 + 0.01 * jnp.arange(2.0)
    ctx = jnp.broadcast_to(ramp[None, :, None, None, None], (2, 2, 8, 8, 3))
    out = np.asarray(conditional.extend(m, jax.random.key(0), ctx, 17, overlap=1, memory=2))
    np.testing.assert_allclose(out[:, :, 0, 0, 0], np.tile(-0.9 + 0.01 * np.arange(17), (2, 1)), atol=1e-6)
    # First chunk: 2 context + 4 new; then 3 new per chunk (6 - 2 - 1): 6, 9, 12, 15, 18 frames -> 5 calls.
    assert len(calls) == 5
    for i, (frames, mask, times) in enumerate(calls[1:], start=1):
        start = 6 + 3 * (i - 1) - 1  # the frame the chunk overlaps
        far = conditional.memory_frames(start, 2)
        np.testing.assert_array_equal(far, [0, start // 2])
        np.testing.assert_array_equal(times[0], [*far, *range(start, start + 4)])
        np.testing.assert_array_equal(mask[0], [1, 1, 1, 0, 0, 0])
        np.testing.assert_array_equal(frames[:, :3], out[:, [*far, start]])
    with pytest.raises(ValueError, match="never seen far-back frames"):
        conditional.extend(tiny_model("model.frame_conditioning=True"), jax.random.key(0), ctx, 8, memory=1)
    with pytest.raises(ValueError, match="memory=4 with overlap=2"):
        conditional.extend(m, jax.random.key(0), ctx, 8, overlap=2, memory=4)


def test_memory_beyond_the_far_frames_training_shows_is_refused():
    """Long-range windows hold m ~ U{1 .. min(3, T - 2)} far frames (vdm_jax.data.pipeline.long_range_window): a
    chunk with more is a window the model never saw, refused before any sampling; up to that many is accepted."""
    for t, most in [(6, 3), (8, 3), (4, 2)]:
        overrides = [*TINY, "model.frame_conditioning=True", "data.long_range_prob=0.5", f"data.num_frames={t}"]
        cfg = configuration.from_config_dict(configuration.load_config_file("configs/default.py", overrides))
        assert conditional.check_memory(cfg, most, 1, t) is None
        if most + 2 < t:  # room for one more far frame besides one overlap frame and one new frame
            with pytest.raises(ValueError, match=rf"memory={most + 1}: .* at most {most} far-back frames"):
                conditional.check_memory(cfg, most + 1, 1, t)
    m = tiny_model("model.frame_conditioning=True", "data.long_range_prob=0.5", "data.num_frames=6")
    with pytest.raises(ValueError, match="give memory <= 3"):
        conditional.extend(m, jax.random.key(0), jnp.zeros((1, 1, 8, 8, 3)), 12, overlap=1, memory=4)


def test_frame_times_reach_the_network(model):
    """Consecutive frame_times are the default; spreading the same frames apart in time changes the samples."""
    fc = tiny_model("model.frame_conditioning=True", "data.long_range_prob=0.5")
    frames, mask = jnp.zeros((2, 4, 8, 8, 3)).at[:, :2].set(context_frames(2, 2)), jnp.array([[1.0, 1, 0, 0]] * 2)
    draw = lambda times=None: conditional.sample_with_known(  # noqa: E731
        fc, jax.random.key(3), frames, mask, frame_times=times
    )
    plain, consecutive, far = draw(), draw(np.tile(np.arange(4), (2, 1))), draw(np.array([[0, 20, 21, 22]] * 2))
    np.testing.assert_allclose(consecutive, plain, atol=1e-5)
    assert np.abs(np.asarray(far - plain)).max() > 1e-3
    with pytest.raises(ValueError, match="frame_times must be integer"):
        draw(np.zeros((2, 3), np.int32))


def test_extend_from_nothing_samples_the_first_chunk_unconditionally(model, recorder):
    out = np.asarray(conditional.extend(model, jax.random.key(0), jnp.zeros((2, 0, 8, 8, 3)), 8))
    assert out.shape == (2, 8, 8, 8, 3)
    masks = [mask for _, mask in recorder]
    np.testing.assert_array_equal(masks, [[[0, 0, 0, 0]] * 2, [[1, 1, 0, 0]] * 2, [[1, 1, 0, 0]] * 2])  # overlap T/2
    np.testing.assert_array_equal(out[0, :, 0, 0, 0], [1, 1, 1, 1, 2, 2, 3, 3])


def test_extend_keeps_each_videos_likeliest_candidate(model, monkeypatch):
    """candidates = 3: each chunk is one batch of 3·N samples, and per video the one of lowest chunk_nll is kept (a
    stand-in score here: the mean value of the sample's unknown frames), chunk after chunk."""
    calls, scored = [], []

    def fake_sampler(model, rng, frames, mask, **kwargs):  # unknown frames: a value per row and call
        calls.append(np.asarray(mask))
        rows = jnp.asarray(np.random.default_rng(len(calls)).uniform(-1, 1, frames.shape[0]), jnp.float32)
        fill = jnp.broadcast_to(rows[:, None, None, None, None], frames.shape)
        return jnp.where(jnp.asarray(mask)[:, :, None, None, None] > 0, frames, fill)

    def fake_nll(model, rng, frames, mask, **kwargs):
        scored.append(np.asarray(frames))
        unknown = 1.0 - jnp.asarray(mask)
        return jnp.sum(jnp.mean(frames, axis=(2, 3, 4)) * unknown, 1) / jnp.sum(unknown, 1)

    monkeypatch.setattr(conditional, "sample_with_known", fake_sampler)
    monkeypatch.setattr(conditional, "chunk_nll", fake_nll)
    ctx = context_frames(2, 2)
    out = np.asarray(conditional.extend(model, jax.random.key(0), ctx, 6, overlap=2, candidates=3))
    np.testing.assert_array_equal(out[:, :2], ctx)
    assert [m.shape for m in calls] == [(6, 4), (6, 4)]  # two chunks, 3 candidates x 2 videos each
    for chunk, (frames, new) in enumerate(zip(scored, [slice(2, 4), slice(4, 6)], strict=True)):
        candidates = frames.reshape(3, 2, *frames.shape[1:])[:, :, 2:]  # [C, N, new frames, ...]
        best = candidates.mean(axis=(2, 3, 4, 5)).argmin(0)
        np.testing.assert_array_equal(out[:, new], candidates[best, [0, 1]], err_msg=f"chunk {chunk}")
    with pytest.raises(ValueError, match="candidates=0"):
        conditional.extend(model, jax.random.key(0), ctx, 6, candidates=0)


def test_chunk_nll_scores_each_video_on_its_own(model):
    """Shared noise per level: a video's score does not depend on the others in the batch. A frame-conditioned model
    scores the unknown frames given the known ones (the mask changes the score); an unconditional model the window."""
    fc = tiny_model("model.frame_conditioning=True")
    videos = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (3, 4, 8, 8, 3)), jnp.float32)
    first = jnp.zeros((3, 4)).at[:, :2].set(1.0)
    key = jax.random.key(5)
    for m in (fc, model):
        together = conditional.chunk_nll(m, key, videos, first)
        alone = jnp.concatenate([conditional.chunk_nll(m, key, videos[i : i + 1], first[i : i + 1]) for i in range(3)])
        np.testing.assert_allclose(together, alone, rtol=1e-4)
        assert together.shape == (3,) and np.all(np.isfinite(together))
    none = jnp.zeros((3, 4))
    assert not np.allclose(conditional.chunk_nll(fc, key, videos, none), conditional.chunk_nll(fc, key, videos, first))
    np.testing.assert_allclose(
        conditional.chunk_nll(model, key, videos, none), conditional.chunk_nll(model, key, videos, first), rtol=1e-6
    )


@pytest.mark.parametrize("total, chunk, stride", [(16, 4, 3), (16, 8, 4), (13, 5, 2), (9, 9, 8), (30, 16, 4)])
def test_interpolation_windows_cover_every_frame_between_its_keyframes(total, chunk, stride):
    windows = keyframes.interpolation_windows(total, chunk, stride)
    written = np.zeros(total, int)
    keys = set(keyframes.keyframe_indices(total, stride).tolist())
    for start, lo, hi in windows:
        assert 0 <= start <= lo < hi <= total and start + chunk <= total
        for p in range(lo, hi):
            if p in keys:
                continue
            written[p] += 1
            left = stride * (p // stride)
            right = left + stride
            assert start <= left  # the keyframe before p is in the window
            assert right >= total or right < start + chunk  # and the one after, where it exists
    np.testing.assert_array_equal(written, [0 if p in keys else 1 for p in range(total)])


def test_keyframes_then_interpolation(model, recorder):
    ctx = context_frames(1, 2)
    out = np.asarray(keyframes.keyframes_then_interpolate(model, jax.random.key(0), ctx, 12, stride=3))
    assert out.shape == (1, 12, 8, 8, 3)
    np.testing.assert_array_equal(out[:, :2], ctx)
    # Keyframes 0, 3, 6, 9 from one chunk given keyframe 0 (the context frame on a keyframe position) ...
    np.testing.assert_array_equal(recorder[0][1], [[1, 0, 0, 0]])
    np.testing.assert_array_equal(out[0, [3, 6, 9], 0, 0, 0], 1.0)
    # ... then the others in one batch of windows, each knowing its keyframes and context frames.
    frames, mask = recorder[-1]
    windows = keyframes.interpolation_windows(12, 4, 3)
    assert len(recorder) == 2 and frames.shape[0] == len(windows)
    for j, (start, _, _) in enumerate(windows):
        want = [float(p % 3 == 0 or p < 2) for p in range(start, start + 4)]
        np.testing.assert_array_equal(mask[j], want)
    assert set(out[0, [2, 4, 5, 7, 8, 10, 11], 0, 0, 0]) == {2.0}


def test_keyframes_lead_in_gives_the_keyframe_model_two_keyframes(model, recorder):
    """key_context = 2 from 2 context frames at stride 3: the frame model first continues to frame 3, so the keyframe
    chunk knows keyframes 0 and 3 (where without it, it knows keyframe 0 alone)."""
    ctx = context_frames(1, 2)
    out = np.asarray(keyframes.keyframes_then_interpolate(model, jax.random.key(0), ctx, 12, stride=3, key_context=2))
    np.testing.assert_array_equal(out[:, :2], ctx)
    assert len(recorder) == 3 and len(set(recorder.keys)) == 3  # lead-in, keyframes, windows: their own noise
    np.testing.assert_array_equal(recorder[0][1], [[1, 1, 0, 0]])  # lead-in: frames 2 and 3 from frames 0 and 1
    frames, mask = recorder[1]  # keyframes: 0 and 3 known, 6 and 9 new
    np.testing.assert_array_equal(mask, [[1, 1, 0, 0]])
    np.testing.assert_array_equal(frames[:, :2], out[:, [0, 3]])
    np.testing.assert_array_equal(out[0, [2, 3, 6, 9], 0, 0, 0], [1, 1, 2, 2])
    frames, mask = recorder[2]  # the windows know the lead-in frames as well as the keyframes
    for j, (start, _, _) in enumerate(keyframes.interpolation_windows(12, 4, 3)):
        np.testing.assert_array_equal(mask[j], [float(p % 3 == 0 or p < 4) for p in range(start, start + 4)])
    assert set(out[0, [4, 5, 7, 8, 10, 11], 0, 0, 0]) == {3.0}
    with pytest.raises(ValueError, match="key_context=5"):
        keyframes.keyframes_then_interpolate(model, jax.random.key(0), ctx, 12, stride=3, key_context=5)
    with pytest.raises(ValueError, match="would be given 4 keyframes"):  # the 4-frame model must have one to make
        keyframes.keyframes_then_interpolate(model, jax.random.key(0), ctx, 12, stride=3, key_context=4)


def test_keyframes_from_nothing(model, recorder):
    """No context and key_context = 0: the keyframes are the first call, from nothing; the windows know them."""
    out = np.asarray(
        keyframes.keyframes_then_interpolate(model, jax.random.key(0), jnp.zeros((1, 0, 8, 8, 3)), 12, 3, key_context=0)
    )
    np.testing.assert_array_equal(recorder[0][1], [[0, 0, 0, 0]])
    assert len(recorder) == 2
    for j, (start, _, _) in enumerate(keyframes.interpolation_windows(12, 4, 3)):
        np.testing.assert_array_equal(recorder[1][1][j], [float(p % 3 == 0) for p in range(start, start + 4)])
    np.testing.assert_array_equal(out[0, :, 0, 0, 0], [1 if p % 3 == 0 else 2 for p in range(12)])


def test_keyframes_pass_conditioning_and_keep_the_likeliest_candidates(model, monkeypatch):
    """`cond` reaches every stage (lead-in, keyframes, windows) tiled as its batch is; with candidates = 2 each stage
    keeps, per video (and window), the candidate of lowest score (a stand-in: the mean of its unknown frames)."""
    calls = []

    def fake_sampler(model, rng, frames, mask, cond=None, **kwargs):  # unknown frames: one value per row and call
        rows = np.random.default_rng(len(calls)).uniform(-1, 1, frames.shape[0]).astype(np.float32)
        calls.append((np.asarray(mask), np.asarray(cond["label"]), rows))
        fill = jnp.broadcast_to(jnp.asarray(rows)[:, None, None, None, None], frames.shape)
        return jnp.where(jnp.asarray(mask)[:, :, None, None, None] > 0, frames, fill)

    def fake_nll(model, rng, frames, mask, cond=None, **kwargs):
        np.testing.assert_array_equal(cond["label"], np.tile(labels, frames.shape[0] // 2))  # scored as sampled
        unknown = 1.0 - jnp.asarray(mask)
        return jnp.sum(jnp.mean(frames, axis=(2, 3, 4)) * unknown, 1) / jnp.sum(unknown, 1)

    monkeypatch.setattr(conditional, "sample_with_known", fake_sampler)
    monkeypatch.setattr(conditional, "chunk_nll", fake_nll)
    ctx, labels = context_frames(2, 2), np.array([3, 5])
    out = np.asarray(
        keyframes.keyframes_then_interpolate(
            model, jax.random.key(0), ctx, 12, 3, key_context=2, cond={"label": labels}, candidates=2
        )
    )
    windows = keyframes.interpolation_windows(12, 4, 3)
    assert [m.shape[0] for m, _, _ in calls] == [4, 4, 2 * 2 * len(windows)]  # candidates x (windows x) videos
    for mask, seen, _ in calls:
        np.testing.assert_array_equal(seen, np.tile(labels, mask.shape[0] // 2))
    best = [rows.reshape(2, -1).min(axis=0) for _, _, rows in calls]  # per video (and window): the lowest candidate
    np.testing.assert_array_equal(out[:, 2, 0, 0, 0], best[0])  # lead-in: frames 2, 3
    np.testing.assert_array_equal(out[:, 6, 0, 0, 0], best[1])  # keyframes 6, 9
    for j, (_, lo, hi) in enumerate(windows):
        gaps = [p for p in range(lo, hi) if p % 3 and p >= 4]
        np.testing.assert_array_equal(out[:, gaps, 0, 0, 0], np.repeat(best[2][2 * j : 2 * j + 2, None], len(gaps), 1))


# ---------------------------------------------------------------- observation guidance on an exact Gaussian oracle
F, A_VAR, B_VAR, N = 2, 0.2, 0.8, 3000  # factor; pixel = block field (var b) + white noise (var a)


def block_gaussian():
    """x [1, 4, 4, 1]: each 2x2 block exchangeable, Cov = a I + b J; blocks independent. Returns (Σ [16, 16], y)."""
    idx = np.arange(16).reshape(4, 4)
    block_of = (idx // 4 // F) * 2 + (idx % 4) // F
    same = block_of.reshape(-1)[:, None] == block_of.reshape(-1)[None]
    cov = A_VAR * np.eye(16) + B_VAR * same
    y = jnp.array([0.9, -0.6, 0.3, 1.2]).reshape(1, 1, 2, 2, 1)
    return cov, y


def oracle_denoise(cov):
    s, u = np.linalg.eigh(cov)
    s, u = jnp.asarray(s, jnp.float32), jnp.asarray(u, jnp.float32)

    def fn(z, logsnr, cond=None):
        alpha = jnp.exp(0.5 * log_alpha_sigma_sq(logsnr)[0])[:, None]
        coef = s[None] / (alpha * (s[None] + jnp.exp(-logsnr)[:, None]))  # E[x | z] = U diag(α s/(α² s + σ²)) Uᵀ z
        x = (coef * (z.reshape(z.shape[0], -1) @ u)) @ u.T
        return from_x(x.reshape(z.shape), z, logsnr, "v")

    return fn


def exact_weight(logsnr):
    """w(λ) = (σ²/α²) / Var((Ax)_j | z_t): Var = s1_t / F², s1 = a + b F² the block-mean eigenvalue."""
    s1 = A_VAR + B_VAR * F**2
    return jnp.exp(-logsnr) * F**2 * (1.0 + jnp.exp(logsnr) * s1) / s1


def observed_draw(weight):
    cov, y = block_gaussian()
    fn = jax.jit(
        lambda k: sample_observed(
            oracle_denoise(cov),
            (N, 1, 4, 4, 1),
            k,
            DiffusionConfig(),
            SamplerConfig(name="ancestral", num_steps=128, clip_x=False),
            resolution=32,
            observe=lambda x: avgpool_frames(x, F),
            observation=jnp.broadcast_to(y, (N, 1, 2, 2, 1)),
            weight=weight,
        )
    )
    return np.asarray(fn(jax.random.key(3)), np.float64).reshape(N, 16), np.asarray(upsample_nearest(y, F)).reshape(16)


def test_observation_guidance_with_exact_weight_samples_the_true_conditional():
    """Given the block means y, each pixel has mean y_block and variance a (1 − 1/F²) (Gaussian conditioning)."""
    x, true_mean = observed_draw(exact_weight)
    true_var = A_VAR * (1 - 1 / F**2)
    assert np.abs(x.mean(0) - true_mean).max() < 4.5 * np.sqrt(true_var / N), (x.mean(0), true_mean)
    np.testing.assert_allclose(x.var(0), true_var, rtol=4.5 * np.sqrt(2 / N))
    block_means = avgpool_frames(jnp.asarray(x.reshape(N, 1, 4, 4, 1)), F)
    assert np.abs(np.asarray(block_means).reshape(N, 4) - true_mean.reshape(4, 4)[::2, ::2].reshape(4)).max() < 0.05


def test_constant_weight_guides_towards_the_observation():
    errors = {}
    for label, w in [("none", 0.0), ("constant F^2", float(F**2))]:
        x, true_mean = observed_draw(w)
        errors[label] = np.abs(x.mean(0) - true_mean).max()
    assert errors["none"] > 0.9  # unguided samples ignore y (mean 0)
    assert errors["constant F^2"] < 0.5 * errors["none"], errors


def test_avgpool_and_upsample_round_trip_and_super_resolve_shapes(model):
    y = jax.random.uniform(jax.random.key(0), (2, 3, 4, 4, 3), minval=-1, maxval=1)
    np.testing.assert_allclose(avgpool_frames(upsample_nearest(y, 2), 2), y, atol=1e-6)
    cfg = dataclasses.replace(model.cfg, sampler=dataclasses.replace(model.cfg.sampler, recon_guidance_weight=4.0))
    out = super_resolve(model._replace(cfg=cfg), jax.random.key(0), y[:, :2])
    assert out.shape == (2, 2, 8, 8, 3) and np.all(np.isfinite(out))
    # The default weight is f² times the known-frames weight (f = 2 here), the like-for-like constant.
    explicit = super_resolve(model._replace(cfg=cfg), jax.random.key(0), y[:, :2], weight=16.0)
    np.testing.assert_array_equal(out, explicit)
    with pytest.raises(ValueError, match="needs a weight > 0"):
        super_resolve(model, jax.random.key(0), y[:, :2])
    with pytest.raises(ValueError, match="multiple of h"):
        super_resolve(model, jax.random.key(0), jnp.zeros((1, 2, 3, 3, 3)), weight=1.0)


# ---------------------------------------------------------------- --cond_video
def test_context_from_a_video_file(tmp_path, model):
    from vdm_jax.train import media
    from vdm_jax.train.context import ContextError, context_from_video

    frames = np.zeros((5, 32, 48, 3), np.uint8)
    frames[..., 0] = np.arange(5)[:, None, None] * 40 + 20  # red ramps over time
    path = str(tmp_path / "clip.mp4")
    media.write_mp4(path, frames)
    ctx = context_from_video(path, model.cfg, 3)
    assert ctx.shape == (1, 3, 8, 8, 3) and ctx.dtype == np.float32
    np.testing.assert_allclose(ctx[0, :, 4, 4, 0], (np.arange(3) * 40 + 20) / 127.5 - 1, atol=0.06)
    with pytest.raises(ContextError, match="needs at least"):
        context_from_video(path, model.cfg, 6)
    with pytest.raises(ContextError, match="no such file"):
        context_from_video(str(tmp_path / "missing.mp4"), model.cfg, 1)


# ---------------------------------------------------------------- main.py --mode=sample with conditioning frames
@pytest.mark.slow
def test_main_samples_continuations_of_dataset_clips(tmp_path, moving_shapes_dir):
    from tests.train.runs import TINY as TINY_FLAGS
    from tests.train.runs import run

    workdir = tmp_path / "run"
    trained = run(workdir, *TINY_FLAGS, "--config.train.num_steps=1", data_dir=moving_shapes_dir)
    assert trained.returncode == 0, trained.stderr[-2000:]
    sampled = run(
        workdir,
        *TINY_FLAGS,
        "--mode=sample",
        "--cond_split=test",
        "--num_cond_frames=2",
        "--num_frames=7",
        "--num_samples=2",
        "--candidates=2",
        data_dir=moving_shapes_dir,
    )
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    saved = np.load(workdir / "samples" / "cond_step1.npz")
    assert saved["videos"].shape == (2, 7, 16, 16, 3)
    np.testing.assert_allclose(saved["videos"][:, :2], saved["context"], atol=1e-6)
    np.testing.assert_array_equal(saved["marked"], np.arange(7)[None].repeat(2, 0) < 2)  # the context frames
    assert (workdir / "samples" / "cond_step1.gif").exists() and (workdir / "samples" / "cond_step1.mp4").exists()
    flags = ("--mode=sample", "--cond_split=test", "--num_cond_frames=4")
    bad = run(workdir, *TINY_FLAGS, *flags, data_dir=moving_shapes_dir)
    assert bad.returncode != 0 and "--num_cond_frames=4 must be in 1 .. 3" in bad.stderr
