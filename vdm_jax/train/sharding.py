"""Shardings for the whole train state, derived from the parameters' logical axis names."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vdm_jax.parallel import state_shardings
from vdm_jax.train.state import TrainState


def _path(path) -> str:
    return jax.tree_util.keystr(path)


def train_state_shardings(abstract: TrainState, mesh: Mesh, rules) -> TrainState:
    """NamedShardings for every leaf of an abstract `TrainState`.

    Parameters (and their EMA) follow the logical-axis rules. Optimizer-state leaves that mirror a parameter (Adam's
    mu and nu) are found by their tree path ending in that parameter's path (the longest such) with the same shape,
    and get its sharding; scalars such as Adam's count are replicated.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    params = state_shardings(abstract.params, mesh, rules)
    by_path = {
        _path(p): (leaf.shape, sh)
        for (p, leaf), sh in zip(
            jax.tree_util.tree_flatten_with_path(abstract.params)[0], jax.tree.leaves(params), strict=True
        )
    }

    def opt_leaf(path, leaf):
        key = _path(path)
        matches = [s for s in by_path if key.endswith(s) and tuple(leaf.shape) == tuple(by_path[s][0])]
        return by_path[max(matches, key=len)][1] if matches else replicated

    opt = jax.tree_util.tree_map_with_path(opt_leaf, abstract.opt_state)
    rest = jax.tree.map(lambda _: replicated, abstract.rest)
    return TrainState(step=replicated, params=params, ema_params=params, opt_state=opt, rest=rest)


def with_shardings(abstract, shardings):
    """ShapeDtypeStructs that carry their target sharding (for restoring onto a mesh)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def to_global(tree, shardings):
    """Host-complete values (every process holds the whole array) -> global arrays with the given shardings.

    Works with several processes, where `jax.device_put` cannot target devices of other hosts: each process fills
    only its addressable shards. Leaves that are global arrays already stay on the devices (resharded if need be):
    under FSDP across hosts they cannot be fetched to one.
    """

    def put(value, sharding):
        if isinstance(value, jax.Array):  # Already global (e.g. what init_from left at its initialisation).
            if value.sharding == sharding:
                return value
            if not value.is_fully_addressable:  # Spans other hosts: no process can fetch it whole.
                return jax.jit(lambda x: x, out_shardings=sharding)(value)
        host = np.asarray(jax.device_get(value))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)
