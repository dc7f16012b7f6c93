"""The one INT8 entry point, :func:`quantize` (``edgecv compile -p int8``, ``edgecv quantize``, the recipe
pipeline), driven by a :class:`~edgecv.quant.config.QuantConfig`.

Every backend starts from one pre-processed fp32 ONNX graph (``quant_pre_process``, nodes named), so the layers
kept in floating point are ONNX node names that mean the same thing everywhere:

* ``onnxruntime`` — QDQ ONNX via ``quantize_static`` (``nodes_to_exclude``) → ``onnxruntime/int8/model.qdq.onnx``;
* ``openvino`` — NNCF on the converted graph (``IgnoredScope(names=…)`` after mapping ONNX → OpenVINO names),
  ``nncf.quantize_with_accuracy_control`` when a budget is given and the shared choice is not enough
  → ``openvino/int8/model.xml``;
* ``tensorrt`` — the QDQ model above, built by the TensorRT builder as a strongly-typed network with
  ``BuildConfig.keep_float``.

quant calls down into the backends (their builders record the artifacts; their runners, opened with
``from_path``, score every candidate); no backend calls quant.

A choice of kept-float layers already recorded on another INT8 artifact of the bundle is applied first.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._io import check_output_dir, scratch_dir
from edgecv._lazy import lazy_import, version_of
from edgecv.bundle import ONNX_FILE, REFERENCE_FILE, Artifact, Bundle, Manifest, is_bundle_dir, now_iso
from edgecv.errors import BackendError, BundleError, ConfigError, one_line
from edgecv.quant.budget import BudgetResult, Trial, score, search_keep_float
from edgecv.quant.calib import CalibrationSource, as_source, check_sample_count
from edgecv.quant.config import QuantConfig, QuantResult
from edgecv.quant.layers import (
    compare_layers,
    float_head_nodes,
    quantized_nodes,
    rank_by_sensitivity,
    with_compute_consumers,
)
from edgecv.quant.ort import METHODS, prepare_fp32, quantize_qdq, reduced_weight_range
from edgecv.validate.metrics import TASK_METRICS, ValSet, metric_for, open_val

if TYPE_CHECKING:
    from edgecv.backends.base import Runner

ORT_INT8_PATH = "onnxruntime/int8/model.qdq.onnx"
OV_INT8_PATH = "openvino/int8/model.xml"
FP32_COPY = "fp32/model.onnx"
AUTO_SCORE_SAMPLES = 32


@dataclass
class Int8Result:
    """What an INT8 run decided and measured; stored as the artifact's ``extra``."""

    backend: str
    method: str
    samples: int
    calibration: dict[str, Any]
    float_head: list[str] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    methods_tried: dict[str, float] = field(default_factory=dict)
    methods_failed: dict[str, str] = field(default_factory=dict)  # --method auto: methods that raised, and why
    budget: dict[str, Any] | None = None
    quantized_layers: int = 0
    selection: dict[str, Any] | None = None  # with --method auto: what the method was chosen on

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ quantizers
class _Quantizer:
    """Builds INT8 candidates of one prepared graph for one backend; each returns a (not loaded) Runner."""

    backend = "onnxruntime"

    def __init__(self, prepared: Path, work: Path, calib: CalibrationSource, device: str | None) -> None:
        self.prepared = prepared
        self.work = work
        self.calib = calib
        self.device = device
        self._n = 0
        # the last product (QDQ path or ov.Model) and what it was made with
        self.last: Any = None
        self.last_key: tuple[str, tuple[str, ...]] = ("", ())

    def runner(self, model: Any) -> Runner:
        """The backend's own runner over a candidate (precision read from the graph); ORT scores on the CPU."""
        from edgecv.backends.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner.from_path(model, device="CPU")

    def fp32_runner(self) -> Runner:
        return self.runner(self.prepared)

    def quantize(self, method: str, exclude: list[str]) -> Runner:
        self._n += 1
        out = self.work / f"cand{self._n}.qdq.onnx"
        quantize_qdq(self.prepared, out, self.calib, method, exclude)
        self.last, self.last_key = out, (method, tuple(exclude))
        return self.runner(out)


