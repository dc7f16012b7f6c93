"""Where processed frames go: annotated video file, JSON lines, an MJPEG HTTP endpoint, a window; and the
registry of every sink kind of ``edgecv run`` (:data:`SINKS`).

Every sink is a :class:`~edgecv.stream.sinkbase.Sink` (``write(frame_bgr, event)`` and ``close()``); ``close``
always finalizes (the pipeline calls it on end of stream, on error and on Ctrl-C / SIGTERM), so a saved video is
playable however the run stopped. The sinks kept in their own modules (``live``, ``mqtt``, ``predict``) import
their base from ``sinkbase``, never from here, so registering them here makes no import cycle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecv import netguard
from edgecv._io import check_output_files, describe_write_error
from edgecv._lazy import lazy_import
from edgecv.errors import ConfigError, SinkError
from edgecv.registry import Registry
from edgecv.stream.buffer import FrameBuffer
from edgecv.stream.sinkbase import Sink, event_json

log = logging.getLogger("edgecv.stream")


def check_outputs(source: Any, outputs: dict[str, Path | None], force: bool = False) -> None:
    """``run``'s outputs against its source (a file or a folder of images): see :func:`edgecv._io.check_output_files`."""
    check_output_files(source.inputs(), outputs, force)


# ------------------------------------------------------------------------------------------------ video
class VideoSink(Sink):
    """Annotated video. H.264 through an ``ffmpeg`` subprocess when ffmpeg is on PATH (``writer="auto"``),
    else OpenCV's VideoWriter with the ``mp4v`` codec.

    The file is written beside the destination under a hidden temporary name and renamed when finalized, so
    a run killed with SIGKILL leaves nothing that looks finished (DESIGN rule 11). Frames whose size differs
    from the first frame (an image folder) are resized to it.

    ``preset`` is libx264's speed/size trade-off. The encoder shares the CPU with the model, so the default is
    ``ultrafast``: on a 2-core Xeon a 720p frame costs ~7.6 ms of CPU with it against ~18.5 ms with
    ``veryfast``, for files about 3x larger.
    """

    PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

    def __init__(
        self, path: str | Path, fps: float | None = None, writer: str = "auto", preset: str = "ultrafast"
    ) -> None:
        if writer not in ("auto", "ffmpeg", "opencv"):
            raise ConfigError(f"--writer: expected auto, ffmpeg or opencv, found '{writer}'")
        if preset not in self.PRESETS:
            raise ConfigError(f"--save-preset: expected one of {', '.join(self.PRESETS)}, found '{preset}'")
        self.preset = preset
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mkv", ".avi", ".mov"):
            raise ConfigError(
                f"--save: expected a .mp4, .mkv, .mov or .avi file (or a folder DIR/ for images), "
                f"found '{self.path.name}'"
            )
        self._fps_given = bool(fps and fps > 0)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        if writer == "auto":
            writer = "ffmpeg" if shutil.which("ffmpeg") else "opencv"
        if writer == "ffmpeg" and not shutil.which("ffmpeg"):
            raise ConfigError("--writer ffmpeg: expected an ffmpeg executable on PATH, found none")
        self.writer = writer
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._proc: subprocess.Popen[bytes] | None = None
        self._cv_writer: Any = None
        self._size: tuple[int, int] | None = None  # (w, h)
        self.frames = 0  # frames the encoder took
        self._closed = False
        self._lock = threading.Lock()
        self._queue: FrameBuffer[np.ndarray] = FrameBuffer(2, "wait", "video")
        self._thread: threading.Thread | None = None
        self._error: SinkError | None = None
        self._raised = False  # the error reached the caller once (from write): close does not raise it again

    def on_source_open(self, source: Any, cfg: Any) -> None:
        """Take the frame rate from the source (divided by the stride, capped by max-fps) unless it was given."""
        if self._fps_given or not source.fps:
            return
        fps = source.fps / max(1, int(getattr(cfg, "stride", 1)))
        if getattr(cfg, "max_fps", None):
            fps = min(fps, float(cfg.max_fps))
        self.fps = fps

    def _open(self, w: int, h: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # yuv420p needs even sides
        w, h = w - w % 2, h - h % 2
        self._size = (w, h)
        if self.writer == "ffmpeg":
            fmt = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}[self.path.suffix.lower()]
            cmd = [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "bgr24",
                "-s",
                f"{w}x{h}",
                "-r",
                f"{self.fps:.3f}",
                "-i",
                "pipe:0",
                "-an",
                "-c:v",
                "libx264",
                "-preset",
                self.preset,
                "-pix_fmt",
                "yuv420p",
                "-f",
                fmt,
                str(self.tmp),
            ]
            # own session: a terminal Ctrl-C reaches only us; we then close ffmpeg's stdin and it finalizes
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
            )
        else:
            cv2 = lazy_import("cv2", "stream")
            fourcc = cv2.VideoWriter.fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self._cv_writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
            if not self._cv_writer.isOpened():
                raise SinkError(f"--save: OpenCV VideoWriter could not open '{self.tmp}' ({w}x{h} @ {self.fps} fps)")
        self._thread = threading.Thread(target=self._drain, name="edgecv-video-writer", daemon=True)
        self._thread.start()

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        if frame is None:
            return
        with self._lock:
            if self._closed:
                return
            if self._size is None:
                self._open(frame.shape[1], frame.shape[0])
            assert self._size is not None
            w, h = self._size
            if frame.shape[1] != w or frame.shape[0] != h:
                cv2 = lazy_import("cv2", "stream")
                frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
            if self._error is not None:
                self._raised = True
                raise self._error
            # the encoder runs behind a 2-frame queue in its own thread: post-processing of the next frame
            # overlaps the encoding of this one, and memory stays bounded
            self._queue.put(np.ascontiguousarray(frame))

    def _drain(self) -> None:
        """The writer thread: hands queued frames to ffmpeg (or OpenCV) until the queue is closed."""
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            try:
                if self._proc is not None:
                    assert self._proc.stdin is not None
                    self._proc.stdin.write(frame.data)
                else:
                    self._cv_writer.write(frame)
            except (BrokenPipeError, OSError) as exc:
                err = ""
                if self._proc is not None and self._proc.stderr is not None:
                    with contextlib.suppress(OSError, ValueError):
                        err = self._proc.stderr.read().decode(errors="replace")
                self._error = SinkError(
                    f"--save: could not write '{self.path}': ffmpeg stopped "
                    f"({_ffmpeg_why(err) or describe_write_error(exc, self.path.parent)})"
                )
                self._error.__cause__ = exc
                self._queue.abort()
                return
            self.frames += 1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            ok = self._error is None
            if self._thread is not None:
                self._queue.close()  # the writer drains what is queued, then stops
                self._thread.join(timeout=120)
                ok = ok and self._error is None and not self._thread.is_alive()
            if self._proc is not None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    assert self._proc.stdin is not None
                    self._proc.stdin.close()
                try:
                    rc = self._proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    rc = -9
                if rc != 0 and self._error is None:
                    err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                    why = _ffmpeg_why(err) or f"exit code {rc}"
                    self._error = SinkError(f"--save: could not write '{self.path}': ffmpeg failed ({why})")
                ok = ok and rc == 0
            elif self._cv_writer is not None:
                self._cv_writer.release()
                # OpenCV's writer fails silently (a full disk gives a truncated, unplayable file): read it back
                if ok and self.frames and self._error is None:
                    problem = self._unplayable()
                    if problem:
                        self._error = SinkError(f"--save: could not write '{self.path}': {problem}")
                        ok = False
            if self.frames and ok and self.tmp.exists():
                os.replace(self.tmp, self.path)
            elif self.tmp.exists():
                self.tmp.unlink()
            if self._error is not None and not self._raised:
                self._raised = True
                raise self._error

    def _unplayable(self) -> str | None:
        """Why the finished temporary file is not a playable video with our frames, or None when it is."""
        cv2 = lazy_import("cv2", "stream")
        try:
            size = self.tmp.stat().st_size
        except OSError as exc:
            return describe_write_error(exc, self.path.parent)
        cap = cv2.VideoCapture(str(self.tmp))
        try:
            ok = cap.isOpened() and cap.read()[0]
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
        finally:
            cap.release()
        bad = (
            "the file is not playable"
            if not ok or size == 0
            else f"the file holds {n} of {self.frames} frames"
            if 0 < n < self.frames
            else None
        )
        if bad is None:
            return None
        why = describe_write_error(OSError(bad), self.path.parent)
        return why if why.startswith("no space") else bad

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": str(self.path),
            "writer": self.writer,
            "frames": self.frames,
            "fps": self.fps,
            "size": list(self._size) if self._size else None,
        }
        if self.writer == "ffmpeg":
            d["preset"] = self.preset
        return d


