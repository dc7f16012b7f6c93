"""``edgecv report``: one self-contained HTML page from the results kept in one or more bundles.

Everything is drawn from what the commands recorded under ``results/`` (see :mod:`edgecv.results`) plus the
bundle's own manifest and ``reference.npz``; nothing runs a model here. Only this host's results go into the
figures; results recorded on other hosts are listed apart. Images are inline PNG (base64), styles inline, no
script and no network: the file opens offline and can be mailed to a colleague.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecv import __version__
from edgecv.bundle import MANIFEST, Bundle, now_iso
from edgecv.errors import BundleError
from edgecv.report import figures
from edgecv.results import RESULTS_DIR, Results, load_results

#: display threshold for boxes in the gallery (the bundle's own is set low for mAP; ``edgecv run`` uses 0.25)
GALLERY_CONF = 0.25

SECTIONS = ("summary", "speed-accuracy", "latency", "roofline", "int8", "task", "gallery", "stream", "provenance")
TITLES = {
    "summary": "Summary",
    "speed-accuracy": "Speed against accuracy",
    "latency": "Latency distributions",
    "roofline": "Roofline: achieved vs this machine's peak",
    "int8": "INT8: per-layer divergence",
    "task": "Per-class results",
    "gallery": "Gallery: PyTorch vs each backend",
    "stream": "Stream timeline",
    "provenance": "Provenance",
}


@dataclass
class BundleReport:
    """What one bundle's part of the report holds: HTML per section and why a section is empty."""

    name: str
    root: str
    sections: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # section → the command that fills it
    skipped: list[str] = field(default_factory=list)
    other_hosts: int = 0


@dataclass
class ReportInfo:
    """What :func:`build_report` wrote."""

    path: str
    bundles: list[BundleReport]
    images: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "images": self.images,
            "bundles": [
                {
                    "name": b.name,
                    "root": b.root,
                    "sections": sorted(b.sections),
                    "missing": b.missing,
                    "skipped": b.skipped,
                    "other_hosts": b.other_hosts,
                }
                for b in self.bundles
            ],
        }


