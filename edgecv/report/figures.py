"""The report's figures: matplotlib (Agg) drawings returned as PNG bytes. Each takes plain data, draws, closes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from edgecv._lazy import lazy_import

DPI = 96
_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _plt() -> Any:
    mpl = lazy_import("matplotlib", extra="report")
    mpl.use("Agg", force=True)
    return lazy_import("matplotlib.pyplot", extra="report")


def _png(fig: Any) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x = faster, higher y = more accurate),
    ordered by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def speed_accuracy(points: list[dict[str, Any]], metric_name: str) -> bytes:
    """Scatter of ``{"label", "latency_ms", "metric"}`` with the Pareto frontier drawn and its points ringed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xy = [(p["latency_ms"], p["metric"]) for p in points]
    front = pareto_front(xy)
    for i, p in enumerate(points):
        ax.scatter(p["latency_ms"], p["metric"], s=60, color=color(i), zorder=3, label=p["label"])
        ax.annotate(p["label"], (p["latency_ms"], p["metric"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    fx = [xy[i][0] for i in front]
    fy = [xy[i][1] for i in front]
    ax.step(fx, fy, where="post", color="black", lw=1.2, ls="--", label="Pareto frontier", zorder=2)
    ax.scatter(fx, fy, s=180, facecolors="none", edgecolors="black", zorder=4)
    ax.set_xlabel("median latency, batch 1 (ms) — lower is better")
    ax.set_ylabel(f"{metric_name} — higher is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def latency_distributions(rows: list[dict[str, Any]]) -> bytes:
    """One panel per batch size: each backend's latency quantile curve (an inverted CDF) with p50/p99 marked."""
    plt = _plt()
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 3.8), squeeze=False)
    for ax, bs in zip(axes[0], batches):
        for i, r in enumerate(x for x in rows if x["batch"] == bs):
            q = np.asarray(r["quantiles_ms"], dtype=np.float64)
            pct = np.linspace(0, 100, q.size)
            ax.plot(q, pct, color=color(i), label=r["label"])
            ax.scatter([q[50], q[99] if q.size > 99 else q[-1]], [50, 99], color=color(i), s=14, zorder=3)
        ax.set_title(f"batch {bs}")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("% of calls at or below")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def roofline(rows: list[dict[str, Any]], peaks: dict[str, float], model_gop: float) -> bytes:
    """Achieved GOP/s of each run against this machine's measured peak for the precision it ran.

    x: operations per call (GOP; batch × the model's operations), y: GOP/s, both log. Each measured peak is a
    horizontal ceiling in the colour of its precision; a point's distance below its ceiling is the headroom.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    precs = sorted({k.split(":")[1] for k in peaks} | {r["ran"] for r in rows})
    pcol = {p: color(i) for i, p in enumerate(precs)}
    xs = [model_gop * r["batch"] for r in rows] or [model_gop]
    x0, x1 = min(xs) / 2, max(xs) * 2
    for key, gops in peaks.items():
        prec = key.split(":")[1]
        ax.hlines(gops, x0, x1, colors=pcol[prec], linestyles="--", lw=1.3)
        ax.text(x1, gops, f" peak {key} {gops:.0f}", color=pcol[prec], fontsize=8, va="center")
    for r in rows:
        x = model_gop * r["batch"]
        ax.scatter(
            x,
            r["gops"],
            color=pcol[r["ran"]],
            s=50,
            zorder=3,
            marker="o" if r["backend"] == "openvino" else "s" if r["backend"] == "onnxruntime" else "^",
        )
        pct = f" {r['pct']:.0f}%" if r.get("pct") is not None else ""
        ax.annotate(
            f"{r['label']} b{r['batch']}{pct}", (x, r["gops"]), textcoords="offset points", xytext=(5, -10), fontsize=7
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x0, x1)
    ys = [r["gops"] for r in rows] + list(peaks.values())
    if ys:
        ax.set_ylim(min(ys) / 2, max(ys) * 2)
    ax.set_xlabel("operations per call (GOP, log)")
    ax.set_ylabel("achieved GOP/s (log)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("achieved vs measured peak (dashed: GEMM probe per precision)", fontsize=9)
    return _png(fig)


def layer_divergence(layers: list[dict[str, Any]], kept_float: list[str]) -> bytes:
    """Cosine and relative error of every layer's INT8 output against fp32, in graph order; diverged layers
    in red, layers kept in float marked with a vertical line."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 4.6), sharex=True)
    idx = np.arange(len(layers))
    cos = np.array([r["cosine"] for r in layers], dtype=np.float64)
    rel = np.array([r["rel_error"] for r in layers], dtype=np.float64)
    div = np.array([bool(r["diverged"]) for r in layers])
    a1.plot(idx, cos, color="#1f77b4", lw=1)
    a1.scatter(idx[div], cos[div], color="#d62728", s=14, zorder=3, label="diverged")
    a1.set_ylabel("cosine vs fp32")
    a2.semilogy(idx, np.maximum(rel, 1e-9), color="#ff7f0e", lw=1)
    a2.scatter(idx[div], np.maximum(rel[div], 1e-9), color="#d62728", s=14, zorder=3)
    a2.set_ylabel("relative error")
    a2.set_xlabel("layer (graph order)")
    kept = set(kept_float)
    for i, r in enumerate(layers):
        if r["node"] in kept:
            for a in (a1, a2):
                a.axvline(i, color="#2ca02c", lw=0.8, alpha=0.7)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    if div.any():
        a1.legend(fontsize=7)
    return _png(fig)


def _panels(n: int, width: float, height: float) -> tuple[Any, Any]:
    """A figure of ``n`` panels, at most 3 a row, each ``width`` x ``height`` inches; unused cells hidden."""
    plt = _plt()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes


def confusion_matrices(items: list[tuple[str, dict[str, Any]]]) -> bytes:
    """One heatmap per backend: rows true class, columns predicted (row-normalised colour, counts written)."""
    k = len(items[0][1]["labels"])
    size = max(3.2, 0.35 * k + 1.5)
    fig, axes = _panels(len(items), size, size)
    for ax, (label, d) in zip(axes.flat, items):
        m = np.asarray(d["matrix"], dtype=np.float64)
        norm = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if m[i, j]:
                        ax.text(
                            j,
                            i,
                            int(m[i, j]),
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black",
                        )
        names = d["labels"]
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=60, fontsize=7)
        ax.set_yticklabels(names, fontsize=7)
        acc = 100 * np.trace(m) / max(m.sum(), 1)
        ax.set_title(f"{label} (top-1 {acc:.1f}%)", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    return _png(fig)


def pr_curves(items: list[tuple[str, dict[str, Any]]]) -> bytes:
    """Per backend, one precision-recall curve per class (AP in the legend)."""
    fig, axes = _panels(len(items), 4.6, 3.8)
    for ax, (label, d) in zip(axes.flat, items):
        for i, (name, c) in enumerate(d["classes"].items()):
            if c["recall"]:
                ap = "-" if c["ap"] is None else f"{c['ap']:.1f}"
                ax.plot(c["recall"], c["precision"], color=color(i), lw=1.3, label=f"{name} AP {ap}")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"{label} (IoU {d['iou_threshold']})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    return _png(fig)


def class_iou(items: list[tuple[str, dict[str, Any]]]) -> bytes:
    """Grouped bars: IoU per class, one bar per backend."""
    plt = _plt()
    names = items[0][1]["labels"]
    k = len(names)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * k * len(items) / 2 + 3), 3.8))
    w = 0.8 / len(items)
    for i, (label, d) in enumerate(items):
        vals = [np.nan if v is None else v for v in d["iou"]]
        ax.bar(np.arange(k) + i * w - 0.4 + w / 2, vals, w, color=color(i), label=label)
    ax.set_xticks(range(k))
    ax.set_xticklabels(names, rotation=30, fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _png(fig)


def stream_timeline(tl: dict[str, Any], title: str) -> bytes:
    """Per-stage mean latency over time, fps out, and the running drop / reconnect counts."""
    plt = _plt()
    rows = tl["rows"]
    t = np.array([r["t"] for r in rows], dtype=np.float64)
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(9, 6.2), sharex=True, gridspec_kw={"height_ratios": [2.2, 1.2, 1]})
    for i, st in enumerate(tl["stages"]):
        y = np.array([r["mean_ms"].get(st, np.nan) for r in rows], dtype=np.float64)
        if np.isfinite(y).any():
            a1.plot(t, y, color=color(i), lw=1.2, marker=".", label=st)
    a1.set_ylabel("mean ms / frame")
    a1.legend(fontsize=7, ncol=5, loc="upper right")
    a1.set_title(title, fontsize=9)
    a2.plot(t, [r["fps"] for r in rows], color="#2ca02c", lw=1.3, marker=".")
    a2.set_ylabel("fps out")
    a3.step(t, [r["dropped"] for r in rows], where="post", color="#d62728", label="dropped (total)")
    a3.step(t, [r["reconnects"] for r in rows], where="post", color="#9467bd", label="reconnects (total)")
    a3.set_ylabel("count")
    a3.set_xlabel(f"time since start (s; {tl['bucket_s']:g} s buckets)")
    a3.legend(fontsize=7)
    for a in (a1, a2, a3):
        a.grid(alpha=0.3)
    return _png(fig)


def gallery_row(images: list[np.ndarray], titles: list[str], bad: list[bool], draws: list[Any]) -> bytes:
    """One sample: the reference panel and one panel per backend side by side. ``draws[i](ax)`` adds the
    predictions of panel ``i``; a panel whose prediction differs from the reference gets a red frame and title."""
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.0), squeeze=False)
    for ax, img, title, b, draw in zip(axes[0], images, titles, bad, draws):
        ax.imshow(img)
        draw(ax)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=7.5, color="#d62728" if b else "black")
        for sp in ax.spines.values():
            sp.set_edgecolor("#d62728" if b else "#999999")
            sp.set_linewidth(3 if b else 0.8)
    return _png(fig)
