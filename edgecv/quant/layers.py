"""Graph-level helpers for INT8: node naming, detector-head detection, and layer-by-layer divergence.

:func:`layer_divergence` is what ``edgecv validate --layers`` shows: run the fp32 model and its INT8 version
with every intermediate tensor exposed as an extra ONNX Runtime output, and report, in graph order, how far each
layer's output has moved from fp32 (cosine similarity, relative L2 error). The first rows that cross the
thresholds are where INT8 went wrong; ``local_error`` (a layer's error minus the worst error of its inputs) is
what the accuracy budget ranks layers by.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecv._lazy import lazy_import
from edgecv.errors import BundleError, ConfigError

if TYPE_CHECKING:
    from edgecv.bundle import Bundle

# ops whose weights carry the model: the "last conv" of an output path is the last of these
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "QLinearConv"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
COSINE_THRESHOLD = 0.99
REL_ERR_THRESHOLD = 0.1


# ------------------------------------------------------------------------------------------------ graph helpers
def name_nodes(model: Any) -> Any:
    """Give every unnamed node a unique name (``<op>_<index>``), in place: quantizers address nodes by name."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            base = f"{node.op_type}_{i}"
            name, k = base, 0
            while name in used:
                k += 1
                name = f"{base}_{k}"
            node.name = name
            used.add(name)
    return model


def _consumers(graph: Any) -> dict[str, list[Any]]:
    cons: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for t in node.input:
            if t:
                cons[t].append(node)
    return cons


def float_head_nodes(model: Any) -> list[str]:
    """Nodes downstream of the last compute op (Conv/Gemm/MatMul) of every output path.

    These are the box decode / sigmoid / softmax / reshape / concat of a detector head (and the softmax,
    resize or argmax after a classifier or segmenter): cheap ops whose outputs INT8 would clip or round,
    so they stay in floating point. A node counts when no compute op lies between it and any graph output.
    """
    graph = model.graph
    cons = _consumers(graph)
    outputs = {o.name for o in graph.output}
    feeds_compute: dict[str, bool] = {}

    # memoised DFS: does this node (or anything downstream of it) run a compute op?
    def downstream_compute(node: Any, stack: frozenset[str] = frozenset()) -> bool:
        if node.name in feeds_compute:
            return feeds_compute[node.name]
        if node.op_type in COMPUTE_OPS:
            feeds_compute[node.name] = True
            return True
        res = False
        for t in node.output:
            for c in cons.get(t, []):
                if c.name not in stack and downstream_compute(c, stack | {node.name}):
                    res = True
                    break
            if res:
                break
        feeds_compute[node.name] = res
        return res

    # only nodes that reach an output count (dead branches are not a head)
    reaches: set[str] = set()
    producer = {t: n for n in graph.node for t in n.output}
    todo = [producer[o] for o in outputs if o in producer]
    while todo:
        n = todo.pop()
        if n.name in reaches:
            continue
        reaches.add(n.name)
        todo += [producer[t] for t in n.input if t in producer]
    has_compute = any(n.op_type in COMPUTE_OPS for n in graph.node)
    if not has_compute:
        return []
    return [
        n.name
        for n in graph.node
        if n.name in reaches
        and n.op_type not in QDQ_OPS
        and not downstream_compute(n)
        and _has_compute_upstream(n, producer)
    ]


def _has_compute_upstream(node: Any, producer: dict[str, Any]) -> bool:
    seen: set[str] = set()
    todo = [producer[t] for t in node.input if t in producer]
    while todo:
        n = todo.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        if n.op_type in COMPUTE_OPS:
            return True
        todo += [producer[t] for t in n.input if t in producer]
    return False


def quantized_nodes(qdq_model: Any) -> list[str]:
    """Names of nodes in a QDQ model that read at least one DequantizeLinear output (i.e. run in INT8)."""
    dq_out = {t for n in qdq_model.graph.node if n.op_type == "DequantizeLinear" for t in n.output}
    return [n.name for n in qdq_model.graph.node if n.op_type not in QDQ_OPS and any(t in dq_out for t in n.input)]


def count_ops(model: Any, ops: Iterable[str]) -> int:
    want = set(ops)
    return sum(1 for n in model.graph.node if n.op_type in want)


# ------------------------------------------------------------------------------------------------ divergence
@dataclass
class LayerDivergence:
    """How far one node's output moved from fp32, on the given inputs."""

    index: int  # position in the fp32 graph (topological)
    node: str
    op: str
    tensor: str
    cosine: float
    rel_error: float
    max_abs_error: float
    local_error: float  # rel_error minus the worst rel_error among this node's inputs
    diverged: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _with_all_outputs(model: Any, names: list[str]) -> bytes:
    onnx = lazy_import("onnx")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for t in names:
        if t not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    return bytes(m.SerializeToString())


