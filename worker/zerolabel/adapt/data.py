"""What ``zerolabel adapt`` trains on: images and video clips, checked before training starts.

:func:`collect` takes files and folders (searched recursively for image and video suffixes)
and reads every file once: an image is decoded (at a reduced scale for JPEG, which still
parses the whole file), a video is opened with PyAV, its frames counted and its first frame
decoded, and each file's SHA-256 is taken. An unreadable file, a folder with nothing to train
on, or a video shorter than one clip fails here, before any model loads, naming the file.

The training set is a list of items: every image, then every clip start of every video
(DoRA samples a clip at every frame: ``clip_frames`` frames ``frame_step`` apart). Items are
ordered by content digest, so renaming or moving the files keeps the order, and
:attr:`Inputs.digest` (of the contents only) tells a resumed run whether its inputs changed.
A video too short for the step is read with a smaller one (logged); a frame that does not
decode mid-video is replaced by the frame before it, the same one on every run.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from zerolabel.errors import ConfigError, ImageLoadError
from zerolabel.io.images import IMAGE_SUFFIXES, ImageLimits, decode, read_file
from zerolabel.progress import track

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg")
"""File suffixes read as videos (lower case), decoded with PyAV (FFmpeg)."""

_CHECK_SIDE = 64  # JPEG checks decode at 1/8 scale: the whole file is parsed, fast
_SEEK_GAP_S = 2.0  # a later frame this far ahead is reached by seeking, else by decoding on
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageInput:
    """An image to train on."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class VideoInput:
    """A video to take clips from.

    frames: frames it holds. fps: its average frame rate. start_s: the time of its first
    frame. step: frames between two frames of a clip (the config's, or less for a short video).
    """

    path: Path
    sha256: str
    frames: int
    fps: float
    start_s: float
    step: int

    def clip_starts(self, clip_frames: int) -> int:
        """Frames a clip may start at."""
        return self.frames - (clip_frames - 1) * self.step


@dataclass(frozen=True)
class Item:
    """One sample of a step: an image, or a video clip (its first frame's index)."""

    image: ImageInput | None = None
    video: VideoInput | None = None
    start: int = 0

    @property
    def is_clip(self) -> bool:
        return self.video is not None


