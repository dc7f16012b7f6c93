#!/usr/bin/env python
"""Cross-check ``edgecv bench`` against OpenVINO's own ``benchmark_app`` on the same IR, in one session.

Runs ``benchmark_app -m model.xml -d CPU -hint latency -infer_precision f32 -t 10`` and edgecv's
``bench_bundle`` on the bundle's OpenVINO artifact, alternating (edgecv, benchmark_app, benchmark_app, edgecv, …)
so that drift on a shared machine hits both, then prints both medians and their ratio. The two should agree
within 15% (``--max-diff``); the exit code is 1 when they do not.

Usage::

    edgecv export resnet18 -o /tmp/r18
    edgecv compile /tmp/r18 --backend openvino --precision fp32
    python scripts/compare_benchmark_app.py /tmp/r18 --time 10

benchmark_app ships with the ``openvino`` wheel as a console script (``.venv/bin/benchmark_app``); when it is not on
the path the script runs ``python -m openvino.tools.benchmark.main``, the same tool.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

_OV_PRECISION = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


def benchmark_app_cmd() -> list[str]:
    """The benchmark_app command: beside this interpreter, then on PATH, then the module."""
    here = Path(sys.executable).parent / "benchmark_app"
    if here.is_file():
        return [str(here)]
    found = shutil.which("benchmark_app")
    if found:
        return [found]
    return [sys.executable, "-m", "openvino.tools.benchmark.main"]


def run_benchmark_app(
    xml: Path, precision: str, seconds: float, device: str, shape: str | None, threads: int | None
) -> dict[str, Any]:
    # benchmark_app refuses -nthreads with a hint; one stream with N threads is what the latency hint picks
    hint = ["-hint", "none", "-nstreams", "1", "-nthreads", str(threads)] if threads else ["-hint", "latency"]
    cmd = [
        *benchmark_app_cmd(),
        "-m",
        str(xml),
        "-d",
        device,
        *hint,
        "-infer_precision",
        _OV_PRECISION[precision],
        "-t",
        f"{seconds:g}",
    ]
    if shape:
        cmd += ["-shape", shape]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 10 + 120)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"benchmark_app failed ({proc.returncode}): {' '.join(cmd)}\n{text[-2000:]}")

    def grab(label: str) -> float | None:
        m = re.search(rf"{label}:\s+([0-9.]+)", text)
        return float(m.group(1)) if m else None

    median = grab("Median")
    if median is None:
        raise SystemExit(f"could not find 'Median: … ms' in benchmark_app output:\n{text[-2000:]}")
    return {
        "cmd": " ".join(cmd),
        "median_ms": median,
        "average_ms": grab("Average"),
        "min_ms": grab("Min"),
        "max_ms": grab("Max"),
        "count": grab("Count"),
        "throughput_fps": grab("Throughput"),
    }


def run_edgecv(
    bundle: Any, precision: str, seconds: float, device: str, batch: int, threads: int | None
) -> dict[str, Any]:
    from edgecv.backends import open_runner
    from edgecv.bench import bench_bundle

    rep = bench_bundle(
        bundle,
        [("openvino", precision)],
        [batch],
        threads=threads,
        device=device,
        warmup=10,
        min_time_s=seconds,
        rounds=1,
        opener=open_runner,
    )
    (row,) = rep.rows
    if row.stats is None:
        raise SystemExit(f"edgecv bench failed: {row.error}")
    return {
        "median_ms": row.stats.p50_ms,
        "mean_ms": row.stats.mean_ms,
        "p90_ms": row.stats.p90_ms,
        "min_ms": row.stats.min_ms,
        "iters": row.stats.iters,
        "precision_ran": row.precision_ran,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--precision", default="fp32", choices=sorted(_OV_PRECISION))
    ap.add_argument("--time", type=float, default=10.0, help="seconds per run of each tool (benchmark_app -t)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each tool, alternating (ABBA…)")
    ap.add_argument("--device", default="CPU")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="both tools' CPU threads (default: OpenVINO's)")
    ap.add_argument("--max-diff", type=float, default=0.15, help="allowed |edgecv/benchmark_app - 1|")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from edgecv.bundle import Bundle

    bundle = Bundle.open(args.bundle)
    art = bundle.artifact("openvino", args.precision)
    if art is None:
        raise SystemExit(
            f"bundle '{args.bundle}' has no openvino:{args.precision} IR; run: edgecv compile "
            f"{args.bundle} --backend openvino --precision {args.precision}"
        )
    xml = bundle.path(art.path)
    c = bundle.contract
    shape = f"{c.input_name}[{args.batch},{','.join(str(d) for d in c.input_shape[1:])}]"

    runs: dict[str, list[dict[str, Any]]] = {"edgecv": [], "benchmark_app": []}
    for i in range(args.repeats):
        order = ("edgecv", "benchmark_app") if i % 2 == 0 else ("benchmark_app", "edgecv")
        for tool in order:
            print(f"[{i + 1}/{args.repeats}] {tool} …", file=sys.stderr, flush=True)
            if tool == "edgecv":
                runs[tool].append(run_edgecv(bundle, args.precision, args.time, args.device, args.batch, args.threads))
            else:
                runs[tool].append(run_benchmark_app(xml, args.precision, args.time, args.device, shape, args.threads))
    med_e = statistics.median(r["median_ms"] for r in runs["edgecv"])
    med_b = statistics.median(r["median_ms"] for r in runs["benchmark_app"])
    ratio = med_e / med_b
    # the fastest call is least disturbed by other jobs on a shared machine: a second, informational ratio
    min_ratio = min(r["min_ms"] for r in runs["edgecv"]) / min(r["min_ms"] or math.inf for r in runs["benchmark_app"])
    ok = abs(ratio - 1.0) <= args.max_diff
    result = {
        "bundle": str(args.bundle),
        "ir": str(xml),
        "precision": args.precision,
        "batch": args.batch,
        "seconds_per_run": args.time,
        "repeats": args.repeats,
        "threads": args.threads,
        "edgecv_median_ms": med_e,
        "benchmark_app_median_ms": med_b,
        "ratio_edgecv_over_benchmark_app": ratio,
        "min_ratio": min_ratio,
        "agree_within": args.max_diff,
        "agree": ok,
        "runs": runs,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"IR: {xml}  precision {args.precision}  batch {args.batch}  {args.repeats}x{args.time:g}s each")
        print(f"benchmark_app: {runs['benchmark_app'][0]['cmd']}")
        for tool in ("edgecv", "benchmark_app"):
            meds = ", ".join(f"{r['median_ms']:.2f}" for r in runs[tool])
            print(f"  {tool:14s} median {statistics.median(r['median_ms'] for r in runs[tool]):8.2f} ms (runs: {meds})")
        print(
            f"  ratio edgecv / benchmark_app = {ratio:.3f}  -> {'AGREE' if ok else 'DISAGREE'} "
            f"(limit ±{args.max_diff:.0%})"
        )
        print(f"  ratio of fastest calls       = {min_ratio:.3f}  (informational)")
    return 0 if ok else 1


if __name__ == "__main__":
    from edgecv.errors import EdgecvError

    try:
        sys.exit(main())
    except EdgecvError as exc:  # one line, like the CLI
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(exc.exit_code)