def _stats(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    a = ref.astype(np.float64).ravel()
    b = got.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = 1.0 if na == 0 and nb == 0 else float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0
    rel = float(np.linalg.norm(a - b) / max(na, 1e-12))
    mx = float(np.abs(a - b).max()) if a.size else 0.0
    return cos, rel, mx


def selection_nodes(model: Any) -> set[str]:
    """``NonMaxSuppression`` nodes and everything downstream of them: a detector's selection, whose tensors have
    data-dependent lengths and whose differences are flipped choices, not quantization error. Layer ranking and
    ``validate --layers`` compare the tensors before it (the candidates, where a detector's numbers live)."""
    cons = _consumers(model.graph)
    todo = [n for n in model.graph.node if n.op_type == "NonMaxSuppression"]
    seen: dict[int, Any] = {}
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen[id(n)] = n
        for t in n.output:
            todo += cons.get(t, [])
    return {n.name for n in seen.values()}


def compare_layers(
    fp32_model: Any,
    int8_model: Any,
    feeds: list[dict[str, np.ndarray]],
    cosine_threshold: float = COSINE_THRESHOLD,
    rel_threshold: float = REL_ERR_THRESHOLD,
) -> list[LayerDivergence]:
    """Per-node divergence between two ONNX graphs that share tensor names (an fp32 model and its QDQ model).

    Every node output of the fp32 graph that also exists in the INT8 graph is exposed as an extra output of
    both; statistics are pooled over ``feeds``.
    """
    from edgecv.backends.onnxruntime import OnnxRuntimeRunner

    after_nms = selection_nodes(fp32_model)
    fp_nodes = [n for n in fp32_model.graph.node if n.op_type not in QDQ_OPS and n.name not in after_nms]
    q_tensors = {t for n in int8_model.graph.node for t in n.output}
    names = [t for n in fp_nodes for t in n.output[:1] if t and t in q_tensors]
    if not names:
        raise ConfigError("layer comparison: the fp32 and INT8 graphs share no tensor names")
    ref_acc: dict[str, list[np.ndarray]] = defaultdict(list)
    got_acc: dict[str, list[np.ndarray]] = defaultdict(list)
    with (
        OnnxRuntimeRunner.from_path(_with_all_outputs(fp32_model, names), device="CPU") as fr,
        OnnxRuntimeRunner.from_path(_with_all_outputs(int8_model, names), device="CPU") as qr,
    ):
        for feed in feeds:
            fo, qo = fr.infer(feed), qr.infer(feed)
            for t in names:
                ref_acc[t].append(np.asarray(fo[t]))
                got_acc[t].append(np.asarray(qo[t]))
    rel_of: dict[str, float] = {}
    rows: list[LayerDivergence] = []
    for i, node in enumerate(fp_nodes):
        if not node.output or node.output[0] not in ref_acc:
            continue
        t = node.output[0]
        if any(a.shape != b.shape for a, b in zip(ref_acc[t], got_acc[t])):
            continue  # a data-dependent shape (a selection the graph makes): not an elementwise quantity
        ref = np.concatenate([a.ravel() for a in ref_acc[t]])
        got = np.concatenate([a.ravel() for a in got_acc[t]])
        cos, rel, mx = _stats(ref, got)
        rel_of[t] = rel
        upstream = max((rel_of.get(x, 0.0) for x in node.input), default=0.0)
        rows.append(
            LayerDivergence(
                i,
                node.name,
                node.op_type,
                t,
                cos,
                rel,
                mx,
                rel - upstream,
                cos < cosine_threshold or rel > rel_threshold,
            )
        )
    return rows


def layer_divergence(
    bundle: Bundle,
    precision: str = "int8",
    backend: str = "onnxruntime",
    feeds: list[dict[str, np.ndarray]] | None = None,
    only_diverged: bool = False,
    cosine_threshold: float = COSINE_THRESHOLD,
    rel_threshold: float = REL_ERR_THRESHOLD,
) -> list[LayerDivergence]:
    """Layer-by-layer divergence of a bundle's INT8 ONNX model from its fp32 model, in graph order.

    The INT8 model is the bundle's ``onnxruntime:int8`` artifact (or, for a bundle written by
    ``edgecv quantize``, its own ``model.onnx``, compared with the fp32 model it recorded).

    Args:
        bundle: an opened bundle.
        precision: only ``"int8"`` (fp16/bf16 diverge by rounding, not by ranges).
        backend: only ``"onnxruntime"``: intermediate tensors are exposed as extra ORT outputs; the QDQ model
            is the same file TensorRT and OpenVINO read.
        feeds: inputs to compare on; default the bundle's ``reference.npz`` inputs (one sample at a time).
        only_diverged: return only the rows over a threshold.
        cosine_threshold / rel_threshold: a row ``diverged`` when cosine < this or relative error > that.

    Returns:
        :class:`LayerDivergence` rows (``.to_dict()`` for JSON); ``first_diverged(rows)`` picks the first ones.
    """
    onnx = lazy_import("onnx")
    if precision != "int8":
        raise ConfigError(f"layer divergence: expected precision 'int8', found '{precision}'")
    if backend != "onnxruntime":
        raise ConfigError(
            f"layer divergence: expected backend 'onnxruntime' (the QDQ model every backend reads), found '{backend}'"
        )
    art = bundle.artifact("onnxruntime", "int8")
    quant_info = bundle.manifest.provenance.get("quantized")
    if art is not None:
        qdq_path = bundle.file(art.path)
        fp32_rel = art.extra.get("fp32_onnx")
        fp32_path = bundle.file(str(fp32_rel)) if fp32_rel else bundle.onnx_path
    elif isinstance(quant_info, dict) and quant_info.get("fp32_onnx"):
        qdq_path = bundle.onnx_path
        fp32_path = bundle.file(str(quant_info["fp32_onnx"]))
    else:
        raise BundleError(
            f"bundle '{bundle.root}' has no INT8 ONNX model; run 'edgecv compile -b onnxruntime "
            "-p int8 --calib PATH' or 'edgecv quantize' first"
        )
    if feeds is None:
        ref = bundle.load_reference()["inputs"]
        name = bundle.contract.input_name
        if name not in ref:
            raise BundleError(f"bundle reference.npz has no input '{name}'")
        feeds = [{name: ref[name][i : i + 1]} for i in range(len(ref[name]))]
    rows = compare_layers(onnx.load(str(fp32_path)), onnx.load(str(qdq_path)), feeds, cosine_threshold, rel_threshold)
    return [r for r in rows if r.diverged] if only_diverged else rows


def first_diverged(rows: list[LayerDivergence], n: int = 3) -> list[LayerDivergence]:
    """The first ``n`` rows (graph order) that crossed a threshold."""
    return [r for r in rows if r.diverged][:n]


def print_layer_report(rows: list[LayerDivergence], top: int | None = None, json_out: bool = False) -> None:
    """Print divergence rows as a rich table (or JSON), first diverging layers marked."""
    from edgecv._console import print_json, print_table

    shown = rows if top is None else rows[:top]
    if json_out:
        print_json({"layers": [r.to_dict() for r in shown], "first_diverged": [r.node for r in first_diverged(rows)]})
        return
    first = {r.node for r in first_diverged(rows)}
    print_table(
        "INT8 vs fp32, layer by layer",
        ["#", "node", "op", "cosine", "rel err", "local err", "max abs", ""],
        [
            [
                r.index,
                r.node,
                r.op,
                r.cosine,
                r.rel_error,
                r.local_error,
                r.max_abs_error,
                "← first" if r.node in first else ("diverged" if r.diverged else ""),
            ]
            for r in shown
        ],
        digits=4,
    )


def rank_by_sensitivity(rows: list[LayerDivergence], candidates: Iterable[str]) -> list[str]:
    """Candidate node names, most sensitive first (largest local error, ties by graph order)."""
    cand = set(candidates)
    scored = [(r.local_error, -r.index, r.node) for r in rows if r.node in cand]
    return [n for _, _, n in sorted(scored, reverse=True)]


def with_compute_consumers(model: Any, name: str) -> list[str]:
    """``name`` plus, when it is not a compute op, the ops downstream of it up to the next compute ops.

    A Relu/pool/reshape that reads a badly quantized tensor shows the error, but keeping only it in float just
    moves the Q/DQ pair to its output; keeping its compute consumers float too removes the quantizer.
    """
    by_name = {n.name: n for n in model.graph.node}
    node = by_name.get(name)
    if node is None or node.op_type in COMPUTE_OPS:
        return [name]
    cons = _consumers(model.graph)
    group, todo = [name], list(node.output)
    while todo:
        t = todo.pop()
        for c in cons.get(t, []):
            if c.name in group or c.op_type in QDQ_OPS:
                continue
            group.append(c.name)
            if c.op_type not in COMPUTE_OPS:
                todo += list(c.output)
    return group


def save_model(model: Any, path: str | Path) -> Path:
    """Save an ONNX model atomically (edgecv._io)."""
    from edgecv._io import write_bytes

    return write_bytes(path, model.SerializeToString())
