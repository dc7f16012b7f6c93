"""Where processed frames go: annotated video file, JSON lines, an MJPEG HTTP endpoint, a window.

Every sink has ``write(frame_bgr, event)`` and ``close()``; ``close`` always finalizes (the pipeline calls it
on end of stream, on error and on Ctrl-C / SIGTERM), so a saved video is playable however the run stopped.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.errors import ConfigError, SourceError
from edgecv.stream.buffer import FrameBuffer

log = logging.getLogger("edgecv.stream")


class Sink:
    """Base: ``needs_frame`` says whether the sink wants the annotated image (else only the event)."""

    needs_frame = True

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {}


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

    def __init__(self, path: str | Path, fps: float | None = None, writer: str = "auto",
                 preset: str = "ultrafast") -> None:
        if writer not in ("auto", "ffmpeg", "opencv"):
            raise ConfigError(f"--writer: expected auto, ffmpeg or opencv, found '{writer}'")
        if preset not in self.PRESETS:
            raise ConfigError(f"--save-preset: expected one of {', '.join(self.PRESETS)}, found '{preset}'")
        self.preset = preset
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mkv", ".avi", ".mov"):
            raise ConfigError(f"--save: expected a .mp4, .mkv, .mov or .avi file, found '{self.path.name}'")
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
        self._error: SourceError | None = None

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
            cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24",
                   "-s", f"{w}x{h}", "-r", f"{self.fps:.3f}", "-i", "pipe:0", "-an",
                   "-c:v", "libx264", "-preset", self.preset, "-pix_fmt", "yuv420p", "-f", fmt, str(self.tmp)]
            # own session: a terminal Ctrl-C reaches only us; we then close ffmpeg's stdin and it finalizes
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, start_new_session=True)
        else:
            cv2 = lazy_import("cv2", "stream")
            fourcc = cv2.VideoWriter.fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            self._cv_writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
            if not self._cv_writer.isOpened():
                raise SourceError(f"OpenCV VideoWriter could not open '{self.tmp}' ({w}x{h} @ {self.fps} fps)")
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
                self._error = SourceError(f"ffmpeg stopped while writing '{self.path}': {err.strip()[-300:]}")
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
                if rc != 0:
                    err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                    log.error("ffmpeg exited %s while finalizing %s: %s", rc, self.path, err.strip()[-300:])
                    ok = False
            elif self._cv_writer is not None:
                self._cv_writer.release()
            if self.frames and ok and self.tmp.exists():
                os.replace(self.tmp, self.path)
            elif self.tmp.exists():
                self.tmp.unlink()

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": str(self.path), "writer": self.writer, "frames": self.frames, "fps": self.fps,
                             "size": list(self._size) if self._size else None}
        if self.writer == "ffmpeg":
            d["preset"] = self.preset
        return d


# ------------------------------------------------------------------------------------------------ jsonl
class JsonlSink(Sink):
    """One JSON object per processed frame.

    Written in place and flushed per line (not temp + rename) on purpose: it is an event log that others
    ``tail -f`` while the run is live, and every line is complete when written.
    """

    needs_frame = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.lines = 0
        self._lock = threading.Lock()

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"), default=_json_default)
        with self._lock:
            if self._f.closed:
                return
            self._f.write(line + "\n")
            self._f.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "lines": self.lines}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ------------------------------------------------------------------------------------------------ mjpeg
_INDEX = b"""<!doctype html><html><head><title>edgecv run</title>
<style>body{background:#111;color:#ddd;font-family:sans-serif;margin:1em}img{max-width:100%}</style></head>
<body><h3>edgecv run</h3><img src="/stream.mjpg" alt="stream"><p><a href="/snapshot.jpg">snapshot</a></p>
</body></html>"""
BOUNDARY = "edgecvframe"


class MjpegServer(Sink):
    """Serves the annotated frames as ``multipart/x-mixed-replace`` MJPEG on ``/stream.mjpg``, a snapshot on
    ``/snapshot.jpg`` and a small index page on ``/``. Frames are JPEG-encoded only while a client watches.

    Binds to loopback by default; another host must be asked for explicitly (the stream is unauthenticated).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, quality: int = 80) -> None:
        self.quality = int(quality)
        self._cv = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._closed = False
        self.clients = 0
        self.parts_sent = 0
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("MJPEG endpoint binds to %s: anyone who can reach it sees the stream", host)
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the status line reports clients
                log.debug("mjpeg: " + fmt, *args)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", _INDEX)
                elif path == "/snapshot.jpg":
                    jpeg = server_self._wait_jpeg(-1, 5.0)
                    if jpeg is None:
                        self._send(503, "text/plain", b"no frame yet\n")
                    else:
                        self._send(200, "image/jpeg", jpeg)
                elif path == "/stream.mjpg":
                    server_self._stream(self)
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        try:
            self.httpd = Server((host, int(port)), Handler)
        except OSError as exc:
            raise ConfigError(f"--serve: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
        addr = self.httpd.server_address
        self.host, self.port = str(addr[0] if isinstance(addr[0], str) else addr[0].decode()), int(addr[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True, name="edgecv-mjpeg")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _wait_jpeg(self, after_seq: int, timeout: float) -> bytes | None:
        with self._cv:
            self._cv.wait_for(lambda: self._closed or (self._jpeg is not None and self._seq > after_seq), timeout)
            return self._jpeg

    def _stream(self, h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        h.send_header("Cache-Control", "no-store")
        h.send_header("Connection", "close")
        h.end_headers()
        with self._cv:
            self.clients += 1
        seq = -1
        try:
            while True:
                with self._cv:
                    self._cv.wait_for(lambda: self._closed or (self._jpeg is not None and self._seq > seq), 1.0)
                    if self._closed:
                        break
                    if self._jpeg is None or self._seq <= seq:
                        continue
                    jpeg, seq = self._jpeg, self._seq
                h.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                              .encode() + jpeg + b"\r\n")
                h.wfile.flush()
                with self._cv:
                    self.parts_sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        finally:
            with self._cv:
                self.clients -= 1

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        if frame is None or self._closed:
            return
        # encode only while someone is watching (or before the first frame, so /snapshot.jpg works)
        if self.clients == 0 and self._jpeg is not None:
            return
        cv2 = lazy_import("cv2", "stream")
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        with self._cv:
            self._jpeg = buf.tobytes()
            self._seq += 1
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "parts_sent": self.parts_sent}


# ------------------------------------------------------------------------------------------------ window
class WindowSink(Sink):
    """``cv2.imshow`` window; needs a display and an OpenCV with highgui (``opencv-python-headless`` has none).

    ``q`` or Esc in the window asks the run to stop (``stop_requested``).
    """

    def __init__(self, title: str = "edgecv run") -> None:
        from edgecv.stream.sources import opencv_has_gui

        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY") and os.name == "posix":
            raise ConfigError("--show: expected a display (DISPLAY is not set); use --serve HOST:PORT to watch "
                              "the stream in a browser instead")
        if not opencv_has_gui():
            raise ConfigError("--show: this OpenCV has no GUI support ('GUI: NONE', e.g. opencv-python-headless); "
                              "install opencv-python, or use --serve HOST:PORT")
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
