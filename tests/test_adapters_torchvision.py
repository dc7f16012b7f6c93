"""torchvision detectors through the adapter registry: every family, in a tiny seeded configuration, gives on ONNX
Runtime and OpenVINO fp32 the boxes torchvision's own eager model gives (recall 1.0 at IoU ≥ 0.99, same class);
segmentation ``out`` head, offline builders, ``--decode`` for a raw head, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tv = pytest.importorskip("torchvision")
pytest.importorskip("onnxruntime")

from edgecv.bundle import Contract
from edgecv.errors import ConfigError
from edgecv.export.detection import prepare_detection_export
from edgecv.export.sources import LoadedModel

SIZE = 160
COMPARED = 30  # the eager model's best boxes that must all be found (well inside max_det: no cut-off ties)


def _fpn_backbone(p6p7: bool = False) -> Any:
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    extra = LastLevelP6P7(64, 64) if p6p7 else None
    kw: dict[str, Any] = {"returned_layers": [2, 3, 4], "extra_blocks": extra} if p6p7 else {}
    bb = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5, **kw)
    # a narrower FPN (64 channels) keeps the heads small
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

    in_ch = [128, 256, 512] if p6p7 else [64, 128, 256, 512]
    bb.fpn = FeaturePyramidNetwork(in_ch, 64, extra_blocks=extra or bb.fpn.extra_blocks)
    bb.out_channels = 64
    return bb


def tiny_detector(family: str) -> Any:
    """A seeded, small instance of each torchvision detector family (random weights, 3 label slots, 160 px).

    The heads are re-drawn with a visible spread: torchvision's own init scores every SSD box 1/C and every
    RetinaNet/FCOS box ~0.01, and boxes tied on score are ranked arbitrarily by any NMS, so nothing could be compared.
    """
    model = _tiny_detector(family)
    # BatchNorm statistics from two photos: with the init's running stats (mean 0, var 1) a random deep backbone's
    # activations die out, and every location scores the same
    from skimage import data

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None
    imgs = [torch.from_numpy(im.transpose(2, 0, 1).copy()).float() / 255 for im in (data.astronaut(), data.coffee())]
    model.eval()
    with torch.no_grad():
        images, _ = model.transform(imgs)
        for m in bns:
            m.train()
        model.backbone(images.tensors)
    model.eval()
    head = getattr(model, "head", None)
    if head is not None:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in head.parameters():
                # small on weights (wide 3×3 convs: large box deltas would clip boxes to the border, where
                # zero-area boxes have no IoU), larger on biases (distinct scores per anchor)
                p.add_(torch.randn(p.shape, generator=gen) * (0.5 if p.ndim == 1 else 0.005))
    return model


def _tiny_detector(family: str) -> Any:
    from torchvision.models import detection as d

    torch.manual_seed(0)
    size = {"min_size": SIZE, "max_size": SIZE}
    if family == "fasterrcnn":
        return d.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=3, **size)
    if family == "maskrcnn":
        return d.MaskRCNN(_fpn_backbone(), num_classes=3, **size)
    if family == "keypointrcnn":
        return d.KeypointRCNN(_fpn_backbone(), num_classes=2, num_keypoints=5, **size)
    if family == "retinanet":
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        anchors = AnchorGenerator(
            tuple((s, int(s * 1.26), int(s * 1.59)) for s in (16, 32, 64, 128, 256)), ((0.5, 1.0, 2.0),) * 5
        )
        return d.RetinaNet(_fpn_backbone(p6p7=True), num_classes=3, anchor_generator=anchors, **size)
    if family == "fcos":
        return d.FCOS(_fpn_backbone(p6p7=True), num_classes=3, **size)
    if family == "ssdlite":
        model = d.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
        model.transform.fixed_size = (SIZE, SIZE)  # its default boxes are relative to the image: any size works
        model.transform.min_size, model.transform.max_size = (SIZE,), SIZE
        return model
    if family == "ssd300":
        model = d.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=3)
        # VGG has no BatchNorm: its random features are huge, and every softmax saturates at 1.0 (all boxes tied)
        # unless the head is scaled down to their size
        with torch.no_grad():
            for p in model.head.parameters():
                p.mul_(1e-3)
        return model
    raise AssertionError(family)


def _loaded(model: Any, name: str) -> LoadedModel:
    from edgecv.export.adapters.torchvision import default_input_hw

    h, w = default_input_hw(model)
    contract = Contract(task="detect", input_shape=[1, 3, h, w])
    return LoadedModel(module=model.eval(), contract=contract, source_info={"kind": "test", "spec": name}, name=name)


def _photo(contract: Contract) -> np.ndarray:
    from skimage import data

    from edgecv.tasks.preprocess import preprocess

    x, _ = preprocess(np.ascontiguousarray(data.astronaut()[..., ::-1]), contract)
    return x


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from edgecv.tasks.detect import box_iou

    return box_iou(a, b)


def assert_same_boxes(ref: dict[str, Any], got: dict[str, np.ndarray], what: str) -> int:
    """Every one of the eager model's best ``COMPARED`` boxes has a same-class box at IoU ≥ 0.99; returns how many
    boxes were compared (asserted > 0 by the callers: a comparison of nothing proves nothing)."""
    rb = ref["boxes"].detach().numpy()
    rc = ref["labels"].detach().numpy()
    rs = ref["scores"].detach().numpy()
    # a box clipped to zero width or height (random heads at the image border) has no IoU with anything, itself
    # included: such boxes are left out of the comparison, never counted as matched
    real = ((rb[:, 2] - rb[:, 0]) > 1e-2) & ((rb[:, 3] - rb[:, 1]) > 1e-2)
    rb, rc, rs = rb[real], rc[real], rs[real]
    n = int(got["num_dets"].reshape(-1)[0])
    gb, gc, gs = got["boxes"][0, :n], got["classes"][0, :n], got["scores"][0, :n]
    k = min(COMPARED, len(rb))
    if k == 0:
        return 0
    iou = _iou(rb[:k], gb) if n else np.zeros((k, 0))
    same = rc[:k, None] == gc[None, :]
    found = ((iou >= 0.99) & same).any(1)
    assert found.all(), (
        f"{what}: {int((~found).sum())} of {k} torchvision boxes not found (IoU ≥ 0.99, same "
        f"class); first missing {rb[:k][~found][0]} class {rc[:k][~found][0]}"
    )
    best = np.where(same, iou, 0).argmax(1)
    np.testing.assert_allclose(gs[best], rs[:k], atol=1e-3)
    return k


def _run_backends(onnx_path: Path, x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = {"onnxruntime": dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))}
    try:
        import openvino as ov
    except ImportError:
        return out
    core = ov.Core()
    compiled = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled({0: x})
    from edgecv.backends.openvino import port_name

    out["openvino"] = {port_name(p): np.asarray(res[p]) for p in compiled.outputs}
    return out


def _check_family(family: str, tmp_path: Path, score_threshold: float = 0.001) -> None:
    from edgecv.export.onnx import export_model

    model = tiny_detector(family)
    loaded = prepare_detection_export(
        _loaded(model, family), nms="graph", score_threshold=score_threshold, iou_threshold=0.5, max_det=100
    )
    assert loaded.contract.task == "detect" and loaded.contract.output_names == [
        "boxes",
        "scores",
        "classes",
        "num_dets",
    ]
    assert loaded.contract.resize == ("stretch" if family.startswith("ssd") else "letterbox")
    x = _photo(loaded.contract)
    with torch.no_grad():
        ref = model([torch.from_numpy(x[0])])[0]  # torchvision's own eager, post-processed boxes
    res = export_model(
        loaded, tmp_path / family, opset=17, dynamic_batch=False, batch_range=(1, 1, 1), simplify=False, n_reference=1
    )
    outs = _run_backends(res.path / "model.onnx", x)
    assert "openvino" in outs
    for backend, got in outs.items():
        assert assert_same_boxes(ref, got, f"{family} on {backend}") > 0


@pytest.mark.openvino
@pytest.mark.parametrize("family", ["fasterrcnn", "ssdlite"])
def test_torchvision_family_boxes_equal_eager(family: str, tmp_path: Path) -> None:
    _check_family(family, tmp_path)


@pytest.mark.openvino
# the R-CNN side is also in the default run through test_rcnn_frame_without_proposals_runs (its gray frame ends
# with no box as well)
@pytest.mark.parametrize("family", ["ssdlite", pytest.param("fasterrcnn", marks=pytest.mark.slow)])
def test_frame_without_detection_gives_no_box(family: str, tmp_path: Path) -> None:
    """No box over the score threshold: ``num_dets`` 0 on every engine, as eager torchvision. OpenVINO read
    torchvision's "no box" NMS branch (an ONNX ``If`` returning an empty constant) as one element and reported one
    garbage box on every such frame."""
    from edgecv.export.onnx import export_model

    model = tiny_detector(family)
    loaded = prepare_detection_export(
        _loaded(model, family), nms="graph", score_threshold=0.9999, iou_threshold=0.5, max_det=100
    )
    photo = _photo(loaded.contract)
    with torch.no_grad():
        assert len(model([torch.from_numpy(photo[0])])[0]["boxes"]) == 0
    res = export_model(
        loaded, tmp_path / family, opset=17, dynamic_batch=False, batch_range=(1, 1, 1), simplify=False, n_reference=1
    )
    outs = _run_backends(res.path / "model.onnx", photo)
    assert set(outs) == {"onnxruntime", "openvino"}
    assert {b: int(got["num_dets"].reshape(-1)[0]) for b, got in outs.items()} == {"onnxruntime": 0, "openvino": 0}


@pytest.mark.openvino
def test_rcnn_frame_without_proposals_runs(tmp_path: Path) -> None:
    """A frame on which the RPN keeps no proposal (an empty scene under ``rpn_score_thresh``) gives no box on every
    engine, as eager torchvision does, instead of failing in ``roi_heads/Reshape`` ({0,36} -> {0,-1}): torchvision
    decodes its box deltas through a reshape only when proposals exist, and the trace fixed that branch."""
    from edgecv.export.onnx import export_model

    model = tiny_detector("fasterrcnn")
    with torch.no_grad():
        model.rpn.head.cls_logits.weight.mul_(30)  # objectness that depends on the image

    def objectness(x: np.ndarray) -> float:
        with torch.no_grad():
            batch, _ = model.transform([torch.from_numpy(x[0])])
            logits, _ = model.rpn.head(list(model.backbone(batch.tensors).values()))
            return max(float(torch.sigmoid(t).max()) for t in logits)

    loaded = prepare_detection_export(
        _loaded(model, "fasterrcnn"), nms="graph", score_threshold=0.001, iou_threshold=0.5, max_det=100
    )
    photo = _photo(loaded.contract)
    empty = np.full_like(photo, 0.5)
    lo, hi = objectness(empty), objectness(photo)
    assert lo < hi, (lo, hi)
    model.rpn.score_thresh = (lo + hi) / 2  # the photo keeps proposals, the gray frame none
    with torch.no_grad():
        assert len(model([torch.from_numpy(empty[0])])[0]["boxes"]) == 0
        ref = model([torch.from_numpy(photo[0])])[0]
    res = export_model(
        loaded, tmp_path / "frcnn", opset=17, dynamic_batch=False, batch_range=(1, 1, 1), simplify=False, n_reference=1
    )
    outs = _run_backends(res.path / "model.onnx", empty)
    assert set(outs) == {"onnxruntime", "openvino"}
    for backend, got in outs.items():
        assert int(got["num_dets"].reshape(-1)[0]) == 0, backend
    for backend, got in _run_backends(res.path / "model.onnx", photo).items():
        assert assert_same_boxes(ref, got, f"photo on {backend}") > 0


@pytest.mark.slow
@pytest.mark.openvino
@pytest.mark.parametrize("family", ["maskrcnn", "keypointrcnn", "retinanet", "fcos", "ssd300"])
def test_torchvision_family_boxes_equal_eager_slow(family: str, tmp_path: Path) -> None:
    _check_family(family, tmp_path)


@pytest.mark.slow
def test_torchvision_host_nms_candidates(tmp_path: Path) -> None:
    """--nms host on RetinaNet: decoded candidates out of the graph, NMS on the host; the host's detections equal the
    graph-NMS export's (same candidates, same per-class NMS)."""
    from edgecv.export.onnx import export_model
    from edgecv.tasks.detect import HostNMSDecoder

    model = tiny_detector("retinanet")
    model.topk_candidates = 10**6  # the host sees every candidate; torchvision keeps per-level top-k otherwise
    loaded = prepare_detection_export(_loaded(model, "retinanet"), nms="host", score_threshold=0.02, max_det=100)
    assert loaded.contract.decode["format"] == "boxes_scores"
    assert loaded.contract.output_names == ["head0", "head1"]
    x = _photo(loaded.contract)
    res = export_model(
        loaded, tmp_path / "host", opset=17, dynamic_batch=False, batch_range=(1, 1, 1), simplify=False, n_reference=1
    )
    got = _run_backends(res.path / "model.onnx", x)["onnxruntime"]
    boxes, scores, classes = HostNMSDecoder(res.contract).detect(got)[0]
    model.score_thresh, model.nms_thresh, model.detections_per_img = 0.02, 0.5, 100
    with torch.no_grad():
        ref = model([torch.from_numpy(x[0])])[0]
    n = len(scores)
    assert n > 0
    k = assert_same_boxes(
        ref,
        {"boxes": boxes[None], "classes": classes[None], "scores": scores[None], "num_dets": np.array([n])},
        "retinanet host NMS",
    )
    assert k > 0


