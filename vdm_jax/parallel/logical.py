"""Logical axis names -> mesh axes.

A rule list is a sequence of ``(logical_name, mesh_axes)`` pairs, where ``mesh_axes`` is a mesh-axis name, a tuple of
them, or ``None`` (replicated). A logical name absent from the rules is replicated. A mesh axis is used at most once
per array: a later dimension that maps to an axis already taken is replicated instead (as in t5x/maxtext).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

# Pure data parallelism: the batch is split over the data and fsdp axes, parameters are replicated.
DATA_PARALLEL_RULES: Rules = (("batch", ("data", "fsdp")),)

# FSDP (ZeRO-3 style): the batch is split over (data, fsdp) and each parameter's output channels (or embedding width)
# over fsdp. Optimizer state follows the parameters. Attention heads and MLP widths name the `tensor` axis, which the
# configs keep at size 1 (`ParallelConfig` refuses more): activations are not split by heads, so a larger tensor axis
# would shard those weights but repeat the computation.
FSDP_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("conv_out", "fsdp"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
)

RULE_PRESETS: dict[str, Rules] = {"data_parallel": DATA_PARALLEL_RULES, "fsdp": FSDP_RULES}

_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("vdm_jax_mesh", default=None)
_RULES: contextvars.ContextVar[Rules] = contextvars.ContextVar("vdm_jax_rules", default=())


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules) -> Iterator[None]:
    """Makes ``mesh`` and ``rules`` current, so that :func:`constrain` annotates activations while tracing."""
    hashable = tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in rules)
    mesh_token, rules_token = _MESH.set(mesh), _RULES.set(hashable)  # hashable: a cache key (`current_layout`)
    try:
        yield
    finally:
        _MESH.reset(mesh_token)
        _RULES.reset(rules_token)


def current_mesh() -> Mesh | None:
    return _MESH.get()


def current_layout() -> tuple[Mesh | None, tuple]:
    """(mesh, rules) made current by `use_mesh`: what `constrain` reads when a function is traced, so a cache of
    traced functions must key on it (a function traced under another layout keeps that layout's annotations)."""
    return _MESH.get(), _RULES.get()


def padded_batch(num: int) -> int:
    """`num` rounded up to a multiple of the current mesh's data x fsdp devices (1 without a mesh): a batch they
    divide is split over them, one they do not divide XLA leaves unsplit (every device computes every row)."""
    mesh = _MESH.get()
    shards = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
    return -(-num // shards) * shards


def pad_rows(tree, rows: int):
    """Each array of `tree` (None passes) with its last row repeated up to `rows` rows: jax arrays stay jax arrays
    (eager, so a global array of several hosts works too), anything else becomes host numpy."""
    if tree is None:
        return None

    def pad(a):
        xp = jnp if isinstance(a, jax.Array) else np
        a = a if xp is jnp else np.asarray(a)
        return xp.concatenate([a, xp.repeat(a[-1:], rows - len(a), axis=0)]) if rows > len(a) else a

    return jax.tree.map(pad, tree)


def call_padded(fn, fixed: tuple, batched: tuple):
    """fn(*fixed, *batched) -> the first N rows of its result, the batched arguments (pytrees of arrays with N
    rows; None passes) padded by `pad_rows` to `padded_batch(N)` so that every device of the current mesh computes
    its share. Equal to the unpadded call where row i of fn's result depends only on row i of its inputs and on
    random draws by position (threefry is partitionable: row i of a draw of N' >= N rows is row i of a draw of N)."""
    num = len(jax.tree.leaves(batched)[0])
    rows = padded_batch(num)
    out = fn(*fixed, *pad_rows(batched, rows))
    return out if rows == num else jax.tree.map(lambda a: a[:num], out)


def logical_to_spec(
    logical_axes: Sequence[str | None], rules: Rules, mesh: Mesh | None = None, shape: Sequence[int] | None = None
) -> PartitionSpec:
    """Maps logical axis names to a ``PartitionSpec`` of mesh axes.

    Mesh axes of size 1 are dropped (they shard nothing), and a mesh axis already used by an earlier dimension is not
    used again. With ``shape`` (and ``mesh``), a dimension the mesh axes do not divide evenly stays unsharded and
    leaves those axes free for a later dimension.
    """
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for i, name in enumerate(logical_axes):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used and (mesh is None or mesh.shape[a] > 1))
        if axes and shape is not None and mesh is not None and shape[i] % math.prod(mesh.shape[a] for a in axes):
            axes = ()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names under the current mesh; the identity without one."""
    mesh = _MESH.get()
    if mesh is None or mesh.size == 1:
        return x
    if len(logical_axes) != x.ndim:
        raise ValueError(
            f"constrain: {len(logical_axes)} logical axes {tuple(logical_axes)} for an array of rank {x.ndim}"
        )
    spec = logical_to_spec(logical_axes, _RULES.get(), mesh)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules):
    """NamedShardings for every variable of an NNX state, from the logical names its initialisers carry.

    Variables created with ``nnx.with_partitioning(init, names)`` are sharded by ``rules``; the rest are replicated.
    Each dimension is only sharded when the mesh axes divide it evenly, so a small bias never blocks a run.
    """
    specs = nnx.get_partition_spec(state)

    def to_sharding(spec, value):
        logical = tuple(spec) if isinstance(spec, PartitionSpec) else ()
        shape = tuple(getattr(value, "shape", ()))
        logical = logical + (None,) * (len(shape) - len(logical))
        spec = tuple(logical_to_spec(logical, rules, mesh, shape))
        return NamedSharding(mesh, PartitionSpec(*spec, *(None,) * (len(shape) - len(spec))))

    return jax.tree.map(to_sharding, specs, state, is_leaf=lambda x: isinstance(x, PartitionSpec))
