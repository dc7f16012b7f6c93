"""Classification post-processing: logits → top-k (class id, name, probability)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv.errors import BackendError, ConfigError
from edgecv.tasks.decode import Result, class_name, pick_output, sigmoid, softmax

if TYPE_CHECKING:
    from edgecv.bundle import Contract
    from edgecv.tasks.preprocess import Transform

_ACTIVATIONS = ("softmax", "sigmoid", "none")


@dataclass
class ClassifyResult:
    """Top-k of one image, best first: ``ids`` [k], ``scores`` [k] (probabilities unless activation is none)."""

    ids: np.ndarray
    scores: np.ndarray
    names: list[str] = field(default_factory=list)
    kind: str = "classify"

    @property
    def labels(self) -> list[str]:
        return [class_name(self.names, int(i)) for i in self.ids]

    def to_json(self) -> dict[str, Any]:
        return {
            "task": "classify",
            "topk": [
                {"class_id": int(i), "label": lab, "score": round(float(s), 6)}
                for i, lab, s in zip(self.ids, self.labels, self.scores)
            ],
        }


class ClassifyDecoder:
    """Top-k over the class axis.

    ``contract.decode``: ``activation`` softmax (default) | sigmoid | none (the model already outputs
    probabilities, or raw scores are wanted); ``topk`` (default 5, capped at the number of classes).
    """

    def __init__(self, contract: Contract, topk: int | None = None) -> None:
        self.contract = contract
        self.names = list(contract.class_names)
        self.activation = str(contract.decode.get("activation", "softmax"))
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(
                f"contract.decode.activation: expected one of {_ACTIVATIONS} for classify, found '{self.activation}'"
            )
        self.topk = int(topk or contract.decode.get("topk", 5))

    def decode(self, outputs: dict[str, np.ndarray], transforms: list[Transform]) -> list[Result]:
        logits = pick_output(outputs, self.contract, "classify").astype(np.float32, copy=False)
        logits = logits.reshape(logits.shape[0], -1) if logits.ndim != 2 else logits
        if logits.shape[0] != len(transforms):
            raise BackendError(f"classify: expected {len(transforms)} rows of scores, found shape {logits.shape}")
        if self.activation == "softmax":
            probs = softmax(logits, axis=1)
        elif self.activation == "sigmoid":
            probs = sigmoid(logits)
        else:
            probs = logits
        k = min(self.topk, probs.shape[1])
        # argpartition then sort the k: O(C) instead of a full sort over many classes
        part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        out: list[Result] = []
        for row, idx in zip(probs, part):
            order = idx[np.argsort(-row[idx], kind="stable")]
            out.append(
                ClassifyResult(ids=order.astype(np.int64), scores=row[order].astype(np.float32), names=self.names)
            )
        return out
