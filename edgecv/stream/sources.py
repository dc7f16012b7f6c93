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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.data.readers import read_image
from edgecv.errors import ConfigError, DataError, SourceError
from edgecv.registry import Registry

log = logging.getLogger("edgecv.stream")

Status = Literal["ok", "corrupt", "end"]

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
GLOB_CHARS = ("*", "?", "[")
MIN_SIDE = 8  # frames smaller than this are treated as corrupt (no model input is that small)


@dataclass(frozen=True)
class SourceSpec:
    """What ``--source`` named, classified: a registered kind (:data:`SOURCES`) and its target."""

    kind: str
    target: str | int

    @property
    def info(self) -> SourceKind:
        return SOURCES.get(self.kind)

    @property
    def live(self) -> bool:
        """Frames arrive in real time (camera, network, GStreamer): the default drop policy is ``latest``."""
        return self.info.live

    @property
    def network(self) -> bool:
        """A stream that can drop and be reconnected."""
        return self.info.network

    @property
    def files(self) -> bool:
        """Read from files on disk (a video, an image folder or glob): ``--loop`` restarts it, outputs may not
        overwrite it."""
        return self.info.inputs is not None

    def inputs(self) -> list[Path]:
        """The files and folders this source reads (outputs must stay out of them)."""
        return self.info.inputs(self) if self.info.inputs is not None else []

    def describe(self) -> str:
        return f"{self.kind}:{self.target}"


@dataclass(frozen=True)
class SourceKind:
    """One kind of ``--source``, registered in :data:`SOURCES` (the one place a new kind is added).

    Attributes:
        name: the kind (``SourceSpec.kind``, ``source.kind`` in summaries).
        claim: the stripped ``--source`` string → this kind's target, or None when it is not this kind. Kinds are
            asked in ``order``; the first that claims wins. A kind with a ``flag`` is chosen by that flag only.
        open: ``(spec, decode)`` → the unopened :class:`Source`.
        example: makes a ``--source`` string of this kind under the given folder (files it needs are written
            there); the registry's parametrized test opens every kind's example.
        order: claim priority (lower first).
        live: frames come in real time (default drop policy ``latest``; reconnected with ``--reconnect-max``).
        network: the stream may drop and is always reconnected.
        flag: the option that selects this kind (``--gst``), when the string alone cannot say.
        inputs: the files/folders read (None: not a file source).
        opens_anywhere: the example opens on any machine (file sources); others may fail to open in one line.
    """

    name: str
    claim: Callable[[str], str | int | None]
    open: Callable[[SourceSpec, str], Source]
    example: Callable[[Path], str]
    order: int = 100
    live: bool = False
    network: bool = False
    flag: str | None = None
    inputs: Callable[[SourceSpec], list[Path]] | None = None
    opens_anywhere: bool = False


SOURCES: Registry[SourceKind] = Registry("stream source")


def register_source(kind: SourceKind) -> SourceKind:
    """Add a source kind (see :class:`SourceKind`); ``parse_source`` and ``open_source`` pick it up."""
    SOURCES.register(kind.name, kind)
    return kind


def source_kinds() -> list[SourceKind]:
    """Every registered kind, in claim order."""
    return sorted((SOURCES.get(n) for n in SOURCES.names()), key=lambda k: (k.order, k.name))


def parse_source(src: str, gst: bool = False) -> SourceSpec:
    """Classify a ``--source`` string by asking the registered kinds (:data:`SOURCES`) in order.

    Built in: ``0`` / ``1`` … → camera index; ``/dev/videoN`` → camera device; ``scheme://`` with a network scheme
    → URL; an existing folder → image folder; an existing file → video file; a pattern (``imgs/*.jpg``) that
    matches image files → image glob; ``gst=True`` → GStreamer pipeline.

    Raises:
        ConfigError: an empty source, an unknown URL scheme, or a path that does not exist.
    """
    s = src.strip()
    if not s:
        raise ConfigError("--source: expected a camera index, device, file, folder, URL or pipeline, found ''")
    kinds = source_kinds()
    if gst:
        for k in kinds:
            if k.flag == "--gst":
                return SourceSpec(k.name, s)
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", s)
    if m:
        scheme = m.group(1).lower()
        if scheme == "file":
            s = s[len("file://") :]
        elif scheme not in NETWORK_SCHEMES:
            raise ConfigError(
                f"--source: expected a URL scheme among {', '.join(NETWORK_SCHEMES)}, found '{scheme}://'"
            )
    for k in kinds:
        if k.flag is None:
            target = k.claim(s)
            if target is not None:
                return SourceSpec(k.name, target)
    if " ! " in s:
        raise ConfigError(f"--source looks like a GStreamer pipeline ('{s[:40]}…'); pass --gst with it")
    if any(c in s for c in GLOB_CHARS):
        raise ConfigError(
            f"--source: expected a pattern matching image files ({', '.join(sorted(IMAGE_EXTS))}), "
            f"found none matching '{s}'"
        )
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
            raise ConfigError(f"--video-decode: expected one of {', '.join(DECODE_MODES)}, found '{decode}'")
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
                            f"--video-decode hw: expected a hardware video decoder for {self.spec.describe()}"
                            ", found none OpenCV's FFmpeg can use (use --video-decode auto or sw)"
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

    def list_files(self) -> list[Path]:
        root = Path(str(self.spec.target))
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise SourceError(f"expected image files ({', '.join(sorted(IMAGE_EXTS))}) in '{root}', found none")
        return files

    def open(self, timeout: float) -> None:
        self.files = self.list_files()
        self.frame_count = len(self.files)
        self._i = 0
        self.frame_name = None

    def read(self) -> tuple[Status, np.ndarray | None]:
        if self._i >= len(self.files):
            return "end", None
        path = self.files[self._i]
        self._i += 1
        self.frame_name = path.name
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


