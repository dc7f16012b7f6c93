"""Export wrappers for detectors: post-processing in the graph (ONNX ``NonMaxSuppression``, fixed ``max_det``
padded outputs) or on the host (raw head outputs + ``contract.decode`` for :mod:`edgecv.tasks.detect`).

Graph outputs (what :class:`edgecv.tasks.decode.GraphNMSDecoder` reads): ``boxes`` [B,K,4] xyxy input pixels,
``scores`` [B,K], ``classes`` [B,K] int64, ``num_dets`` [B] int64, rows past ``num_dets`` zero. Two more outputs,
``pre_nms_boxes`` [B,N,4] and ``pre_nms_scores`` [B,N,C] (every candidate before NMS), are for validation only: the
decoder ignores them, validate compares them elementwise (a detector's numbers live before NMS; after it a
corrupted head can hide behind the score threshold). The NMS is
ONNX's own ``NonMaxSuppression`` op (accepted by ONNX Runtime, OpenVINO and TensorRT), emitted by the TorchScript
exporter through a symbolic; in eager mode the same selection runs with ``torchvision.ops.batched_nms``.

Proposal-driven detectors (``proposals_input = True``: R-CNN, Fast R-CNN) take the image and ``rois`` [K,5] made on
the host (selective search) and emit per-proposal outputs ``roi_scores`` / ``roi_boxes`` / ``roi_batch``; their
contract says ``decode.format: proposals`` with ``decode.proposals`` (how to make the rois) and per-class NMS runs on
the host (:class:`edgecv.tasks.detect.ProposalDecoder`).

Set-prediction detectors (``nms_free = True``, the DETR family) emit the same four outputs with no NMS in the graph
or on the host: their contract says ``decode.nms: none`` (``format: set``), whatever ``--nms`` asked for (host NMS
is refused).

Use::

    loaded = load_model("yolov3_tiny", weights=...)
    loaded = prepare_detection_export(loaded, nms="graph")   # or "host"
    export_model(loaded, out, opset=17)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

from edgecv._lazy import lazy_import
from edgecv.errors import ConfigError, ExportError
from edgecv.tasks.decode import PRE_NMS_OUTPUTS

if TYPE_CHECKING:
    from edgecv.export.loaded import LoadedModel

NMS_MODES = ("graph", "host", "none")
GRAPH_OUTPUTS = ["boxes", "scores", "classes", "num_dets"]
#: GraphNMSWrapper's outputs: the four above, then the pre-NMS candidates (validation only)
WRAPPER_OUTPUTS = [*GRAPH_OUTPUTS, *PRE_NMS_OUTPUTS]


class _GraphNMSDetector(Protocol):
    """A detector that runs its own NMS in the graph (``exports_graph_nms = True``, e.g. Faster R-CNN)."""

    def set_postprocess(self, score_threshold: float, iou_threshold: float, max_det: int) -> None: ...


def _nms_function() -> Any:
    """``torch.autograd.Function`` whose eager forward is per-class NMS and whose ONNX symbolic is
    ``NonMaxSuppression`` — defined in a factory so importing this module needs no torch."""
    lazy_import("torch")  # a missing torch fails here, naming the extra to install
    import torch
    from torchvision.ops import batched_nms

    class ONNXNonMaxSuppression(torch.autograd.Function):
        @staticmethod
        def forward(
            ctx: Any, boxes: Any, scores: Any, max_per_class: int, iou_threshold: float, score_threshold: float
        ) -> Any:
            # boxes [B,N,4], scores [B,C,N] → selected [K,3] (batch, class, box), ONNX's ordering: by batch, class,
            # then score (the order does not matter downstream: rows are re-sorted by score)
            out = []
            bsz, nc, _ = scores.shape
            for b in range(bsz):
                c, i = torch.nonzero(scores[b] > score_threshold, as_tuple=True)
                s = scores[b, c, i]
                keep = batched_nms(boxes[b, i].float(), s.float(), c, iou_threshold)
                kc, ki, ks = c[keep], i[keep], s[keep]
                rows = []
                for cls in range(nc):
                    m = kc == cls
                    ci, cs = ki[m], ks[m]
                    order = torch.argsort(cs, descending=True, stable=True)[:max_per_class]
                    rows.append(
                        torch.stack([torch.full_like(ci[order], b), torch.full_like(ci[order], cls), ci[order]], 1)
                    )
                out.append(torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.int64))
            return torch.cat(out).to(torch.int64) if out else torch.zeros(0, 3, dtype=torch.int64)

        @staticmethod
        def symbolic(
            g: Any, boxes: Any, scores: Any, max_per_class: int, iou_threshold: float, score_threshold: float
        ) -> Any:
            mx = g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64))
            iou = g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32))
            st = g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32))
            # IoU is symmetric in x/y, so xyxy boxes can go in where the spec names [y1, x1, y2, x2]
            return g.op("NonMaxSuppression", boxes, scores, mx, iou, st, center_point_box_i=0)

    return ONNXNonMaxSuppression


def graph_nms(
    boxes: Any, scores: Any, *, score_threshold: float = 0.001, iou_threshold: float = 0.5, max_det: int = 100
) -> tuple[Any, Any, Any, Any]:
    """Decoded candidates (boxes [B,N,4], per-class scores [B,N,C]) → padded detections
    (boxes [B,K,4], scores [B,K], classes [B,K], num_dets [B]) with K = ``max_det``, best first."""
    torch = lazy_import("torch")
    if torch.compiler.is_compiling():
        # the NonMaxSuppression symbolic belongs to the TorchScript exporter; failing here makes export_model
        # fall back to it (dynamo=False), with the reason recorded in the bundle notices
        raise ExportError("graph NMS exports with the TorchScript ONNX exporter (dynamo=False)")
    bsz, _n, _nc = scores.shape
    sel = _nms_function().apply(
        boxes.float(),
        scores.float().transpose(1, 2).contiguous(),
        int(max_det),
        float(iou_threshold),
        float(score_threshold),
    )
    b, c, i = sel[:, 0], sel[:, 1], sel[:, 2]
    s = scores.float()[b, i, c]
    # rank every kept row within its image by score: sort by (image, -score), then subtract the image's start
    key = b.to(torch.float32) * 4.0 - s  # scores lie in [0, 1], so images never interleave
    order = torch.argsort(key)
    b, c, i, s = b[order], c[order], i[order], s[order]
    # per-image counts without bincount (no ONNX mapping): one-hot compare and sum
    counts = (b[:, None] == torch.arange(bsz, device=b.device)[None]).sum(0)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(b.shape[0], device=b.device) - starts[b]
    ok = rank < max_det
    b, c, i, s, rank = b[ok], c[ok], i[ok], s[ok], rank[ok]
    out_boxes = torch.zeros(bsz, max_det, 4, dtype=torch.float32, device=boxes.device)
    out_scores = torch.zeros(bsz, max_det, dtype=torch.float32, device=boxes.device)
    out_classes = torch.zeros(bsz, max_det, dtype=torch.int64, device=boxes.device)
    out_boxes[b, rank] = boxes.float()[b, i]
    out_scores[b, rank] = s
    out_classes[b, rank] = c
    num = torch.clamp(counts, max=max_det).to(torch.int64)
    return out_boxes, out_scores, out_classes, num


def _wrappers() -> tuple[type, type]:
    lazy_import("torch")  # a missing torch fails here, naming the extra to install
    import torch

    class GraphNMSWrapper(torch.nn.Module):
        """detector → decode → NonMaxSuppression → padded (boxes, scores, classes, num_dets), plus the decoded
        candidates before NMS (``pre_nms_boxes``, ``pre_nms_scores``) for validation."""

        def __init__(self, model: Any, score_threshold: float, iou_threshold: float, max_det: int) -> None:
            super().__init__()
            self.model = model
            self.score_threshold, self.iou_threshold, self.max_det = score_threshold, iou_threshold, max_det

        def forward(self, x: Any) -> dict[str, Any]:
            boxes, scores = self.model.decode(self.model(x))
            b, s, c, n = graph_nms(
                boxes,
                scores,
                score_threshold=self.score_threshold,
                iou_threshold=self.iou_threshold,
                max_det=self.max_det,
            )
            return {
                "boxes": b,
                "scores": s,
                "classes": c,
                "num_dets": n,
                PRE_NMS_OUTPUTS[0]: boxes.float(),
                PRE_NMS_OUTPUTS[1]: scores.float(),
            }

    class RawHeadWrapper(torch.nn.Module):
        """detector → its raw head maps, named ``head0..`` (decoded on the host per ``contract.decode``)."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> dict[str, Any]:
            out = self.model(x)
            outs = [out] if isinstance(out, torch.Tensor) else list(out)
            return {f"head{k}": o for k, o in enumerate(outs)}

    return GraphNMSWrapper, RawHeadWrapper