class _OVQuantizer(_Quantizer):
    backend = "openvino"

    def __init__(self, prepared: Path, work: Path, calib: CalibrationSource, device: str | None) -> None:
        super().__init__(prepared, work, calib, device)
        from edgecv.quant import openvino as qov

        onnx = lazy_import("onnx")
        self.qov = qov
        self.onnx_model = onnx.load(str(prepared))
        self.fp32_model = qov.convert(prepared)

    def runner(self, model: Any) -> Runner:
        """OpenVINO's runner over an in-memory ov.Model / CompiledModel, computing in f32 where not INT8."""
        from edgecv.backends.openvino import OpenVINORunner

        return OpenVINORunner.from_path(model, device=self.device)

    def fp32_runner(self) -> Runner:
        return self.runner(self.fp32_model.clone())

    def ov_names(self, exclude: list[str]) -> list[str]:
        mapping = self.qov.map_onnx_to_ov(self.onnx_model, self.fp32_model, exclude)
        return sorted({n for names in mapping.values() for n in names})

    def quantize(self, method: str, exclude: list[str]) -> Runner:
        q = self.qov.quantize_nncf(self.fp32_model.clone(), self.calib, method, self.ov_names(exclude))
        self.last, self.last_key = q, (method, tuple(exclude))
        return self.runner(q)

    def onnx_names_for(self, ov_names: set[str]) -> list[str]:
        """ONNX nodes whose OpenVINO ops include any of ``ov_names``."""
        all_nodes = [n.name for n in self.onnx_model.graph.node]
        try:
            mapping = self.qov.map_onnx_to_ov(self.onnx_model, self.fp32_model, all_nodes)
        except BackendError:
            mapping = {}
            for n in all_nodes:
                try:
                    mapping.update(self.qov.map_onnx_to_ov(self.onnx_model, self.fp32_model, [n]))
                except BackendError:
                    continue
        return [n for n, ops in mapping.items() if ov_names & set(ops)]


# ------------------------------------------------------------------------------------------------ helpers
def _cosine_outputs(contract: Any) -> list[str] | None:
    """The outputs whose cosine says how close INT8 is to fp32: all (None), except for a detector with NMS in the
    graph, where only the pre-NMS candidates are numbers to compare (the NMS arrays are selections: a flipped
    near-tie moves a whole row); [] when such a detector exposes no candidates."""
    from edgecv.tasks.decode import PRE_NMS_OUTPUTS

    if contract.task == "detect" and contract.decode.get("format") == "nms":
        return [k for k in PRE_NMS_OUTPUTS if k in contract.output_names]
    return None


def _output_cosine(fp: Runner, q: Runner, feeds: list[dict[str, np.ndarray]], names: list[str] | None = None) -> float:
    """Mean cosine similarity of the outputs ``names`` (default all), INT8 vs fp32, over ``feeds``."""
    sims = []
    with fp, q:
        for feed in feeds:
            a, b = fp.infer(feed), q.infer(feed)
            for k in a if names is None else names:
                if a[k].shape != b[k].shape:
                    continue
                x, y = a[k].astype(np.float64).ravel(), b[k].astype(np.float64).ravel()
                den = np.linalg.norm(x) * np.linalg.norm(y)
                sims.append(float(x @ y / den) if den > 0 else float(np.allclose(x, y)))
    return float(np.mean(sims)) if sims else 0.0


def _prior_kept_float(bundle: Bundle, backend: str) -> list[str]:
    """Kept-float layers recorded on the bundle's other INT8 artifacts (the shared choice)."""
    names: list[str] = []
    for art in bundle.manifest.artifacts.values():
        if art.precision == "int8" and art.backend != backend:
            names += [n for n in art.extra.get("kept_float", []) if n not in names]
    return names


def _sample_feeds(calib: CalibrationSource, n: int) -> list[dict[str, np.ndarray]]:
    feeds = []
    for feed in calib:
        feeds.append(feed)
        if len(feeds) >= n:
            break
    return feeds