@dataclass(frozen=True)
class Inputs:
    """The training set: images and videos, ordered by content digest."""

    images: tuple[ImageInput, ...]
    videos: tuple[VideoInput, ...]
    clip_frames: int
    _ends: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ends, total = [], len(self.images)
        for video in self.videos:
            total += video.clip_starts(self.clip_frames)
            ends.append(total)
        object.__setattr__(self, "_ends", tuple(ends))

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else len(self.images)

    def item(self, index: int) -> Item:
        """The item at ``index``: images first, then each video's clip starts."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index < len(self.images):
            return Item(image=self.images[index])
        slot = bisect.bisect_right(self._ends, index)
        before = self._ends[slot - 1] if slot else len(self.images)
        return Item(video=self.videos[slot], start=index - before)

    @property
    def digest(self) -> str:
        """SHA-256 of the contents (not the names) and how clips are cut from them."""
        parts = [f"image:{image.sha256}" for image in self.images]
        parts += [f"video:{v.sha256}:{v.frames}:{v.step}" for v in self.videos]
        parts.append(f"clip_frames:{self.clip_frames}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def describe(self) -> str:
        clips = len(self) - len(self.images)
        return (
            f"{len(self.images)} images, {len(self.videos)} videos ({clips} clips of "
            f"{self.clip_frames} frames)"
        )


def collect(
    paths: Sequence[str | Path],
    *,
    clip_frames: int,
    frame_step: int,
    limits: ImageLimits | None = None,
    progress: bool = True,
) -> Inputs:
    """Find, check and order the files to train on.

    Args:
        paths: image or video files, and folders searched recursively.
        clip_frames: frames per clip.
        frame_step: frames between two frames of a clip.
        limits: the largest image in bytes and pixels.
        progress: show progress while the files are read.

    Raises:
        ConfigError: a path that does not exist, a folder with no image or video, no input.
        ImageLoadError: a file that is no readable image or video, or a video shorter than a
            clip (the message names the file).
    """
    limits = limits or ImageLimits()
    files = _files(paths)
    images: dict[str, ImageInput] = {}
    videos: dict[str, VideoInput] = {}
    for path in track(files, "checking inputs", unit="file", enabled=progress):
        if path.suffix.lower() in VIDEO_SUFFIXES:
            video = probe_video(path, clip_frames=clip_frames, frame_step=frame_step)
            videos.setdefault(video.sha256, video)
        else:
            image = check_image(path, limits)
            images.setdefault(image.sha256, image)
    duplicates = len(files) - len(images) - len(videos)
    if duplicates:
        logger.info("%d files have the same content as another and are used once", duplicates)
    ordered = tuple(images[key] for key in sorted(images))
    return Inputs(ordered, tuple(videos[key] for key in sorted(videos)), clip_frames)


def _files(paths: Sequence[str | Path]) -> list[Path]:
    if not paths:
        raise ConfigError("no input: give image or video files, or folders holding them")
    found: dict[str, Path] = {}
    suffixes = (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES)
    for item in paths:
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
            matches = [p for p in matches if p.is_file()]
            if not matches:
                raise ConfigError(
                    f"{path} holds no image or video (searched recursively for "
                    f"{', '.join(suffixes)})"
                )
        elif path.is_file():
            matches = [path]
        else:
            raise ConfigError(f"{path}: no such file or folder")
        for match in matches:
            found.setdefault(str(match.resolve()), match)
    return sorted(found.values(), key=str)


def check_image(path: Path, limits: ImageLimits) -> ImageInput:
    """The image, once decoded whole (reduced scale for JPEG) and its digest taken.

    Raises:
        ImageLoadError: missing, empty, too large, not an image, corrupt or truncated.
    """
    loaded = decode(read_file(path, limits), str(path), limits, max_side=_CHECK_SIDE)
    return ImageInput(path, loaded.sha256)


def read_image(image: ImageInput, limits: ImageLimits, max_side: int) -> Tensor:
    """[3, H, W] float RGB in [0, 1], the longer side at most ``max_side`` (bicubic)."""
    data = read_file(image.path, limits)
    pixels = decode(data, str(image.path), limits, max_side=max_side).pixels
    return _to_tensor(_fit(pixels, max_side))


def _fit(pixels: np.ndarray[Any, np.dtype[np.uint8]], max_side: int) -> Any:
    height, width = pixels.shape[:2]
    if max(height, width) <= max_side:
        return pixels
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))


def _to_tensor(pixels: Any) -> Tensor:
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255.0  # a copy


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise ConfigError(
            "videos are decoded with PyAV: pip install 'zerolabel[adapt]' (or pip install av)"
        ) from None
    return av


def probe_video(path: Path, *, clip_frames: int, frame_step: int) -> VideoInput:
    """Open a video, count its frames and decode its first one.

    Raises:
        ImageLoadError: not a video FFmpeg reads, no video stream, nothing decodes, or fewer
            frames than a clip.
    """
    av = _av()
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(container, path)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            if fps <= 0:
                raise ImageLoadError(str(path), "the video stream has no frame rate")
            frames = int(stream.frames) or _count_packets(container, stream)
            start_s = float((stream.start_time or 0) * stream.time_base)
            container.seek(0)
            next(container.decode(stream))
    except ImageLoadError:
        raise
    except StopIteration:
        raise ImageLoadError(str(path), "no frame of the video decodes") from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ImageLoadError(str(path), f"not a readable video ({exc})") from None
    if frames < clip_frames:
        raise ImageLoadError(
            str(path), f"{frames} frames, fewer than the {clip_frames} of a clip (--clip-frames)"
        )
    step = min(frame_step, (frames - 1) // max(clip_frames - 1, 1))
    if step < frame_step:
        logger.info(
            "%s: %d frames; its clips take every %d frames instead of %d", path, frames, step,
            frame_step,
        )  # fmt: skip
    return VideoInput(path, file_sha256(path), frames, fps, start_s, max(step, 1))


def _video_stream(container: Any, path: Path) -> Any:
    if not container.streams.video:
        raise ImageLoadError(str(path), "no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _count_packets(container: Any, stream: Any) -> int:
    """Frames of a stream whose header gives no count (WebM): its packets, without decoding."""
    count = sum(1 for packet in container.demux(stream) if packet.size)
    return count


def read_clip(video: VideoInput, start: int, clip_frames: int, max_side: int) -> Tensor:
    """[F, 3, H, W] float RGB in [0, 1]: frames ``start + i * step``, longer side capped.

    Raises:
        ImageLoadError: the video cannot be opened any more, or no frame decodes.
    """
    av = _av()
    wanted = [start + i * video.step for i in range(clip_frames)]
    times = [video.start_s + index / video.fps for index in wanted]
    try:
        with av.open(str(video.path)) as container:
            stream = _video_stream(container, video.path)
            frames = list(_frames_at(container, stream, times, 0.5 / video.fps))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ImageLoadError(str(video.path), f"not a readable video ({exc})") from None
    if not frames:
        raise ImageLoadError(str(video.path), f"no frame decodes from frame {start} on")
    while len(frames) < clip_frames:  # the stream ended early: its last frame stands in
        frames.append(frames[-1])
    return torch.stack([_to_tensor(_frame_pixels(frame, max_side)) for frame in frames])


def _frames_at(container: Any, stream: Any, times: list[float], slack: float) -> Iterator[Any]:
    """The first decoded frame at or after each time (less ``slack``); a frame more than
    :data:`_SEEK_GAP_S` after the last one found is reached by seeking to it."""
    index = 0
    while index < len(times):
        target = int((times[index] - slack) / float(stream.time_base))
        container.seek(max(target, 0), stream=stream, backward=True)
        found = False
        for frame in _decoded(container, stream):
            when = float(frame.time) if frame.time is not None else times[index]
            while index < len(times) and when >= times[index] - slack:
                yield frame
                index, found = index + 1, True
            if index == len(times) or (found and times[index] - when > _SEEK_GAP_S):
                break
        else:
            return  # the stream ended


def _decoded(container: Any, stream: Any) -> Iterable[Any]:
    """Decoded frames; a packet that does not decode is skipped (its frame is replaced by the
    one before it)."""
    av = _av()
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.FFmpegError as exc:
            logger.warning("%s: a frame does not decode (%s); using the one before", stream, exc)


def _frame_pixels(frame: Any, max_side: int) -> Any:
    width, height = int(frame.width), int(frame.height)
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
