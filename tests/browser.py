"""A small headless-Chromium driver over the DevTools protocol (websocket-client), for the report's browser test.

Opens a page from a file, waits for it to load, collects console errors and uncaught exceptions, reports every
``<img>``'s natural size, and takes a PNG screenshot. Chromium is Debian's ``chromium`` (``make system-deps``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from typing_extensions import Self

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Page:
    """One Chromium with one tab; use as a context manager."""

    def __init__(
        self, executable: str | None = None, width: int = 1400, height: int = 1000, timeout: float = 60.0
    ) -> None:
        self.executable = executable or chromium_path()
        if self.executable is None:
            raise RuntimeError("expected a chromium executable on PATH, found none (make system-deps)")
        self.width, self.height, self.timeout = width, height, timeout
        self.errors: list[str] = []
        self._id = 0

    def __enter__(self) -> Self:
        import websocket

        self._profile = tempfile.mkdtemp(prefix="edgecv-chromium-")
        self._proc = subprocess.Popen(
            [
                self.executable,
                *FLAGS,
                f"--user-data-dir={self._profile}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        port = self._devtools_port()
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    targets = json.loads(r.read())
                page = next(t for t in targets if t.get("type") == "page")
                break
            except (OSError, StopIteration):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=self.timeout)
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(method)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return self

    def _devtools_port(self) -> int:
        assert self._proc.stderr is not None
        deadline = time.monotonic() + self.timeout
        seen = []
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline()
            if not line:
                if self._proc.poll() is not None:
                    break
                continue
            seen.append(line)
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                return int(m.group(1))
        raise RuntimeError("chromium did not start its DevTools endpoint:\n" + "".join(seen[-20:]))

    def __exit__(self, *exc: object) -> None:
        try:
            self._ws.close()
        except Exception:  # noqa: BLE001, S110
            pass
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol
    def _event(self, msg: dict[str, Any]) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.errors.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip())

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        mid = self._id
        self._ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self._ws.recv())
            self._event(msg)
            if msg.get("method") == method:
                return msg.get("params", {})
        raise TimeoutError(f"no {method} within {self.timeout} s")

    # ------------------------------------------------------------------ actions
    def open(self, path: str | os.PathLike[str]) -> None:
        self.call("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_event("Page.loadEventFired")

    def open_url(self, url: str, event: str = "Page.domContentEventFired") -> None:
        """Navigate to an http(s) URL; a page with live MJPEG images never finishes loading, so this waits for
        ``event`` (the DOM by default) instead of the load event."""
        self.call("Page.navigate", url=url)
        self.wait_event(event)

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        """Evaluate ``expression`` until it is truthy (its value), or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.evaluate(expression)
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"'{expression}' stayed falsy for {timeout} s")
            time.sleep(0.2)

    def evaluate(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate: {r['exceptionDetails']}")
        return r["result"].get("value")

    def images(self) -> list[dict[str, Any]]:
        """Every ``<img>``: alt text, whether it finished loading, its natural width and height."""
        return self.evaluate(  # type: ignore[no-any-return]
            "Promise.all(Array.from(document.images).map(i => (i.decode ? i.decode().catch(() => null) : "
            "Promise.resolve()).then(() => ({alt: i.alt, complete: i.complete, w: i.naturalWidth, "
            "h: i.naturalHeight}))))"
        )

    def screenshot(self, path: str | os.PathLike[str], max_height: int | None = None) -> Path:
        """A PNG of the page from the top, as tall as the page (or ``max_height`` CSS pixels)."""
        m = self.call("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]
        h = int(min(size["height"], max_height) if max_height else size["height"])
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": self.width, "height": h, "scale": 1},
        )
        out = Path(path)
        out.write_bytes(base64.b64decode(shot["data"]))
        return out
