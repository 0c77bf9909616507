"""Video clip reading (and writing, for fixtures and demos) with PyAV, whose wheels bundle FFmpeg: no system
ffmpeg is needed. PyAV is optional (``pip install 'medvl[video]'``) and imported lazily: without it every
call raises :class:`VideoBackendMissing` saying what to install.

- :func:`probe` -> :class:`ClipInfo` (duration, frame rate, frame count, size, codec) from the container
  header; when the header has no duration, the packets' time stamps are read (no decoding).
- :func:`read_frames` decodes the frames shown at given times: for each requested time ``t`` the frame whose
  time stamp is nearest (the first frame at or after ``t - half a frame``: a tie goes to the earlier frame). It decodes forward and seeks (to
  the key frame before the target) only when the next target is more than ``seek_gap_s`` ahead, so short
  clips are read in one pass and long ones (a 40-minute surgery) are not decoded whole.
- :func:`frame_difference`: mean absolute difference of two frames (64x64 grayscale, 0-255), the cheap
  "near-identical consecutive frames" test.

Every failure is a :class:`VideoReadError` naming the file and the problem (not a container, no video
stream, truncated, decoding stopped at some time)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ogv", ".flv", ".ts", ".mts",
    ".m2ts", ".3gp",
)


class VideoBackendMissing(ImportError):
    """PyAV is not installed."""


class VideoReadError(ValueError):
    """A clip that cannot be read; ``str()`` is ``"<file>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def require_av() -> Any:
    """The ``av`` module, or :class:`VideoBackendMissing` with the install command."""
    try:
        import av
    except ImportError as e:
        raise VideoBackendMissing("reading video clips needs PyAV (FFmpeg bundled in its wheels): "
                                  "pip install 'medvl[video]'  (or: pip install av)") from e
    return av


def is_probably_video(path: str | Path) -> bool:
    """True when the file name has a video container extension (case-insensitive); content is not checked."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class ClipInfo:
    duration_s: float
    fps: float
    frames: int | None  # from the header when it says (mp4 does, Matroska often not)
    width: int
    height: int
    codec: str


@dataclass
class Frame:
    index: int  # round(time * fps): the frame's number counted from the clip's first frame
    time_s: float  # presentation time, seconds from the clip's first frame
    array: np.ndarray  # uint8 (H, W, 3) RGB


def _problem(e: BaseException) -> str:
    """The error's message without FFmpeg's error number and the absolute path it repeats."""
    text = getattr(e, "strerror", None) or str(e).strip() or type(e).__name__
    return str(text).replace("\n", " ")


def _open(path: Path) -> tuple[Any, Any]:
    """(container, its first video stream) or VideoReadError."""
    av = require_av()
    if not path.is_file():
        raise VideoReadError(path, "file not found")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise VideoReadError(path, f"not a readable video container ({_problem(e)})") from None
    fmt = container.format.name or ""
    if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg probes content: a PNG named .avi opens as one image
        container.close()
        raise VideoReadError(path, f"not a video: the file is a still image ({fmt.removesuffix('_pipe')})")
    if not container.streams.video:
        container.close()
        raise VideoReadError(path, "the container has no video stream")
    return container, container.streams.video[0]


def _fps(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    return 0.0


def _start(stream: Any) -> int:
    return int(stream.start_time) if stream.start_time is not None else 0


def probe(path: str | Path) -> ClipInfo:
    """The clip's duration, frame rate, frame count, size and codec (header only, no decoding)."""
    av = require_av()
    path = Path(path)
    container, stream = _open(path)
    with container:
        fps = _fps(stream)
        if fps <= 0:
            raise VideoReadError(path, "the video stream has no frame rate")
        tb = float(stream.time_base) if stream.time_base else 0.0
        duration = None
        if stream.duration and tb:
            duration = stream.duration * tb
        elif container.duration:
            duration = container.duration / av.time_base
        if not duration or duration <= 0:  # e.g. a Matroska file without a Duration element: read the packets
            try:
                last = max((p.pts + (p.duration or 0) for p in container.demux(stream) if p.pts is not None),
                           default=None)
            except av.FFmpegError as e:
                raise VideoReadError(path, f"cannot read the packets ({_problem(e)})") from None
            if last is None or not tb:
                raise VideoReadError(path, "no frame with a time stamp in the video stream")
            duration = (last - _start(stream)) * tb
        frames = int(stream.frames) if stream.frames else None
        ctx = stream.codec_context
        return ClipInfo(duration_s=float(duration), fps=fps, frames=frames, width=int(ctx.width),
                        height=int(ctx.height), codec=str(ctx.name))


