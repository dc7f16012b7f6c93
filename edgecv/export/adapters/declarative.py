"""Declarative decode for a raw detection head nobody wrote an adapter for: ``edgecv export MODEL --task detect
--decode KIND --decode-opt KEY=VALUE …``.

Kinds (the box decoding itself is the zoo's: :func:`edgecv.zoo.families.yolo._decode_anchor_maps` /
:func:`edgecv.zoo.detection.boxes.yolo_decode` / :func:`~edgecv.zoo.detection.boxes.cxcywh_to_xyxy`):

* ``yolo-anchors`` (YOLOv2/v3/v4/v5-style): one map per scale ``[B, A·(5+C), H, W]``; ``strides=8,16,32`` and
  ``anchors=10,13,16,30,33,23/30,61,62,45,59,119/…`` (pixels, ``/`` between scales); ``activation`` of the classes
  ``sigmoid`` (default) or ``softmax``. Objectness is part of the layout. ``--nms host`` keeps the raw maps and
  decodes them on the device (``yolo_anchors``).
* ``yolo-anchor-free``: either one already-decoded output ``[B, 4(+1)+C, N]`` or ``[B, N, 4(+1)+C]`` (the usual
  exported YOLOv8/YOLOX tensor; ``layout=channels_first|channels_last|auto``), or, with ``strides=8,16,32``, one
  map per scale ``[B, 4(+1)+C, H, W]`` decoded YOLOX-style (``xy = (t + cell)·stride``, ``wh = exp(t)·stride``).
  ``box=cxcywh|xyxy``, ``objectness=true|false``, ``activation=none|sigmoid`` (applied to objectness and classes).
* ``ssd``: two outputs, boxes ``[B, N, 4]`` and class scores ``[B, N, C]``; ``box=xyxy|cxcywh``,
  ``normalized=true|false`` (boxes in 0..1 of the input), ``activation=softmax|sigmoid|none``,
  ``background=0|none`` (a background column to drop from the scores).

Common options: ``num_classes`` (default: read from the output shapes on a zero input). The decode runs in the graph
before ONNX ``NonMaxSuppression`` (``--nms graph``), or, for ``--nms host``, the decoded candidates are the outputs
and NMS runs on the device (``boxes_scores``), except ``yolo-anchors`` whose raw maps the device decodes itself.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgecv.errors import ConfigError
from edgecv.export.adapters import AdapterOptions

if TYPE_CHECKING:
    from edgecv.export.loaded import LoadedModel

KINDS = ("yolo-anchor-free", "yolo-anchors", "ssd")
_OPTIONS: dict[str, tuple[str, ...]] = {
    "yolo-anchors": ("strides", "anchors", "num_classes", "activation"),
    "yolo-anchor-free": ("strides", "num_classes", "box", "objectness", "activation", "layout"),
    "ssd": ("num_classes", "box", "normalized", "activation", "background"),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "box": ("cxcywh", "xyxy"),
    "layout": ("auto", "channels_first", "channels_last"),
}
_ACTIVATIONS: dict[str, tuple[str, ...]] = {
    "yolo-anchors": ("sigmoid", "softmax"),
    "yolo-anchor-free": ("none", "sigmoid"),
    "ssd": ("softmax", "sigmoid", "none"),
}


def _numbers(text: str, key: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"--decode-opt {key}: expected comma-separated numbers, found '{text}'") from exc


def _bool(text: Any, key: str) -> bool:
    if isinstance(text, bool):
        return text
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off", "none"):
        return False
    raise ConfigError(f"--decode-opt {key}: expected true or false, found '{text}'")


def parse_decode_spec(kind: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--decode KIND`` and its ``--decode-opt KEY=VALUE`` pairs → a validated spec of plain JSON values (what the
    contract records in ``decode["declarative"]``).

    Raises:
        ConfigError: an unknown kind or option, or a malformed value (one line, naming what is accepted).
    """
    if kind not in KINDS:
        raise ConfigError(f"--decode: expected one of {', '.join(KINDS)}, found '{kind}'")
    spec: dict[str, Any] = {"kind": kind}
    for key, raw in (options or {}).items():
        if key not in _OPTIONS[kind]:
            raise ConfigError(f"--decode-opt {key}: --decode {kind} takes {', '.join(_OPTIONS[kind])}")
        text = raw if isinstance(raw, str) else ",".join(map(str, raw)) if isinstance(raw, list) else str(raw)
        if key == "strides":
            spec[key] = [float(v) for v in _numbers(text, key)]
            if not spec[key] or any(s <= 0 for s in spec[key]):
                raise ConfigError(f"--decode-opt strides: expected positive numbers like 8,16,32, found '{text}'")
        elif key == "anchors":
            groups = [g for g in text.replace("|", "/").split("/") if g.strip()]
            anchors = []
            for g in groups:
                vals = _numbers(g, key)
                if not vals or len(vals) % 2:
                    raise ConfigError(
                        f"--decode-opt anchors: expected w,h pairs per scale separated by '/', found '{g}'"
                    )
                anchors.append([[vals[i], vals[i + 1]] for i in range(0, len(vals), 2)])
            spec[key] = anchors
        elif key == "num_classes":
            try:
                spec[key] = int(text)
            except ValueError as exc:
                raise ConfigError(f"--decode-opt num_classes: expected a positive integer, found '{text}'") from exc
            if spec[key] < 1:
                raise ConfigError(f"--decode-opt num_classes: expected a positive integer, found '{text}'")
        elif key in ("objectness", "normalized"):
            spec[key] = _bool(text, key)
        elif key == "background":
            spec[key] = None if text.strip().lower() in ("none", "null", "") else int(text)
        elif key == "activation":
            if text not in _ACTIVATIONS[kind]:
                raise ConfigError(
                    f"--decode-opt activation: --decode {kind} takes {', '.join(_ACTIVATIONS[kind])}, found '{text}'"
                )
            spec[key] = text
        else:
            if text not in _CHOICES[key]:
                raise ConfigError(f"--decode-opt {key}: expected one of {', '.join(_CHOICES[key])}, found '{text}'")
            spec[key] = text
    if kind == "yolo-anchors":
        if "strides" not in spec or "anchors" not in spec:
            raise ConfigError(
                "--decode yolo-anchors: expected --decode-opt strides=8,16,32 and "
                "--decode-opt anchors=w,h,w,h/… (one group per stride)"
            )
        if len(spec["anchors"]) != len(spec["strides"]):
            raise ConfigError(
                f"--decode yolo-anchors: expected one anchor group per stride ({len(spec['strides'])}), "
                f"found {len(spec['anchors'])}"
            )
    all_defaults: dict[str, dict[str, Any]] = {
        "yolo-anchors": {"activation": "sigmoid"},
        "yolo-anchor-free": {"box": "cxcywh", "objectness": False, "activation": "none", "layout": "auto"},
        "ssd": {"box": "xyxy", "normalized": False, "activation": "softmax", "background": None},
    }
    defaults = all_defaults[kind]
    return {**defaults, **spec}


