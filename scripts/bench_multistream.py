#!/usr/bin/env python3
"""One ``edgecv run`` with N streams (cross-stream batching) against N separate ``edgecv run`` processes and
against one stream alone: aggregate frames/s and peak memory of each (issue 14's throughput claim).

    python scripts/bench_multistream.py BUNDLE --videos a.mp4 b.mp4 c.mp4 d.mp4 [--backend openvino]
        [--threads 1] [--frames 300] [--batch-wait-ms 5] [--json out.json]

Every run reads ``--frames`` frames of each file with ``--drop wait`` (nothing dropped), so the frame rates
compare the same work. Peak memory is each process's maximum resident set (``wait4``); the N-process figure is
their sum (they run at the same time). Figures vary with the machine's load: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def spawn(args: list[str], out: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "edgecv",
        "run",
        *args,
        "--json",
        str(out),
        "--jsonl",
        str(out.with_suffix(".jsonl")),
        "-q",
        "--no-record",
        "--force",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def span_fps(jsonls: list[Path]) -> float:
    """Frames per second between the first and the last frame captured in any of the runs (start-up excluded,
    overlap of the N processes taken as it was)."""
    ts = [json.loads(line)["ts"] for p in jsonls for line in p.read_text().splitlines()]
    return (len(ts) - 1) / (max(ts) - min(ts)) if len(ts) > 1 and max(ts) > min(ts) else 0.0


def reap(procs: list[subprocess.Popen[bytes]]) -> tuple[float, list[int]]:
    """Wait for every process; (seconds until the last ended, peak RSS in KiB of each)."""
    rss: dict[int, int] = {}
    left = {p.pid: p for p in procs}
    while left:
        pid, status, usage = os.wait4(-1, 0)
        if pid in left:
            p = left.pop(pid)
            p.returncode = os.waitstatus_to_exitcode(status)
            if p.returncode != 0:
                err = p.stderr.read().decode() if p.stderr else ""
                raise SystemExit(f"edgecv run failed (exit {p.returncode}): {err[-800:]}")
            rss[pid] = int(usage.ru_maxrss)
    return time.perf_counter(), [rss[p.pid] for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--videos", nargs="+", required=True)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=1, help="engine threads of each process")
    ap.add_argument(
        "--batched-threads",
        type=int,
        default=None,
        help="engine threads of the batched run "
        "(default: --threads times the number of streams, the same total as the N processes)",
    )
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    n = len(a.videos)
    common = [a.bundle, "--backend", a.backend, "--drop", "wait", "--max-frames", str(a.frames)]
    bt = a.batched_threads or min(a.threads * n, os.cpu_count() or 1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        # one stream alone
        t0 = time.perf_counter()
        p = spawn([*common, "--threads", str(a.threads), "--source", a.videos[0]], t / "one.json")
        t1, rss = reap([p])
        s = json.loads((t / "one.json").read_text())
        rows.append(
            {
                "run": "1 stream, 1 process",
                "frames": s["frames_processed"],
                "wall_s": t1 - t0,
                "fps": s["frames_processed"] / (t1 - t0),
                "fps_reported": span_fps([t / "one.jsonl"]),
                "peak_rss_mib": sum(rss) / 1024,
                "threads": a.threads,
            }
        )
        # N processes at once
        t0 = time.perf_counter()
        procs = [
            spawn([*common, "--threads", str(a.threads), "--source", v], t / f"p{i}.json")
            for i, v in enumerate(a.videos)
        ]
        t1, rss = reap(procs)
        ss = [json.loads((t / f"p{i}.json").read_text()) for i in range(n)]
        frames = sum(x["frames_processed"] for x in ss)
        rows.append(
            {
                "run": f"{n} streams, {n} processes",
                "frames": frames,
                "wall_s": t1 - t0,
                "fps": frames / (t1 - t0),
                "fps_reported": span_fps([t / f"p{i}.jsonl" for i in range(n)]),
                "peak_rss_mib": sum(rss) / 1024,
                "threads": a.threads * n,
            }
        )
        # one process, N streams, batched
        t0 = time.perf_counter()
        srcs = [x for v in a.videos for x in ("--source", v)]
        p = spawn([*common, "--threads", str(bt), "--batch-wait-ms", str(a.batch_wait_ms), *srcs], t / "multi.json")

        t1, rss = reap([p])
        s = json.loads((t / "multi.json").read_text())
        rows.append(
            {
                "run": f"{n} streams, 1 process, batched",
                "frames": s["total"]["frames_processed"],
                "wall_s": t1 - t0,
                "fps": s["total"]["frames_processed"] / (t1 - t0),
                "fps_reported": span_fps([t / "multi.jsonl"]),
                "peak_rss_mib": sum(rss) / 1024,
                "threads": bt,
                "mean_batch": s["engine"]["mean_batch"],
                "async": s["engine"]["async"],
                "slowest_stage": s["total"]["slowest_stage"],
            }
        )
    multi, procs_row = rows[2], rows[1]
    # fps: frames over the wall time of the whole command (start-up and model load included);
    # fps in run: frames between the first and the last frame captured in any of the runs (start-up excluded)
    print(f"{'run':34s} {'frames':>7s} {'wall s':>7s} {'fps':>8s} {'fps in run':>10s} {'peak MiB':>9s} {'threads':>7s}")
    for r in rows:
        print(
            f"{r['run']:34s} {r['frames']:7d} {r['wall_s']:7.2f} {r['fps']:8.1f} {r['fps_reported']:10.1f} "
            f"{r['peak_rss_mib']:9.0f} {r['threads']:7d}"
        )
    print(
        f"batched / {n} processes: {multi['fps'] / procs_row['fps']:.2f}x frames/s (wall), "
        f"{multi['fps_reported'] / procs_row['fps_reported']:.2f}x (in run), "
        f"{multi['peak_rss_mib'] / procs_row['peak_rss_mib']:.2f}x memory; batched / 1 stream: "
        f"{multi['fps'] / rows[0]['fps']:.2f}x; mean batch {multi['mean_batch']}; slowest stage "
        f"{multi['slowest_stage']['stage'] if multi['slowest_stage'] else '-'}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