def read_frames(path: str | Path, times: Iterable[float], seek_gap_s: float = 5.0) -> Iterator[tuple[float, Frame]]:
    """Yield ``(t, frame)`` for each requested time ``t`` (sorted ascending; several times may give the same
    frame): the frame whose time stamp is nearest to ``t``. A time past the last frame gives the last frame
    when it lies within one frame of it; others are not yielded (the caller sees which are missing).
    Raises :class:`VideoReadError` when the clip cannot be opened or decoding fails (after yielding the
    frames decoded before the failure)."""
    av = require_av()
    path = Path(path)
    targets = sorted(max(0.0, float(t)) for t in times)
    if not targets:
        return
    container, stream = _open(path)
    with container:
        fps = _fps(stream)
        if fps <= 0:
            raise VideoReadError(path, "the video stream has no frame rate")
        tb = stream.time_base
        start = _start(stream)
        half = 0.5 / fps
        decoded = container.decode(stream)
        i, pos, count, sought = 0, -math.inf, 0, -1
        last: tuple[float, Any] | None = None
        while i < len(targets):
            t = targets[i]
            if t - max(pos, 0.0) > seek_gap_s and sought < i and tb:
                sought = i  # one seek per target: a sparse key frame may still land far before it
                try:
                    container.seek(start + int((t - 2 * half) / tb), stream=stream, backward=True)
                except av.FFmpegError:
                    pass  # not seekable: decode forward
                else:
                    decoded = container.decode(stream)
            try:
                frame = next(decoded)
            except StopIteration:
                break
            except av.FFmpegError as e:
                raise VideoReadError(path, f"decoding failed after {max(pos, 0.0):.3f} s ({_problem(e)})") from None
            count += 1
            ft = (frame.pts - start) * float(tb) if frame.pts is not None and tb else (count - 1) / fps
            pos = ft
            last = (ft, frame)
            array = None
            while i < len(targets) and ft >= targets[i] - half:
                if array is None:
                    array = frame.to_ndarray(format="rgb24")
                yield targets[i], Frame(index=round(ft * fps), time_s=ft, array=array)
                i += 1
        if last is not None:
            ft, frame = last
            array = None
            while i < len(targets) and targets[i] - ft <= 1.0 / fps + 1e-6:
                if array is None:
                    array = frame.to_ndarray(format="rgb24")
                yield targets[i], Frame(index=round(ft * fps), time_s=ft, array=array)
                i += 1


def frame_difference(a: np.ndarray, b: np.ndarray, size: int = 64) -> float:
    """Mean absolute difference (0-255) of two frames after conversion to grayscale and resizing to
    ``size`` x ``size``: about 0 for repeated frames, a few grey levels for compression noise."""
    def small(x: np.ndarray) -> np.ndarray:
        img = Image.fromarray(x).convert("L").resize((size, size), Image.Resampling.BOX)
        return np.asarray(img, dtype=np.float32)

    return float(np.abs(small(a) - small(b)).mean())


def write_clip(path: str | Path, frames: Iterable[np.ndarray], fps: int, codec: str = "libx264",
               pix_fmt: str = "yuv420p", options: dict[str, str] | None = None) -> int:
    """Encode uint8 RGB ``(H, W, 3)`` frames (even sizes for 4:2:0 formats) to a clip at ``fps`` frames per
    second; the container follows the suffix (.mp4, .mkv, .avi, ...). Frame k is shown at k / fps seconds.
    Returns the number of frames written."""
    av = require_av()
    n = 0
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = dict(options)
        for arr in frames:
            arr = np.ascontiguousarray(arr, dtype=np.uint8)
            if n == 0:
                stream.height, stream.width = arr.shape[:2]
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = n
            for packet in stream.encode(frame):
                out.mux(packet)
            n += 1
        for packet in stream.encode(None):
            out.mux(packet)
    return n