def _versions() -> dict[str, str | None]:
    return {m: version_of(m) for m in ("onnx", "onnxruntime", "openvino", "nncf")}


def split_val(val: ValSet) -> tuple[ValSet, ValSet]:
    """(selection, certification): every third sample (at least one) to choose on, the rest to certify on."""
    if len(val) < 2:
        raise ConfigError(
            f"--method auto with --val: expected at least 2 validation samples (one to choose the "
            f"method on, one to certify it), found {len(val)}"
        )
    sel = [it for i, it in enumerate(val.items) if i % 3 == 0]
    cert = [it for i, it in enumerate(val.items) if i % 3 != 0]
    return (dataclasses.replace(val, items=sel), dataclasses.replace(val, items=cert))


# ------------------------------------------------------------------------------------------------ core
def _run(
    q: _Quantizer,
    contract: Any,
    calib: CalibrationSource,
    method: str,
    val: ValSet | None,
    max_drop: float | None,
    float_head: bool,
    prior: list[str],
    val_path: str | None,
) -> Int8Result:
    """Method selection, budget search and final measurement on one backend. Leaves the final model in q.last."""
    onnx = lazy_import("onnx")
    prepared = onnx.load(str(q.prepared))
    head = float_head_nodes(prepared) if float_head else []
    base = [*head, *[n for n in prior if n not in head]]
    res = Int8Result(q.backend, method, len(calib), calib.to_dict(), float_head=head)
    metric = metric_for(contract.task) if val is not None else None
    unit = TASK_METRICS.meta(contract.task).get("unit", "points") if val is not None else ""
    feeds = _sample_feeds(calib, AUTO_SCORE_SAMPLES)
    cos_names = _cosine_outputs(contract)
    select: ValSet | None = None
    if method == "auto" and val is not None:
        # the method is chosen on a split held out from the images that certify the budget and the final metric:
        # choosing and certifying on the same images would report the winner's luck on them as its accuracy
        select, val = split_val(val)
        res.selection = {
            "by": f"{unit} on a held-out selection split",
            "split": "val[0::3]",
            "samples": len(select),
            "certified_on": "val (the other samples)",
            "certify_samples": len(val),
        }
    elif method == "auto":
        if cos_names == []:
            raise ConfigError(
                "--method auto: a detector with NMS in the graph and no pre-NMS outputs cannot be "
                "compared with fp32 by output cosine; expected --val DATA (or re-export it)"
            )
        res.selection = {
            "by": "output cosine vs fp32 on calibration samples"
            + (f" ({', '.join(cos_names)}: the candidates before NMS)" if cos_names else ""),
            "samples": len(feeds),
        }
    fp32_metric = score(q.fp32_runner(), metric, val) if metric is not None and val is not None else None

    def quality(runner: Runner) -> float:
        if metric is not None and select is not None:
            return score(runner, metric, select)
        return _output_cosine(q.fp32_runner(), runner, feeds, cos_names)

    # method: auto scores each on the validation metric (or, without --val, output cosine on calib samples)
    first: Trial | None = None
    if method == "auto":
        best_m, best_s = "", -np.inf
        best_last: tuple[Any, tuple[str, tuple[str, ...]]] = (None, ("", ()))
        for meth in METHODS:
            try:
                s = quality(q.quantize(meth, base))
            except BackendError as exc:
                # one calibrator failing on this graph (NNCF's histogram on a near-constant tensor of an R-CNN)
                # leaves the others to choose from; the failure is recorded, not hidden
                res.methods_failed[meth] = one_line(exc, with_type=False)
                continue
            res.methods_tried[meth] = s
            if s > best_s:
                best_m, best_s, best_last = meth, s, (q.last, q.last_key)
        if not best_m:
            raise BackendError(
                "--method auto: every calibration method failed: "
                + "; ".join(f"{m}: {why}" for m, why in res.methods_failed.items())
            )
        res.method = best_m
        q.last, q.last_key = best_last
        if fp32_metric is not None and metric is not None and val is not None:
            m_best = score(_final_runner(q), metric, val)  # the winner, scored on the certification split
            first = Trial(list(base), m_best, fp32_metric - m_best)
    chosen = res.method

    if max_drop is not None:
        if metric is None or val is None or fp32_metric is None:
            raise ConfigError("--max-drop needs --val DATA to measure the task metric on")
        if first is None:
            m0 = score(q.quantize(chosen, base), metric, val)
            first = Trial(list(base), m0, fp32_metric - m0)
        budget: BudgetResult | None = None
        if first.drop > max_drop:
            ranked = _rank_layers(q, chosen, base, feeds)
            if isinstance(q, _OVQuantizer):
                budget = _ov_budget(q, chosen, base, first, fp32_metric, max_drop, metric, val, ranked, unit)
            else:
                budget = search_keep_float(
                    lambda ex: q.quantize(chosen, ex),
                    metric,
                    val,
                    fp32_metric,
                    max_drop,
                    ranked,
                    base=base,
                    first=first,
                    unit=unit,
                )
        else:
            budget = BudgetResult(fp32_metric, max_drop)
            budget.add(first)
        res.budget = budget.to_dict()
        decided = budget.kept_float
    else:
        decided = base
    res.kept_float = [n for n in decided if n not in head]
    if q.last_key != (chosen, tuple(decided)):
        q.quantize(chosen, decided)  # the final model must be exactly the decision

    # final measurement of the kept model
    final = _final_runner(q)
    res.metrics["output_cosine"] = _output_cosine(q.fp32_runner(), final, feeds, cos_names)
    if metric is not None and val is not None and fp32_metric is not None:
        m_int8 = score(_final_runner(q), metric, val)
        res.metrics.update(
            {
                "unit": unit,
                "fp32": fp32_metric,
                "int8": m_int8,
                "drop": fp32_metric - m_int8,
                "val": val_path,
                "val_samples": len(val),
            }
        )
    if max_drop is not None:
        res.metrics["max_drop"] = max_drop
    return res


