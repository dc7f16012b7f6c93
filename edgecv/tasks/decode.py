"""Model outputs → task results, chosen from the bundle contract (numpy only, no torch).

The one interface every consumer (stream, validate, bench) meets::

    decoder = get_decoder(contract)
    results = decoder.decode(outputs, transforms)   # one Result per image in the batch
    results[0].to_json()

Decoders are registered in :data:`DECODERS` under a key derived from the contract:

- ``classify`` → :class:`~edgecv.tasks.classify.ClassifyDecoder` (top-k with class names);
- ``segment`` → :class:`~edgecv.tasks.segment.SegmentDecoder` (argmax mask resized to the original frame);
- ``detect:graph`` → :class:`GraphNMSDecoder` (in-graph NMS outputs ``boxes``/``scores``/``classes``/``num_dets``);
- ``detect:host`` → registered by ``edgecv.tasks.detect`` (host-side NMS over raw head outputs);
- ``detect:none`` → :class:`GraphNMSDecoder` too: a set-prediction detector (DETR) emits the same padded outputs
  with no NMS anywhere (``decode.format: set``);
- ``detect:proposals`` → :class:`~edgecv.tasks.detect.ProposalDecoder`: R-CNN / Fast R-CNN score host-made proposals (the bundle's
  second input, ``decode.proposals``; :func:`make_feed` computes it per frame) and per-class NMS runs here.

``contract.decode["nms"]`` picks the detect decoder (default ``graph``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from edgecv.errors import BackendError, ConfigError
from edgecv.registry import Registry

if TYPE_CHECKING:
    from edgecv.bundle import Contract
    from edgecv.tasks.preprocess import Transform


@runtime_checkable
class Result(Protocol):
    """One image's decoded output. ``kind`` is the task name; ``to_json`` gives plain JSON types."""

    kind: str

    def to_json(self) -> dict[str, Any]: ...


@runtime_checkable
class Decoder(Protocol):
    """Turns a batch of raw outputs into one :class:`Result` per image."""

    def decode(self, outputs: dict[str, np.ndarray], transforms: list[Transform]) -> list[Result]: ...


# key → factory(contract) -> Decoder; entries may be lazy "module:attr" strings
DECODERS: Registry[Any] = Registry("decoder")
DECODERS.register("classify", "edgecv.tasks.classify:ClassifyDecoder")
DECODERS.register("segment", "edgecv.tasks.segment:SegmentDecoder")
DECODERS.register("detect:graph", "edgecv.tasks.decode:GraphNMSDecoder")
# set-prediction detectors (DETR): the same padded outputs, produced without any NMS
DECODERS.register("detect:none", "edgecv.tasks.decode:GraphNMSDecoder")
# host-side NMS lives with the detection post-processing; registering here keeps lookups lazy
DECODERS.register("detect:host", "edgecv.tasks.detect:HostNMSDecoder")
# proposal-driven detectors (R-CNN, Fast R-CNN): per-proposal, per-class outputs; per-class NMS on the host
DECODERS.register("detect:proposals", "edgecv.tasks.detect:ProposalDecoder")


def decoder_key(contract: Contract) -> str:
    """The registry key for a contract: the task, plus ``:graph``/``:host`` for detection."""
    if contract.task == "detect":
        if contract.decode.get("format") == "proposals":
            return "detect:proposals"
        nms = str(contract.decode.get("nms", "graph"))
        return f"detect:{nms}"
    return contract.task


def with_conf(contract: Contract, conf: float) -> Contract:
    """The contract a live pipeline decodes with: detectors keep scores >= ``conf`` (the bundle's own threshold
    is set low for mAP and stays the floor); other tasks are returned as they are.

    Raises:
        ConfigError: ``conf`` is not a score in [0, 1].
    """
    if contract.task != "detect":
        return contract
    if not 0.0 <= conf <= 1.0:
        raise ConfigError(f"--conf: expected a score in [0, 1], found {conf}")
    thr = max(conf, float(contract.decode.get("score_threshold", 0.0)))
    return contract.model_copy(update={"decode": {**contract.decode, "score_threshold": thr}})


def get_decoder(contract: Contract) -> Decoder:
    """The decoder for a bundle contract.

    Raises:
        ConfigError: the contract's task has no decoder (e.g. ``generic``), listing the ones that exist.
        UnknownNameError: ``decode.nms`` names an unknown detect decoder.
    """
    key = decoder_key(contract)
    if contract.task == "generic":
        raise ConfigError("contract.task: expected one of classify, segment, detect to decode outputs, found 'generic'")
    factory = DECODERS.get(key)
    return factory(contract)  # type: ignore[no-any-return]