def test_two_stage_host_nms_is_refused_in_one_line() -> None:
    model = tiny_detector("fasterrcnn")
    with pytest.raises(ConfigError, match=r"^--nms host: FasterRCNN runs NMS between its stages.*--nms graph$"):
        prepare_detection_export(_loaded(model, "frcnn"), nms="host")


def test_unknown_detector_names_families_and_decode() -> None:
    model = torch.nn.Conv2d(3, 8, 3)
    loaded = LoadedModel(module=model, contract=Contract(task="detect"), source_info={}, name="conv")
    with pytest.raises(ConfigError) as err:
        prepare_detection_export(loaded)
    msg = str(err.value)
    assert "\n" not in msg and "torchvision" in msg and "--decode yolo-anchor-free|yolo-anchors|ssd" in msg
    assert "torch.nn.modules.conv.Conv2d" in msg


# ----------------------------------------------------------------------------------------- end to end (CLI)
@pytest.mark.slow
@pytest.mark.openvino
def test_torchvision_detector_cli_export_validate_run(tmp_path: Path, cli) -> None:
    """torchvision:<name> alone: offline build with a notice, export, validate on ORT + OpenVINO, run on images,
    mAP with --val on a COCO file (categories onto labels 1.., slot 0 is the background) and bench --stages."""
    out = tmp_path / "frcnn"
    proc = cli(
        "export",
        "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
        "-o",
        str(out),
        "--num-classes",
        "3",  # the background + the 2 categories of the --val data below
        "--input-shape",
        "1x3x160x160",
        "--kwarg",
        "min_size=160",
        "--kwarg",
        "max_size=160",
        "--conf",
        "0.05",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    c = res["contract"]
    assert c["task"] == "detect" and c["resize"] == "letterbox" and c["decode"]["nms"] == "graph"
    assert c["input_shape"] == [1, 3, 160, 160] and c["mean"] == [0.0, 0.0, 0.0]
    assert c["class_names"] == ["__background__", "1", "2"]
    assert any("weights_backbone" in n and "not on disk" in n for n in res["notices"])
    assert res["parity_passed"] is True

    proc = cli("validate", str(out), "-b", "onnxruntime", "-b", "openvino", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert [r["passed"] for r in rep["rows"]] == [True, True]

    frames = tmp_path / "frames"
    frames.mkdir()
    import cv2
    from skimage import data

    for i, img in enumerate((data.astronaut(), data.coffee())):
        cv2.imwrite(str(frames / f"{i}.jpg"), np.ascontiguousarray(img[..., ::-1]))
    jsonl = tmp_path / "run.jsonl"
    proc = cli("run", str(out), "--source", str(frames), "-b", "openvino", "--max-frames", "2", "--jsonl", str(jsonl))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(ln) for ln in jsonl.read_text().splitlines() if ln.strip()]
    assert len(lines) == 2 and all(r["results"][0]["task"] == "detect" for r in lines)
    # boxes come back in the original photo's pixels (512×512 astronaut, 600×400 coffee), not the 160 px input
    boxes = [d["box"] for r in lines for d in r["results"][0]["detections"]]
    assert boxes and max(max(b) for b in boxes) > 160

    # mAP on a COCO file: its categories land on labels 1 and 2 (slot 0 is the background), and every
    # backend's mAP equals torch's (same boxes); random weights give no reference box ≥ 0.25 to compare one by one
    from edgecv.data.synth import generate

    generate("detect", tmp_path / "data", n_train=0, n_val=6, size=160, seed=0)
    val = tmp_path / "data" / "val.json"
    coco = json.loads(val.read_text())  # two of the synthetic shapes: the model's labels 1 and 2
    keep = sorted(c["id"] for c in coco["categories"])[:2]
    coco["categories"] = [c for c in coco["categories"] if c["id"] in keep]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] in keep]
    assert coco["annotations"]
    val.write_text(json.dumps(coco))
    proc = cli(
        "validate", str(out), "-b", "onnxruntime", "-b", "openvino", "--val", str(val), "--allow-unchecked", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["backend"]: r for r in json.loads(proc.stdout)["task_metric"]["rows"]}
    assert set(rows) == {"torch", "onnxruntime", "openvino"}
    per_class = rows["torch"]["details"]["classes"]
    assert {k for k, v in per_class.items() if v["gt"]} == {"1", "2"} and "__background__" not in per_class
    assert all(abs(r["metric"] - rows["torch"]["metric"]) <= 0.5 for r in rows.values())

    proc = cli("bench", str(out), "-b", "onnxruntime", "--stages", "--iters", "3", "--warmup", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout)["stages"]["onnxruntime:fp32"]
    assert st["n"] >= 3 and st["pre_ms"] > 0 and st["infer_ms"] > 0 and st["post_ms"] > 0