def _final_runner(q: _Quantizer) -> Runner:
    return q.runner(q.last)


def _rank_layers(q: _Quantizer, method: str, base: list[str], feeds: list[dict[str, np.ndarray]]) -> list[list[str]]:
    """Groups of quantized layers, most sensitive first, from the layer-by-layer error of the plain QDQ model."""
    onnx = lazy_import("onnx")
    qdq = q.work / "rank.qdq.onnx"
    quantize_qdq(q.prepared, qdq, q.calib, method, base)
    fp_model, q_model = onnx.load(str(q.prepared)), onnx.load(str(qdq))
    rows = compare_layers(fp_model, q_model, feeds[:8])
    candidates = [n for n in quantized_nodes(q_model) if n not in base]
    return [with_compute_consumers(fp_model, n) for n in rank_by_sensitivity(rows, candidates)]


def _ov_budget(
    q: _OVQuantizer,
    method: str,
    base: list[str],
    first: Trial,
    fp32_metric: float,
    max_drop: float,
    metric: Any,
    val: ValSet,
    ranked: list[list[str]],
    unit: str,
) -> BudgetResult:
    """OpenVINO: NNCF's accuracy control from the shared choice; record the ops it reverted to float."""
    plain = (
        q.last
        if q.last_key == (method, tuple(base))
        else q.qov.quantize_nncf(q.fp32_model.clone(), q.calib, method, q.ov_names(base))
    )

    def validate(compiled: Any, data: Any) -> tuple[float, None]:
        items = list(data)
        vs = ValSet(val.contract, [(Path(str(i)), it) for i, it in enumerate(items)], lambda _p, c: c)
        with q.runner(compiled) as r:
            return float(metric(r, vs)), None

    controlled = q.qov.quantize_nncf_with_accuracy_control(
        q.fp32_model.clone(), q.calib, list(val), validate, max_drop, method, q.ov_names(base)
    )
    reverted = set(q.qov.quantized_ops(plain)) - set(q.qov.quantized_ops(controlled))
    kept = [*base, *[n for n in q.onnx_names_for(reverted) if n not in base]]
    q.last, q.last_key = controlled, (method, tuple(kept))
    m = score(q.runner(controlled), metric, val)
    result = BudgetResult(fp32_metric, max_drop)
    result.add(first)
    result.add(Trial(kept, m, fp32_metric - m))
    if not result.met:
        # NNCF could not meet it; fall back to edgecv's own search so the error lists the layers tried
        return search_keep_float(
            lambda ex: q.quantize(method, ex),
            metric,
            val,
            fp32_metric,
            max_drop,
            ranked,
            base=base,
            first=first,
            unit=unit,
        )
    return result


