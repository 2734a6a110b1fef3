"""`video_folder`: a TFDS builder over a user's directory of videos (how Kinetics-600 and your own videos come in).

Layout: `video_dir/**/*.{mp4,avi,webm,mov,mkv,gif,m4v}`. If every video sits inside a first-level subfolder, those
folder names are the classes (sorted; feature `label`). An optional captions file holds `relative/path.mp4<TAB>caption`
lines (feature `caption`; videos without a line get an empty caption, the null caption of classifier-free guidance).
The build logs how many videos have no caption and how many lines name no video, and refuses a captions file none of
whose paths is a video of the folder.

Each video is decoded with PyAV, every `frame_stride`-th frame kept, centre-cropped to a square, resized with
antialiasing to `resolution`, and cut into consecutive clips of `num_frames` frames. A corrupt or undecodable file is
skipped with a warning and counted, as is a video shorter than one clip; the build never aborts on a bad file. The
skipped files are listed in the dataset's metadata (`builder.info.metadata["skipped_files"]`).

Everything lands in the single split `train`. The builder config's name carries a hash of the folder listing (paths,
sizes, modification times) and of the settings, so changing the folder or the settings builds a new dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from vdm_jax.data.video_decode import VIDEO_EXTENSIONS, VideoDecodeError, cut_clips, read_video
from vdm_jax.errors import UserError


class CaptionsFileError(UserError, ValueError):
    """A captions file that names none of the folder's videos; the message shows paths of both."""


class VideoDirError(UserError, FileNotFoundError):
    """data.video_dir is missing, not a directory, or holds no video files."""


class NoClipsError(UserError, ValueError):
    """No file of data.video_dir gave a clip (all undecodable or too short); the message says why for the first."""


def _no_videos_message(video_dir: str) -> str:
    return (
        f"data.video_dir={video_dir!r} holds no video files (looked for {', '.join(VIDEO_EXTENSIONS)} in it and its "
        "subfolders); put your videos there or point --config.data.video_dir at the folder that holds them"
    )


def list_videos(video_dir: str) -> list[str]:
    """Relative paths of the video files under `video_dir`, sorted. Raises `VideoDirError` if it is no directory."""
    if not os.path.isdir(video_dir):
        what = "is not a directory" if os.path.exists(video_dir) else "does not exist (it is not a directory)"
        raise VideoDirError(
            f"data.video_dir={video_dir!r} {what}; point --config.data.video_dir at your folder of videos"
        )
    found = []
    for root, dirs, files in os.walk(video_dir):
        dirs.sort()
        for name in files:
            if name.lower().endswith(VIDEO_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, name), video_dir))
    return sorted(found)


def class_names(relpaths: list[str]) -> list[str]:
    """First-level folder names if every video is inside one (the classes), else []."""
    if not relpaths or any(os.sep not in p for p in relpaths):
        return []
    return sorted({p.split(os.sep)[0] for p in relpaths})


def read_captions(captions_file: str) -> dict[str, str]:
    """`relative/path<TAB>caption` lines -> {relative/path: caption}; blank lines and '#' comments are skipped."""
    captions = {}
    with open(captions_file, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            if "\t" not in line:
                raise ValueError(f"{captions_file}:{n}: expected 'relative/path.mp4<TAB>caption', got {line!r}")
            path, text = line.split("\t", 1)
            captions[os.path.normpath(path)] = text.strip()
    return captions


def check_captions(relpaths: list[str], captions: dict[str, str], captions_file: str, video_dir: str) -> None:
    """Logs how many videos have no caption and how many caption lines name no video; raises a CaptionsFileError
    when no line names a video (every clip would get the empty caption)."""
    videos = {os.path.normpath(p) for p in relpaths}
    uncaptioned = sorted(videos - set(captions))
    unmatched = sorted(set(captions) - videos)
    if len(uncaptioned) == len(videos):
        raise CaptionsFileError(
            f"data.captions_file={captions_file!r}: none of its {len(captions)} paths is a video of "
            f"data.video_dir={video_dir!r} (e.g. {unmatched[:3]}; the folder holds e.g. {uncaptioned[:3]}); write "
            "each path relative to video_dir, as 'relative/path.mp4<TAB>caption'"
        )
    if uncaptioned or unmatched:
        logging.warning(
            "video_folder: %d of %d videos have no caption in %s and get the empty caption (e.g. %s); %d of its %d "
            "lines name no video in %s (e.g. %s)",
            len(uncaptioned),
            len(videos),
            captions_file,
            ", ".join(uncaptioned[:3]),
            len(unmatched),
            len(captions),
            video_dir,
            ", ".join(unmatched[:3]),
        )


@dataclasses.dataclass
class VideoFolderConfig(tfds.core.BuilderConfig):
    video_dir: str = ""
    captions_file: str = ""
    num_frames: int = 16
    frame_stride: int = 1
    resolution: int = 64


def make_config(
    video_dir: str, num_frames: int, frame_stride: int, resolution: int, captions_file: str = ""
) -> VideoFolderConfig:
    """A config named after the folder and a hash of its listing and the settings (a changed folder rebuilds)."""
    video_dir = os.path.abspath(video_dir)
    captions_file = os.path.abspath(captions_file) if captions_file else ""
    listing = []
    relpaths = list_videos(video_dir)
    if not relpaths:  # Refused here, before TFDS starts a build that could only fail.
        raise VideoDirError(_no_videos_message(video_dir))
    for rel in relpaths:
        st = os.stat(os.path.join(video_dir, rel))
        listing.append((rel, st.st_size, int(st.st_mtime)))
    if captions_file:
        st = os.stat(captions_file)
        listing.append((captions_file, st.st_size, int(st.st_mtime)))
    key = json.dumps([video_dir, listing, num_frames, frame_stride, resolution]).encode()
    digest = hashlib.sha256(key).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in os.path.basename(video_dir.rstrip(os.sep)))[:40] or "videos"
    return VideoFolderConfig(
        name=f"{stem}_{num_frames}x{resolution}_s{frame_stride}_{digest}",
        description=f"{video_dir}: clips of {num_frames} frames (stride {frame_stride}) at {resolution}x{resolution}.",
        video_dir=video_dir,
        captions_file=captions_file,
        num_frames=num_frames,
        frame_stride=frame_stride,
        resolution=resolution,
    )


