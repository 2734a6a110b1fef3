"""Meshes and logical-axis rules."""

import os
import subprocess
import sys
import textwrap

import pytest
from jax.sharding import PartitionSpec as P

from vdm_jax.parallel import DATA_PARALLEL_RULES, FSDP_RULES, logical_to_spec
from vdm_jax.parallel.mesh import resolve_mesh_shape


def test_mesh_shape_fill_and_errors():
    assert resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
    assert resolve_mesh_shape((2, -1, 1), 8) == (2, 4, 1)
    assert resolve_mesh_shape((4, 2, 1), 8) == (4, 2, 1)
    with pytest.raises(ValueError, match="uses 4 devices but 8"):
        resolve_mesh_shape((2, 2, 1), 8)
    with pytest.raises(ValueError, match="cannot fill"):
        resolve_mesh_shape((3, -1, 1), 8)
    with pytest.raises(ValueError, match="at most one"):
        resolve_mesh_shape((-1, -1, 1), 8)


def test_rules_given_as_lists_are_a_hashable_layout():
    """`current_layout()` keys caches of traced samplers: rules written with lists (as JSON gives them) work too."""
    from vdm_jax.parallel import current_layout, make_mesh, use_mesh

    mesh = make_mesh((-1, 1, 1))
    with use_mesh(mesh, [["batch", ["data", "fsdp"]]]):
        listed = current_layout()
    with use_mesh(mesh, DATA_PARALLEL_RULES):
        preset = current_layout()
    assert hash(listed) == hash(preset) and listed == preset


def test_logical_rules_map_and_never_reuse_an_axis():
    assert logical_to_spec(("batch", "time", "height", "width", "embed"), DATA_PARALLEL_RULES) == P(("data", "fsdp"))
    # FSDP: a kernel (kh, kw, conv_in, conv_out) is split along its output channels.
    assert logical_to_spec((None, None, "conv_in", "conv_out"), FSDP_RULES) == P(None, None, None, "fsdp")
    # 'embed' and 'conv_out' both map to fsdp: only the first dimension gets it.
    assert logical_to_spec(("conv_out", "embed"), FSDP_RULES) == P("fsdp")
    assert logical_to_spec(("unknown",), FSDP_RULES) == P()


SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from vdm_jax import parallel

    class Net(nnx.Module):
        def __init__(self, rngs):
            init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
            self.a = nnx.Linear(16, 32, kernel_init=init, rngs=rngs)
            self.b = nnx.Linear(6, 3, kernel_init=init, rngs=rngs)  # 6 is not divisible by 4: replicated
            film = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "conv_out"))
            self.c = nnx.Linear(6, 64, kernel_init=film, rngs=rngs)  # 6 is not divisible, 64 is: fsdp on the outputs

    mesh = parallel.make_mesh((2, 4, 1))
    assert mesh.axis_names == ("data", "fsdp", "tensor") and mesh.devices.size == 8
    state = nnx.state(nnx.eval_shape(lambda: Net(nnx.Rngs(0))))
    sh = parallel.state_shardings(state, mesh, parallel.FSDP_RULES)
    assert sh["a"]["kernel"].value.spec == jax.sharding.PartitionSpec("fsdp", None), sh["a"]["kernel"]
    assert sh["b"]["kernel"].value.spec == jax.sharding.PartitionSpec(None, None), sh["b"]["kernel"]
    assert sh["c"]["kernel"].value.spec == jax.sharding.PartitionSpec(None, "fsdp"), sh["c"]["kernel"]

    x = jnp.arange(8 * 3, dtype=jnp.float32).reshape(8, 3)
    f = jax.jit(lambda x: parallel.constrain(x * 2, ("batch", None)))
    with parallel.use_mesh(mesh, parallel.DATA_PARALLEL_RULES):
        y = f(x)
    assert y.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp")), y.sharding
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x) * 2)

    # 3 rows on 8 devices: call_padded repeats the last row up to 8, so that the batch splits, and returns the first 3,
    # equal to the unpadded call (random draws are by position) with any pytree of inputs.
    g = jax.jit(lambda key, x, extra: parallel.constrain(x + jax.random.normal(key, x.shape) + extra["b"][:, None],
                                                          ("batch", None)))
    x3, extra = x[:3], {"b": np.arange(3.0, dtype=np.float32), "none": None}
    assert parallel.padded_batch(3) == 3  # no mesh
    alone = parallel.call_padded(g, (jax.random.key(0),), (x3, extra))
    padded = []
    def seen(*a):
        padded.append(a[1:])
        return g(*a)
    with parallel.use_mesh(mesh, parallel.DATA_PARALLEL_RULES):
        assert [parallel.padded_batch(n) for n in (3, 8, 9)] == [8, 8, 16]
        spread = parallel.call_padded(seen, (jax.random.key(0),), (x3, extra))
        inner = g(jax.random.key(0), *padded[0])
    assert inner.sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp")), inner.sharding
    assert padded[0][0].shape == (8, 3) and isinstance(padded[0][1]["b"], np.ndarray)
    np.testing.assert_array_equal(np.asarray(padded[0][0][3:]), np.repeat(np.asarray(x3[-1:]), 5, axis=0))
    assert spread.shape == (3, 3) and alone.shape == (3, 3)
    np.testing.assert_allclose(np.asarray(spread), np.asarray(alone), atol=1e-6)
    print("OK")
    """
)


def test_shardings_on_eight_simulated_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