def _open(bundle: Bundle | str | Path) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)


def _prepare_inputs(bundle: Bundle, config: QuantConfig, backend: str) -> tuple[CalibrationSource, ValSet | None]:
    source = as_source(config.calib, bundle.contract, config.limit)
    if config.method != "auto":  # with auto, _quantize_to warns once the method is chosen
        check_sample_count(source, backend, config.method)
    val_set: ValSet | None = None
    if config.val is not None:
        metric_for(bundle.contract.task)  # fail early when the task has no metric yet
        val_set = config.val if isinstance(config.val, ValSet) else open_val(config.val, bundle.contract)
        val_set = val_set.materialize()
    return source, val_set


def _quantize_to(
    bundle: Bundle,
    backend: str,
    source: CalibrationSource,
    val_set: ValSet | None,
    config: QuantConfig,
    work: Path,
    warn_as: str,
) -> tuple[_Quantizer, Int8Result]:
    """Quantize for ``backend`` into ``work``; ``warn_as`` is the backend the sample-count warning names (TensorRT
    builds from ONNX Runtime's QDQ model but has its own recommendation)."""
    prepared = prepare_fp32(bundle.onnx_path, work / "prepared.onnx")
    device = config.device if backend == "openvino" else None
    q: _Quantizer = (_OVQuantizer if backend == "openvino" else _Quantizer)(prepared, work, source, device)
    prior = _prior_kept_float(bundle, backend)
    res = _run(
        q,
        bundle.contract,
        source,
        config.method,
        val_set,
        config.max_drop,
        config.float_head,
        prior,
        config.val_path,
    )
    if config.method == "auto":
        check_sample_count(source, warn_as, res.method, chosen=True)
    return q, res


def quantize(bundle: Bundle | str | Path, config: QuantConfig) -> QuantResult:
    """Quantize a bundle's model to INT8 as ``config`` says: the one INT8 entry point.

    * default: add the INT8 artifact for ``config.backend`` to the bundle (``onnxruntime``: QDQ ONNX recorded by
      the ONNX Runtime builder; ``openvino``: NNCF IR; ``tensorrt``: the QDQ model, then one engine build by the
      TensorRT builder);
    * ``config.build.emit_only`` (tensorrt): write the trtexec script that builds from the QDQ model, quantizing
      first when ``config.calib`` is given (else the bundle's QDQ model is used);
    * ``config.out``: write a new bundle whose ``model.onnx`` is the QDQ model (``edgecv quantize``).

    Args:
        bundle: an opened bundle or its folder.
        config: the run (see :class:`~edgecv.quant.config.QuantConfig`).

    Returns:
        A :class:`~edgecv.quant.config.QuantResult`: the bundle holding the result, the artifact (None with
        ``out``) and what was decided and measured.

    Raises:
        ConfigError: calibration data that cannot be used, a task without a metric for ``val``.
        AccuracyError: no set of kept-float layers meets ``max_drop`` (message lists best result, layers tried).
        MissingDependencyError: the backend's framework is not installed.
    """
    b = _open(bundle)
    if config.out is not None:
        out = _quantize_bundle(b, config)
        return QuantResult(out, None, out.manifest.provenance["quantized"])
    if config.emit_only:
        art = _emit_tensorrt_script(b, config)
    else:
        art = _compile(b, config)
    return QuantResult(b, art, art.extra)