class VideoFolder(tfds.core.GeneratorBasedBuilder):
    """Clips cut from a directory of video files; always built from a `VideoFolderConfig` (see `make_config`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    # TFDS derives this from the package's resources through `importlib_resources`, which is not installed here.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        r = cfg.resolution
        features = {
            "video": tfds.features.Video((cfg.num_frames, r, r, 3), encoding_format="png"),
            "path": tfds.features.Text(),
            "clip_index": tfds.features.Scalar(np.int32),
        }
        names = class_names(list_videos(cfg.video_dir)) if os.path.isdir(cfg.video_dir) else []
        if names:
            features["label"] = tfds.features.ClassLabel(names=names)
        if cfg.captions_file:
            features["caption"] = tfds.features.Text()
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # local files
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        cfg = self.builder_config
        relpaths = list_videos(cfg.video_dir)
        if not relpaths:  # emptied since make_config listed it
            raise VideoDirError(_no_videos_message(cfg.video_dir))
        names = class_names(relpaths)
        captions = read_captions(cfg.captions_file) if cfg.captions_file else {}
        if cfg.captions_file:
            check_captions(relpaths, captions, cfg.captions_file, cfg.video_dir)
        skipped: dict[str, str] = {}
        num_clips = 0
        for rel in relpaths:
            try:
                frames = read_video(os.path.join(cfg.video_dir, rel), cfg.resolution, cfg.frame_stride)
            except VideoDecodeError as e:
                logging.warning("video_folder: skipping undecodable file %s", e)
                skipped[rel] = f"undecodable: {e}"
                continue
            clips = cut_clips(frames, cfg.num_frames)
            if not clips:
                need = (cfg.num_frames - 1) * cfg.frame_stride + 1
                logging.warning("video_folder: skipping %s: %d frames, a clip needs %d", rel, len(frames), need)
                skipped[rel] = f"too short: fewer than {need} frames"
                continue
            for c, clip in enumerate(clips):
                example = {"video": clip, "path": rel, "clip_index": c}
                if names:
                    example["label"] = names.index(rel.split(os.sep)[0])
                if cfg.captions_file:
                    example["caption"] = captions.get(os.path.normpath(rel), "")
                num_clips += 1
                yield f"{rel}#{c}", example
        if not num_clips:  # Raised before TFDS finalizes the split (it would fail with "No examples were yielded").
            raise NoClipsError(no_clips_message(cfg, relpaths, skipped))
        if skipped:
            logging.warning(
                "video_folder: %d of %d files skipped (%d clips written): %s",
                len(skipped),
                len(relpaths),
                num_clips,
                ", ".join(sorted(skipped)),
            )
        self.info.metadata["skipped_files"] = skipped
        self.info.metadata["num_files"] = len(relpaths)


def no_clips_message(cfg: VideoFolderConfig, relpaths: list[str], skipped: dict[str, str]) -> str:
    """Why none of the `relpaths` under cfg.video_dir gave a clip (`skipped`: path -> reason), and what to do."""
    undecodable = [p for p in relpaths if skipped.get(p, "").startswith("undecodable")]
    short = [p for p in relpaths if skipped.get(p, "").startswith("too short")]
    first = relpaths[0]
    fixes = []
    if undecodable:
        fixes.append("check that the files play (e.g. with ffprobe) and re-encode or remove the broken ones")
    if short:
        need = (cfg.num_frames - 1) * cfg.frame_stride + 1
        fixes.append(
            f"a clip needs {need} frames: for shorter videos lower --config.data.num_frames or "
            "--config.data.frame_stride (--config.data.long_range_span with long-range windows)"
        )
    what = "could not be decoded" if len(undecodable) == len(relpaths) else "gave no clip"
    counts = f" ({len(undecodable)} undecodable, {len(short)} too short)" if undecodable and short else ""
    path = os.path.join(cfg.video_dir, first)
    reason = skipped.get(first, "no clip").replace(f"{path}: ", "")  # decode errors start with the path
    return (
        f"all {len(relpaths)} video files under data.video_dir={cfg.video_dir!r} {what}{counts} (first: {path}: "
        f"{reason}); {'; '.join(fixes)}"
    )