def _ffmpeg_why(stderr: str) -> str:
    """ffmpeg's reason in a few words: a full disk named as such, else its last line."""
    if "No space left" in stderr or "Disk quota" in stderr:
        return "no space left on the device"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1][-200:] if lines else ""


# ------------------------------------------------------------------------------------------------ jsonl
class JsonlSink(Sink):
    """One JSON object per processed frame.

    Written in place and flushed per line (not temp + rename) on purpose: it is an event log that others
    ``tail -f`` while the run is live, and every line is complete when written.
    """

    needs_frame = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f: Any = None  # opened once the source is open: a source that fails leaves an old file untouched
        self.lines = 0
        self._lock = threading.Lock()
        self._failed = False

    def on_source_open(self, source: Any, cfg: Any) -> None:
        with self._lock:
            if self._f is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._f = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        line = event_json(event)
        with self._lock:
            if self._f is None or self._f.closed:
                return
            try:
                self._f.write(line + "\n")
                self._f.flush()
            except OSError as exc:
                self._fail(exc)
            self.lines += 1

    def _fail(self, exc: OSError) -> None:
        # a results file with lines missing must not look finished: remove it, and stop the run with one line
        self._failed = True
        with contextlib.suppress(OSError):
            self._f.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        raise SinkError(
            f"--jsonl: could not write '{self.path}': {describe_write_error(exc, self.path.parent)}"
        ) from exc

    def close(self) -> None:
        with self._lock:
            if self._f is not None and not self._f.closed:
                try:
                    self._f.flush()
                    os.fsync(self._f.fileno())
                    self._f.close()
                except OSError as exc:
                    self._fail(exc)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "lines": self.lines}