def _compile(b: Bundle, config: QuantConfig) -> Artifact:
    backend = config.backend
    if backend == "tensorrt":
        lazy_import("tensorrt")  # fail before spending minutes on calibration
    # TensorRT builds from the QDQ model ONNX Runtime's quantizer makes
    qbackend = "onnxruntime" if backend == "tensorrt" else backend
    source, val_set = _prepare_inputs(b, config, backend)
    with scratch_dir("int8") as tmp:
        q, res = _quantize_to(b, qbackend, source, val_set, config, Path(tmp), warn_as=backend)
        if backend == "openvino":
            return _add_ov_artifact(b, q, res, config.device)
        art = _add_ort_artifact(b, q, res)
        if backend == "tensorrt":
            from edgecv.quant.tensorrt import build_int8_engine

            return build_int8_engine(
                b,
                b.file(art.path),
                res.float_head + res.kept_float,
                device=config.device,
                extra=res.to_dict(),
                base=config.build,
            )
        return art


def _emit_tensorrt_script(b: Bundle, config: QuantConfig) -> Artifact:
    """tensorrt ``emit_only``: the script builds from the QDQ model (made here first with ``calib``)."""
    from edgecv.quant.tensorrt import emit_int8_script

    assert config.build is not None  # emit_only implies a BuildConfig
    if config.calib is not None:
        art = _compile(b, dataclasses.replace(config, backend="onnxruntime", build=None, device=None))
        note = (
            f"Builds from {art.path}, quantized by edgecv ({art.extra.get('method', config.method)}) from "
            f"--calib {config.calib}."
        )
    else:
        found = b.artifact("onnxruntime", "int8")
        if found is None or not b.path(found.path).is_file():
            raise ConfigError(
                f"tensorrt int8 --emit-trtexec: expected a QDQ model ({ORT_INT8_PATH}) in the bundle or "
                "--calib DATA to make one, found neither"
            )
        b.verify([found.path])
        art = found
        note = f"Builds from {art.path}, the bundle's QDQ model."
    return emit_int8_script(b, config.build, art, note)


def _add_ort_artifact(b: Bundle, q: _Quantizer, res: Int8Result) -> Artifact:
    """The ONNX Runtime builder records the QDQ file; the quantizer's decisions are added to its entry."""
    from edgecv.backends import BUILDERS
    from edgecv.backends.base import BuildConfig

    onnx = lazy_import("onnx")
    model = onnx.load(str(q.last))
    res.quantized_layers = len(quantized_nodes(model))
    _embed_contract(q.last, b)
    art = BUILDERS.get("onnxruntime")().build(b, BuildConfig(precision="int8", device="CPU", onnx_path=Path(q.last)))
    art.build_flags.update(
        {
            "format": "QDQ",
            "method": res.method,
            "per_channel": True,
            "symmetric_activations": True,
            "activation_type": "int8",
            "weight_type": "int8",
            "weight_bits": 7 if reduced_weight_range() else 8,
        }
    )
    art.versions.update(_versions())
    art.extra = res.to_dict()
    with b.update() as manifest:
        manifest.artifacts[art.key] = art
    return art


def _add_ov_artifact(b: Bundle, q: _Quantizer, res: Int8Result, device: str | None) -> Artifact:
    """NNCF's product is an ov.Model, not an ONNX file: quant saves the IR itself."""
    from edgecv.quant import openvino as qov

    res.quantized_layers = len(qov.quantized_ops(q.last))
    folder = b.write_path(OV_INT8_PATH).parent
    files = qov.save_ir(q.last, folder)
    tmp_dir = files["model.xml"].parent
    try:
        art = Artifact(
            backend="openvino",
            precision="int8",
            path=OV_INT8_PATH,
            device=device or "CPU",
            build_flags={
                "method": res.method,
                "preset": "performance",
                "per_channel": True,
                "symmetric_activations": True,
                "nncf": version_of("nncf"),
            },
            versions=_versions(),
            extra=res.to_dict(),
        )
        return b.add_artifact(art, {f"openvino/int8/{k}": v for k, v in files.items()})
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _embed_contract(onnx_path: Path, b: Bundle) -> None:
    """quantize_static drops metadata_props: put the contract back so the QDQ file stands alone."""
    onnx = lazy_import("onnx")
    from edgecv.bundle import CONTRACT_KEY
    from edgecv.quant.layers import save_model

    m = onnx.load(str(onnx_path))
    if not any(p.key == CONTRACT_KEY for p in m.metadata_props):
        m.metadata_props.add(key=CONTRACT_KEY, value=b.contract.to_json())
        save_model(m, onnx_path)


