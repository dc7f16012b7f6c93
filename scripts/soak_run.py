#!/usr/bin/env python
"""Soak test for ``edgecv run``: run it for N minutes on a looping source and watch its memory.

Samples the RSS of the ``edgecv run`` process (and its children, e.g. an ffmpeg writer) every few seconds,
then prints start / end / max RSS and least-squares slopes (MiB per minute) after the first 10 s and over
the second half of the run (early growth is warm-up: allocator pools, lazy imports, engine arenas).

Example::

    python scripts/soak_run.py BUNDLE --minutes 3 --source clip.mp4 -- --save /tmp/soak.mp4

Without ``--source`` a 640x480 test clip is generated. Extra ``edgecv run`` arguments go after ``--``.
Exit code 1 when the second-half slope exceeds ``--max-slope`` MiB/min.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil


def make_clip(path: Path, n: int = 150, size: tuple[int, int] = (640, 480)) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30, size)
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        cv2.circle(img, ((20 + 4 * i) % size[0], size[1] // 2), 40, (0, 0, 255), -1)
        w.write(img)
    w.release()
    return path


def rss_mib(proc: psutil.Process) -> float:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--source", help="looping source (a file is looped with --loop); default: generated clip")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--every", type=float, default=3.0, help="sampling period, seconds")
    ap.add_argument("--max-slope", type=float, default=None, help="fail above this MiB/min (second half)")
    ap.add_argument("--json", dest="json_out", help="write the figures as JSON here")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="edgecv-soak-"))
    source = args.source or str(make_clip(tmp / "clip.mp4"))
    summary_path = tmp / "summary.json"
    cmd = [
        sys.executable,
        "-m",
        "edgecv",
        "run",
        args.bundle,
        "--backend",
        args.backend,
        "--source",
        source,
        "--summary",
        str(summary_path),
        "--quiet",
    ]
    if Path(source).exists():
        cmd.append("--loop")
    cmd += extra
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    t0 = time.monotonic()
    samples: list[tuple[float, float]] = []
    try:
        while time.monotonic() - t0 < args.minutes * 60:
            if proc.poll() is not None:
                raise SystemExit(f"edgecv run exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            samples.append((time.monotonic() - t0, rss_mib(ps)))
            print(f"t={samples[-1][0]:7.1f}s rss={samples[-1][1]:8.1f} MiB", flush=True)
            time.sleep(args.every)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        print(f"edgecv run exited {proc.returncode}: {err[-2000:]}", file=sys.stderr)
        return 2
    t = np.array([s[0] for s in samples])
    r = np.array([s[1] for s in samples])
    half = t >= t[-1] / 2
    warm = t >= min(10.0, t[-1] / 4)  # skip start-up (imports, model load) for the whole-run slope
    slope_all = float(np.polyfit(t[warm] / 60, r[warm], 1)[0]) if warm.sum() > 2 else 0.0
    slope_half = float(np.polyfit(t[half] / 60, r[half], 1)[0]) if half.sum() > 2 else 0.0
    run = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    figures = {
        "minutes": args.minutes,
        "samples": len(samples),
        "rss_start_mib": round(float(r[0]), 1),
        "rss_end_mib": round(float(r[-1]), 1),
        "rss_max_mib": round(float(r.max()), 1),
        "slope_after_10s_mib_per_min": round(slope_all, 3),
        "slope_second_half_mib_per_min": round(slope_half, 3),
        "frames_processed": run.get("frames_processed"),
        "fps_out": run.get("fps_out"),
        "dropped": run.get("dropped"),
        "queues": run.get("queues"),
    }
    print(json.dumps(figures, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2) + "\n")
    if args.max_slope is not None and slope_half > args.max_slope:
        print(f"RSS grows {slope_half:.2f} MiB/min in the second half (limit {args.max_slope})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