# ------------------------------------------------------------------------------------------------ mjpeg
_INDEX = b"""<!doctype html><html><head><title>edgecv run</title>
<style>body{background:#111;color:#ddd;font-family:sans-serif;margin:1em}img{max-width:100%}</style></head>
<body><h3>edgecv run</h3><img src="/stream.mjpg" alt="stream"><p><a href="/snapshot.jpg">snapshot</a></p>
</body></html>"""


class MjpegServer(Sink):
    """Serves the annotated frames as ``multipart/x-mixed-replace`` MJPEG on ``/stream.mjpg``, a snapshot on
    ``/snapshot.jpg`` and a small index page on ``/`` (the serving is :class:`~edgecv.stream.mjpeg.MjpegHttp`'s).
    Frames are JPEG-encoded only while a client watches.

    Binds to loopback by default. Any other address needs a token (``--token`` or ``EDGECV_TOKEN``), which every
    request must carry (``Authorization: Bearer …`` or ``?token=…``), and at most ``max_clients`` watch at once
    (:mod:`edgecv.netguard`).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        quality: int = 80,
        token: str | None = None,
        max_clients: int = netguard.DEFAULT_MAX_CLIENTS,
    ) -> None:
        from edgecv.stream.mjpeg import MjpegHttp

        index = _INDEX.replace(b"/stream.mjpg", b"/stream.mjpg?token=" + token.encode()) if token else _INDEX
        page = ("text/html; charset=utf-8", index)
        self.http = MjpegHttp(
            [""],
            host,
            port,
            quality=quality,
            token=token,
            max_clients=max_clients,
            paths=("/stream{}.mjpg", "/snapshot{}.jpg"),
            pages={"/": lambda: page, "/index.html": lambda: page},
            thread_name="edgecv-mjpeg",
        )
        self.host, self.port = self.http.host, self.http.port

    @property
    def url(self) -> str:
        return self.http.url

    @property
    def parts_sent(self) -> int:
        return self.http.parts_sent

    @property
    def clients(self) -> int:
        return self.http.viewers

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        self.http.publish("", frame)

    def close(self) -> None:
        self.http.close()

    def describe(self) -> dict[str, Any]:
        return self.http.describe()


# ------------------------------------------------------------------------------------------------ window
class WindowSink(Sink):
    """``cv2.imshow`` window; needs a display and an OpenCV with highgui (``opencv-python-headless`` has none).

    ``q`` or Esc in the window asks the run to stop (``stop_requested``).
    """

    def __init__(self, title: str = "edgecv run") -> None:
        from edgecv.stream.sources import opencv_has_gui

        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.name == "posix":
            raise ConfigError(
                "--show: expected a display (DISPLAY is not set); use --serve HOST:PORT to watch "
                "the stream in a browser instead"
            )
        if not opencv_has_gui():
            raise ConfigError(
                "--show: this OpenCV has no GUI support ('GUI: NONE', e.g. opencv-python-headless); "
                "install opencv-python, or use --serve HOST:PORT"
            )
        self.title = title
        self.stop_requested = False

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        if frame is None:
            return
        cv2 = lazy_import("cv2", "stream")
        cv2.imshow(self.title, frame)
        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop_requested = True

    def close(self) -> None:
        cv2 = lazy_import("cv2", "stream")
        with contextlib.suppress(Exception):
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)


def wait_for_port(host: str, port: int, timeout: float = 5.0) -> bool:
    """True once something accepts TCP connections on host:port (used by tests and the soak script)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------------------------------------ registry
