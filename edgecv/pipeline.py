"""Orchestration over both tiers: open runners (torch included), and run a recipe end to end.

This is the only place that joins the build tier (zoo/train/export) with the runtime tier
(backends/quant/validate/bench). Nothing imports it but the CLI.

:func:`run_recipe` runs train-or-load → rewrite → export → compile → validate → bench into one output folder.
Each step records a stamp in ``OUT/pipeline.json``: the hash of everything it read (recipe section, input files)
and of what it wrote. A step whose inputs hash the same and whose outputs are still there unchanged is skipped,
so a re-run after editing only the ``bench`` section re-runs only the bench.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv import __version__
from edgecv._io import sha256_path, write_json
from edgecv.backends import open_runner as _open_engine_runner
from edgecv.errors import ConfigError

if TYPE_CHECKING:
    from edgecv.backends.base import Runner
    from edgecv.bundle import Bundle
    from edgecv.config import Recipe

STEPS = ("train", "export", "compile", "validate", "bench")
STAMPS = "pipeline.json"


def open_runner(
    bundle: Bundle,
    backend: str,
    precision: str = "fp32",
    device: str | None = None,
    threads: int | None = None,
    source: str | None = None,
    weights: str | Path | None = None,
    **kwargs: Any,
) -> Runner:
    """A runner for ``bundle`` on any backend. ``torch`` rebuilds the eager model: from the bundle's recorded
    source when that is a registered name (zoo, torchvision, timm), else only from ``source``/``weights`` the user
    named in this invocation (a bundle is data: nothing it names is imported). The build tier is imported only
    here, only for torch."""
    if backend == "torch":
        from edgecv.backends.torch import TorchRunner
        from edgecv.export.sources import load_model_from_manifest
        from edgecv.rewrite import apply_passes

        model = load_model_from_manifest(bundle.manifest, source=source, weights=weights, passes=apply_passes)
        return TorchRunner.from_module(
            model, bundle.contract, precision=precision, device=device, threads=threads, **kwargs
        )
    return _open_engine_runner(bundle, backend, precision=precision, device=device, threads=threads, **kwargs)


def runner_opener(source: str | None = None, weights: str | Path | None = None) -> Callable[..., Runner]:
    """:func:`open_runner` with the model source the user named on the command line (``--source/--weights``)."""
    if source is None and weights is None:
        return open_runner

    def opener(bundle: Bundle, backend: str, precision: str = "fp32", **kw: Any) -> Runner:
        return open_runner(bundle, backend, precision, source=source, weights=weights, **kw)

    return opener


# ------------------------------------------------------------------------------------------------ stamps
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class _Stamps:
    """``OUT/pipeline.json``: per step, the hash of its inputs and of each output it wrote."""

    def __init__(self, out: Path) -> None:
        self.path = out / STAMPS
        self.data: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def up_to_date(self, step: str, inputs: str) -> bool:
        rec = self.data.get(step)
        if not rec or rec.get("inputs") != inputs:
            return False
        for rel, digest in rec.get("outputs", {}).items():
            p = self.path.parent / rel
            if not p.exists() or sha256_path(p) != digest:
                return False
        return True

    def record(self, step: str, inputs: str, outputs: Sequence[Path], result: Any = None) -> None:
        root = self.path.parent
        self.data[step] = {
            "inputs": inputs,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "outputs": {str(p.relative_to(root)): sha256_path(p) for p in outputs},
            "result": result,
        }
        write_json(self.path, self.data)

    def result(self, step: str) -> Any:
        return self.data.get(step, {}).get("result")


@dataclass
class StepLog:
    step: str
    status: str  # "ran", "skipped (up to date)", "skipped (not in recipe)"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class PipelineResult:
    out: Path
    bundle: Path | None
    steps: list[StepLog] = field(default_factory=list)
    #: one row per backend × precision: metric, agreement and latency (the printed table)
    rows: list[dict[str, Any]] = field(default_factory=list)
    metric_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "bundle": str(self.bundle) if self.bundle else None,
            "steps": [s.__dict__ for s in self.steps],
            "metric": self.metric_name,
            "rows": self.rows,  # "summary" in edgecv/pipeline/1 and edgecv/benchmark/1
        }


# ------------------------------------------------------------------------------------------------ run
def run_recipe(
    recipe: Recipe | str | Path,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    force: bool = False,
    bench_min_time: float = 1.0,
    val_limit: int | None = None,
    log: Callable[[str], None] | None = None,
    val: str | Path | None = None,
) -> PipelineResult:
    """Run a recipe end to end into ``out``.

    Args:
        recipe: a :class:`~edgecv.config.Recipe` or the path of a YAML recipe (validated before anything runs).
        out: output folder: ``train/`` (checkpoints, metrics), ``bundle/`` (the deployable bundle),
            ``validate.json``, ``bench.json``, ``pipeline.json`` (step stamps).
        weights: use this checkpoint instead of training (overrides ``model.weights``).
        force: re-run every step even when its stamp says it is up to date.
        bench_min_time: seconds of timed runs per backend and batch.
        val_limit: evaluate the task metric on at most this many validation images.
        log: where step messages go (default: print).
        val: validation data for the task metric (overrides the recipe's val split; a recipe without a ``data``
            section has none otherwise).

    Returns:
        A :class:`PipelineResult` with per-step status and the summary rows (metric and latency per backend).
    """
    from edgecv.config import load_recipe

    say = log or print
    if not isinstance(recipe, (str, Path)):
        rec = recipe
        recipe_name = "recipe"
    else:
        rec = load_recipe(recipe)
        recipe_name = Path(recipe).stem
    out = Path(out)
    from edgecv._io import check_output_dir

    # OUT is the pipeline's own (it resumes there): new, empty, or one a pipeline wrote; never a folder of other files
    check_output_dir(out, True, lambda p: (p / STAMPS).is_file(), "pipeline output", "a pipeline output folder")
    out.mkdir(parents=True, exist_ok=True)
    stamps = _Stamps(out)
    if force:
        stamps.data = {}
    result = PipelineResult(out=out, bundle=None)
    task: str | None = rec.data.task if rec.data is not None else None  # None: the model's own (zoo config)

    # 1. train or load ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    ckpt: Path | None = Path(weights) if weights else (Path(rec.model.weights) if rec.model.weights else None)
    train_dir = out / "train"
    if ckpt is not None:
        if not ckpt.is_file():
            raise ConfigError(f"model.weights: expected a checkpoint file, found nothing at '{ckpt}'")
        result.steps.append(StepLog("train", "skipped (weights given)", 0.0, str(ckpt)))
    elif rec.data is None:
        result.steps.append(StepLog("train", "skipped (no data section)", 0.0, "random init"))
    else:
        inputs = _digest(
            {
                "v": __version__,
                "model": rec.model.model_dump(),
                "data": rec.data.model_dump(),
                "train": rec.train.model_dump(),
            }
        )
        best = train_dir / "best.pt"
        if stamps.up_to_date("train", inputs):
            result.steps.append(StepLog("train", "skipped (up to date)", 0.0, str(best)))
        else:
            from edgecv.train.recipe import train_recipe

            say(f"[train] {rec.model.name or rec.model.source} for {rec.train.epochs} epochs → {train_dir}")
            _, tr = train_recipe(rec, train_dir, force=True)  # the pipeline's own train/ folder
            stamps.record("train", inputs, [best], {"best_metric": tr.to_dict().get("best_metric")})
            result.steps.append(StepLog("train", "ran", time.perf_counter() - t0, str(best)))
        ckpt = best

    # 2-3. rewrite + export ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    bundle_dir = out / "bundle"
    classes, pre = _training_meta(ckpt, rec)
    inputs = _digest(
        {
            "v": __version__,
            "model": rec.model.model_dump(),
            "export": rec.export.model_dump(),
            "rewrite": rec.rewrite.model_dump(),
            "weights": sha256_path(ckpt) if ckpt else None,
            "classes": classes,
            "pre": pre,
        }
    )
    if stamps.up_to_date("export", inputs):
        result.steps.append(StepLog("export", "skipped (up to date)", 0.0, str(bundle_dir)))
    else:
        from edgecv.export import load_model
        from edgecv.export.workflow import ExportPrep, export_loaded
        from edgecv.rewrite import apply_passes

        spec = rec.model.name or str(rec.model.source)
        say(
            f"[export] {spec} → {bundle_dir}"
            + (f" (rewrite: {', '.join(rec.rewrite.passes)})" if rec.rewrite.passes else "")
        )
        kwargs = dict(rec.model.kwargs)
        if classes:
            kwargs["num_classes"] = len(classes)
        loaded = load_model(
            spec,
            weights=ckpt,
            model_kwargs=kwargs,
            input_shape=tuple(rec.export.input_shape) if rec.export.input_shape else None,
            passes=apply_passes,
        )
        task = task or (loaded.contract.task if loaded.contract.task != "generic" else "classify")
        update: dict[str, Any] = {"task": task}
        if classes:
            update["class_names"] = classes
        if pre:
            update.update(
                {
                    "mean": pre["mean"],
                    "std": pre["std"],
                    "color": pre.get("color", "RGB"),
                    "resize": pre.get("resize", "stretch"),
                    "scale": pre.get("scale", 1 / 255),
                }
            )
            if not rec.export.input_shape:
                update["input_shape"] = [1, *pre["input_size"]]
        # the reference inputs come from the recipe's validation split, so validate compares in-domain outputs
        # (a detector's boxes, several classes) rather than photos the model was never trained on
        ref_dir = _val_dir(rec, out)
        res = export_loaded(
            loaded,
            bundle_dir,
            ExportPrep(update, nms="graph" if task == "detect" else None),
            opset=rec.export.opset,
            dynamic_batch=rec.export.dynamic_batch,
            simplify=rec.export.simplify,
            rewrite=rec.rewrite.passes or None,
            passes=apply_passes,
            force=True,
            name=recipe_name,
            reference_data=ref_dir if ref_dir is not None and ref_dir.exists() else None,
        )
        stamps.record(
            "export",
            inputs,
            [bundle_dir / "model.onnx", bundle_dir / "reference.npz"],
            {"exporter": res.exporter, "parity_passed": res.parity_passed},
        )
        # a new model invalidates everything after it
        for later in ("compile", "validate", "bench"):
            stamps.data.pop(later, None)
        result.steps.append(
            StepLog(
                "export",
                "ran",
                time.perf_counter() - t0,
                f"{res.exporter}, parity {'PASS' if res.parity_passed else 'FAIL'}",
            )
        )
    result.bundle = bundle_dir

    from edgecv.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    task = bundle.contract.task
    if val is not None:  # the task is known now: check --val for it before any engine is built
        from edgecv.data.layout import find_layout

        find_layout(task, val, what="--val", classes=bundle.contract.class_names)
    onnx_sha = bundle.manifest.files.get("model.onnx")
    # the recipe names the model in this invocation: the live torch reference may be rebuilt from it (a bundle
    # alone never makes edgecv import a file)
    opener = runner_opener(rec.model.name or str(rec.model.source), ckpt)

    # 4. compile --------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    targets = [(c.backend, c.precision) for c in rec.compile]
    q = rec.quantize
    calib_hash = sha256_path(Path(q.calib)) if q and q.calib and Path(q.calib).exists() else None
    inputs = _digest(
        {"onnx": onnx_sha, "targets": targets, "quantize": q.model_dump() if q else None, "calib": calib_hash}
    )
    if not targets:
        result.steps.append(StepLog("compile", "skipped (not in recipe)"))
    elif stamps.up_to_date("compile", inputs) and all(
        bundle.artifact(b, p) for b, p in targets if not (b == "onnxruntime" and p == "fp32")
    ):
        result.steps.append(StepLog("compile", "skipped (up to date)", 0.0, ", ".join(f"{b}:{p}" for b, p in targets)))
    else:
        for backend, precision in targets:
            say(f"[compile] {backend} {precision}")
            _compile(bundle, backend, precision, rec, task, out, val_limit, Path(val) if val is not None else None)
        bundle = Bundle.open(bundle_dir)
        stamps.record("compile", inputs, [bundle_dir / "manifest.json"])
        result.steps.append(
            StepLog("compile", "ran", time.perf_counter() - t0, ", ".join(f"{b}:{p}" for b, p in targets))
        )

    # the backends to compare: torch + every compiled target + the validate/bench backends at fp32
    combos: list[tuple[str, str]] = [("torch", "fp32")]
    for b in [*rec.validate_.backends, *rec.bench.backends]:
        if (b, "fp32") not in combos and b != "tensorrt":
            combos.append((b, "fp32"))
    for b, p in targets:
        if (b, p) not in combos and b != "tensorrt":
            combos.append((b, p))
    manifest_sha = sha256_path(bundle_dir / "manifest.json")

    # 5. validate: agreement with torch, and the task metric per backend on the val split ----------------
    t0 = time.perf_counter()
    val_dir = Path(val) if val is not None else _val_dir(rec, out)
    inputs = _digest(
        {
            "manifest": manifest_sha,
            "combos": combos,
            "val": str(val_dir),
            "limit": val_limit,
            "allow_unchecked": rec.validate_.allow_unchecked,
        }
    )
    if stamps.up_to_date("validate", inputs):
        val_res = stamps.result("validate")
        result.steps.append(StepLog("validate", "skipped (up to date)"))
    else:
        say(f"[validate] {', '.join(f'{b}:{p}' for b, p in combos)}" + (f" on {val_dir}" if val_dir else ""))
        val_res = _validate(bundle, combos, val_dir, val_limit, opener, allow_unchecked=rec.validate_.allow_unchecked)
        write_json(out / "validate.json", val_res)
        stamps.record("validate", inputs, [out / "validate.json"], val_res)
        result.steps.append(StepLog("validate", "ran", time.perf_counter() - t0))

    # 6. bench ----------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    inputs = _digest(
        {"manifest": manifest_sha, "combos": combos, "bench": rec.bench.model_dump(), "min_time": bench_min_time}
    )
    if stamps.up_to_date("bench", inputs):
        bench_res = stamps.result("bench")
        result.steps.append(StepLog("bench", "skipped (up to date)"))
    else:
        from edgecv.bench.core import bench_bundle

        say(f"[bench] batches {rec.bench.batches}")
        rep = bench_bundle(
            bundle, combos, rec.bench.batches, threads=rec.bench.threads, min_time_s=bench_min_time, opener=opener
        )
        bench_res = rep.to_dict()
        write_json(out / "bench.json", bench_res)
        stamps.record("bench", inputs, [out / "bench.json"], bench_res)
        result.steps.append(StepLog("bench", "ran", time.perf_counter() - t0))

    result.metric_name, result.rows = _summary(combos, val_res, bench_res)
    return result


# ------------------------------------------------------------------------------------------------ helpers
def _training_meta(ckpt: Path | None, rec: Recipe) -> tuple[list[str], dict[str, Any] | None]:
    """Class names and preprocessing the checkpoint was trained with (from the checkpoint or its JSON)."""
    if ckpt is None:
        return [], None
    for cand in (ckpt.with_suffix(".json"), ckpt.parent / "run.json"):
        if cand.is_file():
            meta = json.loads(cand.read_text())
            classes = meta.get("classes") or []
            pre = meta.get("preprocessing")
            if classes or pre:
                return list(classes), pre
    try:
        import torch

        obj = torch.load(ckpt, map_location="cpu", weights_only=True)
        meta = obj.get("meta", {}) if isinstance(obj, dict) else {}
        return list(meta.get("classes", [])), meta.get("preprocessing")
    except Exception:  # noqa: BLE001 - a bare state dict has no metadata; the zoo defaults apply
        return [], None


def _val_dir(rec: Recipe, out: Path) -> Path | None:
    data = rec.data
    if data is None:
        return None
    if data.val:
        return Path(data.val)
    if data.synth is not None:
        from edgecv.train.recipe import resolve_data

        root, _ = resolve_data(data, out / "train")
        return root / ("images/val" if data.task == "detect" else "val") if data.task != "detect" else root
    return None


def _compile(
    bundle: Bundle,
    backend: str,
    precision: str,
    rec: Recipe,
    task: str,
    out: Path,
    val_limit: int | None,
    val_override: Path | None = None,
) -> None:
    if backend == "onnxruntime" and precision == "fp32":
        return  # model.onnx is the artifact
    if precision == "int8":
        from edgecv._lazy import is_available
        from edgecv.backends.base import BuildConfig
        from edgecv.quant.api import quantize
        from edgecv.quant.config import QuantConfig

        q = rec.quantize
        # no TensorRT here: quantize, then write the trtexec script that builds from that QDQ model
        emit = backend == "tensorrt" and not is_available("tensorrt")
        quantize(
            bundle,
            QuantConfig(
                backend=backend,
                calib=q.calib if q is not None else None,
                method=q.method if q is not None else "minmax",
                val=val_override or _val_dir(rec, out),
                max_drop=q.max_drop if q is not None else None,
                limit=q.samples if q is not None else None,
                build=BuildConfig(precision="int8", device="cuda:0", emit_only=True) if emit else None,
            ),
        )
        return
    from edgecv._lazy import is_available
    from edgecv.backends import BUILDERS
    from edgecv.backends.base import BuildConfig

    if backend == "tensorrt" and not is_available("tensorrt"):
        from edgecv.backends.tensorrt import write_trtexec_script

        write_trtexec_script(bundle, BuildConfig(precision=precision))  # type: ignore[arg-type]
        return

    BUILDERS.get(backend)().build(bundle, BuildConfig(precision=precision))  # type: ignore[arg-type]


def _validate(
    bundle: Bundle,
    combos: list[tuple[str, str]],
    val_dir: Path | None,
    val_limit: int | None,
    opener: Callable[..., Runner],
    allow_unchecked: bool = False,
) -> dict[str, Any]:
    from edgecv.validate.core import validate_bundle
    from edgecv.validate.metrics import metric_for, open_val

    rep = validate_bundle(
        bundle, [c for c in combos if c[0] != "torch"], opener=opener, allow_unchecked=allow_unchecked
    )
    agreement = rep.to_dict()
    metrics: dict[str, Any] = {}
    if val_dir is not None and val_dir.exists():
        from edgecv.data.layout import find_layout

        val_path = find_layout(bundle.contract.task, val_dir, what="val", classes=bundle.contract.class_names).path
        val = open_val(val_path, bundle.contract, limit=val_limit).materialize()
        fn = metric_for(bundle.contract.task)
        for b, p in combos:
            with opener(bundle, b, p) as r:
                metrics[f"{b}:{p}"] = {"metric": fn(r, val), "precision_ran": r.precision, "n": len(val)}
    return {
        "agreement": agreement,
        "metrics": metrics,
        "metric_name": {"classify": "top-1 %", "segment": "mIoU %", "detect": "mAP@0.5 %"}.get(
            bundle.contract.task, "metric"
        ),
    }


def _summary(
    combos: list[tuple[str, str]], val_res: dict[str, Any] | None, bench_res: dict[str, Any] | None
) -> tuple[str, list[dict[str, Any]]]:
    val_res = val_res or {}
    metrics = val_res.get("metrics", {})
    rows: list[dict[str, Any]] = []
    torch_metric = metrics.get("torch:fp32", {}).get("metric")
    agreement = val_res.get("agreement", {})
    # a validate step recorded in the manifest by edgecv/validate/1 named its rows "results"
    agree = {f"{r.get('backend')}:{r.get('precision')}": r for r in agreement.get("rows", agreement.get("results", []))}
    bench_rows = (bench_res or {}).get("rows", [])
    first_batch = min((r.get("batch", 1) for r in bench_rows), default=1)
    for b, p in combos:
        key = f"{b}:{p}"
        m = metrics.get(key, {}).get("metric")
        brow: dict[str, Any] = next(
            (
                r
                for r in bench_rows
                if r.get("backend") == b and r.get("precision") == p and r.get("batch") == first_batch
            ),
            {},
        )
        a = agree.get(key, {})
        rows.append(
            {
                "backend": b,
                "precision": p,
                "precision_ran": brow.get("precision_ran") or metrics.get(key, {}).get("precision_ran"),
                "metric": m,
                "delta": (m - torch_metric) if (m is not None and torch_metric is not None) else None,
                "agrees_with_torch": True if b == "torch" else a.get("passed"),
                "batch": first_batch,
                "latency": brow.get("latency"),  # bench's statistics (flat p50_ms/p99_ms in pipeline/1)
                "speedup_vs_torch": brow.get("speedup_vs_torch"),
                "error": brow.get("error") or a.get("error"),
            }
        )
    return val_res.get("metric_name", "metric"), rows


# ------------------------------------------------------------------------------------------------ benchmark
def machine_targets(calib: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """Every engine × precision this machine can build and run, asked of the engines themselves: ONNX Runtime
    fp32 (and int8 with calibration data), OpenVINO at each precision its CPU lists in OPTIMIZATION_CAPABILITIES
    (int8 with calibration data), TensorRT fp32/fp16 (and int8) where TensorRT and a CUDA GPU are present.
    Returns the targets and one line per target left out, saying why."""
    from edgecv._lazy import is_available
    from edgecv.bench.roofline import supported_precisions

    targets: list[tuple[str, str]] = []
    skipped: list[str] = []
    if is_available("onnxruntime"):
        targets.append(("onnxruntime", "fp32"))
        (
            targets.append(("onnxruntime", "int8"))
            if calib
            else skipped.append("onnxruntime:int8: no calibration data (--calib DIR)")
        )
    if is_available("openvino"):
        caps = supported_precisions("openvino", "CPU")
        for prec in ("fp32", "bf16", "fp16", "int8"):
            if prec != "fp32" and prec not in caps:
                skipped.append(f"openvino:{prec}: this CPU does not list it (OPTIMIZATION_CAPABILITIES {caps})")
            elif prec == "int8" and not calib:
                skipped.append("openvino:int8: no calibration data (--calib DIR)")
            else:
                targets.append(("openvino", prec))
    trt = False
    if is_available("tensorrt"):
        import tensorrt

        trt = hasattr(tensorrt, "Builder") and is_available("torch")
        if trt:
            import torch

            trt = bool(torch.cuda.is_available())
    if trt:
        targets += [("tensorrt", "fp32"), ("tensorrt", "fp16")] + ([("tensorrt", "int8")] if calib else [])
    else:
        skipped.append("tensorrt: TensorRT and a CUDA GPU are not both present")
    return targets, skipped


def model_task(spec: str) -> str | None:
    """The task of a zoo model from its registered config (no model is built); None for any other source, whose
    task shows only once it is loaded."""
    if ":" in spec or Path(spec).suffix:
        return None
    from edgecv.zoo import model_cfg

    return str(model_cfg(spec)["task"])  # an unknown name fails here, listing the choices


def check_benchmark_inputs(spec: str, calib: str | Path | None, val: str | Path | None) -> None:
    """``benchmark``'s data, before any work: ``calib`` exists; ``val`` is a data set in the model's task's
    layout when the task is known from the source (a zoo name), else in any known layout (run_recipe checks the
    task's own layout once the export has named the task, before any engine is built).

    Raises:
        ConfigError: no ``calib``; DataError: ``val`` in no known layout, or not in the task's.
    """
    from edgecv.data.layout import find_any_layout, find_layout

    if calib is not None and not Path(calib).exists():
        raise ConfigError(f"--calib: expected a folder of images, a video or an .npz, found no '{calib}'")
    if val is None:
        return
    task = model_task(spec)
    if task in ("classify", "detect", "segment"):
        find_layout(task, val, what="--val")
    else:
        find_any_layout(val, what="--val")


def benchmark_model(
    spec: str,
    out: str | Path,
    *,
    weights: str | Path | None = None,
    calib: str | Path | None = None,
    val: str | Path | None = None,
    val_limit: int | None = None,
    max_drop: float | None = None,
    bench_min_time: float = 1.0,
    batches: list[int] | None = None,
    threads: int | None = None,
    force: bool = False,
    allow_unchecked: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[PipelineResult, list[str]]:
    """From a model to one table (Ultralytics' ``benchmark``, with edgecv's parity and task-metric columns):
    export ``spec``, compile every engine × precision this machine can run (:func:`machine_targets`), validate each
    against PyTorch (and the task metric on ``val``), bench each. Re-running resumes what is up to date.

    Returns:
        The pipeline result (its ``rows`` are the table) and the lines saying which targets were left out.
    """
    from edgecv.config.schema import parse_recipe

    targets, skipped = machine_targets(calib is not None)
    model: dict[str, Any] = {"source": spec} if (":" in spec or Path(spec).suffix) else {"name": spec}
    if weights is not None:
        model["weights"] = str(Path(weights).resolve())
    engines = list(dict.fromkeys(b for b, _ in targets if b != "tensorrt"))
    rec = parse_recipe(
        {
            "model": model,
            "export": {"opset": 17, "dynamic_batch": True, "simplify": True},
            "quantize": {"method": "auto", "calib": str(Path(calib).resolve()), "max_drop": max_drop}
            if calib
            else None,
            "compile": [{"backend": b, "precision": p} for b, p in targets if (b, p) != ("onnxruntime", "fp32")],
            "validate": {"backends": engines, "allow_unchecked": allow_unchecked},
            "bench": {"backends": engines, "batches": batches or [1], "threads": threads},
        },
        source=f"benchmark {spec}",
    )
    res = run_recipe(
        rec,
        out,
        force=force,
        bench_min_time=bench_min_time,
        val_limit=val_limit,
        log=log,
        val=Path(val).resolve() if val is not None else None,
    )
    return res, skipped
