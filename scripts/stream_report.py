"""The issue-7 measurements for a bundle, in one session, interleaved so machine noise hits both sides:

1. ``edgecv bench --stages`` on 720p frames: pre + infer + post per frame, run one after another, with the
   engine's default threads and with the threads ``edgecv run`` gives the engine (on a machine with <= 4
   cores that is cores - 1: capture keeps a core to decode);
2. ``edgecv run --drop wait`` on a 720p file (no sinks): end-to-end FPS, and its ratio to both benches;
3. ``edgecv run --drop latest`` on a live-rate network stream (ffmpeg ``-re`` serving HTTP/MPEG-TS): the
   capture-to-result p99 against the inference p99.

Steps 1-2 repeat ``--repeats`` times (bench, run, bench, run, ...); the report gives medians and every value.

    python scripts/stream_report.py BUNDLE [--backend openvino] [--seconds 20] [--task detect] [--repeats 3]
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

ROOT = Path(__file__).resolve().parents[1]
EDGECV = [sys.executable, "-m", "edgecv"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bench(bundle: Path, backend: str, threads: int | None) -> dict:
    thr = ["--threads", str(threads)] if threads else []
    out = subprocess.run(
        [
            *EDGECV,
            "bench",
            str(bundle),
            "-b",
            backend,
            "--stages",
            "--frame-size",
            "1280x720",
            "--iters",
            "20",
            "--rounds",
            "1",
            "--min-time",
            "3",
            *thr,
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    st = json.loads(out)["stages"]
    return next(iter(st.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--threads", type=int, default=None, help="engine threads for run (default: run's own)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--task", default="detect", choices=["classify", "detect", "segment"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecv-stream-"))
    video = tmp / "v720.mp4"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_video.py"),
            str(video),
            "--seconds",
            str(args.seconds),
            "--task",
            args.task,
            "--size",
            "720",
            "--fps",
            "30",
        ],
        check=True,
    )
    thr = ["--threads", str(args.threads)] if args.threads else []

    runs: list[dict] = []
    bench_default: list[dict] = []
    bench_same: list[dict] = []
    run_threads = args.threads
    for i in range(args.repeats):
        bench_default.append(_bench(args.bundle, args.backend, None))
        wait_json = tmp / f"wait{i}.json"
        subprocess.run(
            [
                *EDGECV,
                "run",
                str(args.bundle),
                "-b",
                args.backend,
                "--source",
                str(video),
                "--drop",
                "wait",
                "--quiet",
                "--summary",
                str(wait_json),
                *thr,
            ],
            check=True,
            capture_output=True,
        )
        runs.append(json.loads(wait_json.read_text()))
        run_threads = runs[-1]["runner"].get("threads")
        bench_same.append(_bench(args.bundle, args.backend, run_threads))

    def fps(st: dict) -> float:
        return float(st["fps"])  # frames / time of the serial loop, as run's fps_out is frames / time

    med = statistics.median
    run_fps = [r["fps_out"] for r in runs]
    b_def = [fps(b) for b in bench_default]
    b_same = [fps(b) for b in bench_same]

    port = _free_port()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg is needed for the live-rate measurement")
    # the server copies the stream (a camera encodes on its own chip): re-encoding 720p here would take a
    # good part of one of this machine's cores away from the pipeline being measured
    server = subprocess.Popen(
        [
            ffmpeg,
            "-v",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(video),
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
    time.sleep(1.0)
    live_json = tmp / "live.json"  # stops a second before the file ends: the server's loop point stalls
    try:
        subprocess.run(
            [
                *EDGECV,
                "run",
                str(args.bundle),
                "-b",
                args.backend,
                "--source",
                f"http://127.0.0.1:{port}/",
                "--drop",
                "latest",
                "--max-frames",
                str(int(args.seconds * 30) - 30),
                "--quiet",
                "--summary",
                str(live_json),
                *thr,
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    finally:
        server.kill()
        server.wait()
    live = json.loads(live_json.read_text())
    last = runs[-1]
    report = {
        "engine_threads": {"run": run_threads, "bench_default": None},
        "bench_default_threads": {
            "fps_median": round(med(b_def), 1),
            "fps": [round(x, 1) for x in b_def],
            "fps_from_median_total": [round(1000 / b["total_ms"], 1) for b in bench_default],
            "stages_ms_last": {
                k: round(bench_default[-1][k], 3) for k in ("pre_ms", "infer_ms", "post_ms", "total_ms")
            },
        },
        "bench_run_threads": {
            "fps_median": round(med(b_same), 1),
            "fps": [round(x, 1) for x in b_same],
            "fps_from_median_total": [round(1000 / b["total_ms"], 1) for b in bench_same],
            "stages_ms_last": {k: round(bench_same[-1][k], 3) for k in ("pre_ms", "infer_ms", "post_ms", "total_ms")},
        },
        "wait": {
            "fps_median": round(med(run_fps), 1),
            "fps": [round(x, 1) for x in run_fps],
            "frames": last["frames_processed"],
            "dropped": last["dropped"],
            "ratio_to_bench_run_threads": round(med(run_fps) / med(b_same), 3),
            "ratio_to_bench_default_threads": round(med(run_fps) / med(b_def), 3),
            # each run against the benches measured just before and after it: slow drifts cancel
            "ratio_per_repeat_run_threads": [round(r / b, 3) for r, b in zip(run_fps, b_same)],
            "ratio_per_repeat_default_threads": [round(r / b, 3) for r, b in zip(run_fps, b_def)],
            "ratio_per_repeat_median": {
                "run_threads": round(med([r / b for r, b in zip(run_fps, b_same)]), 3),
                "default_threads": round(med([r / b for r, b in zip(run_fps, b_def)]), 3),
            },
            "stage_p50_ms_last": {k: v["p50"] for k, v in last["latency_ms"].items()},
            "slowest_stage_last": last.get("slowest_stage"),
        },
        "latest": {
            "fps_in": live["fps_in"],
            "fps_out": live["fps_out"],
            "dropped": live["dropped"],
            "e2e_p99_ms": live["latency_ms"]["e2e"]["p99"],
            "infer_p99_ms": live["latency_ms"]["infer"]["p99"],
            "ratio_e2e_to_infer_p99": round(live["latency_ms"]["e2e"]["p99"] / live["latency_ms"]["infer"]["p99"], 2),
        },
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