# ------------------------------------------------------------------------------------------ HTML helpers
def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _num(v: Any, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not np.isfinite(v):
            return "–"
        return f"{v:.{digits}f}"
    return esc(v)


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    h = "".join(f"<th>{esc(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _missing(text: str) -> str:
    return f'<p class="missing">{text}</p>'


def _cmd(text: str) -> str:
    return f"<code>{esc(text)}</code>"


# ------------------------------------------------------------------------------------------ data helpers
_LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput")


def current_keys(doc: dict[str, Any]) -> dict[str, Any]:
    """A recorded result (``results/<kind>-….json``) with its command's current JSON keys (docs/json.md), whichever
    schema it was recorded under:

    - before schema 1: task-metric rows named the value ``value`` and the precision that ran ``ran``;
    - ``edgecv/validate/1``: the backend rows were ``results`` (now ``rows``);
    - ``edgecv/bench/1``: ``concurrency`` rows carried ``p50_ms`` … ``throughput`` flat (now nested in ``latency``).

    Returns a new document; the file is not touched (its hash is in the manifest)."""
    res = dict(doc.get("result") or {})
    if doc.get("kind") == "validate":
        if "rows" not in res and "results" in res:
            res["rows"] = res.pop("results")
        tm = res.get("task_metric")
        if isinstance(tm, dict):
            res["task_metric"] = {
                **tm,
                "rows": [
                    {
                        **r,
                        "metric": r.get("metric", r.get("value")),
                        "precision_ran": r.get("precision_ran", r.get("ran")),
                    }
                    for r in tm.get("rows", [])
                ],
            }
    if doc.get("kind") == "bench" and res.get("concurrency"):
        res["concurrency"] = [
            r
            if "latency" in r
            else {
                **{k: v for k, v in r.items() if k not in _LATENCY_KEYS},
                "latency": {k: r.get(k) for k in _LATENCY_KEYS},
            }
            for r in res["concurrency"]
        ]
    return {**doc, "result": res}


def _metric_rows(validate: dict[str, Any] | None) -> tuple[str | None, dict[tuple[str, str], dict[str, Any]]]:
    if validate is None:
        return None, {}
    tm = validate["result"].get("task_metric")
    if not tm:
        return None, {}
    return str(tm.get("name")), {(r["backend"], r["precision"]): r for r in tm.get("rows", [])}


def _artifact_size_mb(b: Bundle, backend: str, precision: str) -> float | None:
    if backend == "torch":
        return None
    art = b.artifact(backend, precision)
    if art is None:
        return b.onnx_path.stat().st_size / 2**20 if precision == "fp32" and b.onnx_path.exists() else None
    p = b.path(art.path)
    if not p.exists():
        return None
    # an IR is model.xml + model.bin: count the artifact's folder
    folder = p.parent if p.is_file() and p.parent != b.root else p
    files = [folder] if folder.is_file() else [q for q in folder.rglob("*") if q.is_file()]
    return sum(q.stat().st_size for q in files) / 2**20


def _image_from_input(x: np.ndarray, contract: Any) -> np.ndarray:
    """A preprocessed input sample [C,H,W] / [H,W,C] back to an RGB uint8 picture (undo mean/std/scale)."""
    a = np.asarray(x, dtype=np.float32)
    if contract.layout == "NCHW":
        a = a.transpose(1, 2, 0)
    if contract.dtype != "uint8":
        c = a.shape[-1]
        mean = np.asarray(contract.mean[:c] if len(contract.mean) >= c else [contract.mean[0]] * c, np.float32)
        std = np.asarray(contract.std[:c] if len(contract.std) >= c else [contract.std[0]] * c, np.float32)
        a = (a * std + mean) / float(contract.scale or 1.0)
    a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif contract.color == "BGR":
        a = a[..., ::-1]
    return np.ascontiguousarray(a)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from edgecv.tasks.detect import box_iou

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return np.asarray(box_iou(a, b))


def _dets(pred: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    ds = [d for d in pred.get("detections", []) if d["score"] >= GALLERY_CONF]
    boxes = np.array([d["box"] for d in ds], np.float32).reshape(-1, 4)
    return boxes, np.array([d["class_id"] for d in ds], np.int64), [f"{d['label']} {d['score']:.2f}" for d in ds]


# ------------------------------------------------------------------------------------------ sections
class _Builder:
    def __init__(self, b: Bundle, res: Results) -> None:
        self.b = b
        self.res = res
        self.name = b.manifest.name
        self.root = str(b.root)
        self.out = BundleReport(name=self.name, root=self.root, skipped=list(res.skipped), other_hosts=len(res.others))
        # every result read with its command's current keys, whichever schema recorded it
        res = Results(mine=[current_keys(d) for d in res.mine], others=res.others, skipped=res.skipped, host=res.host)
        self.res = res
        self.bench = res.latest("bench")
        validates = res.all("validate")
        # the newest validate with a task metric, and the newest with layers / a gallery (runs differ in flags)
        self.validate_metric = next((v for v in reversed(validates) if v["result"].get("task_metric")), None)
        self.validate_layers = next((v for v in reversed(validates) if v["result"].get("layers")), None)
        self.validate_gallery = next(
            (v for v in reversed(validates) if (v["result"].get("gallery") or {}).get("n")), None
        )
        self.run = self.res.latest("run")
        self.images = 0

    def _fill(
        self, key: str, fn: Callable[[], str | None], missing: str, sources: tuple[dict[str, Any] | None, ...] = ()
    ) -> None:
        try:
            body = fn()
        except Exception as exc:  # noqa: BLE001 - one section failing must not lose the others
            body = None
            missing = f"could not draw this section: {esc(' '.join(str(exc).split())[:300])}"
        if body:
            made = [
                f"<code>{esc(' '.join(src.get('command', [])))}</code> ({esc(src['time'])})"
                for src in {id(x): x for x in sources if x is not None}.values()
            ]
            self.out.sections[key] = body + (f'<p class="src">made by {"; ".join(made)}</p>' if made else "")
        else:
            self.out.missing[key] = missing

    def img(self, png: bytes, alt: str) -> str:
        self.images += 1
        return _img(png, alt)

    def build(self) -> BundleReport:
        r = self.root
        self._fill(
            "summary",
            self.summary,
            f"No bench result from this host: run {_cmd(f'edgecv bench {r}')}"
            f" (and {_cmd(f'edgecv validate {r} --val DATA')} for the task metric column).",
            (self.bench, self.validate_metric),
        )
        self._fill(
            "speed-accuracy",
            self.speed_accuracy,
            f"Needs a bench result and a task metric from this host: run {_cmd(f'edgecv bench {r}')} and "
            f"{_cmd(f'edgecv validate {r} --val DATA')}.",
            (self.bench, self.validate_metric),
        )
        self._fill("latency", self.latency, f"No latency distribution: run {_cmd(f'edgecv bench {r}')}.", (self.bench,))
        self._fill(
            "roofline",
            self.roofline,
            f"No GOP/s or peak measured: run {_cmd(f'edgecv bench {r} --peak')} with an OpenVINO or ONNX "
            "Runtime backend.",
            (self.bench,),
        )
        self._fill(
            "int8",
            self.int8,
            "No INT8 layer comparison: build INT8 with "
            f"{_cmd(f'edgecv compile {r} -b onnxruntime -p int8 --calib DATA')}"
            f" then run {_cmd(f'edgecv validate {r} -b onnxruntime:int8 --layers')}.",
            (self.validate_layers,),
        )
        self._fill(
            "task",
            self.task,
            f"No per-class results: run {_cmd(f'edgecv validate {r} --val DATA')}.",
            (self.validate_metric,),
        )
        self._fill(
            "gallery",
            self.gallery,
            f"No predictions recorded: run {_cmd(f'edgecv validate {r}')}.",
            (self.validate_gallery,),
        )
        self._fill(
            "stream", self.stream, f"No recorded stream: run {_cmd(f'edgecv run {r} --source VIDEO')}.", (self.run,)
        )
        self._fill("provenance", self.provenance, "No manifest provenance.")
        return self.out

    # -------------------------------------------------------------------- summary
    def _bench_rows(self) -> list[dict[str, Any]]:
        if self.bench is None:
            return []
        return [row for row in self.bench["result"].get("rows", []) if row.get("latency")]

    def summary(self) -> str | None:
        rows = self._bench_rows()
        if not rows:
            return None
        mname, metrics = _metric_rows(self.validate_metric)
        out = []
        for row in self.bench["result"]["rows"]:  # type: ignore[index]
            lat = row.get("latency") or {}
            m = metrics.get((row["backend"], row["precision"]))
            delta = None if m is None else m.get("delta")
            dcls = "" if delta is None else ' class="bad"' if delta < -0.5 else ' class="good"'
            asked, ran = row["precision"], row.get("precision_ran")
            ran_cell = (
                esc(ran or "–") if ran in (None, asked) else f'<span class="bad">{esc(ran)} (asked {esc(asked)})</span>'
            )
            out.append(
                [
                    esc(row["backend"]),
                    esc(asked),
                    ran_cell,
                    esc(row["batch"]),
                    _num(None if m is None else m.get("metric")),
                    "–" if delta is None else f"<span{dcls}>{delta:+.2f}</span>",
                    _num(lat.get("p50_ms")),
                    _num(lat.get("p99_ms")),
                    _num(lat.get("throughput"), 1),
                    "–" if row.get("speedup_vs_torch") is None else f"{row['speedup_vs_torch']:.2f}×",
                    _num(row.get("gops_per_s"), 1),
                    "–" if row.get("pct_peak") is None else f"{row['pct_peak']:.0f}%",
                    _num(_artifact_size_mb(self.b, row["backend"], asked), 2),
                    _num(row.get("peak_rss_mb"), 1),
                    esc(row.get("error") or ""),
                ]
            )
        head = [
            "backend",
            "precision",
            "ran",
            "batch",
            mname or "task metric",
            "Δ vs torch",
            "p50 ms",
            "p99 ms",
            "items/s",
            "speedup vs torch eager",
            "GOP/s",
            "% peak",
            "size MB",
            "peak RSS MB",
            "error",
        ]
        note = (
            f"bench recorded {esc(self.bench['time'])}; task metric from validate recorded "  # type: ignore[index]
            f"{esc(self.validate_metric['time'])} on {self.validate_metric['result']['task_metric']['n']} images"
            if self.validate_metric
            else f"bench recorded {esc(self.bench['time'])}; no task metric yet "  # type: ignore[index]
            f"({_cmd(f'edgecv validate {self.root} --val DATA')} fills it)"
        )
        return _table(head, out, "summary") + f'<p class="note">{note}</p>'

    def speed_accuracy(self) -> str | None:
        rows = [r for r in self._bench_rows() if r["batch"] == min(x["batch"] for x in self._bench_rows())]
        mname, metrics = _metric_rows(self.validate_metric)
        pts = []
        for r in rows:
            m = metrics.get((r["backend"], r["precision"]))
            if m is not None and m.get("metric") is not None:
                pts.append(
                    {
                        "label": f"{r['backend']}:{r.get('precision_ran') or r['precision']}",
                        "latency_ms": r["latency"]["p50_ms"],
                        "metric": float(m["metric"]),
                    }
                )
        if not pts:
            return None
        front = figures.pareto_front([(p["latency_ms"], p["metric"]) for p in pts])
        names = ", ".join(esc(pts[i]["label"]) for i in front)
        return (
            self.img(figures.speed_accuracy(pts, mname or "task metric"), "speed against accuracy")
            + f'<p class="note">Pareto frontier (nothing is both faster and more accurate): {names}. '
            f"Latency at batch {rows[0]['batch']}.</p>"
        )

    def latency(self) -> str | None:
        rows = [
            {"label": f"{r['backend']}:{r['precision']}", "batch": r["batch"], "quantiles_ms": r["quantiles_ms"]}
            for r in self._bench_rows()
            if r.get("quantiles_ms")
        ]
        if not rows:
            return None
        return self.img(figures.latency_distributions(rows), "latency distributions")

    def roofline(self) -> str | None:
        if self.bench is None:
            return None
        roof = self.bench["result"].get("settings", {}).get("roofline")
        rows = [r for r in self._bench_rows() if r.get("gops_per_s")]
        if not roof or not rows or "ops" not in roof:
            return None
        peaks = {k: float(p["gops_per_s"]) for k, p in roof.get("peaks", {}).items()}
        pts = [
            {
                "label": f"{r['backend']}:{r.get('precision_ran') or r['precision']}",
                "backend": r["backend"],
                "ran": r.get("precision_ran") or r["precision"],
                "batch": r["batch"],
                "gops": r["gops_per_s"],
                "pct": r.get("pct_peak"),
            }
            for r in rows
        ]
        raised = roof.get("raised", {})

        def probe(k: str, p: dict[str, Any]) -> str:
            if k in raised:  # a row beat every probe form: the peak is that row's rate, said here, not hidden
                r = raised[k]
                return f"raised to {r['by']} (best probe {r['probe_form']} {float(r['probe_gops_per_s']):.1f})"
            return f"{p.get('form', 'matmul')} ({p.get('source', 'screened')})"

        ptab = _table(
            ["engine:precision", "peak GOP/s", "probe", "measured"],
            [
                [esc(k), _num(p["gops_per_s"], 1), esc(probe(k, p)), esc(p["measured"])]
                for k, p in roof.get("peaks", {}).items()
            ]
            + [[esc(k), "–", esc(why), ""] for k, why in roof.get("no_peak", {}).items()],
        )
        return (
            self.img(figures.roofline(pts, peaks, float(roof["ops"]["gops"])), "roofline")
            + f'<p class="note">{esc(roof["method"])}. Model: {float(roof["ops"]["gops"]):.3g} GOP per item '
            f"({esc(', '.join(f'{k} {v / 1e9:.3g}' for k, v in roof['ops']['by_type'].items()))}).</p>" + ptab
        )

    # -------------------------------------------------------------------- int8
    def _kept_float(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, art in self.b.manifest.artifacts.items():
            if art.precision == "int8":
                kept = list(art.extra.get("kept_float", [])) + [
                    n for n in art.extra.get("float_head", []) if n not in art.extra.get("kept_float", [])
                ]
                out[key] = kept
        q = self.b.manifest.provenance.get("quantized")
        if isinstance(q, dict):
            out["model.onnx (edgecv quantize)"] = list(q.get("kept_float", [])) + list(q.get("float_head", []))
        return out

    def int8(self) -> str | None:
        kept = self._kept_float()
        v = self.validate_layers
        if v is None and not kept:
            return None
        parts = []
        all_kept = sorted({n for names in kept.values() for n in names})
        if v is not None:
            layers = v["result"]["layers"]
            parts.append(self.img(figures.layer_divergence(layers, all_kept), "INT8 per-layer divergence"))
            worst = sorted(layers, key=lambda r: r["cosine"])[:10]
            parts.append(
                "<h4>The ten layers furthest from fp32 (lowest cosine)</h4>"
                + _table(
                    ["#", "node", "op", "cosine", "rel error", "local error", "diverged", "kept float"],
                    [
                        [
                            esc(r["index"]),
                            esc(r["node"]),
                            esc(r["op"]),
                            f"{r['cosine']:.5f}",
                            f"{r['rel_error']:.3g}",
                            f"{r['local_error']:.3g}",
                            "yes" if r["diverged"] else "",
                            "yes" if r["node"] in all_kept else "",
                        ]
                        for r in worst
                    ],
                )
            )
            first = ", ".join(v["result"].get("first_diverged", [])) or "none"
            parts.append(f'<p class="note">first diverged: {esc(first)}; recorded {esc(v["time"])}</p>')
        else:
            parts.append(
                _missing(
                    f"No per-layer comparison yet: run "
                    f"{_cmd(f'edgecv validate {self.root} -b onnxruntime:int8 --layers')}."
                )
            )
        if kept:
            parts.append(
                "<h4>Layers kept in float</h4>"
                + _table(
                    ["artifact", "layers kept in float"],
                    [[esc(k), esc(", ".join(names) or "none")] for k, names in kept.items()],
                )
            )
        return "".join(parts)

    # -------------------------------------------------------------------- task
    def task(self) -> str | None:
        v = self.validate_metric
        if v is None:
            return None
        rows = [r for r in v["result"]["task_metric"]["rows"] if r.get("details")]
        if not rows:
            return None
        items = [(f"{r['backend']}:{r['precision']}", r["details"]) for r in rows]
        kind = items[0][1]["kind"]
        fig = {"confusion": figures.confusion_matrices, "pr": figures.pr_curves, "iou": figures.class_iou}[kind]
        what = {
            "confusion": "confusion matrix per backend (rows: true class)",
            "pr": "precision-recall per class and backend",
            "iou": "IoU per class and backend",
        }[kind]
        return (
            self.img(fig(items), what) + f'<p class="note">{esc(what)}; validation set of '
            f"{v['result']['task_metric']['n']} images, recorded {esc(v['time'])}</p>"
        )

    # -------------------------------------------------------------------- gallery
    def gallery(self) -> str | None:
        v = self.validate_gallery
        if v is None or not self.b.reference_path.exists():
            return None
        g = v["result"]["gallery"]
        c = self.b.contract
        inputs = self.b.load_reference()["inputs"].get(c.input_name)
        if inputs is None:
            return None
        keys = list(g["backends"])
        parts = []
        n = min(int(g["n"]), int(inputs.shape[0]))
        for s in range(n):
            img = _image_from_input(inputs[s], c)
            ref = g["reference"][s]
            panels = [("PyTorch (reference)", ref, False)]
            for k in keys:
                p = g["backends"][k][s] if s < len(g["backends"][k]) else None
                if p is not None:
                    panels.append((k, p, self._differs(ref, p)))
            titles, bad, draws = [], [], []
            for label, p, is_bad in panels:
                t, d = self._panel(label, p, ref, is_bad)
                titles.append(t)
                bad.append(is_bad)
                draws.append(d)
            parts.append(self.img(figures.gallery_row([img] * len(panels), titles, bad, draws), f"sample {s}"))
        errs = "".join(f"<li>{esc(k)}: {esc(e)}</li>" for k, e in g.get("errors", {}).items())
        legend = {
            "classify": "top-3 per panel; a red frame: top-1 differs from PyTorch",
            "detect": f"boxes scoring ≥ {GALLERY_CONF}: green = matches PyTorch (same class, IoU ≥ 0.5), "
            "red = only this backend, red dashed = PyTorch's box this backend missed",
            "segment": "mask overlay; red pixels: class differs from PyTorch",
        }.get(c.task, "")
        return (
            f'<p class="note">{esc(legend)}; reference inputs from reference.npz, validate recorded '
            f'{esc(v["time"])}</p><div class="gallery">{"".join(parts)}</div>' + (f"<ul>{errs}</ul>" if errs else "")
        )

    def _differs(self, ref: dict[str, Any], p: dict[str, Any]) -> bool:
        task = ref.get("task")
        if task == "classify":
            return bool(ref["topk"] and p["topk"] and ref["topk"][0]["class_id"] != p["topk"][0]["class_id"])
        if task == "detect":
            rb, rc, _ = _dets(ref)
            pb, pc, _ = _dets(p)
            if len(rb) != len(pb):
                return True
            iou = _box_iou(pb, rb)
            return bool(
                len(pb) and not all((iou[i].max() >= 0.5) and pc[i] == rc[int(iou[i].argmax())] for i in range(len(pb)))
            )
        if task == "segment" and "mask" in ref and "mask" in p:
            from edgecv.validate.details import decode_mask

            return bool((decode_mask(ref["mask"]) != decode_mask(p["mask"])).any())
        return False

    def _panel(
        self, label: str, p: dict[str, Any], ref: dict[str, Any], is_bad: bool
    ) -> tuple[str, Callable[[Any], None]]:
        task = p.get("task")
        if task == "classify":
            top = "\n".join(f"{i + 1}. {t['label']} {t['score']:.2f}" for i, t in enumerate(p["topk"][:3]))
            return f"{label}\n{top}", lambda ax: None
        if task == "detect":
            pb, pc, txt = _dets(p)
            is_ref = p is ref
            rb, rc, _ = _dets(ref)

            def draw(ax: Any) -> None:
                from matplotlib.patches import Rectangle

                iou = _box_iou(pb, rb)
                matched_ref: set[int] = set()
                for i, (bx, cl, t) in enumerate(zip(pb, pc, txt)):
                    ok = is_ref
                    if not is_ref and len(rb):
                        j = int(iou[i].argmax())
                        ok = bool(iou[i, j] >= 0.5 and rc[j] == cl)
                        if ok:
                            matched_ref.add(j)
                    col = "#2ca02c" if ok else "#d62728"
                    ax.add_patch(Rectangle((bx[0], bx[1]), bx[2] - bx[0], bx[3] - bx[1], fill=False, ec=col, lw=1.5))
                    ax.text(
                        bx[0],
                        bx[1],
                        t,
                        fontsize=6,
                        color="white",
                        va="bottom",
                        bbox={"facecolor": col, "alpha": 0.8, "pad": 0.5, "lw": 0},
                    )
                if not is_ref:
                    for j, bx in enumerate(rb):
                        if j not in matched_ref:
                            ax.add_patch(
                                Rectangle(
                                    (bx[0], bx[1]),
                                    bx[2] - bx[0],
                                    bx[3] - bx[1],
                                    fill=False,
                                    ec="#d62728",
                                    lw=1.2,
                                    ls="--",
                                )
                            )

            return f"{label}\n{len(pb)} boxes", draw
        if task == "segment" and "mask" in p:
            from edgecv.tasks.draw import palette
            from edgecv.validate.details import decode_mask

            m = decode_mask(p["mask"])
            diff = None if p is ref else decode_mask(ref["mask"]) != m
            pal = palette()

            def draw_seg(ax: Any) -> None:
                rgba = np.zeros((*m.shape, 4), np.float32)
                rgba[..., :3] = pal[m.astype(np.intp) % len(pal)][..., ::-1] / 255.0  # palette is BGR (OpenCV)
                rgba[..., 3] = np.where(m > 0, 0.45, 0.0)
                ax.imshow(rgba)
                if diff is not None and diff.any():
                    red = np.zeros((*m.shape, 4), np.float32)
                    red[..., 0] = 1.0
                    red[..., 3] = diff * 0.85
                    ax.imshow(red)

            extra = "" if diff is None else f"\n{100 * diff.mean():.2f}% pixels differ"
            return f"{label}{extra}", draw_seg
        return label, lambda ax: None

    # -------------------------------------------------------------------- stream
    def stream(self) -> str | None:
        run = self.run
        if run is None:
            return None
        s = run["result"]
        tl = s.get("timeline")
        r = s.get("runner", {})
        src = s.get("source", {})
        title = (
            f"{src.get('kind', '')} {src.get('target', '')} on {r.get('backend', '')} {r.get('precision', '')} "
            f"{r.get('device', '')}"
        )
        facts = _table(
            [
                "frames read",
                "processed",
                "duration s",
                "fps in",
                "fps out",
                "dropped",
                "reconnects",
                "skipped corrupt",
                "stopped by",
            ],
            [
                [
                    esc(s.get("frames_read")),
                    esc(s.get("frames_processed")),
                    _num(s.get("duration_s")),
                    _num(s.get("fps_in")),
                    _num(s.get("fps_out")),
                    esc(s.get("dropped")),
                    esc(s.get("reconnects")),
                    esc(s.get("skipped_corrupt")),
                    esc(s.get("stopped_by")),
                ]
            ],
        )
        lat = s.get("latency_ms", {})
        stages = _table(
            ["stage", "frames", "p50 ms", "p90 ms", "p99 ms", "max ms"],
            [
                [
                    esc(k),
                    esc(d.get("n")),
                    _num(d.get("p50")),
                    _num(d.get("p90")),
                    _num(d.get("p99")),
                    _num(d.get("max")),
                ]
                for k, d in lat.items()
                if d.get("n")
            ],
        )
        pic = (
            self.img(figures.stream_timeline(tl, title), "stream timeline")
            if tl and tl.get("rows")
            else _missing("This run was recorded without a timeline (an older edgecv).")
        )
        return pic + facts + stages + f'<p class="note">recorded {esc(run["time"])}</p>'

    # -------------------------------------------------------------------- provenance
    def provenance(self) -> str:
        m = self.b.manifest
        prov = m.provenance
        rows = [
            [esc(k), f"<code>{esc(json.dumps(v, default=str) if not isinstance(v, str) else v)}</code>"]
            for k, v in prov.items()
            if k not in ("quantized",)
        ]
        parts = ["<h4>Bundle</h4>" + _table(["field", "value"], rows, "prov")]
        if m.artifacts:
            parts.append(
                "<h4>Artifacts</h4>"
                + _table(
                    ["artifact", "path", "device", "created", "build flags", "versions"],
                    [
                        [
                            esc(k),
                            esc(a.path),
                            esc(a.device),
                            esc(a.created),
                            f"<code>{esc(json.dumps(a.build_flags))}</code>",
                            f"<code>{esc(json.dumps(a.versions))}</code>",
                        ]
                        for k, a in m.artifacts.items()
                    ],
                    "prov",
                )
            )
        res = self.res.mine + self.res.others
        if res:
            used = {
                id(x)
                for x in (self.bench, self.validate_metric, self.validate_layers, self.validate_gallery, self.run)
                if x is not None
            }
            parts.append(
                "<h4>Recorded results (the figures above use the ones marked ●)</h4>"
                + _table(
                    ["", "kind", "time", "host", "command", "versions", "file"],
                    [
                        [
                            "●" if id(x) in used else "",
                            esc(x["kind"]),
                            esc(x["time"]),
                            esc(
                                f"{x['host'].get('node')} ({x['host'].get('processor')}, {x['host'].get('cpu_count')} CPUs)"
                            )
                            + (
                                "" if x in self.res.mine else ' <span class="bad">other host: not in the figures</span>'
                            ),
                            f"<code>{esc(' '.join(x.get('command', [])))}</code>",
                            f"<code>{esc(', '.join(f'{k} {v}' for k, v in x.get('versions', {}).items()))}</code>",
                            esc(x["path"]),
                        ]
                        for x in res
                    ],
                    "prov",
                )
            )
        if self.res.skipped:
            parts.append(
                "<h4>Result files skipped</h4><ul>" + "".join(f"<li>{esc(s)}</li>" for s in self.res.skipped) + "</ul>"
            )
        return "".join(parts)


# ------------------------------------------------------------------------------------------ page
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2d3d;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c8d3de;font-size:12px}
main{padding:8px 28px 40px;max-width:1500px}
section.bundle{background:#fff;border:1px solid #ddd;border-radius:6px;padding:6px 20px 16px;margin:18px 0}
h2{border-bottom:2px solid #1f2d3d;padding-bottom:4px}h3{margin-top:26px;color:#1f2d3d}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}th,td{border:1px solid #ddd;padding:3px 7px}
th{background:#eef2f6;text-align:left}td{text-align:right}td:first-child,td:nth-child(2){text-align:left}
table.prov td{text-align:left;max-width:700px;word-break:break-word}
img{max-width:100%;height:auto;display:block;margin:6px 0}
.gallery img{display:inline-block;margin:4px 8px 4px 0}
.missing{color:#8a6d3b;background:#fcf8e3;border-left:4px solid #f0ad4e;padding:6px 10px}
.note{color:#555;font-size:12px}.src{color:#777;font-size:11px;margin-top:2px}
.bad{color:#c0392b;font-weight:600}.good{color:#1e8449}
nav a{margin-right:12px;font-size:12.5px}code{font-size:11.5px}
"""


def render(parts: list[BundleReport], title: str) -> str:
    """The page around the bundles' sections."""
    body = []
    for i, p in enumerate(parts):
        nav = " ".join(f'<a href="#b{i}-{k}">{esc(TITLES[k])}</a>' for k in SECTIONS)
        secs = []
        for k in SECTIONS:
            content = p.sections.get(k) or _missing(p.missing.get(k, "not available"))
            secs.append(f'<h3 id="b{i}-{k}">{esc(TITLES[k])}</h3>{content}')
        notes = ""
        if p.other_hosts:
            notes += _missing(
                f"{p.other_hosts} result(s) recorded on other hosts are kept apart: listed under "
                "Provenance, never mixed into this host's figures."
            )
        if p.skipped:
            notes += "".join(_missing(esc(s)) for s in p.skipped)
        body.append(
            f'<section class="bundle"><h2>{esc(p.name)} <small><code>{esc(p.root)}</code></small></h2>'
            f"<nav>{nav}</nav>{notes}{''.join(secs)}</section>"
        )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
        f"<body><header><h1>{esc(title)}</h1><p>edgecv {esc(__version__)} · written {esc(now_iso())} · "
        f"figures use results recorded on this host only</p></header><main>{''.join(body)}</main></body></html>"
    )


def open_for_report(path: str | Path) -> Bundle:
    """Open a bundle, checking every file's hash except ``results/`` (which :func:`load_results` checks and skips
    one by one, so a corrupt result file costs its own figures, not the report)."""
    b = Bundle.open(path, verify=False)
    b.verify([rel for rel in b.manifest.files if not rel.startswith(f"{RESULTS_DIR}/")])
    return b


def build_report(bundles: list[str | Path], output: str | Path, title: str | None = None) -> ReportInfo:
    """Write the HTML report of ``bundles`` to ``output`` (atomically).

    Raises:
        BundleError: a folder that is not a bundle, or a model file changed after it was written.
    """
    from edgecv._io import write_text

    if not bundles:
        raise BundleError("report: expected at least one bundle folder, found none")
    parts = []
    images = 0
    for path in bundles:
        b = open_for_report(path)
        builder = _Builder(b, load_results(b))
        parts.append(builder.build())
        images += builder.images
    names = ", ".join(p.name for p in parts)
    page = render(parts, title or f"edgecv report: {names}")
    out = Path(output)
    if out.exists() and out.is_dir():
        raise BundleError(f"-o: expected a file name for the report, found a folder at '{out}'")
    if out.name == MANIFEST:
        raise BundleError("-o: refusing to write the report over a bundle manifest")
    write_text(out, page)
    return ReportInfo(path=str(out), bundles=parts, images=images)
