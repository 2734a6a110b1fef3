"""`DataConfig`: the typed form of `config.data` (configs/default.py documents every key), and what is known about
the datasets without TensorFlow (the download catalog, channel counts), so that configs are checked without it."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    """A dataset of the TFDS catalog that needs downloading (which we never do implicitly)."""

    tfds_name: str
    frames_key: str
    label_key: str | None
    channels: int
    splits: dict[str, str]
    disk: str  # what preparing it costs, for the error message
    notes: str = ""


# Download sizes are those of TFDS's checksums files; prepared sizes are our estimates for the encoded frames.
CATALOG: dict[str, CatalogEntry] = {
    "ucf101": CatalogEntry(
        tfds_name="ucf101/ucf101_1_256",
        frames_key="video",
        label_key="label",
        channels=3,
        # The paper trains on all 13,320 videos (split 1's train and test); FVD's real side is the test part.
        splits={"train": "train+test", "test": "test"},
        disk="a 7.0 GB download (UCF101_videos.zip) plus roughly 15-20 GB for the 256x256 JPEG frames",
        notes="needs the `ffmpeg` binary on PATH while preparing (TFDS extracts frames with it)",
    ),
    "bair_robot_pushing_small": CatalogEntry(
        tfds_name="bair_robot_pushing_small",
        frames_key="image_main",
        label_key=None,
        channels=3,
        splits={"train": "train", "test": "test"},
        disk="a 32.3 GB download (bair_robot_pushing_dataset_v0.tar) plus about 2.5 GB prepared",
    ),
    "moving_mnist": CatalogEntry(
        tfds_name="moving_mnist",
        frames_key="image_sequence",
        label_key=None,
        channels=1,
        # The published file has 10,000 sequences, all in TFDS's `test` split; we hold out its last 10%.
        splits={"train": "test[:90%]", "test": "test[90%:]"},
        disk="an 819 MB download (mnist_test_seq.npy) plus about 0.1 GB prepared",
    ),
}

DATASETS = ("moving_shapes", "video_folder", *CATALOG)


MAX_FAR_FRAMES = 3  # long-range windows: at most this many far-back known frames


def max_far_frames(num_frames: int) -> int:
    """The most far-back known frames a long-range window of `num_frames` holds (it keeps at least two consecutive
    frames, one known): what training shows, so what `extend(..., memory=)` may ask for."""
    return min(MAX_FAR_FRAMES, num_frames - 2)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which videos to read and how to cut them. Fields are exactly the keys of `config.data`."""

    name: str = "moving_shapes"
    data_dir: str = ""
    num_frames: int = 8
    frame_stride: int = 1
    resolution: int = 16
    num_image_frames: int = 0
    random_flip: bool = False
    shuffle_buffer: int = 512
    video_dir: str = ""
    captions_file: str = ""
    text_max_length: int = 64
    moving_shapes_train_size: int = 4096
    moving_shapes_test_size: int = 512
    long_range_prob: float = 0.0
    long_range_span: int = 32
    long_range_null_prob: float = 0.0

    def __post_init__(self):
        if self.name not in DATASETS:
            raise ValueError(f"data.name={self.name!r} is not a known dataset; choose one of {DATASETS}")
        for key in (
            "num_frames",
            "frame_stride",
            "resolution",
            "shuffle_buffer",
            "text_max_length",
            "moving_shapes_train_size",
            "moving_shapes_test_size",
            "long_range_span",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{key}={value!r} must be a positive integer")
        if isinstance(self.num_image_frames, bool) or not isinstance(self.num_image_frames, int):
            raise ValueError(f"data.num_image_frames={self.num_image_frames!r} must be an integer >= 0")
        if self.num_image_frames < 0:
            raise ValueError(f"data.num_image_frames={self.num_image_frames} must be >= 0 (0 = video only)")
        if isinstance(self.long_range_prob, bool) or not 0.0 <= self.long_range_prob <= 1.0:
            raise ValueError(f"data.long_range_prob={self.long_range_prob!r} must be in [0, 1] (0 = off)")
        if isinstance(self.long_range_null_prob, bool) or not 0.0 <= self.long_range_null_prob < 1.0:
            raise ValueError(
                f"data.long_range_null_prob={self.long_range_null_prob!r} must be in [0, 1): the share of long-range "
                "windows that know no frame (0 = off; 1 would leave no window that teaches far-back context)"
            )
        if self.long_range_null_prob > 0 and self.long_range_prob == 0:
            raise ValueError(
                f"data.long_range_null_prob={self.long_range_null_prob} applies to long-range windows; set "
                "data.long_range_prob > 0 too"
            )
        if self.long_range_prob > 0 and self.long_range_span <= self.num_frames:
            raise ValueError(
                f"data.long_range_span={self.long_range_span} must exceed data.num_frames={self.num_frames}: "
                "long-range windows pick their frames from that many"
            )
        if self.long_range_prob > 0 and self.num_frames < 3:
            raise ValueError(
                f"data.long_range_prob > 0 needs data.num_frames >= 3 (a far frame, a known and an unknown recent "
                f"frame), got {self.num_frames}"
            )
        if not isinstance(self.random_flip, bool):
            raise ValueError(f"data.random_flip={self.random_flip!r} must be True or False")
        if self.name == "video_folder" and not self.video_dir:
            raise ValueError(
                "data.name='video_folder' needs data.video_dir: set --config.data.video_dir=/path/to/videos"
            )
        if self.name != "video_folder" and (self.video_dir or self.captions_file):
            raise ValueError(
                f"data.video_dir / data.captions_file only apply to data.name='video_folder' (got name={self.name!r}); "
                "clear them or switch the dataset"
            )
        for key in ("data_dir", "video_dir", "captions_file"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"data.{key}={getattr(self, key)!r} must be a string path ('' = unset)")


def num_channels(cfg: DataConfig) -> int:
    """Channels of the videos `cfg` yields: 1 for moving_mnist, 3 otherwise. Needs no prepared data."""
    return CATALOG[cfg.name].channels if cfg.name in CATALOG else 3


def check_channels(cfg: DataConfig, model_channels: int) -> None:
    """Raises a ValueError naming the fix when the model's channel count does not match the dataset's."""
    expected = num_channels(cfg)
    if model_channels != expected:
        raise ValueError(
            f"data.name={cfg.name!r} has {expected}-channel videos but model.channels={model_channels}; "
            f"set --config.model.channels={expected}"
        )