def _adapt(
    loaded: LoadedModel,
    nms: str,
    score_threshold: float,
    iou_threshold: float,
    max_det: int,
    class_names: list[str] | None,
    decode_spec: dict[str, Any] | None,
) -> LoadedModel:
    """A module that is not a zoo detector → its family's adapter (:mod:`edgecv.export.adapters`), or the
    declarative decode the user named (``--decode``); one line naming both when neither applies."""
    from edgecv.export.adapters import AdapterOptions, adapters, find_adapter

    module = loaded.module
    options = AdapterOptions(
        nms=nms,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_det=max_det,
        class_names=class_names,
        extra=dict(decode_spec or {}),
    )
    if decode_spec:
        from edgecv.export.adapters.declarative import wrap_declarative

        return wrap_declarative(loaded, options)
    adapter = find_adapter(module)
    if adapter is None:
        families = ", ".join(f"{a.name} ({a.description})" if a.description else a.name for a in adapters().values())
        raise ConfigError(
            f"detection export: expected a zoo detector or a supported family ({families}), found "
            f"{type(module).__module__}.{type(module).__name__}; for another raw detection head pass "
            "--decode yolo-anchor-free|yolo-anchors|ssd with --decode-opt KEY=VALUE"
        )
    return adapter.wrap(loaded, options)


