"""``edgecv bench --csv``: a sectioned report in the spirit of OpenVINO benchmark_app's ``--report_type``.

benchmark_app writes ``;``-separated sections (command line parameters, configuration setup, execution results);
this writes the same three for every backend, precision and batch of one run, plus the hardware limit used.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv._io import write_text

if TYPE_CHECKING:
    from edgecv.bench.core import BenchReport

COLUMNS = [
    "backend",
    "precision",
    "precision ran",
    "device",
    "batch",
    "iterations",
    "latency p50 (ms)",
    "latency p90 (ms)",
    "latency p99 (ms)",
    "latency mean (ms)",
    "latency min (ms)",
    "latency max (ms)",
    "throughput (items/s)",
    "GOP/s",
    "peak GOP/s",
    "% of peak",
    "speedup vs torch",
    "load time (s)",
    "peak RSS increase (MB)",
    "error",
]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def bench_csv(report: BenchReport, argv: list[str] | None = None) -> str:
    """The CSV text of ``report``: three sections separated by a blank line, ``;`` between fields."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\n")
    w.writerow(["Command line parameters"])
    if argv:
        w.writerow(["command", " ".join(argv)])
    for k, v in report.settings.items():
        if k != "roofline":
            w.writerow([k, _fmt(v)])
    w.writerow([])
    w.writerow(["Configuration setup"])
    w.writerow(["bundle", report.bundle])
    for k, v in report.host.items():
        w.writerow([k, _fmt(v)])
    roof = report.settings.get("roofline") or {}
    if "error" in roof:
        w.writerow(["model GOP per item (batch 1)", "", roof["error"]])
    elif roof:
        w.writerow(["model GOP per item (batch 1)", _fmt(roof["ops"]["gops"])])
        raised = roof.get("raised", {})
        for key, p in roof.get("peaks", {}).items():
            how = (
                f"raised to the rate {raised[key]['by']} reached (best probe {raised[key]['probe_form']}: "
                f"{_fmt(raised[key]['probe_gops_per_s'])})"
                if key in raised
                else f"probe {p['form']} ({p.get('source', 'screened')})"
            )
            w.writerow([f"peak {key} (GOP/s)", _fmt(p["gops_per_s"]), f"{how}, measured {p['measured']}"])
        for key, why in roof.get("no_peak", {}).items():
            w.writerow([f"peak {key}", "", why])
    w.writerow([])
    w.writerow(["Execution results"])
    w.writerow(COLUMNS)
    for r in report.rows:
        s = r.stats
        w.writerow(
            [
                _fmt(v)
                for v in [
                    r.backend,
                    r.precision,
                    r.precision_ran,
                    r.device,
                    r.batch,
                    s.iters if s else None,
                    s.p50_ms if s else None,
                    s.p90_ms if s else None,
                    s.p99_ms if s else None,
                    s.mean_ms if s else None,
                    s.min_ms if s else None,
                    s.max_ms if s else None,
                    s.throughput if s else None,
                    r.gops_per_s,
                    r.peak_gops_per_s,
                    r.pct_peak,
                    r.speedup_vs_torch,
                    r.load_time_s,
                    r.peak_rss_mb,
                    r.error,
                ]
            ]
        )
    return buf.getvalue()


def write_bench_csv(report: BenchReport, path: str | Path, argv: list[str] | None = None) -> Path:
    """Write :func:`bench_csv` atomically to ``path``."""
    return write_text(path, bench_csv(report, argv))
