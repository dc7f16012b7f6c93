"""Frame sources: camera, video file, network URL (RTSP/RTMP/HTTP/UDP), GStreamer pipeline, image folder.

A source is opened with a deadline (a source that never opens fails within ``open_timeout`` with one line),
then read frame by frame. :meth:`Source.read` returns ``(status, frame)`` where status is ``"ok"``,
``"corrupt"`` (the frame could not be decoded or has an odd size: the caller skips and counts it) or ``"end"``
(end of file, or a network stream that dropped: the caller reconnects).
"""

from __future__ import annotations

import abc
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.data.readers import read_image
from edgecv.errors import ConfigError, DataError, SourceError

log = logging.getLogger("edgecv.stream")

Kind = Literal["camera", "file", "url", "gst", "folder"]
Status = Literal["ok", "corrupt", "end"]

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
MIN_SIDE = 8  # frames smaller than this are treated as corrupt (no model input is that small)


@dataclass(frozen=True)
class SourceSpec:
    """What ``--source`` named, classified."""

    kind: Kind
    target: str | int

    @property
    def live(self) -> bool:
        """Frames arrive in real time (camera, network, GStreamer): the default drop policy is ``latest``."""
        return self.kind in ("camera", "url", "gst")

    @property
    def network(self) -> bool:
        """A stream that can drop and be reconnected."""
        return self.kind in ("url", "gst")

    def describe(self) -> str:
        return f"{self.kind}:{self.target}"


def parse_source(src: str, gst: bool = False) -> SourceSpec:
    """Classify a ``--source`` string.

    ``0`` / ``1`` … → camera index; ``/dev/videoN`` → camera device; ``scheme://`` with a network scheme → URL;
    an existing folder → image folder; an existing file → video file; ``gst=True`` → GStreamer pipeline.

    Raises:
        ConfigError: an empty source, or a path that does not exist.
    """
    s = src.strip()
    if not s:
        raise ConfigError("--source: expected a camera index, device, file, folder, URL or pipeline, found ''")
    if gst:
        return SourceSpec("gst", s)
    if re.fullmatch(r"\d+", s):
        return SourceSpec("camera", int(s))
    if s.startswith("/dev/video"):
        return SourceSpec("camera", s)
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", s)
    if m:
        scheme = m.group(1).lower()
        if scheme == "file":
            s = s[len("file://") :]
        elif scheme in NETWORK_SCHEMES:
            return SourceSpec("url", s)
        else:
            raise ConfigError(
                f"--source: expected a URL scheme among {', '.join(NETWORK_SCHEMES)}, found '{scheme}://'"
            )
    if " ! " in s:
        raise ConfigError(f"--source looks like a GStreamer pipeline ('{s[:40]}…'); pass --gst with it")
    p = Path(s).expanduser()
    if p.is_dir():
        return SourceSpec("folder", str(p))
    if p.is_file():
        return SourceSpec("file", str(p))
    raise ConfigError(
        f"--source: expected an existing file or folder, a camera index or a URL, found '{s}' (no such path)"
    )


def opencv_has_gstreamer() -> bool:
    cv2 = lazy_import("cv2", "stream")
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


def opencv_has_gui() -> bool:
    cv2 = lazy_import("cv2", "stream")
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return "NONE" not in line.split(":", 1)[1].upper()
    return False


def check_frame(frame: Any, expect_hw: tuple[int, int] | None = None) -> str | None:
    """None when ``frame`` is a usable BGR/gray uint8 image, else why it is not (corrupt or odd-sized)."""
    if frame is None:
        return "undecodable frame"
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        return f"expected a uint8 image, found {getattr(frame, 'dtype', type(frame).__name__)}"
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)):
        return f"expected HxW or HxWx{{1,3,4}}, found shape {frame.shape}"
    h, w = frame.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        return f"odd-sized frame {w}x{h} (smaller than {MIN_SIDE}px)"
    if expect_hw is not None and (h, w) != expect_hw:
        return f"odd-sized frame {w}x{h}, the stream is {expect_hw[1]}x{expect_hw[0]}"
    return None


def to_bgr(frame: np.ndarray) -> np.ndarray:
    cv2 = lazy_import("cv2", "stream")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)  # type: ignore[no-any-return]
    if frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)  # type: ignore[no-any-return]
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)  # type: ignore[no-any-return]
    return frame


