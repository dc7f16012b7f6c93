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
import json
import logging
import urllib.parse
from typing import Any

import numpy as np

from edgecv import netguard
from edgecv.stream.mjpeg import MjpegHttp
from edgecv.stream.sinkbase import Sink

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


class LivePage(Sink):
    """Serves the live page; a shared sink of :class:`~edgecv.stream.multi.MultiStreamPipeline` (it calls
    :meth:`attach` with itself, and :meth:`write` with every annotated frame and its event). The serving is
    :class:`~edgecv.stream.mjpeg.MjpegHttp`'s; this class names the page and ``/metrics.json``."""

    def __init__(
        self,
        names: list[str],
        host: str = "127.0.0.1",
        port: int = 8080,
        quality: int = 75,
        token: str | None = None,
        max_clients: int = netguard.DEFAULT_MAX_CLIENTS,
    ) -> None:
        self.names = list(names)
        self.token = token
        self.metrics_served = 0
        self._pipeline: Any = None
        q = "?token=" + urllib.parse.quote(token) if token else ""
        cards = "".join(_CARD.format(name=html.escape(n), qname=urllib.parse.quote(n), q=q) for n in self.names)
        self.page = _PAGE.format(n=len(self.names), cards=cards, token_js=json.dumps(token or "")).encode()
        page = ("text/html; charset=utf-8", self.page)
        self.http = MjpegHttp(
            self.names,
            host,
            port,
            quality=quality,
            token=token,
            max_clients=max_clients,
            paths=("/stream/{}.mjpg", "/snapshot/{}.jpg"),
            pages={"/": lambda: page, "/index.html": lambda: page, "/metrics.json": self._metrics_json},
            thread_name="edgecv-live",
        )
        self.host, self.port = self.http.host, self.http.port

    @property
    def url(self) -> str:
        return self.http.url

    def attach(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    def metrics(self) -> dict[str, Any]:
        if self._pipeline is None:
            return {"t": 0, "streams": {}, "total": {}}
        return self._pipeline.live()  # type: ignore[no-any-return]

    def _metrics_json(self) -> tuple[str, bytes]:
        body = json.dumps(self.metrics()).encode()
        self.metrics_served += 1
        return "application/json", body

    def write(self, frame: np.ndarray | None, event: dict[str, Any]) -> None:
        self.http.publish(str(event.get("stream")), frame)

    def close(self) -> None:
        self.http.close()

    def describe(self) -> dict[str, Any]:
        d = self.http.describe()
        return {
            "url": d["url"],
            "streams": len(self.names),
            "parts_sent": d["parts_sent"],
            "metrics_served": self.metrics_served,
            "auth": d["auth"],
            "refused_unauthorized": d["refused_unauthorized"],
            "refused_full": d["refused_full"],
        }