def prepare_detection_export(
    loaded: LoadedModel,
    nms: str = "graph",
    *,
    score_threshold: float = 0.001,
    iou_threshold: float = 0.5,
    max_det: int = 100,
    class_names: list[str] | None = None,
    decode_spec: dict[str, Any] | None = None,
) -> LoadedModel:
    """Wrap a detector for export and record the decoding in the contract.

    Args:
        loaded: a :class:`~edgecv.export.sources.LoadedModel` whose module is a zoo detector (``decode`` and
            ``decode_info``), or a model already emitting the graph outputs (Faster R-CNN; its NMS is its own).
        nms: ``graph`` (ONNX NonMaxSuppression in the model) or ``host`` (raw heads; numpy NMS on the device);
            a set-prediction detector is exported as it is with ``decode.nms: none`` (``none`` is accepted only
            for those).
        score_threshold, iou_threshold, max_det: post-processing settings (recorded in ``contract.decode``).
        class_names: class names for the contract (default: the contract's, else ``0..C-1``).
        decode_spec: a declarative decode for a raw detection head nobody wrote an adapter for
            (``{"kind": "yolo-anchors", "strides": [...], ...}``, see :mod:`edgecv.export.adapters.declarative`);
            recorded in ``contract.decode["declarative"]`` so the live reference rebuilds the same wrapper.

    A module without ``decode()`` that is not graph-native is looked up in the adapter registry
    (:func:`edgecv.export.adapters.find_adapter`: torchvision, Ultralytics, …).

    Returns:
        A new LoadedModel with the wrapped module and a ``task="detect"`` contract.

    Raises:
        ConfigError: an unknown ``nms`` mode, a model that is not a detector, or host NMS for a model without
            raw-head decoding.
    """
    import dataclasses

    if nms not in NMS_MODES:
        raise ConfigError(f"--nms: expected one of {', '.join(NMS_MODES)}, found '{nms}'")
    if not 0.0 <= iou_threshold <= 1.0 or max_det < 1:
        raise ConfigError(
            f"detection export: expected 0 <= iou_threshold <= 1 and max_det >= 1, found {iou_threshold} and {max_det}"
        )
    module = loaded.module
    nms_free = bool(getattr(module, "nms_free", False))
    if nms == "none" and not nms_free:
        raise ConfigError(
            f"--nms none: {type(module).__name__} predicts overlapping candidates; expected graph or "
            "host NMS for it (only set-prediction detectors such as DETR need none)"
        )
    proposal_driven = bool(getattr(module, "proposals_input", False))
    graph_native = bool(getattr(module, "exports_graph_nms", False)) or nms_free or proposal_driven
    if not graph_native and not callable(getattr(module, "decode", None)):
        loaded = _adapt(loaded, nms, score_threshold, iou_threshold, max_det, class_names, decode_spec)
        module = loaded.module
        graph_native = bool(getattr(module, "exports_graph_nms", False))
    decode_info = getattr(module, "decode_info", None)
    info: dict[str, Any] = dict(decode_info()) if callable(decode_info) else {}
    nc = int(info.get("num_classes", getattr(module, "num_classes", 0)))
    names = list(class_names or loaded.contract.class_names or [str(k) for k in range(nc)])
    if nc and len(names) != nc:
        raise ConfigError(f"class names: the detector has {nc} classes, found {len(names)} names")
    decode: dict[str, Any] = {
        "nms": nms,
        "score_threshold": score_threshold,
        "iou_threshold": iou_threshold,
        "max_det": max_det,
        "num_classes": nc,
    }
    GraphNMSWrapper, RawHeadWrapper = _wrappers()
    if proposal_driven:
        cast(_GraphNMSDetector, module).set_postprocess(
            score_threshold=score_threshold, iou_threshold=iou_threshold, max_det=max_det
        )
        # proposals come in from the host and per-class NMS runs there: the graph scores and regresses each one
        wrapped, out_names = module, ["roi_scores", "roi_boxes", "roi_batch"]
        decode.update(nms="host", format="proposals", proposals=dict(info["proposals"]))
    elif nms_free or graph_native:
        if nms == "host":
            why = (
                "is a set-prediction detector with no NMS at all; export it with --nms graph (or none)"
                if nms_free
                else "runs its NMS inside the model (Faster R-CNN's RPN and box head); export it with --nms graph"
            )
            raise ConfigError(f"--nms host: {type(module).__name__} {why}")
        cast(_GraphNMSDetector, module).set_postprocess(
            score_threshold=score_threshold, iou_threshold=iou_threshold, max_det=max_det
        )
        wrapped, out_names = module, list(GRAPH_OUTPUTS)
        if nms_free:
            # one query per object (Hungarian-matched training): the outputs are final, nothing to suppress
            decode.update(nms="none", format="set", max_det=min(max_det, int(getattr(module, "num_queries", max_det))))
            decode.pop("iou_threshold")
        else:
            decode["format"] = "nms"
    elif nms == "graph":
        wrapped = GraphNMSWrapper(module, score_threshold, iou_threshold, max_det)
        out_names = list(WRAPPER_OUTPUTS)
        decode["format"] = "nms"
    else:
        if not info:
            raise ConfigError(f"--nms host: {type(module).__name__} has no decode_info() for host decoding")
        wrapped = RawHeadWrapper(module)
        decode.update(info)
        n_out = int(info.get("num_outputs", len(info.get("strides", [0]))))
        out_names = [f"head{k}" for k in range(n_out)]
    if decode_spec:
        decode["declarative"] = dict(decode_spec)
    wrapped.eval()
    contract = loaded.contract.model_copy(
        update={"task": "detect", "decode": decode, "output_names": out_names, "class_names": names}
    )
    return dataclasses.replace(loaded, module=wrapped, contract=contract, guess_task=False)