class Source(abc.ABC):
    """A frame source. ``open`` (with a deadline), ``read`` until ``"end"``, ``close``; reopenable."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.fps: float | None = None  # nominal rate when the container/driver reports one
        self.frame_count: int | None = None
        #: the file the last frame read came from (image folders and globs), else None
        self.frame_name: str | None = None

    @abc.abstractmethod
    def open(self, timeout: float) -> None:
        """Open or reopen; raise :class:`SourceError` (one line) if it does not open within ``timeout`` s."""

    @abc.abstractmethod
    def read(self) -> tuple[Status, np.ndarray | None]:
        """The next frame: ``("ok", img)``, ``("corrupt", None)`` or ``("end", None)``."""

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.spec.kind,
            "target": str(self.spec.target),
            "fps": self.fps,
            "frame_count": self.frame_count,
        }


def quiet_backend_logs() -> None:
    """Silence OpenCV's and FFmpeg's own stderr chatter (a refused connection prints a line per attempt);
    edgecv reports failures itself in one line. ``EDGECV_DEBUG=1`` keeps the backend logs."""
    if os.environ.get("EDGECV_DEBUG") == "1":
        return
    # read by OpenCV when its FFmpeg backend first initializes: AV_LOG_QUIET
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2 = lazy_import("cv2", "stream")
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # older OpenCV without the logging bindings
        pass


DECODE_MODES = ("auto", "hw", "sw")


def _accel_name(value: float) -> str:
    """OpenCV's ``CAP_PROP_HW_ACCELERATION`` value as a word ("software" when no hardware decoder is in use)."""
    cv2 = lazy_import("cv2", "stream")
    v = int(value or 0)
    if v <= 0:
        return "software"
    for name in dir(cv2):
        if name.startswith("VIDEO_ACCELERATION_") and name != "VIDEO_ACCELERATION_ANY" and getattr(cv2, name) == v:
            return name[len("VIDEO_ACCELERATION_") :].lower()
    return f"hardware ({v})"


class OpenCVSource(Source):
    """Camera, file, URL or GStreamer pipeline through ``cv2.VideoCapture``.

    Network URLs go through OpenCV's FFmpeg backend with its open/read timeouts set, so a stalled stream
    returns ``"end"`` (and is reconnected) instead of blocking forever.

    Files and URLs are decoded on hardware when the machine has a decoder OpenCV's FFmpeg can use (VAAPI on an
    Intel NUC, …) with ``decode="auto"`` (software otherwise), always in software with ``"sw"``, and only on
    hardware with ``"hw"`` (opening fails with one line when there is none). A Jetson's decoder is reached
    through a GStreamer pipeline (``--gst`` with ``nvv4l2decoder``).
    """

    def __init__(self, spec: SourceSpec, decode: str = "auto") -> None:
        super().__init__(spec)
        if decode not in DECODE_MODES:
            raise ConfigError(f"--decode: expected one of {', '.join(DECODE_MODES)}, found '{decode}'")
        self.decode_mode = decode
        self.decoder: str | None = None  # what decodes after open: "software", "vaapi", … (None: not FFmpeg)
        self._cap: Any = None
        self._expect_hw: tuple[int, int] | None = None
        self.read_timeout = 5.0

    def _make(self, timeout: float) -> Any:
        cv2 = lazy_import("cv2", "stream")
        quiet_backend_logs()
        ms = int(max(0.1, timeout) * 1000)
        if self.spec.kind == "gst":
            if not opencv_has_gstreamer():
                raise SourceError(
                    "--gst needs OpenCV built with GStreamer; this OpenCV reports 'GStreamer: NO' "
                    "(pip wheels lack it: use the distribution's python3-opencv or build OpenCV with -DWITH_GSTREAMER=ON)"
                )
            return cv2.VideoCapture(str(self.spec.target), cv2.CAP_GSTREAMER)
        if self.spec.kind == "camera":
            target = self.spec.target
            api = cv2.CAP_V4L2 if isinstance(target, str) or os.name == "posix" else cv2.CAP_ANY
            return cv2.VideoCapture(target, api)
        if str(self.spec.target).lower().startswith("rtsp") and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
            # RTSP over TCP: a server that goes away closes the socket, so the drop is seen at once (over UDP
            # it is only a silence until the read timeout); set OPENCV_FFMPEG_CAPTURE_OPTIONS to override
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
        accel = cv2.VIDEO_ACCELERATION_NONE if self.decode_mode == "sw" else cv2.VIDEO_ACCELERATION_ANY
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.read_timeout * 1000),
            cv2.CAP_PROP_HW_ACCELERATION,
            accel,
        ]
        return cv2.VideoCapture(str(self.spec.target), cv2.CAP_FFMPEG, params)

    def open(self, timeout: float) -> None:
        cv2 = lazy_import("cv2", "stream")
        self.close()
        self._expect_hw = None  # a reconnected stream may come back at another size
        deadline = time.monotonic() + timeout
        last = "OpenCV could not open it; EDGECV_DEBUG=1 shows the backend log"
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempt += 1
            cap = _call_with_timeout(lambda r=remaining: self._make(r), remaining)
            if cap is not None and cap.isOpened():
                if self.spec.kind in ("file", "url"):
                    self.decoder = _accel_name(cap.get(cv2.CAP_PROP_HW_ACCELERATION))
                    if self.decode_mode == "hw" and self.decoder == "software":
                        cap.release()
                        raise SourceError(
                            f"--decode hw: expected a hardware video decoder for {self.spec.describe()}"
                            ", found none OpenCV's FFmpeg can use (use --decode auto or sw)"
                        )
                self._cap = cap
                fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
                self.fps = fps if 0 < fps < 1000 else None
                n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
                self.frame_count = n if n > 0 and self.spec.kind == "file" else None
                return
            if cap is not None:
                cap.release()
            if self.spec.kind in ("file",):
                last = "OpenCV cannot decode it (not a video, or an unsupported codec)"
                break
            # network servers and cameras may come up late: keep trying until the deadline
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        raise SourceError(
            f"source {self.spec.describe()} did not open within {timeout:g} s "
            f"({attempt} attempt{'s' if attempt != 1 else ''}: {last})"
        )

    def read(self) -> tuple[Status, np.ndarray | None]:
        if self._cap is None:
            return "end", None
        try:
            ok, frame = self._cap.read()
        except Exception as exc:  # noqa: BLE001 - a decoder error on one frame must not kill the run
            log.warning("frame read failed: %s", exc)
            return "corrupt", None
        if not ok:
            return "end", None
        why = check_frame(frame, self._expect_hw)
        if why:
            log.debug("skipping frame: %s", why)
            return "corrupt", None
        if self._expect_hw is None:
            self._expect_hw = frame.shape[:2]
        return "ok", to_bgr(frame)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.decoder is not None:
            d["decoder"] = self.decoder
        return d


