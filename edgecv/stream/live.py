"""The live page of a multi-stream run (``edgecv run --serve`` with several streams).

One HTML page with every stream's annotated MJPEG and its live numbers (fps in/out, p50/p99 capture-to-result
latency, drops, reconnects, state), refreshed twice a second from ``/metrics.json``. Routes:

- ``/``: the page; ``/metrics.json``: :meth:`MultiStreamPipeline.live` as JSON;
- ``/stream/<name>.mjpg``: that stream's MJPEG (``multipart/x-mixed-replace``); ``/snapshot/<name>.jpg``.

Network rules are :mod:`edgecv.netguard`'s, as for every server edgecv starts: loopback by default, a token
(``--token`` / ``EDGECV_TOKEN``) required to bind anything else and then carried by every request, and a bound
on simultaneous MJPEG viewers. Frames are JPEG-encoded only while someone watches that stream.
"""

from __future__ import annotations

import html
import http.server
import json
import logging
import threading
import urllib.parse
from typing import Any

import numpy as np

from edgecv import netguard
from edgecv._lazy import lazy_import
from edgecv.errors import ConfigError
from edgecv.stream.sinks import BOUNDARY, Sink

log = logging.getLogger("edgecv.stream")

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>edgecv run: live</title><link rel="icon" href="data:,">
<style>
body{{background:#111;color:#ddd;font-family:sans-serif;margin:1em}}
.grid{{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}}
.card{{background:#1c1c1c;border:1px solid #333;border-radius:6px;padding:8px}}
.card img{{width:100%;display:block;background:#000;min-height:120px}}
table{{border-collapse:collapse;width:100%;font-size:13px;margin-top:6px}}
td,th{{padding:2px 6px;text-align:right}} td:first-child,th:first-child{{text-align:left}}
h3{{margin:0 0 6px 0}} .state{{font-size:12px;color:#9c9}} #total{{margin:8px 0 14px 0}}
</style></head><body>
<h2>edgecv run: {n} streams</h2>
<table id="total"><tr><th>total</th><th>fps in</th><th>fps out</th><th>frames</th><th>dropped</th>
<th>reconnects</th><th>infer p50 ms</th><th>infer p99 ms</th></tr>
<tr><td>all streams</td><td id="t-fps_in">-</td><td id="t-fps_out">-</td><td id="t-frames">-</td>
<td id="t-dropped">-</td><td id="t-reconnects">-</td><td id="t-infer_p50_ms">-</td><td id="t-infer_p99_ms">-</td></tr>
</table>
<div class="grid">{cards}</div>
<script>
const TOKEN = {token_js};
const q = TOKEN ? ("?token=" + encodeURIComponent(TOKEN)) : "";
const fmt = v => (v === null || v === undefined) ? "-" : (typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(1)) : v);
async function tick() {{
  try {{
    const r = await fetch("/metrics.json" + q, {{cache: "no-store"}});
    const m = await r.json();
    for (const [k, v] of Object.entries(m.total)) {{
      const el = document.getElementById("t-" + k); if (el) el.textContent = fmt(v);
    }}
    for (const [name, s] of Object.entries(m.streams)) {{
      for (const [k, v] of Object.entries(s)) {{
        const el = document.getElementById("s-" + name + "-" + k); if (el) el.textContent = fmt(v);
      }}
    }}
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }} catch (e) {{ document.body.dataset.error = String(e); }}
}}
tick(); setInterval(tick, 500);
</script></body></html>"""

_CARD = """<div class="card"><h3>{name} <span class="state" id="s-{name}-state">-</span></h3>
<img src="/stream/{qname}.mjpg{q}" alt="{name}">
<table><tr><th>fps in</th><th>fps out</th><th>p50 ms</th><th>p99 ms</th><th>frames</th><th>dropped</th>
<th>reconnects</th></tr><tr><td id="s-{name}-fps_in">-</td><td id="s-{name}-fps_out">-</td>
<td id="s-{name}-p50_ms">-</td><td id="s-{name}-p99_ms">-</td><td id="s-{name}-frames">-</td>
<td id="s-{name}-dropped">-</td><td id="s-{name}-reconnects">-</td></tr></table></div>"""


class _Slot:
    """The newest JPEG of one stream and who watches it."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.jpeg: bytes | None = None
        self.seq = 0
        self.viewers = 0
        self.closed = False


class LivePage(Sink):
    """Serves the live page; a shared sink of :class:`~edgecv.stream.multi.MultiStreamPipeline` (it calls
    :meth:`attach` with itself, and :meth:`write` with every annotated frame and its event)."""

    def __init__(
        self,
        names: list[str],
        host: str = "127.0.0.1",
        port: int = 8080,
        quality: int = 75,
        token: str | None = None,
        max_clients: int = netguard.DEFAULT_MAX_CLIENTS,
    ) -> None:
        netguard.check_bind(host, token)
        self.names = list(names)
        self.quality = int(quality)
        self.token = token
        self.limit = netguard.ClientLimit(max_clients)
        self.slots = {n: _Slot() for n in self.names}
        self.refused_auth = 0
        self.parts_sent = 0
        self.metrics_served = 0
        self._pipeline: Any = None
        self._closed = False
        q = "?token=" + urllib.parse.quote(token) if token else ""
        cards = "".join(_CARD.format(name=html.escape(n), qname=urllib.parse.quote(n), q=q) for n in self.names)
        self.page = _PAGE.format(n=len(self.names), cards=cards, token_js=json.dumps(token or "")).encode()
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("live: " + fmt, *args)

            def do_GET(self) -> None:
                path = urllib.parse.unquote(self.path.split("?", 1)[0])
                if not netguard.token_ok(me.token, netguard.request_token(self.headers, self.path)):
                    me.refused_auth += 1
                    self._send(401, "text/plain", b"expected a token (Authorization: Bearer ... or ?token=...)\n")
                    return
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", me.page)
                elif path == "/metrics.json":
                    body = json.dumps(me.metrics()).encode()
                    me.metrics_served += 1
                    self._send(200, "application/json", body)
                elif path.startswith("/stream/") and path.endswith(".mjpg") and path[8:-5] in me.slots:
                    if not me.limit.acquire():
                        self._send(503, "text/plain", f"at most {me.limit.max_clients} viewers\n".encode())
                        return
                    try:
                        me._stream(self, me.slots[path[8:-5]])
                    finally:
                        me.limit.release()
                elif path.startswith("/snapshot/") and path.endswith(".jpg") and path[10:-4] in me.slots:
                    slot = me.slots[path[10:-4]]
                    with slot.cv:
                        slot.cv.wait_for(lambda: slot.jpeg is not None or slot.closed, 5.0)
                        jpeg = slot.jpeg
                    if jpeg is None:
                        self._send(503, "text/plain", b"no frame yet\n")
                    else:
                        self._send(200, "image/jpeg", jpeg)
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
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True, name="edgecv-live"
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def attach(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    def metrics(self) -> dict[str, Any]:
        if self._pipeline is None:
            return {"t": 0, "streams": {}, "total": {}}
        return self._pipeline.live()  # type: ignore[no-any-return]

    def _stream(self, h: http.server.BaseHTTPRequestHandler, slot: _Slot) -> None:
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
                self.parts_sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with slot.cv:
                slot.viewers -= 1

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        slot = self.slots.get(str(event.get("stream")))
        if frame is None or slot is None or self._closed:
            return
        if slot.viewers == 0 and slot.jpeg is not None:
            return  # encode only while watched (and once, for the snapshot)
        cv2 = lazy_import("cv2", "stream")
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        with slot.cv:
            slot.jpeg = buf.tobytes()
            slot.seq += 1
            slot.cv.notify_all()

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
            "streams": len(self.names),
            "parts_sent": self.parts_sent,
            "metrics_served": self.metrics_served,
            "auth": bool(self.token),
            "refused_unauthorized": self.refused_auth,
            "refused_full": self.limit.refused,
        }
