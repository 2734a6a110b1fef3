"""The built-in text encoder on 8 simulated devices with FSDP rules: its activations are split by caption over the
data and fsdp axes, as the video's are, and its output equals the single-device one."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from vdm_jax.models.text import TextEncoder, tokenize
    from vdm_jax.parallel import FSDP_RULES, make_mesh, state_shardings, use_mesh

    encoder = TextEncoder(16, 2, 8, dtype=jnp.float32, impl="xla", rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(encoder)
    tokens = jnp.asarray(tokenize([f"a red circle moving {i} px left" for i in range(8)], 24))
    run = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)[0])
    reference = np.asarray(run(state, tokens))
    mesh = make_mesh((4, 2, 1))
    sharded = jax.device_put(state, state_shardings(state, mesh, FSDP_RULES))
    with use_mesh(mesh, FSDP_RULES):
        out = run(sharded, tokens)
    by_caption = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    assert out.sharding.is_equivalent_to(by_caption, out.ndim), out.sharding.spec
    np.testing.assert_allclose(np.asarray(out), reference, atol=1e-5)
    print("TEXT_OK")
    """
)


def test_text_encoder_splits_captions_over_data_and_fsdp():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=root)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "TEXT_OK" in result.stdout, result.stderr[-4000:]
