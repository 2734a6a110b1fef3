"""`moving_shapes`: the package's own TFDS dataset, generated locally and deterministically (no network).

Each example is a video of 1-3 coloured shapes bouncing around a plain background (see `shapes_render` for the exact
geometry) with its class label (the shape of object 0), captions, and the per-frame ground truth that the
temporal-consistency metrics compare against (schema in `vdm_jax.data.palette`). Objects bounce off the walls, so one
caption does not hold for the whole video: `frame_captions[t]` describes the motion at frame t (the input
pipeline gives a clip the caption of its first frame), and `caption` is `frame_captions[0]`.

`index` is the example's position in the generator (TFDS stores examples in a hashed order);
`generate_example(split, index, ...)` recreates it. Frames are stored as lossless PNG (`tfds.features.Video`), so
`render(ground_truth)` reproduces them bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vdm_jax.data.palette import MAX_OBJECTS, SHAPES
from vdm_jax.data.shapes_render import GENERATOR_SEED, caption, render, sample_scene

# Split sizes of the standard configs. 16x32x32: 4096 train clips take ~10-20 s to generate on a 2-core CPU and are
# 256 steps of the default batch of 16 per epoch; the test split feeds evaluation (FVD statistics, temporal metrics).
DEFAULT_TRAIN_SIZE = 4096
DEFAULT_TEST_SIZE = 512
SPLIT_INDEX = {"train": 0, "test": 1}


@dataclasses.dataclass
class MovingShapesConfig(tfds.core.BuilderConfig):
    """num_frames x resolution x resolution videos; `train_size` / `test_size` examples per split."""

    num_frames: int = 16
    resolution: int = 32
    train_size: int = DEFAULT_TRAIN_SIZE
    test_size: int = DEFAULT_TEST_SIZE


def config_name(
    num_frames: int, resolution: int, train_size: int = DEFAULT_TRAIN_SIZE, test_size: int = DEFAULT_TEST_SIZE
):
    """Name of the builder config for these sizes, e.g. 'frames16_res32' (non-default split sizes are spelled out)."""
    name = f"frames{num_frames}_res{resolution}"
    if (train_size, test_size) != (DEFAULT_TRAIN_SIZE, DEFAULT_TEST_SIZE):
        name += f"_train{train_size}_test{test_size}"
    return name


def make_config(
    num_frames: int, resolution: int, train_size: int = DEFAULT_TRAIN_SIZE, test_size: int = DEFAULT_TEST_SIZE
) -> MovingShapesConfig:
    return MovingShapesConfig(
        name=config_name(num_frames, resolution, train_size, test_size),
        description=f"{num_frames}x{resolution}x{resolution} videos, {train_size} train / {test_size} test.",
        num_frames=num_frames,
        resolution=resolution,
        train_size=train_size,
        test_size=test_size,
    )


class MovingShapes(tfds.core.GeneratorBasedBuilder):
    """Coloured circles, squares and triangles moving at constant velocity and bouncing off the walls."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "frame_captions (the motion at each frame) and frame_velocity; the same videos and captions.",
    }
    BUILDER_CONFIGS = [make_config(16, 32), make_config(16, 64)]
    # TFDS derives this from the package's resources through `importlib_resources`, which is not installed here.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        t, r, k = cfg.num_frames, cfg.resolution, MAX_OBJECTS
        features = tfds.features.FeaturesDict(
            {
                "video": tfds.features.Video((t, r, r, 3), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=SHAPES),
                "caption": tfds.features.Text(),
                "frame_captions": tfds.features.Sequence(tfds.features.Text(), length=t),
                "index": tfds.features.Scalar(np.int32),
                "num_objects": tfds.features.Scalar(np.int32),
                "shape": tfds.features.Tensor(shape=(k,), dtype=np.int32),
                "color": tfds.features.Tensor(shape=(k,), dtype=np.int32),
                "size": tfds.features.Tensor(shape=(k,), dtype=np.float32),
                "position": tfds.features.Tensor(shape=(t, k, 2), dtype=np.float32),
                "velocity": tfds.features.Tensor(shape=(k, 2), dtype=np.float32),
                "frame_velocity": tfds.features.Tensor(shape=(t, k, 2), dtype=np.float32),
            }
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=features,
            supervised_keys=("video", "label"),
            homepage="https://github.com/vdm-jax/vdm_jax",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # generated locally
        cfg = self.builder_config
        return {
            "train": self._generate_examples("train", cfg.train_size),
            "test": self._generate_examples("test", cfg.test_size),
        }

    def _generate_examples(self, split: str, num_examples: int):
        cfg = self.builder_config
        for i in range(num_examples):
            yield i, generate_example(split, i, cfg.num_frames, cfg.resolution)


def generate_example(split: str, index: int, num_frames: int, resolution: int) -> dict:
    """Example `index` of `split`: a pure function of its arguments (the generator's seed is fixed)."""
    rng = np.random.default_rng([GENERATOR_SEED, SPLIT_INDEX[split], index])
    gt = sample_scene(rng, num_frames, resolution)
    return {
        "video": render(gt, resolution),
        "label": int(gt["shape"][0]),
        "caption": caption(gt),
        "frame_captions": [caption(gt, frame=t) for t in range(num_frames)],
        "index": index,
        **gt,
    }