@dataclass
class SinkContext:
    """What a sink kind's ``build`` may use besides its own option's value.

    Attributes:
        values: every sink option's value for this stream (``{name}`` expanded, cameras.yaml's own paths applied).
        options: the run's options (:class:`edgecv.stream.workflow.RunOptions`).
        contract: the bundle's contract (the task decides which label files exist).
        stream: the stream this sink serves; None for a single-stream run or a sink shared by every stream.
        names: every stream's name.
        inputs: the files and folders the sources read (outputs stay out of them).
        on_info: prints one line for the user (a server's URL).
    """

    values: dict[str, Any]
    options: Any
    contract: Any = None
    stream: str | None = None
    names: list[str] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)
    on_info: Callable[[str], None] = lambda line: None


def _asked(v: Any) -> bool:
    return v is not None and v is not False


@dataclass(frozen=True)
class SinkKind:
    """One kind of output of ``edgecv run``, registered in :data:`SINKS` (the one place a new sink is added); the
    single- and multi-stream runs build their sinks from it, and a parametrized test checks every kind.

    Attributes:
        name: the kind.
        option: the :class:`~edgecv.stream.workflow.RunOptions` field (``--save`` is ``save``) that asks for it.
        build: ``(value, SinkContext)`` → the sink.
        example: a folder → the option values that ask for this kind (its test writes under that folder).
        check: ``(sink, events, folder)`` after a run over the example folder: raises AssertionError when what it
            wrote does not match the run's events.
        accepts: whether this kind serves the option's value (``--save`` a video file vs a folder).
        modes: ``single`` and/or ``multi`` (several streams on one engine).
        forces_multi: asking for it runs the multi-stream pipeline even for one source (MQTT).
        shared: the value → one sink for every stream (else one per stream).
        templated: the value is a path where ``{name}`` stands for the stream name.
        camera_key: the ``cameras.yaml`` key that gives a stream its own value.
        output: the value → the file it writes, checked with the other outputs before anything runs.
        precheck: ``(value, flag, SinkContext)`` → raises ConfigError before anything runs or is written.
        needs: what its test needs on the machine (``display``, ``mqtt broker``).
    """

    name: str
    option: str
    build: Callable[[Any, SinkContext], Sink]
    example: Callable[[Path], dict[str, Any]]
    check: Callable[[Sink, list[dict[str, Any]], Path], None]
    accepts: Callable[[Any], bool] = _asked
    modes: tuple[str, ...] = ("single", "multi")
    forces_multi: bool = False
    shared: Callable[[Any], bool] = lambda v: False
    templated: bool = False
    camera_key: str | None = None
    output: Callable[[Any], Path | None] | None = None
    precheck: Callable[[Any, str, SinkContext], None] | None = None
    needs: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.option.replace("_", "-")

    def applies(self, value: Any, mode: str) -> bool:
        return mode in self.modes and _asked(value) and self.accepts(value)


SINKS: Registry[SinkKind] = Registry("stream sink")
_ORDER: list[str] = []