def extra_inputs(contract: Contract, x: np.ndarray) -> dict[str, np.ndarray]:
    """The inputs a bundle needs beside the preprocessed image batch ``x``: for a proposal-driven detector
    (``decode.proposals``, R-CNN / Fast R-CNN) its ``rois`` from selective search on ``x``; else none."""
    spec = contract.decode.get("proposals") if contract.task == "detect" else None
    if not spec:
        return {}
    from edgecv.tasks.proposals import proposals_feed

    return proposals_feed(dict(spec), x, contract)


def make_feed(contract: Contract, x: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The runner feed for one preprocessed batch: ``{input_name: x}`` plus :func:`extra_inputs` (or ``extra``,
    when the caller computed them in an earlier stage)."""
    return {contract.input_name: x, **(extra if extra is not None else extra_inputs(contract, x))}


def pick_output(outputs: dict[str, np.ndarray], contract: Contract, what: str) -> np.ndarray:
    """The model's main output: the contract's first output name when present, else the only output."""
    for name in contract.output_names:
        if name in outputs:
            return np.asarray(outputs[name])
    if len(outputs) == 1:
        return np.asarray(next(iter(outputs.values())))
    raise BackendError(f"{what}: expected an output named one of {contract.output_names}, found {sorted(outputs)}")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)  # type: ignore[no-any-return]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float32, copy=False)))  # type: ignore[no-any-return]


def class_name(names: list[str], idx: int) -> str:
    return names[idx] if 0 <= idx < len(names) else str(idx)


# ------------------------------------------------------------------------------------------ detection
@dataclass
class DetectResult:
    """Detections of one image in original-image pixels: ``boxes`` [N,4] xyxy, ``scores`` [N], ``classes`` [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: list[str] = field(default_factory=list)
    kind: str = "detect"

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def label(self, i: int) -> str:
        return class_name(self.names, int(self.classes[i]))

    def to_json(self) -> dict[str, Any]:
        return {
            "task": "detect",
            "detections": [
                {
                    "box": [round(float(v), 2) for v in self.boxes[i]],
                    "score": round(float(self.scores[i]), 5),
                    "class_id": int(self.classes[i]),
                    "label": self.label(i),
                }
                for i in range(len(self))
            ],
        }


#: validation-only outputs of a graph-NMS export: every candidate before NMS (boxes [B,N,4] xyxy input pixels,
#: per-class scores [B,N,C]). The decoder ignores them; validate compares them elementwise, where a corrupted head
#: shows even when no candidate survives the score threshold.
PRE_NMS_OUTPUTS = ("pre_nms_boxes", "pre_nms_scores")


class GraphNMSDecoder:
    """Decodes the output of a model with NMS inside the graph (EfficientNMS / ONNX NMS wrappers).

    Expects outputs ``boxes`` [B,K,4] xyxy in input-tensor pixels, ``scores`` [B,K], ``classes`` [B,K] and
    ``num_dets`` [B] (or [B,1]); keeps the first ``num_dets`` rows whose score is at least
    ``contract.decode["score_threshold"]`` (default 0) and maps boxes to the original image.
    """

    OUTPUTS = ("boxes", "scores", "classes", "num_dets")

    def __init__(self, contract: Contract) -> None:
        self.names = list(contract.class_names)
        self.score_threshold = float(contract.decode.get("score_threshold", 0.0))
        self.max_det = int(contract.decode.get("max_det", 0)) or None

    def decode(self, outputs: dict[str, np.ndarray], transforms: list[Transform]) -> list[Result]:
        missing = [k for k in self.OUTPUTS if k not in outputs]
        if missing:
            raise BackendError(
                f"detect (graph NMS): expected outputs {list(self.OUTPUTS)}, found {sorted(outputs)}; "
                "set contract.decode.nms='host' for a model without NMS in the graph"
            )
        boxes = np.asarray(outputs["boxes"], dtype=np.float32)
        scores = np.asarray(outputs["scores"], dtype=np.float32)
        classes = np.asarray(outputs["classes"])
        num = np.asarray(outputs["num_dets"]).reshape(-1)
        if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != len(transforms):
            raise BackendError(f"detect: expected boxes [B={len(transforms)},K,4], found {boxes.shape}")
        results: list[Result] = []
        for b, tf in enumerate(transforms):
            n = int(min(max(int(num[b]), 0), boxes.shape[1]))
            if self.max_det:
                n = min(n, self.max_det)
            keep = scores[b, :n] >= self.score_threshold
            results.append(
                DetectResult(
                    boxes=tf.to_original(boxes[b, :n][keep]),
                    scores=scores[b, :n][keep].astype(np.float32),
                    classes=classes[b, :n][keep].astype(np.int64),
                    names=self.names,
                )
            )
        return results
