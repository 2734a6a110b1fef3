"""Loading the parameters of one model into another where paths and shapes agree (image -> video initialisation).

VDM §3 and §4.3.1 train video models jointly with images; a common start is an image model's weights. An image U-Net
(``temporal_attention=False``) has every parameter of the video U-Net except the temporal attention blocks, at the
same paths, so copying the matching entries and leaving the rest at their initialisation (zero output projections
with ``temporal_identity_init``) reproduces the image model exactly.

The same idea turns an unconditional video model into a frame-conditioned one (``frame_conditioning``: known frames
and their mask are concatenated after z at the input). Its first convolution takes 2C + 1 input channels instead of
C; with ``zero_extend=(INPUT_KERNEL,)`` the source kernel fills the first C input channels and the new ones start at
zero, so the new model ignores the known frames until fine-tuning teaches it to use them: it starts as exactly the
unconditional model.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx, traverse_util

INPUT_KERNEL = "conv_in/kernel"  # The U-Net's first convolution, [k, k, in, out]: the inputs are z, then extras.


@dataclasses.dataclass(frozen=True)
class TransferReport:
    """What :func:`load_matching_params` did, as '/'-joined parameter paths."""

    loaded: tuple[str, ...]
    missing: tuple[str, ...]  # in the destination only: kept at their initial values
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # (path, dst shape, src shape): kept
    unused: tuple[str, ...]  # in the source only
    extended: tuple[str, ...] = ()  # loaded into the leading input channels; the destination's extra ones zeroed

    def summary(self, examples: int = 3) -> str:
        def some(paths) -> str:
            paths = [p if isinstance(p, str) else f"{p[0]} {p[1]} <- {p[2]}" for p in paths]
            more = f", ... (+{len(paths) - examples})" if len(paths) > examples else ""
            return f" [{', '.join(paths[:examples])}{more}]" if paths else ""

        extended = (
            f" ({len(self.extended)} zero-extended in input channels{some(self.extended)})" if self.extended else ""
        )
        return (
            f"loaded {len(self.loaded)} arrays{extended}; {len(self.missing)} missing from the source (kept initial)"
            f"{some(self.missing)}; {len(self.mismatched)} with other shapes (kept initial){some(self.mismatched)}; "
            f"{len(self.unused)} unused from the source{some(self.unused)}"
        )

    def __str__(self) -> str:
        return self.summary()


def _path(key: tuple) -> str:
    return "/".join(str(k) for k in key)


def _flat_arrays(tree: nnx.State | dict) -> dict[str, object]:
    """'/'-joined path -> array. Accepts an ``nnx.State`` or nested dicts as Orbax restores them, where list indices
    are strings and every variable ends in a ``value`` entry."""
    pure = nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else tree
    flat = traverse_util.flatten_dict(pure)
    return {_path(key[:-1] if key[-1] == "value" and len(key) > 1 else key): value for key, value in flat.items()}


def _zero_extended(dst: jax.Array, src: jax.Array) -> jax.Array | None:
    """src [..., c_in, c_out] in the first c_in input channels of a zero array shaped like dst [..., C_in, c_out],
    C_in > c_in; None when the shapes differ in any other way."""
    d, s = tuple(jnp.shape(dst)), tuple(jnp.shape(src))
    if len(d) < 2 or len(d) != len(s) or d[:-2] != s[:-2] or d[-1] != s[-1] or d[-2] <= s[-2]:
        return None
    return jnp.zeros(d, jnp.asarray(dst).dtype).at[..., : s[-2], :].set(jnp.asarray(src, jnp.asarray(dst).dtype))


def load_matching_params(
    dst_state: nnx.State, src_state: nnx.State | dict, *, zero_extend: tuple[str, ...] = ()
) -> tuple[nnx.State, TransferReport]:
    """A copy of ``dst_state`` with every array of ``src_state`` at an equal path and shape copied in.

    ``src_state`` may be an ``nnx.State`` or the nested dicts of a raw checkpoint restore. Copied arrays take the
    destination's dtype. Paths in ``zero_extend`` (kernels ``[..., in, out]``, e.g. ``INPUT_KERNEL``) whose
    destination has more input channels than the source take the source in their first input channels and zeros in
    the rest. Returns the new state and a :class:`TransferReport`.
    """
    dst_pure = nnx.to_pure_dict(dst_state)
    dst_flat = traverse_util.flatten_dict(dst_pure)
    src_flat = _flat_arrays(src_state)
    loaded, missing, mismatched, extended = [], [], [], []
    new_flat = {}
    for key, value in dst_flat.items():
        path = _path(key)
        new_flat[key] = value
        if path not in src_flat:
            missing.append(path)
        elif path in zero_extend and (wide := _zero_extended(value, src_flat[path])) is not None:
            loaded.append(path)
            extended.append(path)
            new_flat[key] = wide
        elif tuple(jnp.shape(src_flat[path])) != tuple(jnp.shape(value)):
            mismatched.append((path, tuple(jnp.shape(value)), tuple(jnp.shape(src_flat[path]))))
        else:
            loaded.append(path)
            new_flat[key] = jnp.asarray(src_flat[path], dtype=jnp.asarray(value).dtype)
    dst_paths = {_path(key) for key in dst_flat}
    unused = [path for path in src_flat if path not in dst_paths]
    state = jax.tree.map(lambda x: x, dst_state)
    nnx.replace_by_pure_dict(state, traverse_util.unflatten_dict(new_flat))
    report = TransferReport(tuple(loaded), tuple(missing), tuple(mismatched), tuple(unused), tuple(extended))
    return state, report