class FolderSource(Source):
    """Every image in a folder, in name order; unreadable images are reported as corrupt."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.files: list[Path] = []
        self._i = 0

    def open(self, timeout: float) -> None:
        root = Path(str(self.spec.target))
        self.files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if not self.files:
            raise SourceError(f"expected image files ({', '.join(sorted(IMAGE_EXTS))}) in '{root}', found none")
        self.frame_count = len(self.files)
        self._i = 0

    def read(self) -> tuple[Status, np.ndarray | None]:
        if self._i >= len(self.files):
            return "end", None
        path = self.files[self._i]
        self._i += 1
        # the one reader: EXIF orientation applied and 16-bit reduced to 8, as validate and calibration see it
        try:
            img: np.ndarray | None = read_image(path)
        except DataError:
            img = None
        # images in a folder may differ in size: only corrupt or degenerate ones are skipped
        why = check_frame(img)
        if why or img is None:
            log.warning("skipping %s: %s", path.name, why)
            return "corrupt", None
        return "ok", img

    @property
    def current_name(self) -> str:
        return self.files[self._i - 1].name if self._i else ""


def open_source(spec: SourceSpec, decode: str = "auto") -> Source:
    """A (not yet opened) source for ``spec``; ``decode`` (auto / hw / sw) picks the video decoder for files and
    URLs (see :class:`OpenCVSource`)."""
    if decode not in DECODE_MODES:
        raise ConfigError(f"--decode: expected one of {', '.join(DECODE_MODES)}, found '{decode}'")
    if spec.kind == "folder":
        return FolderSource(spec)
    return OpenCVSource(spec, decode=decode)


_ABANDONED: list[threading.Thread] = []


def abandoned_threads() -> int:
    """How many open attempts are still stuck inside a backend after their deadline passed.

    Such a thread cannot be cancelled; a process that exits while one is inside OpenCV/FFmpeg may abort in
    C++ teardown, so the CLI leaves with ``os._exit`` when this is non-zero.
    """
    return sum(t.is_alive() for t in _ABANDONED)


def _call_with_timeout(fn: Any, timeout: float) -> Any:
    """Run ``fn`` in a daemon thread and wait at most ``timeout`` s; None if it did not return in time.

    Some OpenCV backends ignore their open timeout (e.g. a camera driver); a thread keeps the deadline.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = fn()
        except SourceError as exc:
            box["e"] = exc
        except Exception as exc:  # noqa: BLE001 - a backend failure is a failed attempt, not a crash
            box["v"] = None
            log.debug("open attempt failed: %s", exc)

    t = threading.Thread(target=target, daemon=True, name="edgecv-open")
    t.start()
    t.join(timeout)
    if t.is_alive():
        _ABANDONED.append(t)
    if "e" in box:
        raise box["e"]
    return box.get("v")
