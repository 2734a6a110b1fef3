"""Building the (data, fsdp, tensor) device mesh from a config shape."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from vdm_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")


class MeshError(UserError, ValueError):
    """A mesh shape that does not fit the devices; the message says how to fix config.parallel.mesh_shape."""


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Replaces a single -1 in ``shape`` so that the product equals ``num_devices``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
        raise MeshError(f"mesh shape {shape} must have {len(MESH_AXES)} entries, one per axis {MESH_AXES}")
    if shape.count(-1) > 1:
        raise MeshError(f"mesh shape {shape}: at most one entry may be -1")
    if any(s == 0 or s < -1 for s in shape):
        raise MeshError(f"mesh shape {shape}: entries must be positive or -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise MeshError(f"mesh shape {shape} cannot fill {num_devices} devices ({num_devices} % {known} != 0)")
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices:
        raise MeshError(
            f"mesh shape {shape} uses {math.prod(shape)} devices but {num_devices} are available; "
            "set one entry to -1 to fill the rest, e.g. --config.parallel.mesh_shape='(-1,1,1)'"
        )
    return shape


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over all (or the given) devices with axes ``("data", "fsdp", "tensor")``.

    The axes are of the *Auto* type (jax 0.10's ``jax.make_mesh`` defaults to Explicit, under which every convolution
    would need an ``out_sharding``). Devices are ordered by ``jax.experimental.mesh_utils`` when possible so that the
    fastest-varying axis stays within a host.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(shape, len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))
