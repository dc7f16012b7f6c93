#!/usr/bin/env python3
"""Latency under cross-stream batching (issue 14): N live-rate HTTP streams into one ``edgecv run``.

    python scripts/latency_multistream.py BUNDLE --videos a.mp4 b.mp4 c.mp4 d.mp4 [--backend onnxruntime]
        [--seconds 40] [--threads 2] [--batch-wait-ms 5] [--repeat 2] [--json out.json]

Each video is served by its own ``ffmpeg -re … -f mpegts -listen 1 http://127.0.0.1:PORT/`` (real time, as a camera
delivers it; loopback, a free port each), and one ``edgecv run`` reads all of them with ``--drop latest`` (the live
policy: a frame that waits is replaced by a newer one). Per run it reports capture-to-result p99 (``e2e``: from
the frame's capture to its result being written) against the batched inference p99 (``infer_batch``: one batch's
engine time), both from the run's own summary, and their ratio; the goal is a ratio of at most 2. ``--repeat``
runs alternate the backends given, so a load change hits each alike. Each video must last longer than
``--seconds`` (the server's loop point stalls the stream); ``scripts/make_video.py --seconds 45`` writes one.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(ffmpeg: str, video: str, port: int) -> subprocess.Popen[bytes]:
    """A live-rate MPEG-TS stream of ``video`` on http://127.0.0.1:PORT/ (one client, as a camera)."""
    return subprocess.Popen(
        [
            ffmpeg,
            "-v",
            "error",
            "-re",
            "-i",
            video,
            "-c:v",
            "copy",
            "-bsf:v",
            "dump_extra=freq=keyframe",
            "-f",
            "mpegts",
            "-listen",
            "1",
            f"http://127.0.0.1:{port}/",
        ],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def one_run(a: argparse.Namespace, backend: str, ffmpeg: str, tmp: Path, k: int) -> dict[str, Any]:
    ports = [free_port() for _ in a.videos]
    servers = [serve(ffmpeg, v, p) for v, p in zip(a.videos, ports)]
    summary = tmp / f"run{k}.json"
    try:
        time.sleep(1.0)  # the servers listen
        sources = [x for i, p in enumerate(ports) for x in ("--source", f"cam{i}=http://127.0.0.1:{p}/")]
        cmd = [sys.executable, "-m", "edgecv", "run", a.bundle, "-b", backend, *sources, "--drop", "latest"]
        cmd += ["--threads", str(a.threads), "--batch-wait-ms", str(a.batch_wait_ms)]
        cmd += ["--max-frames", str(int(a.seconds * a.fps)), "--quiet", "--no-record", "--summary", str(summary)]
        load0 = load_average()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.seconds * 4 + 120)
        if proc.returncode != 0:
            raise SystemExit(f"edgecv run failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    finally:
        for s in servers:
            s.kill()
            s.wait()
    d = json.loads(summary.read_text())
    lat = d["total"]["latency_ms"]
    e2e, inf = float(lat["e2e"]["p99"]), float(lat["infer_batch"]["p99"])
    return {
        "backend": backend,
        "e2e_p50_ms": lat["e2e"]["p50"],
        "e2e_p99_ms": e2e,
        "infer_batch_p50_ms": lat["infer_batch"]["p50"],
        "infer_batch_p99_ms": inf,
        "ratio_p99": round(e2e / inf, 3),
        "fps_in": d["total"]["fps_in"],
        "fps_out": d["total"]["fps_out"],
        "dropped": d["total"]["dropped"],
        "mean_batch": d["engine"]["mean_batch"],
        "slowest_stage": (d["total"].get("slowest_stage") or {}).get("stage"),
        # where a frame's time goes (each stage's p50 / p99): what the e2e tail is made of
        "stages_ms": {k: [v.get("p50"), v.get("p99")] for k, v in lat.items() if isinstance(v, dict) and v.get("n")},
        "load_before": load0,
        "load_after": load_average(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--videos", nargs="+", required=True)
    ap.add_argument("--backend", action="append", help="repeatable (default: onnxruntime and openvino)")
    ap.add_argument("--seconds", type=float, default=40.0, help="length of each run")
    ap.add_argument("--fps", type=float, default=25.0, help="the videos' frame rate (sets --max-frames per stream)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the rows and medians here")
    a = ap.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg: expected on PATH (make system-deps installs it), found none")
    backends = a.backend or ["onnxruntime", "openvino"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeat):
            for b in backends if r % 2 == 0 else backends[::-1]:
                rows.append({"round": r, **one_run(a, b, ffmpeg, Path(tmp), len(rows))})
                print(json.dumps(rows[-1]), flush=True)
    medians = {
        b: {
            "ratio_p99_median": round(statistics.median(x["ratio_p99"] for x in rows if x["backend"] == b), 3),
            "ratio_p99_range": [
                min(x["ratio_p99"] for x in rows if x["backend"] == b),
                max(x["ratio_p99"] for x in rows if x["backend"] == b),
            ],
        }
        for b in backends
    }
    print(json.dumps({"batch_wait_ms": a.batch_wait_ms, "threads": a.threads, "medians": medians}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "medians": medians}, indent=1))


if __name__ == "__main__":
    main()
