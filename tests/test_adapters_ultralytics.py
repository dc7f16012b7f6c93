"""Ultralytics YOLO adapter: edgecv's exported boxes equal Ultralytics' own ``predict()`` on a real photo (ONNX
Runtime and OpenVINO fp32), the ``--trust-checkpoint`` rule, and the CLI export → validate → run chain.

Models are built from Ultralytics' own yamls with seeded random weights and saved as an Ultralytics checkpoint (the
``{"model": DetectionModel, "train_args": ...}`` pickle a trainer writes), so both sides load the very same file.
Random-init heads score low (Ultralytics' bias init), so the score threshold is low; every comparison asserts that
boxes were compared.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [
    pytest.mark.torch,
    pytest.mark.skipif(
        importlib.util.find_spec("ultralytics") is None,
        reason="ultralytics is not installed (pip install 'edgecv[ultralytics]')",
    ),
]

IMGSZ = 160
NC = 3
CONF = 0.02
IOU = 0.5
MAX_DET = 300


def _photo_bgr() -> np.ndarray:
    from skimage import data

    # square, so a random head sees no letterbox padding: a uniform gray band makes hundreds of candidates with
    # bit-identical scores, whose order at max_det is arbitrary in every NMS implementation
    return np.ascontiguousarray(data.astronaut()[..., ::-1])


def _save_checkpoint(yaml: str, path: Path, seed: int = 0) -> Path:
    """A checkpoint as Ultralytics' trainer writes it (``model`` + ``train_args``), random weights from ``seed``."""
    import torch

    from edgecv.export.adapters.ultralytics import _ultralytics

    _ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(yaml, nc=NC, verbose=False)
    # Ultralytics' init gives every anchor the same huge box (box bias 2.0 over flat DFL bins: ~7 strides a side),
    # clipped to the whole image, so NMS would pick among near-copies; favour short distances (low DFL bins) and let
    # the image content move them, so boxes differ by anchor as a trained head's do
    g = torch.Generator().manual_seed(seed)
    head = model.model[-1]
    with torch.no_grad():
        for branch in [head.cv2, getattr(head, "one2one_cv2", None)]:
            for seq in branch or []:
                conv = seq[-1]
                bins = torch.arange(conv.out_channels) % head.reg_max
                conv.weight.normal_(0, 0.1, generator=g)
                if head.reg_max > 1:
                    conv.bias.copy_(-0.6 * bins + 0.5 * torch.randn(conv.out_channels, generator=g))
                else:  # YOLO26: no DFL, the conv gives the four distances (in strides) directly
                    conv.bias.copy_(1.5 + 0.3 * torch.randn(conv.out_channels, generator=g))
        for branch in [head.cv3, getattr(head, "one2one_cv3", None)]:
            for seq in branch or []:  # class scores that vary with the image, so that no two candidates tie
                seq[-1].weight.normal_(0, 0.05, generator=g)
                seq[-1].bias.normal_(-4.0, 0.5, generator=g)
    model.names = {i: f"c{i}" for i in range(NC)}
    torch.save({"model": model, "train_args": {"imgsz": IMGSZ}, "epoch": -1}, path)
    return path


def _ultralytics_predict(ckpt: Path, img: np.ndarray, conf: float = CONF) -> tuple[np.ndarray, np.ndarray]:
    from ultralytics import YOLO

    # rect=False: Ultralytics' eager predict otherwise pads to the smallest stride-multiple rectangle (128x160 here);
    # its fixed-size exports (ONNX, OpenVINO), like edgecv's bundle, letterbox to the full imgsz square
    res = YOLO(str(ckpt)).predict(
        source=img, imgsz=IMGSZ, conf=conf, iou=IOU, max_det=MAX_DET, device="cpu", verbose=False, rect=False
    )[0]
    return res.boxes.xyxy.numpy().astype(np.float64), res.boxes.cls.numpy().astype(np.int64)