def register_sink(kind: SinkKind) -> SinkKind:
    """Add a sink kind (see :class:`SinkKind`); ``edgecv run`` and its tests pick it up."""
    SINKS.register(kind.name, kind)
    _ORDER.append(kind.name)
    return kind


def sink_kinds() -> list[SinkKind]:
    """Every registered kind, in registration order (the order sinks are built and written)."""
    return [SINKS.get(n) for n in _ORDER]


def expand(template: Any, name: str | None) -> Any:
    """A per-stream value: ``{name}`` replaced by the stream name."""
    if template is None or name is None:
        return template
    return type(template)(str(template).replace("{name}", name)) if isinstance(template, (str, Path)) else template


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or just ``PORT`` (loopback) → (host, port)."""
    t = text.strip()
    host = "127.0.0.1"
    if t.startswith("["):
        h, _, p = t[1:].partition("]:")
        host, port_s = h, p
    elif ":" in t:
        host, _, port_s = t.rpartition(":")
    else:
        port_s = t
    try:
        port = int(port_s)
    except ValueError:
        port = -1
    if not (0 <= port <= 65535) or not host:
        raise ConfigError(f"--serve: expected HOST:PORT (e.g. 127.0.0.1:8080), found '{text}'")
    return host, port


# the built-in kinds: builders import their modules when asked, so a run without MQTT never imports paho
def _build_mqtt(v: Any, ctx: SinkContext) -> Sink:
    from edgecv.stream.mqtt import MqttSink

    o = ctx.options  # --mqtt-qos, --mqtt-password, … are MqttSink's arguments; --mqtt-user is its username
    kw = {k: getattr(o, f"mqtt_{k}") for k in ("qos", "password", "ca", "cert", "key", "insecure", "buffer")}
    return MqttSink(v, username=o.mqtt_user, **kw)


def _check_mqtt(sink: Sink, events: list[dict[str, Any]], folder: Path) -> None:
    d = sink.describe()
    assert d["published"] + d["dropped"] == len(events), d


def _build_video(v: Any, ctx: SinkContext) -> Sink:
    return VideoSink(v, writer=ctx.options.writer, preset=ctx.options.save_preset)


def _check_video(sink: Sink, events: list[dict[str, Any]], folder: Path) -> None:
    assert isinstance(sink, VideoSink) and sink.frames == len(events) and sink.path.stat().st_size > 0


def _build_images(v: Any, ctx: SinkContext) -> Sink:
    from edgecv.stream.predict import ImageFolderSink

    return ImageFolderSink(v)


def _precheck_images(v: Any, flag: str, ctx: SinkContext) -> None:
    from edgecv.stream.predict import check_output_folder

    check_output_folder(flag, Path(v), ctx.inputs, ctx.options.force)


def _check_images(sink: Sink, events: list[dict[str, Any]], folder: Path) -> None:
    from edgecv.stream.predict import ImageFolderSink

    assert isinstance(sink, ImageFolderSink)
    assert sorted(p.name for p in sink.folder.iterdir()) == sorted(e["file"] for e in events)


def _is_folder(v: Any) -> bool:
    from edgecv.stream.predict import is_folder_target

    return _asked(v) and is_folder_target(v)


def _build_labels(v: Any, ctx: SinkContext) -> Sink:
    from edgecv.stream.predict import LabelSink

    return LabelSink(ctx.values["save"], str(v).lower(), ctx.contract.task)


def _precheck_labels(v: Any, flag: str, ctx: SinkContext) -> None:
    save = ctx.values.get("save")
    if not _is_folder(save):
        raise ConfigError(f"{flag}: expected --save DIR/ to write the label files under, found {save or 'none'}")


def _check_labels(sink: Sink, events: list[dict[str, Any]], folder: Path) -> None:
    from edgecv.stream.predict import LabelSink

    assert isinstance(sink, LabelSink) and sink.fmt == "yolo"  # the example: a classifier's top-k
    for e in events:
        lines = (sink.path / f"{Path(e['file']).stem}.txt").read_text().splitlines()
        got = [(int(a), float(b)) for a, b in (ln.split() for ln in lines)]
        want = [(t["class_id"], t["score"]) for t in e["results"][0]["topk"]]
        assert [g[0] for g in got] == [w[0] for w in want]
        assert all(abs(g[1] - w[1]) < 1e-5 for g, w in zip(got, want))


def _build_jsonl(v: Any, ctx: SinkContext) -> Sink:
    return JsonlSink(v)


def _check_jsonl(sink: Sink, events: list[dict[str, Any]], folder: Path) -> None:
    assert isinstance(sink, JsonlSink)
    assert [json.loads(x) for x in sink.path.read_text().splitlines()] == events


def _build_mjpeg(v: Any, ctx: SinkContext) -> Sink:
    from edgecv import netguard

    srv = MjpegServer(
        *parse_hostport(v), token=netguard.resolve_token(ctx.options.token), max_clients=ctx.options.max_clients
    )
    ctx.on_info(f"MJPEG stream at {srv.url} (stream: {srv.url}stream.mjpg)")
    return srv


def _check_server(sink: Sink, events: list[dict[str, Any]], folder: Path) -> None:
    import socket
    import urllib.parse

    u = urllib.parse.urlsplit(sink.describe()["url"])
    assert u.hostname == "127.0.0.1" and u.port
    # the run is over: the server stopped listening (a finished run leaves no open port behind)
    with socket.socket() as s:
        assert s.connect_ex((u.hostname, u.port)) != 0


def _precheck_serve(v: Any, flag: str, ctx: SinkContext) -> None:
    from edgecv import netguard

    host, _port = parse_hostport(v)
    netguard.check_bind(host, netguard.resolve_token(ctx.options.token))


def _build_live(v: Any, ctx: SinkContext) -> Sink:
    from edgecv import netguard
    from edgecv.stream.live import LivePage

    page = LivePage(
        ctx.names,
        *parse_hostport(v),
        token=netguard.resolve_token(ctx.options.token),
        max_clients=ctx.options.max_clients,
    )
    ctx.on_info(f"live page at {page.url}")
    return page


def _build_window(v: Any, ctx: SinkContext) -> Sink:
    return WindowSink()


def _check_window(sink: Sink, events: list[dict[str, Any]], folder: Path) -> None:
    assert isinstance(sink, WindowSink)


def _example(**values: Any) -> Callable[[Path], dict[str, Any]]:
    """Example option values; a value starting with ``/`` is a path under the test's folder."""
    return lambda d: {k: d / v[1:] if isinstance(v, str) and v.startswith("/") else v for k, v in values.items()}


