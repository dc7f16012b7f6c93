#!/usr/bin/env python3
"""One ``edgecv run`` with N streams (cross-stream batching) against N separate ``edgecv run`` processes and
against one stream alone: aggregate frames/s and peak memory of each (issue 14's throughput claim).

    python scripts/bench_multistream.py BUNDLE --videos a.mp4 b.mp4 c.mp4 d.mp4 [--backend openvino]
        [--threads 1] [--frames 300] [--batch-wait-ms 5] [--repeat 3] [--json out.json]

The three runs are interleaved, ``--repeat`` rounds, the order rotated each round; the figures are medians and
the ratios medians of each round's ratio, with the load average during each run (the machine may be shared).
"steady" frames/s counts only the window in which every stream of every process runs (start-up and model loads
excluded); "wall" is frames over the whole command's time. Every run reads ``--frames`` frames of each file with ``--drop wait`` (nothing dropped), so the frame rates
compare the same work. Peak memory is each process's maximum resident set (``wait4``); the N-process figure is
their sum (they run at the same time). Figures vary with the machine's load: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
        "--summary",
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


def steady_fps(jsonls: list[Path]) -> float:
    """Aggregate frames per second while every stream runs: frames captured between the latest first frame and
    the earliest last frame of all streams (of all processes), over that window. Neither the start-up of a
    process nor a stream that ends earlier than the others counts."""
    per: dict[tuple[int, str], list[float]] = {}
    for i, p in enumerate(jsonls):
        for line in p.read_text().splitlines():
            e = json.loads(line)
            per.setdefault((i, str(e.get("stream", ""))), []).append(float(e["ts"]))
    if not per:
        return 0.0
    lo = max(min(v) for v in per.values())
    hi = min(max(v) for v in per.values())
    if hi <= lo:
        return 0.0
    n = sum(1 for v in per.values() for t in v if lo <= t <= hi)
    return (n - len(per)) / (hi - lo)


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


def run_one(a: argparse.Namespace, kind: str, t: Path, common: list[str], bt: int) -> dict[str, Any]:
    """One measurement: ``one`` (one stream alone), ``procs`` (N processes at once) or ``batched``."""
    n = len(a.videos)
    t0 = time.perf_counter()
    if kind == "one":
        procs = [spawn([*common, "--threads", str(a.threads), "--source", a.videos[0]], t / "one.json")]
        outs = [t / "one.json"]
    elif kind == "procs":
        outs = [t / f"p{i}.json" for i in range(n)]
        procs = [spawn([*common, "--threads", str(a.threads), "--source", v], o) for v, o in zip(a.videos, outs)]
    else:
        srcs = [x for v in a.videos for x in ("--source", v)]
        outs = [t / "multi.json"]
        extra = ["--requests", str(a.requests)] if a.requests else []
        procs = [
            spawn([*common, "--threads", str(bt), "--batch-wait-ms", str(a.batch_wait_ms), *extra, *srcs], outs[0])
        ]
    t1, rss = reap(procs)
    ss = [json.loads(o.read_text()) for o in outs]
    jsonls = [o.with_suffix(".jsonl") for o in outs]
    frames = sum(x["frames_processed"] for x in ss)
    row: dict[str, Any] = {
        "run": kind,
        "frames": frames,
        "wall_s": t1 - t0,
        "fps_wall": frames / (t1 - t0),
        "fps_span": span_fps(jsonls),
        "fps_steady": steady_fps(jsonls),
        "peak_rss_mib": sum(rss) / 1024,
        "threads": bt if kind == "batched" else a.threads * len(procs),
    }
    if kind == "batched":
        s = ss[0]
        row.update(
            mean_batch=s["engine"]["mean_batch"],
            async_=s["engine"]["async"],
            slowest_stage=s["total"]["slowest_stage"],
            runner=s["engine"]["runner"],
        )
    return row


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
        "(default: --threads times the number of streams, the same total as the N processes; with the throughput "
        "hint of the batched run these are requests at once, one thread each)",
    )
    ap.add_argument("--requests", type=int, default=None, help="batched run's --requests (default: the engine's)")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each runs one, procs and batched, interleaved")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    n = len(a.videos)
    common = [a.bundle, "--backend", a.backend, "--drop", "wait", "--max-frames", str(a.frames)]
    bt = a.batched_threads or a.threads * n
    rounds: list[dict[str, dict[str, Any]]] = []
    order = ["one", "procs", "batched"]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeat):
            rnd: dict[str, dict[str, Any]] = {}
            # interleaved, the order rotated every round: a load change does not always hit the same run
            for kind in order[r % 3 :] + order[: r % 3]:
                load0 = os.getloadavg()[0]
                row = run_one(a, kind, Path(tmp), common, bt)
                row["load"] = round((load0 + os.getloadavg()[0]) / 2, 2)
                rnd[kind] = row
            rounds.append(rnd)
            b, p, o = rnd["batched"], rnd["procs"], rnd["one"]
            print(
                f"round {r + 1}: steady fps one {o['fps_steady']:.1f} | {n} procs {p['fps_steady']:.1f} | batched "
                f"{b['fps_steady']:.1f} (mean batch {b['mean_batch']}) -> batched/procs {b['fps_steady'] / p['fps_steady']:.2f}x "
                f"steady, {b['fps_wall'] / p['fps_wall']:.2f}x wall, memory {b['peak_rss_mib'] / p['peak_rss_mib']:.2f}x; "
                f"load {p['load']}-{b['load']}",
                flush=True,
            )

    def med(kind: str, key: str) -> float:
        return statistics.median(float(x[kind][key]) for x in rounds)

    def ratio(key: str, k1: str = "batched", k2: str = "procs") -> float:
        return statistics.median(float(x[k1][key]) / float(x[k2][key]) for x in rounds)

    print(f"\nmedians over {a.repeat} rounds ({a.backend}, {a.threads} thread(s) per process, batched {bt} threads)")
    print(
        f"{'run':34s} {'frames':>7s} {'fps wall':>8s} {'fps steady':>10s} {'peak MiB':>9s} {'threads':>7s} {'load':>5s}"
    )
    names = {
        "one": "1 stream, 1 process",
        "procs": f"{n} streams, {n} processes",
        "batched": f"{n} streams, 1 process, batched",
    }
    for kind in order:
        r0 = rounds[0][kind]
        print(
            f"{names[kind]:34s} {r0['frames']:7d} {med(kind, 'fps_wall'):8.1f} {med(kind, 'fps_steady'):10.1f} "
            f"{med(kind, 'peak_rss_mib'):9.0f} {r0['threads']:7d} {med(kind, 'load'):5.1f}"
        )
    last = rounds[-1]["batched"]
    print(
        f"batched / {n} processes (median of per-round ratios): {ratio('fps_steady'):.2f}x steady frames/s, "
        f"{ratio('fps_wall'):.2f}x wall frames/s, {ratio('peak_rss_mib'):.2f}x memory; batched / 1 stream "
        f"{ratio('fps_steady', 'batched', 'one'):.2f}x steady; mean batch {med('batched', 'mean_batch'):.2f}; "
        f"async {last['async_']}; slowest stage "
        f"{last['slowest_stage']['stage'] if last['slowest_stage'] else '-'}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(rounds, indent=1))


if __name__ == "__main__":
    main()
