"""The issue-7 measurements for a bundle, in one session:

1. ``edgecv bench --stages`` on 720p frames: pre + infer + post per frame, run one after another;
2. ``edgecv run --drop wait`` on a 720p file (no sinks): end-to-end FPS, and its ratio to 1000 / (pre+infer+post);
3. ``edgecv run --drop latest`` on a live-rate network stream (ffmpeg ``-re`` serving HTTP/MPEG-TS): the
   capture-to-result p99 against the inference p99.

    python scripts/stream_report.py BUNDLE [--backend openvino] [--seconds 20] [--task detect]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--task", default="detect", choices=["classify", "detect", "segment"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgecv-stream-"))
    video = tmp / "v720.mp4"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_video.py"), str(video), "--seconds",
                    str(args.seconds), "--task", args.task, "--size", "720", "--fps", "30"], check=True)
    thr = ["--threads", str(args.threads)] if args.threads else []

    bench = json.loads(subprocess.run([*EDGECV, "bench", str(args.bundle), "-b", args.backend, "--stages",
                                       "--frame-size", "1280x720", "--iters", "20", "--rounds", "1", *thr,
                                       "--json"], capture_output=True, text=True, check=True).stdout)
    st = bench["stages"][f"{args.backend}:fp32"]
    serial_fps = 1000.0 / st["total_ms"]

    wait_json = tmp / "wait.json"
    subprocess.run([*EDGECV, "run", str(args.bundle), "-b", args.backend, "--source", str(video), "--drop", "wait",
                    "--quiet", "--json", str(wait_json), *thr], check=True, capture_output=True)
    wait = json.loads(wait_json.read_text())

    port = _free_port()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg is needed for the live-rate measurement")
    server = subprocess.Popen([ffmpeg, "-v", "error", "-re", "-stream_loop", "-1", "-i", str(video), "-c:v",
                               "mpeg2video", "-q:v", "3", "-f", "mpegts", "-listen", "1",
                               f"http://127.0.0.1:{port}/"], stdin=subprocess.DEVNULL)
    time.sleep(1.0)
    live_json = tmp / "live.json"
    try:
        subprocess.run([*EDGECV, "run", str(args.bundle), "-b", args.backend, "--source",
                        f"http://127.0.0.1:{port}/", "--drop", "latest", "--max-frames", str(int(args.seconds * 30)),
                        "--quiet", "--json", str(live_json), *thr], check=True, capture_output=True, timeout=600)
    finally:
        server.kill()
        server.wait()
    live = json.loads(live_json.read_text())
    report = {
        "bench_stages_ms": {k: round(st[k], 3) for k in ("pre_ms", "infer_ms", "post_ms", "total_ms")},
        "bench_serial_fps": round(serial_fps, 1),
        "wait": {"fps_out": wait["fps_out"], "frames": wait["frames_processed"], "dropped": wait["dropped"],
                 "ratio_to_bench": round(wait["fps_out"] / serial_fps, 3),
                 "stage_p50_ms": {k: v["p50"] for k, v in wait["latency_ms"].items()}},
        "latest": {"fps_in": live["fps_in"], "fps_out": live["fps_out"], "dropped": live["dropped"],
                   "e2e_p99_ms": live["latency_ms"]["e2e"]["p99"], "infer_p99_ms": live["latency_ms"]["infer"]["p99"],
                   "ratio_e2e_to_infer_p99": round(live["latency_ms"]["e2e"]["p99"]
                                                   / live["latency_ms"]["infer"]["p99"], 2)},
    }
    print(json.dumps(report, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