def _outputs(raw: Any) -> list[torch.Tensor]:
    if isinstance(raw, torch.Tensor):
        return [raw]
    if isinstance(raw, dict):
        return [v for v in raw.values() if isinstance(v, torch.Tensor)]
    return [o for o in raw if isinstance(o, torch.Tensor)]


class DeclarativeHead(nn.Module):
    """A raw detection model + a declarative spec → the zoo detector protocol (``decode``, ``decode_info``,
    ``num_classes``). With ``host_decoded`` the forward returns the decoded candidates (``boxes_scores``)."""

    def __init__(
        self,
        model: nn.Module,
        spec: dict[str, Any],
        input_hw: tuple[int, int],
        num_classes: int,
        host_decoded: bool = False,
    ) -> None:
        super().__init__()
        self.model, self.spec, self.input_hw = model, dict(spec), input_hw
        self.num_classes, self.host_decoded = int(num_classes), host_decoded

    def forward(self, x: torch.Tensor) -> Any:
        raw = self.model(x)
        if self.host_decoded:
            return self._decode(raw)
        return tuple(_outputs(raw))

    def decode(self, raw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.host_decoded:
            boxes, scores = raw
            return boxes, scores
        return self._decode(raw)

    def decode_info(self) -> dict[str, Any]:
        s, nc = self.spec, self.num_classes
        if s["kind"] == "yolo-anchors" and not self.host_decoded:
            return {
                "format": "yolo_anchors",
                "anchors": s["anchors"],
                "strides": s["strides"],
                "cls_act": s["activation"],
                "num_classes": nc,
            }
        return {"format": "boxes_scores", "num_outputs": 2, "num_classes": nc}

    # ------------------------------------------------------------------------------------------- decoding
    def _decode(self, raw: Any) -> tuple[torch.Tensor, torch.Tensor]:
        outs = _outputs(raw)
        kind = self.spec["kind"]
        if kind == "yolo-anchors":
            from edgecv.zoo.families.yolo import _decode_anchor_maps

            anchors = [[(float(w), float(h)) for w, h in g] for g in self.spec["anchors"]]
            return _decode_anchor_maps(
                outs, anchors, list(self.spec["strides"]), self.num_classes, str(self.spec["activation"])
            )
        if kind == "yolo-anchor-free":
            return self._anchor_free(outs)
        return self._ssd(outs)

    def _act(self, t: torch.Tensor, act: str) -> torch.Tensor:
        if act == "sigmoid":
            return torch.sigmoid(t)
        if act == "softmax":
            return torch.softmax(t, -1)
        return t

    def _anchor_free(self, outs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        from edgecv.zoo.detection.boxes import cxcywh_to_xyxy

        s, nc = self.spec, self.num_classes
        obj = bool(s["objectness"])
        rows: list[torch.Tensor] = []
        if s.get("strides"):
            if len(outs) != len(s["strides"]):
                raise ConfigError(
                    f"--decode yolo-anchor-free: expected one output per stride ({len(s['strides'])}),"
                    f" found {len(outs)}"
                )
            for m, stride in zip(outs, s["strides"]):
                bsz, _, h, w = m.shape
                t = m.float().permute(0, 2, 3, 1)  # [B,H,W,4(+1)+C]
                gy, gx = torch.meshgrid(
                    torch.arange(h, device=m.device), torch.arange(w, device=m.device), indexing="ij"
                )
                grid = torch.stack([gx, gy], -1).float()[None]
                xy = (t[..., :2] + grid) * stride
                wh = torch.exp(t[..., 2:4].clamp(max=10.0)) * stride
                rows.append(torch.cat([xy, wh, t[..., 4:]], -1).reshape(bsz, h * w, -1))
            pred = torch.cat(rows, 1)
            box = cxcywh_to_xyxy(pred[..., :4])
        else:
            p = outs[0].float()
            width = 4 + int(obj) + nc
            layout = s["layout"]
            if layout == "auto":
                layout = "channels_first" if p.shape[1] == width and p.shape[2] != width else "channels_last"
            pred = p.transpose(1, 2) if layout == "channels_first" else p
            box = cxcywh_to_xyxy(pred[..., :4]) if s["box"] == "cxcywh" else pred[..., :4]
        if pred.shape[-1] != 4 + int(obj) + nc:
            raise ConfigError(
                f"--decode yolo-anchor-free: expected 4{' + 1' if obj else ''} + {nc} values per "
                f"candidate, found {pred.shape[-1]}"
            )
        act = str(s["activation"])
        cls = self._act(pred[..., 4 + int(obj) :], act)
        scores = cls * self._act(pred[..., 4:5], act) if obj else cls
        return box, scores

    def _ssd(self, outs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        from edgecv.zoo.detection.boxes import cxcywh_to_xyxy

        s = self.spec
        if len(outs) < 2:
            raise ConfigError(f"--decode ssd: expected two outputs (boxes [B,N,4], scores [B,N,C]), found {len(outs)}")
        boxes, logits = outs[0].float(), outs[1].float()
        if boxes.shape[-1] != 4 and logits.shape[-1] == 4:
            boxes, logits = logits, boxes
        box = cxcywh_to_xyxy(boxes) if s["box"] == "cxcywh" else boxes
        if s["normalized"]:
            h, w = self.input_hw
            box = box * torch.tensor([w, h, w, h], dtype=box.dtype, device=box.device)
        scores = self._act(logits, str(s["activation"]))
        bg = s.get("background")
        if bg is not None:
            scores = torch.cat([scores[..., :bg], scores[..., bg + 1 :]], -1)
        return box, scores


def _infer_num_classes(model: nn.Module, spec: dict[str, Any], shape: list[int]) -> int:
    with torch.no_grad():
        outs = _outputs(model(torch.zeros(*shape)))
    if not outs:
        raise ConfigError("--decode: the model returned no tensors")
    kind = spec["kind"]
    obj = 1 if spec.get("objectness") else 0
    if kind == "yolo-anchors":
        a = len(spec["anchors"][0])
        return int(outs[0].shape[1]) // a - 5
    if kind == "yolo-anchor-free":
        if spec.get("strides"):
            return int(outs[0].shape[1]) - 4 - obj
        p = outs[0]
        if spec["layout"] == "channels_first" or (spec["layout"] == "auto" and p.shape[1] < p.shape[2]):
            return int(p.shape[1]) - 4 - obj
        return int(p.shape[2]) - 4 - obj
    logits = outs[1] if outs[0].shape[-1] == 4 else outs[0]
    return int(logits.shape[-1]) - (1 if spec.get("background") is not None else 0)


def wrap_declarative(loaded: LoadedModel, options: AdapterOptions) -> LoadedModel:
    """``loaded`` with its module wrapped by the declarative decode in ``options.extra`` (a spec from
    :func:`parse_decode_spec`, as the CLI builds it and the contract records it)."""
    spec = dict(options.extra)
    kind = str(spec.get("kind", ""))
    if kind not in KINDS:
        raise ConfigError(f"--decode: expected one of {', '.join(KINDS)}, found '{kind}'")
    shape = [1, *loaded.contract.input_shape[1:]]
    loaded.module.eval()
    nc = int(spec.get("num_classes") or _infer_num_classes(loaded.module, spec, shape))
    if nc < 1:
        raise ConfigError(
            f"--decode {kind}: the output shapes leave {nc} classes; check the options or pass "
            "--decode-opt num_classes=N"
        )
    host_decoded = options.nms == "host" and kind != "yolo-anchors"
    module = DeclarativeHead(loaded.module, spec, (int(shape[2]), int(shape[3])), nc, host_decoded=host_decoded)
    module.eval()
    contract = loaded.contract.model_copy(update={"task": "detect"})
    return dataclasses.replace(loaded, module=module, contract=contract, guess_task=False)