_SERVER: dict[str, Any] = {"check": _check_server, "precheck": _precheck_serve}
_STREAM_FILE: dict[str, Any] = {"templated": True, "output": Path}  # one file per stream, {name} in its path
_MQTT_URL = "mqtt://127.0.0.1:{port}/edgecv/{stream}"

# the order of registration is the order sinks are built and written
register_sink(SinkKind("mqtt", "mqtt", _build_mqtt, _example(mqtt=_MQTT_URL), _check_mqtt, needs="mqtt broker",
                       modes=("multi",), forces_multi=True, shared=lambda v: True))  # fmt: skip
register_sink(SinkKind("video", "save", _build_video, _example(save="/out.mp4"), _check_video, camera_key="save",
                       accepts=lambda v: _asked(v) and not _is_folder(v), **_STREAM_FILE))  # fmt: skip
register_sink(SinkKind("images", "save", _build_images, _example(save="/annotated"), _check_images, _is_folder,
                       templated=True, camera_key="save", precheck=_precheck_images))  # fmt: skip
register_sink(SinkKind("labels", "labels", _build_labels, _example(save="/annotated", labels="yolo"), _check_labels,
                       precheck=_precheck_labels))  # fmt: skip
register_sink(SinkKind("jsonl", "jsonl", _build_jsonl, _example(jsonl="/out.jsonl"), _check_jsonl, camera_key="jsonl",
                       shared=lambda v: "{name}" not in str(v), **_STREAM_FILE))  # fmt: skip
register_sink(SinkKind("mjpeg", "serve", _build_mjpeg, _example(serve="127.0.0.1:0"), modes=("single",), **_SERVER))
register_sink(SinkKind("live", "serve", _build_live, _example(serve="127.0.0.1:0"), modes=("multi",),
                       shared=lambda v: True, **_SERVER))  # fmt: skip
register_sink(SinkKind("window", "show", _build_window, _example(show=True), _check_window, modes=("single",),
                       needs="display"))  # fmt: skip
