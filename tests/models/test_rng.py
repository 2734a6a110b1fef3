"""vdm_jax.models.make_rngs: the keys of nnx.Rngs, drawn without the tracer error messages that make tracing the
U-Net's construction quadratic in its size."""

import jax
import numpy as np
from flax import nnx
from jax._src.interpreters import partial_eval
from unet_helpers import RES, tiny_config

from vdm_jax.models import UNet3D, make_rngs


def key_data(key):
    return np.asarray(jax.random.key_data(key))


def test_streams_draw_the_keys_of_nnx_rngs():
    ours, stock = make_rngs(5, dropout=jax.random.key(3)), nnx.Rngs(5, dropout=jax.random.key(3))
    for _ in range(3):
        np.testing.assert_array_equal(key_data(ours.params()), key_data(stock.params()))  # falls back to default
        np.testing.assert_array_equal(key_data(ours.dropout()), key_data(stock.dropout()))
    assert int(ours.default.count.value) == int(stock.default.count.value) == 3


def test_models_built_under_jit_have_the_parameters_of_nnx_rngs():
    cfg = tiny_config()

    def params(make):
        return jax.jit(lambda: nnx.state(UNet3D(cfg, resolution=RES, rngs=make(0)), nnx.Param))()

    ours, stock = params(make_rngs), params(nnx.Rngs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(stock), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(jax.tree.leaves(stock)) > 20


def test_tracing_construction_builds_no_tracer_error_message(monkeypatch):
    """nnx.Rngs's indexed counter update asks each drawn key's tracer for `.sharding`, whose error message walks the
    whole program traced so far; our streams never ask."""
    calls = []
    real = partial_eval.DynamicJaxprTracer._origin_msg
    monkeypatch.setattr(partial_eval.DynamicJaxprTracer, "_origin_msg", lambda self: calls.append(1) or real(self))
    cfg = tiny_config()
    jax.eval_shape(lambda: nnx.state(UNet3D(cfg, resolution=RES, rngs=make_rngs(0))))
    assert calls == []
    jax.eval_shape(lambda: nnx.state(UNet3D(cfg, resolution=RES, rngs=nnx.Rngs(0))))
    assert calls  # The cost make_rngs avoids (if flax stops paying it, make_rngs can go).
