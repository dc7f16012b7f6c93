"""Quantization-risk lint: run a few inputs through the model, record activation ranges per layer, flag what
quantizes badly and name the rewrite pass that fixes it.

Where the model traces with ``torch.fx`` every graph node is measured (functional ``sigmoid``/``softmax``
included); otherwise forward hooks on the leaf modules are used. Weights are inspected after an exact
``fold_bn`` on a copy, since that is what a deployed INT8 model quantizes.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from edgecv.rewrite.base import METHOD_FX, METHOD_WALK, try_trace

if TYPE_CHECKING:
    import torch
    from torch import nn

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}
#: outlier thresholds: tensor max|x| / p99.9|x| and per-channel max(absmax) / median(absmax)
TENSOR_OUTLIER = 10.0
CHANNEL_OUTLIER = 20.0
DW_WEIGHT_RATIO = 10.0
_MAX_PCT_ELEMS = 1_000_000


@dataclass
class LayerStats:
    """Measured output range of one layer/node over the lint inputs."""

    name: str
    op: str
    min: float
    max: float
    p9999_abs: float  # 99.99th percentile of |x|
    p999_abs: float
    outlier_score: float  # max|x| / p99.9|x|
    channel_ratio: float | None  # max over channels of |x|max / median channel |x|max (dim 1)
    worst_channel: int | None = None


@dataclass
class Finding:
    """One quantization risk."""

    layer: str
    op: str
    issue: str
    severity: str
    measured: str
    fix: str | None  # the rewrite pass that fixes it, None when no pass does
    advice: str = ""
    range: tuple[float, float] | None = None
    score: float | None = None


@dataclass
class LintReport:
    findings: list[Finding] = field(default_factory=list)
    layers: list[LayerStats] = field(default_factory=list)
    method: str = ""
    inputs: str = ""
    input_shape: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "inputs": self.inputs,
            "input_shape": self.input_shape,
            "notes": self.notes,
            "findings": [asdict(f) for f in self.findings],
            "layers": [asdict(s) for s in self.layers],
        }


# --------------------------------------------------------------------------------------------- inputs
def lint_inputs(
    shape: tuple[int, ...] | list[int],
    n: int = 4,
    mean: tuple[float, ...] | list[float] | None = None,
    std: tuple[float, ...] | list[float] | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, str]:
    """``n`` real photos from ``skimage.data`` resized to ``shape[-2:]`` and normalised (ImageNet mean/std by
    default); seeded noise when the model does not take 3-channel images or scikit-image is missing."""
    import numpy as np
    import torch

    _, c, h, w = shape
    mean = list(mean or (0.485, 0.456, 0.406))
    std = list(std or (0.229, 0.224, 0.225))
    if c == 3:
        try:
            from skimage import data as skdata
            from skimage.transform import resize

            names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "hubble_deep_field"]
            imgs: list[Any] = []
            for name in names:
                if len(imgs) >= n:
                    break
                try:
                    img = getattr(skdata, name)()
                except Exception:  # noqa: BLE001, S112 - some need a download (pooch); skip them
                    continue
                if img.ndim != 3 or img.shape[2] < 3:
                    continue
                img = resize(img[..., :3], (h, w), anti_aliasing=True, preserve_range=False)  # float in [0, 1]
                imgs.append((img - np.array(mean)) / np.array(std))
            if imgs:
                while len(imgs) < n:  # more samples than photos: flipped copies
                    imgs.append(imgs[len(imgs) % len(names)][:, ::-1])
                arr = np.stack(imgs[:n]).transpose(0, 3, 1, 2).astype(np.float32)
                return torch.from_numpy(np.ascontiguousarray(arr)), f"{n} skimage.data photos"
        except ImportError:
            pass
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=gen), f"{n} seeded noise inputs"


# --------------------------------------------------------------------------------------------- stats
def tensor_stats(name: str, op: str, t: torch.Tensor) -> LayerStats:
    import torch

    x = t.detach().float()
    a = x.abs().flatten()
    if a.numel() > _MAX_PCT_ELEMS:
        a_s = a[:: a.numel() // _MAX_PCT_ELEMS + 1]
    else:
        a_s = a
    q = torch.quantile(a_s, torch.tensor([0.999, 0.9999]))
    amax = float(a.max()) if a.numel() else 0.0
    p999 = float(q[0])
    ch_ratio, worst = None, None
    # channel ratio only on feature maps: on pooled (N, C, 1, 1) or (N, C) tensors each channel's max is over a
    # handful of values and the ratio is noise
    if x.dim() == 4 and x.shape[1] >= 4 and x.shape[2] * x.shape[3] >= 4:
        ch = x.transpose(0, 1).reshape(x.shape[1], -1).abs().amax(1)
        med = float(ch.median())
        if med > 0:
            ch_ratio, worst = float(ch.max()) / med, int(ch.argmax())
    return LayerStats(
        name=name,
        op=op,
        min=float(x.min()),
        max=float(x.max()),
        p9999_abs=float(q[1]),
        p999_abs=p999,
        outlier_score=amax / p999 if p999 > 0 else (0.0 if amax == 0 else float("inf")),
        channel_ratio=ch_ratio,
        worst_channel=worst,
    )


def _op_name(node: Any, modules: dict[str, Any]) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _node_layer(node: Any) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    owner = ""
    if stack:
        last = list(stack.values())[-1]
        owner = last[0] if isinstance(last, tuple) else str(last)
    return f"{owner}.{node.name}" if owner else node.name


_SMOOTH = {
    "SiLU": "SiLU",
    "silu": "SiLU",
    "Hardswish": "Hardswish",
    "hardswish": "Hardswish",
    "GELU": "GELU",
    "gelu": "GELU",
    "Mish": "Mish",
    "mish": "Mish",
}
_NORM_RE = re.compile(r"(Layer|Group|Instance|Switchable)Norm|layer_norm|group_norm|instance_norm", re.IGNORECASE)


def lint_model(model: nn.Module, inputs: torch.Tensor, source: str = "") -> LintReport:
    """Measure activation ranges on ``inputs`` and flag quantization risks.

    Args:
        model: the model in eval mode (not changed: a copy is inspected).
        inputs: a batch of preprocessed inputs (see :func:`lint_inputs`).
        source: how the inputs were made, for the report.

    Returns:
        a :class:`LintReport`, findings sorted by severity.
    """
    import copy

    import torch
    from torch import fx, nn

    from edgecv.rewrite.passes.hard_sigmoid import _feeds_mul, _is_sigmoid

    report = LintReport(inputs=source, input_shape=list(inputs.shape))
    work = copy.deepcopy(model).eval()
    folded = work
    try:
        from edgecv.rewrite.apply import get_pass

        folded = get_pass("fold_bn")(work, inputs[:2])  # what INT8 quantizes: BN already folded
        report.notes.append("depthwise weights inspected after an exact fold_bn")
    except Exception as exc:  # noqa: BLE001 - lint the model as is
        report.notes.append(f"fold_bn not applied ({type(exc).__name__}); weights inspected as they are")
    stats: dict[str, LayerStats] = {}
    # activations are measured on the unfolded copy: tracing it keeps the module path of functional ops
    from edgecv.rewrite.passes.norm_to_bn import is_non_bn_norm

    # norms (SwitchableNorm, LayerNorm2d...) stay whole so they are reported as one layer, not as their insides
    gm, why = try_trace(work, leaf=is_non_bn_norm)
    findings: list[Finding] = []
    by_node: dict[str, LayerStats] = {}
    if gm is not None:
        report.method = METHOD_FX
        modules = dict(gm.named_modules())

        class Recorder(fx.Interpreter):
            def run_node(self, n: fx.Node) -> Any:
                out = super().run_node(n)
                if (
                    n.op in ("call_module", "call_function", "call_method")
                    and isinstance(out, torch.Tensor)
                    and out.is_floating_point()
                    and out.numel() > 1
                ):
                    s = tensor_stats(_node_layer(n), _op_name(n, modules), out)
                    by_node[n.name] = s
                    stats.setdefault(s.name, s)
                return out

        with torch.no_grad():
            Recorder(gm).run(inputs)
        for n in gm.graph.nodes:
            if n.op not in ("call_module", "call_function", "call_method"):
                continue
            op = _op_name(n, modules)
            layer = _node_layer(n)
            arg = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
            in_s = by_node.get(arg.name) if arg is not None else None
            rng = (in_s.min, in_s.max) if in_s else None
            rtxt = f"input [{in_s.min:.3g}, {in_s.max:.3g}]" if in_s else "input range not measured"
            if op in _SMOOTH:
                findings.append(
                    Finding(
                        layer,
                        op,
                        f"{_SMOOTH[op]} activation: curved, unbounded and shares one INT8 scale over a wide range",
                        "medium",
                        rtxt,
                        "act_relu6",
                        "or act_relu; fine-tune after",
                        rng,
                    )
                )
            elif _is_sigmoid(n, modules) and _feeds_mul(n):
                findings.append(
                    Finding(
                        layer,
                        op,
                        "sigmoid gate (SE/CBAM/SK attention): saturating curve, its output scales a feature map",
                        "medium",
                        rtxt,
                        "hard_sigmoid",
                        "hard-sigmoid is piecewise linear and INT8 friendly",
                        rng,
                    )
                )
            elif op in ("Softmax", "softmax") or n.target in (torch.softmax, torch.nn.functional.softmax):
                findings.append(
                    Finding(
                        layer,
                        op,
                        "softmax (attention): exponent over a wide input range",
                        "medium",
                        rtxt,
                        None,
                        "keep this op in fp16/fp32 (mixed precision)",
                        rng,
                    )
                )
            elif n.target is torch.nn.functional.grid_sample and len(n.args) > 1 and isinstance(n.args[1], fx.Node):
                g = by_node.get(n.args[1].name)
                findings.append(_grid_sample_finding(layer, g, in_s))
            elif _NORM_RE.search(op):
                is_ln = "layer" in op.lower()
                findings.append(
                    Finding(
                        layer,
                        op,
                        f"{op}: per-sample statistics computed at run time, not foldable into a conv",
                        "high" if is_ln else "medium",
                        rtxt,
                        "norm_to_bn",
                        "BatchNorm folds into the conv before quantization",
                        rng,
                    )
                )
    else:
        report.method = METHOD_WALK
        report.notes.append(f"fx trace failed ({why}); hooks on leaf modules, functional ops not inspected")
        handles = []
        for name, m in work.named_modules():
            if not list(m.children()) and name:

                def hook(mod: Any, inp: Any, out: Any, name: str = name) -> None:
                    if isinstance(out, torch.Tensor) and out.is_floating_point() and name not in stats:
                        stats[name] = tensor_stats(name, type(mod).__name__, out)
                        if inp and isinstance(inp[0], torch.Tensor):
                            stats[name + ":input"] = tensor_stats(name, "input", inp[0])

                handles.append(m.register_forward_hook(hook))
        try:
            with torch.no_grad():
                work(inputs)
        finally:
            for h in handles:
                h.remove()
        from edgecv.rewrite.passes.hard_sigmoid import _in_gate

        for name, m in work.named_modules():
            op = type(m).__name__
            in_s = stats.get(name + ":input")
            rng = (in_s.min, in_s.max) if in_s else None
            rtxt = f"input [{in_s.min:.3g}, {in_s.max:.3g}]" if in_s else "not called"
            if op in _SMOOTH:
                findings.append(Finding(name, op, f"{op} activation", "medium", rtxt, "act_relu6", "", rng))
            elif isinstance(m, nn.Sigmoid) and _in_gate(work, name):
                findings.append(
                    Finding(name, op, "sigmoid gate (SE/CBAM/SK attention)", "medium", rtxt, "hard_sigmoid", "", rng)
                )
            elif isinstance(m, nn.Softmax):
                findings.append(
                    Finding(name, op, "softmax (attention)", "medium", rtxt, None, "keep in fp16/fp32", rng)
                )
            elif _NORM_RE.search(op):
                findings.append(
                    Finding(
                        name,
                        op,
                        f"{op}: run-time statistics",
                        "high" if "Layer" in op else "medium",
                        rtxt,
                        "norm_to_bn",
                        "",
                        rng,
                    )
                )
        stats = {k: v for k, v in stats.items() if not k.endswith(":input")}

    # depthwise convs with wide per-channel weight ranges
    for name, m in folded.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels and m.out_channels >= 4:
            ch = m.weight.detach().abs().flatten(1).amax(1)
            med = float(ch.median())
            ratio = float(ch.max()) / med if med > 0 else float("inf")
            if ratio >= DW_WEIGHT_RATIO:
                findings.append(
                    Finding(
                        name,
                        "Conv2d (depthwise)",
                        "depthwise conv with wide per-channel weight ranges",
                        "high" if ratio >= 5 * DW_WEIGHT_RATIO else "medium",
                        f"weight |w|max per channel: max {float(ch.max()):.3g} / median {med:.3g} = {ratio:.1f}x",
                        None,
                        "quantize weights per channel (never per tensor) or equalize ranges across layers",
                        (float(m.weight.detach().min()), float(m.weight.detach().max())),
                        ratio,
                    )
                )

    # outlier activations; with a graph, an outlier that is only carried on from the node's input (conv → ReLU →
    # mul ...) is reported once, where it starts
    flagged: dict[str, tuple[str, int | None]] = {}
    if gm is not None:
        for n in gm.graph.nodes:
            s = by_node.get(n.name)
            f = _outlier_finding(s) if s is not None else None
            if f is None or s is None:
                continue
            key = ("tensor", None) if "outlier activations" in f.issue else ("channel", s.worst_channel)
            flagged[n.name] = key
            inherited = any(isinstance(a, fx.Node) and flagged.get(a.name) == key for a in n.all_input_nodes)
            if not inherited:
                findings.append(f)
    else:
        findings.extend(f for f in (_outlier_finding(s) for s in stats.values()) if f is not None)
    findings.sort(key=lambda f: (SEVERITY_ORDER.get(f.severity, 9), -(f.score or 0)))
    report.findings = findings
    report.layers = list(stats.values())
    return report


def _grid_sample_finding(layer: str, grid: LayerStats | None, image: LayerStats | None) -> Finding:
    """How a spatial transformer's ``grid_sample`` quantizes: the sampled values are the input's (they quantize
    like it), but the grid holds sampling coordinates in [-1, 1], and one INT8 step of its measured range moves a
    sample by ``range / 255 × side / 2`` pixels — a whole-image misregistration, not a rounding of one value."""
    rng = (grid.min, grid.max) if grid is not None else None
    if grid is None:
        measured = "grid range not measured"
    else:
        step = (grid.max - grid.min) / 255.0
        measured = (
            f"grid [{grid.min:.3g}, {grid.max:.3g}]: one INT8 step = {step:.3g} normalised = "
            f"{step / 2:.3g} of the image side per sample"
        )
    return Finding(
        layer,
        "grid_sample",
        "grid_sample (spatial transformer): INT8 sampling coordinates shift "
        "every output pixel; the localization net's theta sets the whole grid",
        "high",
        measured,
        None,
        "keep the localization net, the grid and GridSample in fp16/fp32 (mixed precision: exclude "
        "them from INT8); the convs after the resampled image quantize as usual",
        rng,
    )


def _outlier_finding(s: LayerStats) -> Finding | None:
    if s.outlier_score >= TENSOR_OUTLIER:
        return Finding(
            s.name,
            s.op,
            "outlier activations (a few values far beyond the bulk)",
            "high" if s.outlier_score >= 3 * TENSOR_OUTLIER else "medium",
            f"[{s.min:.3g}, {s.max:.3g}], max|x| / p99.9|x| = {s.outlier_score:.1f}x",
            "act_relu6",
            "clip the range (ReLU6) or calibrate with percentiles; keep in fp16 if it stays",
            (s.min, s.max),
            s.outlier_score,
        )
    if s.channel_ratio is not None and s.channel_ratio >= CHANNEL_OUTLIER:
        return Finding(
            s.name,
            s.op,
            f"outlier channel {s.worst_channel} (per-tensor activation scale set by one channel)",
            "high" if s.channel_ratio >= 5 * CHANNEL_OUTLIER else "medium",
            f"[{s.min:.3g}, {s.max:.3g}], channel {s.worst_channel} |x|max / median channel = {s.channel_ratio:.1f}x",
            None,
            "per-channel activation quantization is rare: equalize ranges (scale the channel into the next "
            "layer) or keep the layer in fp16",
            (s.min, s.max),
            s.channel_ratio,
        )
    return None