# ----------------------------------------------------------------------------------------- segmentation, offline
def test_torchvision_segmentation_exports_out_head_only() -> None:
    import torchvision.models as tvm

    from edgecv.export.sources import load_model

    loaded = load_model(
        "torchvision:lraspp_mobilenet_v3_large", model_kwargs={"num_classes": 3}, input_shape=(1, 3, 64, 64)
    )
    assert loaded.contract.task == "segment"
    with torch.no_grad():
        y = loaded.module(torch.zeros(1, 3, 64, 64))
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == (1, 3, 64, 64)  # the `out` head, not {out, aux}
    # torchvision's state-dict keys are kept, so a fine-tuned torchvision checkpoint loads with --weights
    plain = tvm.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=3)
    assert set(loaded.module.state_dict()) == set(plain.state_dict())
    assert any("weights_backbone" in n for n in loaded.notes)


def test_offline_kwargs_only_replace_weights_not_on_disk(tmp_path: Path) -> None:
    import torchvision.models as tvm

    from edgecv.export.sources import _offline_kwargs

    builder = tvm.get_model_builder("fcn_resnet50")
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        kwargs, notes = _offline_kwargs(builder, {"num_classes": 3}, "torchvision:fcn_resnet50")
        assert kwargs == {"num_classes": 3, "weights_backbone": None}
        assert len(notes) == 1 and "\n" not in notes[0] and "ResNet50_Weights.IMAGENET1K_V1" in notes[0]
        # the user's own choice is never overridden
        assert _offline_kwargs(builder, {"weights_backbone": None}, "x") == ({"weights_backbone": None}, [])
        # weights already in the torch hub cache are loaded by the builder: no substitution
        url = tvm.ResNet50_Weights.IMAGENET1K_V1.url
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / url.rsplit("/", 1)[1]).write_bytes(b"")
        assert _offline_kwargs(builder, {}, "x") == ({}, [])
    finally:
        torch.hub.set_dir(old)


