"""``attention_impl='cudnn'`` traced on a CPU: jax's cuDNN device checks are patched to a Hopper GPU with cuDNN 9.10,
so jax runs its own shape checks of the fused kernel at trace time (nothing is compiled or run). Every attention call
the kernel accepts must keep it; every call it refuses must fall back to XLA instead of failing."""

import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax._src.cudnn import fused_attention_stablehlo as fused
from unet_helpers import RES, tiny_config

from vdm_jax.models import UNet3D, make_rngs
from vdm_jax.models.attention import SpatialAttention, TemporalAttention, cudnn_can_run

CUDNN_PRIMITIVE = "dot_product_attention_fwd_wrapper"  # jax 0.10's forward primitive of the fused kernel


@pytest.fixture
def fake_hopper(monkeypatch):
    """jax believes it runs on an sm_90 GPU with cuDNN 9.10 (the same checks it makes on a real H100/H200)."""
    monkeypatch.setattr(fused, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(fused, "check_compute_capability", lambda capability: True)
    monkeypatch.setattr(fused, "is_cuda_compute_capability_equal", lambda capability: False)


def _abstract(**overrides):
    cfg = tiny_config(attention_impl="cudnn", dtype="bfloat16", **overrides)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: UNet3D(cfg, resolution=RES, rngs=make_rngs(0))))
    return graphdef, state


def _inputs(t: int, text_len: int | None):
    z = jax.ShapeDtypeStruct((2, t, RES, RES, 3), jnp.float32)
    cond = None if text_len is None else {"text_tokens": jax.ShapeDtypeStruct((2, text_len), jnp.int32)}
    return z, cond, jax.ShapeDtypeStruct((2, t), jnp.int32)


def _loss(graphdef):
    def loss(state, z, cond, segment_ids):
        out = nnx.merge(graphdef, state)(z, jnp.zeros(z.shape[0]), cond, segment_ids=segment_ids)
        return jnp.mean(out.astype(jnp.float32) ** 2)

    return loss


@pytest.mark.parametrize(
    "t, text_len",
    [
        (7, None),  # temporal attention (always biased) over an odd frame count: 5 frames + 2 image frames
        (8, 64),  # builtin text: cross-attention's key-padding mask is [B, 1, 1, 1 + L]
        (8, 63),  # and the text encoder's masked self-attention over an odd caption length
    ],
)
def test_cudnn_training_traces_where_the_kernel_refuses_the_shapes(fake_hopper, t, text_len):
    text = {} if text_len is None else dict(text_conditioning="builtin", text_embed_dim=16)
    graphdef, state = _abstract(**text)
    grads = jax.eval_shape(jax.grad(_loss(graphdef)), state, *_inputs(t, text_len))
    assert jax.tree.structure(grads) == jax.tree.structure(state)


def _count_modules(graphdef, state, kind) -> int:
    return sum(isinstance(m, kind) for _, m in nnx.iter_graph(nnx.merge(graphdef, state)))


def _cudnn_calls(graphdef, state, t: int, text_len: int | None) -> int:
    jaxpr = str(jax.make_jaxpr(_loss(graphdef))(state, *_inputs(t, text_len)))
    return len(re.findall(rf"= {CUDNN_PRIMITIVE}\[", jaxpr))


def test_cudnn_is_kept_where_the_kernel_runs(fake_hopper):
    """Even T, no text: spatial and temporal attention both stay fused. Odd T: spatial stays, temporal falls back.
    With builtin text (even caption length) the encoder's layer is fused too; cross-attention is not."""
    graphdef, state = _abstract()
    spatial = _count_modules(graphdef, state, SpatialAttention)
    temporal = _count_modules(graphdef, state, TemporalAttention)
    assert spatial > 0 and temporal > 0
    assert _cudnn_calls(graphdef, state, 8, None) == spatial + temporal
    assert _cudnn_calls(graphdef, state, 7, None) == spatial
    graphdef, state = _abstract(text_conditioning="builtin", text_embed_dim=16, text_encoder_layers=1)
    assert _cudnn_calls(graphdef, state, 8, 64) == spatial + temporal + 1


def _jax_cudnn_accepts(q, k, bias, mask) -> bool:
    """Does jax trace the fused kernel's forward and backward pass for these shapes (the truth to match)?"""

    def loss(q, k, bias, mask):
        out = jax.nn.dot_product_attention(q, k, k, bias=bias, mask=mask, implementation="cudnn")
        return jnp.sum(out.astype(jnp.float32))

    try:
        jax.eval_shape(jax.grad(loss, argnums=(0, 1)), q, k, bias, mask)
    except (ValueError, NotImplementedError):
        return False
    return True


@pytest.mark.parametrize(
    "lq, lk, bias_shape, mask_shape, expected",
    [
        (64, 64, None, None, True),  # spatial attention: no bias, no mask
        (63, 63, None, None, False),  # jax 0.10 refuses odd lengths in training even without a bias
        (8, 8, (1, 2, 8, 8), (16, 1, 8, 8), True),  # temporal attention, even T
        (7, 7, (1, 2, 7, 7), None, False),  # odd T: cuDNN's backward refuses a bias
        (7, 7, None, (16, 1, 7, 7), False),  # a mask becomes a bias inside jax
        (64, 64, None, (16, 1, 1, 64), False),  # cross-attention's key mask, broadcast over queries
        (64, 66, None, (16, 1, 64, 66), True),  # the same mask at full size
        (64, 65, None, (16, 1, 64, 65), False),  # ... over an odd number of keys
    ],
)
def test_cudnn_can_run_matches_jax(fake_hopper, lq, lk, bias_shape, mask_shape, expected):
    q = jax.ShapeDtypeStruct((16, lq, 2, 8), jnp.bfloat16)
    k = jax.ShapeDtypeStruct((16, lk, 2, 8), jnp.bfloat16)
    bias = None if bias_shape is None else jax.ShapeDtypeStruct(bias_shape, jnp.bfloat16)
    mask = None if mask_shape is None else jax.ShapeDtypeStruct(mask_shape, jnp.bool_)
    assert _jax_cudnn_accepts(q, k, bias, mask) is expected
    assert cudnn_can_run(q, k, bias=bias, mask=mask) is expected


def test_cudnn_head_dim_limits_are_inclusive():
    """The config accepts exactly the head dimensions jax's kernel does on Hopper: multiples of 8 up to 256."""
    for head_dim in (8, 64, 256):
        assert tiny_config(attention_impl="cudnn", dtype="bfloat16", head_dim=head_dim).head_dim == head_dim
    for head_dim in (12, 264):
        with pytest.raises(ValueError, match="config.model.head_dim"):
            tiny_config(attention_impl="cudnn", dtype="bfloat16", head_dim=head_dim)
