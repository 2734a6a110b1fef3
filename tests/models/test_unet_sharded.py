"""The U-Net sharded over 8 simulated CPU devices (FSDP rules) equals the single-device run, forward and backward."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from unet_helpers import RES, apply, build, tiny_config, video
    from vdm_jax.parallel import FSDP_RULES, make_mesh, state_shardings, use_mesh

    assert jax.device_count() == 8
    model = build(tiny_config(num_classes=3, remat_policy="dots", dropout=0.1))
    graphdef, state = nnx.split(model)
    z, logsnr, cond = video(0, (8, 4, RES, RES, 3)), jnp.linspace(-5, 5, 8), {"label": jnp.arange(8) % 4}

    def loss(s, key):
        return jnp.mean(nnx.merge(graphdef, s)(z, logsnr, cond, train=True, rngs=key) ** 2)

    ref_out = apply(model, z, logsnr, cond)
    ref_grad = jax.jit(jax.grad(loss))(state, jax.random.key(0))
    mesh = make_mesh((2, 4, 1))
    sharded = jax.device_put(state, state_shardings(state, mesh, FSDP_RULES))
    assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated for x in jax.tree.leaves(sharded))
    with use_mesh(mesh, FSDP_RULES):
        out = jax.jit(lambda s: nnx.merge(graphdef, s)(z, logsnr, cond))(sharded)
        grad = jax.jit(jax.grad(loss))(sharded, jax.random.key(0))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), atol=1e-5)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)
    print("SHARDED_OK")
    """
)


@pytest.mark.slow
def test_fsdp_sharded_run_equals_single_device():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=f"{here}:{root}")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "SHARDED_OK" in result.stdout, result.stderr[-4000:]