# ----------------------------------------------------------------------------------------- --decode
class RawYolo(torch.nn.Module):
    """A raw anchor head nobody wrote an adapter for: two scales, 2 anchors each, 2 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.s8 = torch.nn.Conv2d(3, 2 * 7, 8, stride=8)
        self.s16 = torch.nn.Conv2d(3, 2 * 7, 16, stride=16)

    def forward(self, x: Any) -> Any:
        return self.s8(x), self.s16(x)


def test_declarative_yolo_anchors_graph_and_host_agree() -> None:
    """--decode yolo-anchors: the in-graph decode (zoo code) and the device's host decoder read the raw maps alike."""
    from edgecv.export.adapters.declarative import parse_decode_spec
    from edgecv.tasks.detect import decode_yolo_anchors

    torch.manual_seed(0)
    spec = parse_decode_spec("yolo-anchors", {"strides": "8,16", "anchors": "10,13,16,30/30,61,62,45"})
    loaded = LoadedModel(
        module=RawYolo().eval(),
        contract=Contract(task="detect", input_shape=[1, 3, 64, 64]),
        source_info={},
        name="raw",
    )
    host = prepare_detection_export(loaded, nms="host", decode_spec=spec)
    d = host.contract.decode
    assert d["format"] == "yolo_anchors" and d["num_classes"] == 2 and d["declarative"]["kind"] == "yolo-anchors"
    assert host.contract.output_names == ["head0", "head1"]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        raw = host.module(x)
        tb, ts = host.module.model.decode(tuple(raw.values()))
    nb, ns = decode_yolo_anchors([v.numpy() for v in raw.values()], d["anchors"], d["strides"], 2)
    assert tb.shape == (1, 2 * (8 * 8 + 4 * 4), 4)
    np.testing.assert_allclose(tb.numpy(), nb, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(ts.numpy(), ns, rtol=1e-5, atol=1e-6)
    graph = prepare_detection_export(loaded, nms="graph", decode_spec=spec)
    with torch.no_grad():
        out = graph.module(x)
    assert int(out["num_dets"][0]) > 0


def test_declarative_decode_cli_export(tmp_path: Path, cli) -> None:
    """A file.py:factory raw anchor-free head (already-decoded [B, 4+C, N], YOLOv8 layout) deploys with --decode."""
    src = tmp_path / "raw.py"
    src.write_text(
        "import torch\n"
        "class Head(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4 + 3, 8, stride=8)\n"
        "    def forward(self, x):\n"
        "        y = self.conv(x).flatten(2)\n"
        "        xy = torch.sigmoid(y[:, :2]) * 64\n"
        "        wh = torch.sigmoid(y[:, 2:4]) * 32 + 4\n"
        "        return torch.cat([xy, wh, y[:, 4:]], 1)\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return Head()\n"
    )
    out = tmp_path / "b"
    proc = cli(
        "export",
        f"{src}:build",
        "-o",
        str(out),
        "--input-shape",
        "1x3x64x64",
        "--decode",
        "yolo-anchor-free",
        "--decode-opt",
        "activation=sigmoid",
        "--decode-opt",
        "box=cxcywh",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    c = res["contract"]
    assert c["task"] == "detect" and c["decode"]["num_classes"] == 3 and c["decode"]["nms"] == "graph"
    assert c["decode"]["declarative"] == {
        "kind": "yolo-anchor-free",
        "box": "cxcywh",
        "objectness": False,
        "activation": "sigmoid",
        "layout": "auto",
    }
    assert res["parity_passed"] is True
    proc = cli("export", f"{src}:build", "-o", str(tmp_path / "c"), "--decode", "ssd", "--decode-opt", "strides=8")
    assert proc.returncode == 2 and "--decode-opt strides: --decode ssd takes" in proc.stderr