def _edgecv_boxes(bundle_dir: Path, backend: str, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from edgecv.backends import open_runner
    from edgecv.bundle import Bundle
    from edgecv.tasks.decode import get_decoder
    from edgecv.tasks.preprocess import preprocess

    bundle = Bundle.open(bundle_dir)
    x, tf = preprocess(img, bundle.contract)
    with open_runner(bundle, backend) as runner:
        out = runner.infer({bundle.contract.input_name: x})
    res: Any = get_decoder(bundle.contract).decode(out, [tf])[0]
    return np.asarray(res.boxes, np.float64), np.asarray(res.classes, np.int64)


def _visible(boxes: np.ndarray, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes with some area inside the photo: a random head also puts boxes in the letterbox padding, which both
    sides clip to zero-area lines that no IoU can compare."""
    keep = ((boxes[:, 2] - boxes[:, 0]) > 0.5) & ((boxes[:, 3] - boxes[:, 1]) > 0.5)
    return boxes[keep], cls[keep]


def _recall(
    ref_boxes: np.ndarray, ref_cls: np.ndarray, boxes: np.ndarray, cls: np.ndarray, iou_min: float = 0.99
) -> float:
    """Share of the reference boxes found, same class, at IoU >= ``iou_min`` (one-to-one greedy match)."""
    from edgecv.tasks.detect import box_iou

    iou = box_iou(ref_boxes, boxes) if len(boxes) else np.zeros((len(ref_boxes), 0))
    iou = np.where(ref_cls[:, None] == cls[None, :], iou, 0.0)
    used: set[int] = set()
    hit = 0
    for i in np.argsort(-iou.max(1) if iou.shape[1] else np.zeros(len(ref_boxes))):
        for j in np.argsort(-iou[i]):
            if iou[i, j] < iou_min:
                break
            if int(j) not in used:
                used.add(int(j))
                hit += 1
                break
    return hit / max(len(ref_boxes), 1)


def _reference(ckpt: Path, img: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(score threshold, Ultralytics' boxes, classes) at the lowest threshold that keeps well under max_det boxes: a
    random head's scores cluster, and at the max_det cap the order among near-equal scores decides what is kept."""
    for conf in (0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7):
        boxes, cls = _visible(*_ultralytics_predict(ckpt, img, conf))
        if 0 < len(boxes) < MAX_DET // 2:
            return conf, boxes, cls
    # an end-to-end head's top-k fills max_det at any threshold here: compare the full top-k
    assert len(boxes) > 0
    return conf, boxes, cls


def _export(ckpt: Path, out: Path, nms: str = "graph", conf: float = CONF) -> Any:
    from edgecv.export.detection import prepare_detection_export
    from edgecv.export.onnx import export_model
    from edgecv.export.sources import load_model

    loaded = load_model(str(ckpt), trust_checkpoint=True)
    loaded = prepare_detection_export(loaded, nms=nms, score_threshold=conf, iou_threshold=IOU, max_det=MAX_DET)
    return export_model(loaded, out, dynamic_batch=False, batch_range=(1, 1, 1), n_reference=1)


@pytest.mark.parametrize(
    "yaml",
    [
        "yolov8n.yaml",
        "yolo26n.yaml",  # NMS-free end-to-end head (graph-native top-k)
        pytest.param("yolov5n.yaml", marks=pytest.mark.slow),  # Ultralytics' v5u (anchor-free head)
        pytest.param("yolov9t.yaml", marks=pytest.mark.slow),  # GELAN backbone, Detect head
        pytest.param("yolo11n.yaml", marks=pytest.mark.slow),
        pytest.param("yolov10n.yaml", marks=pytest.mark.slow),  # v10Detect, NMS-free
        pytest.param("yolo12n.yaml", marks=pytest.mark.slow),  # area attention, Detect head
    ],
)
def test_boxes_equal_ultralytics_predict(yaml: str, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    ckpt = _save_checkpoint(yaml, tmp_path / "best.pt")
    img = _photo_bgr()
    conf, ref_boxes, ref_cls = _reference(ckpt, img)
    res = _export(ckpt, tmp_path / "bundle", conf=conf)
    c = res.contract
    assert c.task == "detect" and c.resize == "letterbox" and c.pad_value == 114 and c.color == "RGB"
    assert c.input_shape == [1, 3, IMGSZ, IMGSZ] and c.mean == [0.0] * 3 and c.std == [1.0] * 3
    assert c.class_names == ["c0", "c1", "c2"]
    assert res.parity_passed
    for backend in ("onnxruntime", "openvino"):
        boxes, cls = _visible(*_edgecv_boxes(tmp_path / "bundle", backend, img))
        assert _recall(ref_boxes, ref_cls, boxes, cls) == 1.0, (yaml, backend, len(ref_boxes), len(boxes))
        # and nothing extra: the same selection, not a superset
        assert len(boxes) == len(ref_boxes), (yaml, backend)


def test_host_nms_equals_graph_nms(tmp_path: Path) -> None:
    ckpt = _save_checkpoint("yolov8n.yaml", tmp_path / "best.pt", seed=1)
    img = _photo_bgr()
    conf, ref_boxes, ref_cls = _reference(ckpt, img)
    res = _export(ckpt, tmp_path / "host", nms="host", conf=conf)
    assert res.contract.decode["format"] == "boxes_scores" and res.contract.output_names == ["head0", "head1"]
    boxes, cls = _visible(*_edgecv_boxes(tmp_path / "host", "onnxruntime", img))
    assert _recall(ref_boxes, ref_cls, boxes, cls) == 1.0 and len(boxes) == len(ref_boxes)


def test_checkpoint_needs_trust_flag(tmp_path: Path, cli) -> None:
    ckpt = _save_checkpoint("yolov8n.yaml", tmp_path / "best.pt")
    proc = cli("export", str(ckpt), "-o", str(tmp_path / "refused"))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "--trust-checkpoint" in lines[0] and "Ultralytics checkpoint" in lines[0], proc.stderr
    assert not (tmp_path / "refused" / "manifest.json").exists()

    out = tmp_path / "ok"
    proc = cli("export", str(ckpt), "-o", str(out), "--trust-checkpoint", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    # the four detection outputs, then the pre-NMS candidates validate compares (issue 18)
    assert rep["contract"]["task"] == "detect" and rep["contract"]["output_names"][:4] == [
        "boxes",
        "scores",
        "classes",
        "num_dets",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    src = manifest["provenance"]["source"]
    assert src["kind"] == "ultralytics_checkpoint" and src["trusted_pickle"] is True

    # the bundle never re-runs the pickle: the live reference is refused (not re-unpickled), even when the user
    # names the checkpoint again; validate falls back to reference.npz
    from edgecv.bundle import Bundle
    from edgecv.errors import ModelSourceError
    from edgecv.export.sources import load_model_from_manifest

    b = Bundle.open(out)
    with pytest.raises(ModelSourceError, match="ultralytics_checkpoint"):
        load_model_from_manifest(b.manifest)
    with pytest.raises(ModelSourceError, match="--trust-checkpoint"):
        load_model_from_manifest(b.manifest, source=str(ckpt))
    # trust does not extend to other files: a plain state dict still loads weights_only, and the flag is refused
    import torch

    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    proc = cli("export", str(tmp_path / "plain.pt"), "-o", str(tmp_path / "x"), "--trust-checkpoint")
    assert proc.returncode == 2 and "only used with an Ultralytics checkpoint" in proc.stderr


def test_factory_model_needs_no_flag(tmp_path: Path) -> None:
    from edgecv.export.detection import prepare_detection_export
    from edgecv.export.sources import load_model

    f = tmp_path / "mine.py"
    f.write_text(
        "from ultralytics.nn.tasks import DetectionModel\n\n"
        "def build(nc=2):\n    return DetectionModel('yolov8n.yaml', nc=nc, verbose=False)\n"
    )
    loaded = load_model(f"{f}:build", model_kwargs={"nc": 2}, input_shape=(1, 3, 128, 128))
    wrapped = prepare_detection_export(loaded)
    c = wrapped.contract
    assert c.task == "detect" and c.resize == "letterbox" and c.mean == [0.0] * 3 and c.class_names == ["0", "1"]
    assert c.input_shape == [1, 3, 128, 128]


def test_yaml_source_and_errors() -> None:
    from edgecv.errors import ConfigError, UnknownNameError
    from edgecv.export.sources import load_model

    loaded = load_model("ultralytics:yolov8n.yaml", model_kwargs={"nc": 2, "imgsz": 96})
    assert loaded.contract.task == "detect" and loaded.contract.input_shape == [1, 3, 96, 96]
    assert loaded.source_info["kind"] == "ultralytics" and loaded.source_info["spec"] == "ultralytics:yolov8n.yaml"
    with pytest.raises(UnknownNameError, match="yolov8n.yaml"):
        load_model("ultralytics:yolov99n.yaml")
    with pytest.raises(ConfigError, match="expected kwargs among"):
        load_model("ultralytics:yolov8n.yaml", model_kwargs={"depth": 2})
    cls = load_model("ultralytics:yolov8n-cls.yaml", model_kwargs={"nc": 4, "imgsz": 64})
    assert cls.contract.task == "classify" and cls.contract.resize == "center_crop"
    assert cls.contract.decode == {"activation": "none"} and len(cls.contract.class_names) == 4
    from edgecv.errors import ModelSourceError

    with pytest.raises(ModelSourceError, match="pose"):
        load_model("ultralytics:yolov8n-pose.yaml")


@pytest.mark.slow
def test_cli_export_validate_run(tmp_path: Path, cli) -> None:
    cv2 = pytest.importorskip("cv2")
    out = tmp_path / "y8"
    proc = cli(
        "export",
        "ultralytics:yolov8n.yaml",
        "--kwarg",
        "nc=1",
        "--kwarg",
        f"imgsz={IMGSZ}",
        "-o",
        str(out),
        "--conf",
        "0",
        "--json",
    )  # an untrained head scores below 0.001: keep max_det boxes. One class: an untrained head scores every class
    # alike (sigmoid of the same bias), and which of the tied classes an anchor keeps is then each engine's rounding
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["contract"]["task"] == "detect"
    # the yaml spelling is a registered name: validate rebuilds the live torch reference from the manifest; an
    # untrained head scores no box >= 0.25, so the box check cannot run: accepted explicitly (the elementwise
    # pre-NMS checks still run and must pass)
    proc = cli("validate", str(out), "-b", "onnxruntime", "-b", "openvino", "--allow-unchecked", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert [r["passed"] for r in rep["rows"]] == [True, True]

    video = tmp_path / "clip.avi"
    img = cv2.resize(_photo_bgr(), (320, 240))
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for k in range(6):
        w.write(np.roll(img, 8 * k, axis=1))
    w.release()
    jl = tmp_path / "dets.jsonl"
    proc = cli(
        "run",
        str(out),
        "--source",
        str(video),
        "-b",
        "onnxruntime",
        "--jsonl",
        str(jl),
        "--conf",
        "0",
        "--save",
        str(tmp_path / "boxes.avi"),
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rows = [json.loads(ln) for ln in jl.read_text().splitlines() if ln.strip()]
    assert len(rows) == 6 and (tmp_path / "boxes.avi").stat().st_size > 0
    assert sum(len(res["detections"]) for r in rows for res in r["results"]) > 0, rows[0]
