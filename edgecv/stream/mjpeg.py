"""The one MJPEG-over-HTTP server of ``edgecv run --serve`` (the single-stream endpoint and the multi-stream page).

:class:`MjpegHttp` owns the serving: a threaded HTTP server under :mod:`edgecv.netguard`'s rules (loopback by
default, a token every request must carry to bind anything else, a bound on simultaneous MJPEG viewers), one
:class:`JpegSlot` per stream holding its newest JPEG, ``multipart/x-mixed-replace`` streaming and snapshots.
Frames are JPEG-encoded only while someone watches that stream (and once, so a snapshot works). The sinks that
serve (:class:`~edgecv.stream.sinks.MjpegServer`, :class:`~edgecv.stream.live.LivePage`) only name their routes
and pages.
"""

from __future__ import annotations

import http.server
import logging
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np

from edgecv import netguard
from edgecv._lazy import lazy_import
from edgecv.errors import ConfigError

log = logging.getLogger("edgecv.stream")

BOUNDARY = "edgecvframe"

#: path → (content type, body): a fixed page the owner serves beside the streams (computed per request)
Pages = dict[str, Callable[[], tuple[str, bytes]]]


class JpegSlot:
    """The newest JPEG of one stream and who watches it."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.jpeg: bytes | None = None
        self.seq = 0
        self.viewers = 0
        self.closed = False


class MjpegHttp:
    """Serves ``names``' MJPEG streams and snapshots at ``paths`` (two templates, ``{}`` is the stream name), plus
    the owner's ``pages``; everything else is 404.

    Args:
        names: the streams ("" for a single stream).
        host, port: where to listen (port 0: any free port); a non-loopback host needs ``token``.
        quality: JPEG quality.
        token: the token every request must carry (``Authorization: Bearer …`` or ``?token=…``).
        max_clients: MJPEG viewers at once (a snapshot holds no place).
        thread_name: the server thread's name.

    Raises:
        ConfigError: no token for a non-loopback host, or the address cannot be bound (one line).
    """

    def __init__(
        self,
        names: list[str],
        host: str,
        port: int,
        *,
        quality: int,
        token: str | None,
        max_clients: int,
        paths: tuple[str, str],
        pages: Pages | None = None,
        thread_name: str = "edgecv-mjpeg",
    ) -> None:
        netguard.check_bind(host, token)
        self.quality = int(quality)
        self.token = token
        self.limit = netguard.ClientLimit(max_clients)
        self.slots = {n: JpegSlot() for n in names}
        self.pages: Pages = dict(pages or {})
        self.stream_path, self.snapshot_path = paths
        self.refused_auth = 0
        self.parts_sent = 0
        self._count_lock = threading.Lock()
        self._closed = False
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10  # a client that sends nothing does not hold a thread for long

            def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the status line reports clients
                log.debug(thread_name + ": " + fmt, *args)

            def do_GET(self) -> None:
                me._handle(self)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        try:
            self.httpd = Server((host, int(port)), Handler)
        except OSError as exc:
            raise ConfigError(f"--serve: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
        addr = self.httpd.server_address
        self.host, self.port = str(addr[0] if isinstance(addr[0], str) else addr[0].decode()), int(addr[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name=thread_name
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # ------------------------------------------------------------------ requests
    @staticmethod
    def _slot_name(path: str, template: str) -> str | None:
        head, _, tail = template.partition("{}")
        if path.startswith(head) and path.endswith(tail) and len(path) >= len(head) + len(tail):
            return path[len(head) : len(path) - len(tail)]
        return None

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        path = urllib.parse.unquote(h.path.split("?", 1)[0])
        if not netguard.token_ok(self.token, netguard.request_token(h.headers, h.path)):
            with self._count_lock:
                self.refused_auth += 1
            send(h, 401, "text/plain", b"expected a token (Authorization: Bearer ... or ?token=...)\n")
            return
        page = self.pages.get(path)
        if page is not None:
            send(h, 200, *page())
            return
        name = self._slot_name(path, self.stream_path)
        if name is not None and name in self.slots:
            # a stream holds its connection for as long as the client watches: bounded
            if not self.limit.acquire():
                send(h, 503, "text/plain", f"at most {self.limit.max_clients} viewers\n".encode())
                return
            try:
                self._stream(h, self.slots[name])
            finally:
                self.limit.release()
            return
        name = self._slot_name(path, self.snapshot_path)
        if name is not None and name in self.slots:
            slot = self.slots[name]
            with slot.cv:
                slot.cv.wait_for(lambda: slot.jpeg is not None or slot.closed, 5.0)
                jpeg = slot.jpeg
            if jpeg is None:
                send(h, 503, "text/plain", b"no frame yet\n")
            else:
                send(h, 200, "image/jpeg", jpeg)
            return
        send(h, 404, "text/plain", b"not found\n")

    def _stream(self, h: http.server.BaseHTTPRequestHandler, slot: JpegSlot) -> None:
        h.send_response(200)
        h.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        h.send_header("Cache-Control", "no-store")
        h.send_header("Connection", "close")
        h.end_headers()
        with slot.cv:
            slot.viewers += 1
        seq = -1
        try:
            while True:
                with slot.cv:
                    slot.cv.wait_for(lambda: slot.closed or (slot.jpeg is not None and slot.seq > seq), 1.0)  # noqa: B023 (called at once)
                    if slot.closed:
                        break
                    if slot.jpeg is None or slot.seq <= seq:
                        continue
                    jpeg, seq = slot.jpeg, slot.seq
                h.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                    + jpeg
                    + b"\r\n"
                )
                h.wfile.flush()
                with self._count_lock:
                    self.parts_sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        finally:
            with slot.cv:
                slot.viewers -= 1

    # ------------------------------------------------------------------ frames
    def publish(self, name: str, frame: np.ndarray | None) -> None:
        """The newest annotated frame of stream ``name`` (encoded only while watched, and once for snapshots)."""
        slot = self.slots.get(name)
        if frame is None or slot is None or self._closed:
            return
        if slot.viewers == 0 and slot.jpeg is not None:
            return
        cv2 = lazy_import("cv2", "stream")
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        with slot.cv:
            slot.jpeg = buf.tobytes()
            slot.seq += 1
            slot.cv.notify_all()

    @property
    def viewers(self) -> int:
        return sum(s.viewers for s in self.slots.values())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for slot in self.slots.values():
            with slot.cv:
                slot.closed = True
                slot.cv.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "parts_sent": self.parts_sent,
            "auth": bool(self.token),
            "refused_unauthorized": self.refused_auth,
            "refused_full": self.limit.refused,
        }


def send(h: http.server.BaseHTTPRequestHandler, code: int, ctype: str, body: bytes) -> None:
    h.send_response(code)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    h.send_header("Cache-Control", "no-store")
    h.end_headers()
    h.wfile.write(body)