def glob_images(pattern: str) -> list[Path]:
    """The image files a pattern (``imgs/*.jpg``, ``data/**/*.png``) matches, in name order."""
    import glob

    found = (Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


class GlobSource(FolderSource):
    """The image files a pattern matches, in name order (a predict run over ``'imgs/*.jpg'``)."""

    def list_files(self) -> list[Path]:
        files = glob_images(str(self.spec.target))
        if not files:
            raise SourceError(
                f"expected image files ({', '.join(sorted(IMAGE_EXTS))}) matching '{self.spec.target}', found none"
            )
        return files


def open_source(spec: SourceSpec, decode: str = "auto") -> Source:
    """A (not yet opened) source for ``spec``, built by its registered kind; ``decode`` (auto / hw / sw) picks the
    video decoder for files and URLs (see :class:`OpenCVSource`)."""
    if decode not in DECODE_MODES:
        raise ConfigError(f"--video-decode: expected one of {', '.join(DECODE_MODES)}, found '{decode}'")
    return SOURCES.get(spec.kind).open(spec, decode)


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


# ------------------------------------------------------------------------------------------------ registry
def _claim_camera(s: str) -> str | int | None:
    if re.fullmatch(r"\d+", s):
        return int(s)
    return s if s.startswith("/dev/video") else None


def _claim_url(s: str) -> str | None:
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", s)
    return s if m and m.group(1).lower() in NETWORK_SCHEMES else None


def _claim_folder(s: str) -> str | None:
    p = Path(s).expanduser()
    return str(p) if p.is_dir() else None


def _claim_file(s: str) -> str | None:
    p = Path(s).expanduser()
    return str(p) if p.is_file() else None


def _claim_glob(s: str) -> str | None:
    return s if any(c in s for c in GLOB_CHARS) and glob_images(s) else None


def _opencv(spec: SourceSpec, decode: str) -> Source:
    return OpenCVSource(spec, decode=decode)


def _write_images(folder: Path, n: int = 3) -> list[Path]:
    cv2 = lazy_import("cv2", "stream")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = np.zeros((48 + 8 * i, 64, 3), np.uint8)
        img[..., i % 3] = 200
        out.append(folder / f"img{i}.png")
        cv2.imwrite(str(out[-1]), img)
    return out


def _example_video(folder: Path) -> str:
    cv2 = lazy_import("cv2", "stream")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        w.write(np.full((48, 64, 3), 60 * i, np.uint8))
    w.release()
    return str(path)


def _example_url(folder: Path) -> str:
    import socket

    with socket.socket() as sock:  # a port nobody listens on: the source fails to open, in one line
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return f"rtsp://127.0.0.1:{port}/stream"


def _example_folder(folder: Path) -> str:
    return str(_write_images(folder / "images")[0].parent)


def _example_glob(folder: Path) -> str:
    return str(_write_images(folder / "shots")[0].parent / "*.png")


def _glob_inputs(spec: SourceSpec) -> list[Path]:
    return sorted({p.parent for p in glob_images(str(spec.target))})


def _files(name: str, claim: Any, make: Any, example: Any, order: int, inputs: Any = None) -> SourceKind:
    """A kind read from files on disk: its example opens anywhere, and outputs stay out of what it reads."""
    return SourceKind(name, claim, make, example, order, inputs=inputs or _own_path, opens_anywhere=True)


def _own_path(spec: SourceSpec) -> list[Path]:
    return [Path(str(spec.target))]


_GST_EXAMPLE = "videotestsrc num-buffers=3 ! video/x-raw,width=64,height=48 ! videoconvert ! appsink"

# claim order: an explicit --gst first, then cameras, URLs, folders, files, and patterns last
register_source(SourceKind("gst", lambda s: None, _opencv, lambda d: _GST_EXAMPLE, 0, True, True, "--gst"))
register_source(SourceKind("camera", _claim_camera, _opencv, lambda d: "/dev/video63", 10, live=True))
register_source(SourceKind("url", _claim_url, _opencv, _example_url, 20, live=True, network=True))
register_source(_files("folder", _claim_folder, lambda spec, decode: FolderSource(spec), _example_folder, 30))
register_source(_files("file", _claim_file, _opencv, _example_video, 40))
register_source(_files("glob", _claim_glob, lambda spec, decode: GlobSource(spec), _example_glob, 50, _glob_inputs))