def _quantize_bundle(b: Bundle, config: QuantConfig) -> Bundle:
    """``config.out``: a new bundle whose ``model.onnx`` is the QDQ INT8 model (ORT, OpenVINO and TensorRT all
    read it). The contract and ``reference.npz`` are copied; the fp32 model is kept as ``fp32/model.onnx``."""
    assert config.out is not None
    out = Path(config.out)
    check_output_dir(
        out, config.force, is_bundle_dir, "bundle", "a bundle (a folder with manifest.json)", error=BundleError
    )
    source, val_set = _prepare_inputs(b, config, "onnxruntime")
    with scratch_dir("quant") as tmp:
        work = Path(tmp)
        q, res = _quantize_to(b, "onnxruntime", source, val_set, config, work, warn_as="onnxruntime")
        onnx = lazy_import("onnx")
        res.quantized_layers = len(quantized_nodes(onnx.load(str(q.last))))
        _embed_contract(q.last, b)
        files: dict[str, Path] = {ONNX_FILE: Path(q.last)}
        fp32 = work / "fp32.onnx"
        shutil.copy2(b.onnx_path, fp32)
        files[FP32_COPY] = fp32
        if b.reference_path.exists():
            ref = work / REFERENCE_FILE
            shutil.copy2(b.reference_path, ref)
            files[REFERENCE_FILE] = ref
        info = {
            **res.to_dict(),
            "fp32_onnx": FP32_COPY,
            "source_bundle": str(b.root),
            "format": "QDQ",
            "per_channel": True,
            "symmetric_activations": True,
            "time": now_iso(),
        }
        provenance = json.loads(json.dumps(b.manifest.provenance, default=str))
        provenance["quantized"] = info
        manifest = Manifest(
            name=f"{b.manifest.name}-int8",
            contract=b.contract.model_copy(deep=True),
            provenance=provenance,
            history=[*b.manifest.history, {"event": "quantize", "method": res.method, "time": info["time"]}],
        )
        return Bundle.create(out, manifest, files, force=config.force)


def summarize(res_extra: dict[str, Any]) -> list[list[Any]]:
    """Rows (field, value) of an INT8 artifact's ``extra`` for a CLI table."""
    m = res_extra.get("metrics", {})
    rows: list[list[Any]] = [
        ["method", res_extra.get("method")],
        ["calibration samples", res_extra.get("samples")],
        ["quantized layers", res_extra.get("quantized_layers")],
        ["float head", ", ".join(res_extra.get("float_head", [])) or "-"],
        ["kept float", ", ".join(res_extra.get("kept_float", [])) or "-"],
        ["output cosine vs fp32", m.get("output_cosine")],
    ]
    if "fp32" in m:
        rows += [[f"fp32 {m['unit']}", m["fp32"]], [f"int8 {m['unit']}", m["int8"]], ["drop", m["drop"]]]
    if "max_drop" in m:
        rows.append(["max drop", m["max_drop"]])
    for k, v in res_extra.get("methods_tried", {}).items():
        rows.append([f"auto: {k}", v])
    for k, v in res_extra.get("methods_failed", {}).items():
        rows.append([f"auto: {k}", f"failed: {v}"])
    sel = res_extra.get("selection")
    if sel:
        rows.append(
            [
                "auto: chosen by",
                f"{sel['by']} ({sel['samples']} samples"
                + (f"; certified on the other {sel['certify_samples']})" if "certify_samples" in sel else ")"),
            ]
        )
    return rows
