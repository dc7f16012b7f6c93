"""DETR-style detector: Hungarian matching is the minimum-cost assignment, the set loss is zero for a perfect
prediction, eval outputs need no NMS (none in the ONNX graph, ``decode.nms: none`` in the contract), and the export
matches torch on ONNX Runtime and OpenVINO."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from edgecv.errors import ConfigError
from edgecv.zoo import create_model
from edgecv.zoo.detection.boxes import cxcywh_to_xyxy, generalized_box_iou

pytestmark = pytest.mark.torch


def _model():
    torch.manual_seed(0)
    return create_model("detr_tiny")


def test_hungarian_match_is_the_minimum_cost_assignment() -> None:
    m = _model()
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 9, generator=g)
    boxes = torch.rand(6, 4, generator=g) * 0.5 + 0.25
    labels = torch.tensor([1, 4, 4])
    tb = torch.rand(3, 4, generator=g) * 0.5 + 0.25
    qi, ti = m.match(logits, boxes, labels, tb)
    prob = logits.softmax(-1)[:, labels]
    cost = 5 * torch.cdist(boxes, tb, p=1) - prob - 2 * generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(tb))
    best = min(sum(float(cost[q, t]) for t, q in enumerate(perm)) for perm in itertools.permutations(range(6), 3))
    assert len(qi) == 3 and sorted(ti.tolist()) == [0, 1, 2]
    assert sum(float(cost[q, t]) for q, t in zip(qi, ti)) == pytest.approx(best, abs=1e-5)


def test_set_loss_is_zero_on_matched_boxes_when_the_prediction_is_exact() -> None:
    m = _model()
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.2]] + [[0.8, 0.8, 0.1, 0.1]] * 4])
    logits = torch.full((1, 6, 9), -10.0)
    logits[0, :, 8] = 10.0  # every query says "no object" …
    logits[0, 0, 2] = logits[0, 1, 5] = 20.0  # … except the two that predict the targets
    tgt = [{"boxes": cxcywh_to_xyxy(boxes[0, :2]) * 64, "labels": torch.tensor([2, 5])}]
    loss = m.set_loss(logits, boxes, tgt)
    assert float(loss["loss_bbox"]) == pytest.approx(0, abs=1e-5)
    assert float(loss["loss_giou"]) == pytest.approx(0, abs=1e-5)
    assert float(loss["loss_ce"]) < 1e-3
    # the same prediction against swapped labels is penalised by the class term only
    bad = m.set_loss(logits, boxes, [{"boxes": tgt[0]["boxes"], "labels": torch.tensor([5, 2])}])
    assert float(bad["loss_ce"]) > 1.0


def test_training_step_uses_every_decoder_layer_and_eval_sorts_without_nms() -> None:
    m = _model().train()
    x = torch.rand(2, 3, 64, 64)
    out = m(x)
    assert out["logits"].shape == (2, 2, 6, 9) and out["boxes"].shape == (2, 2, 6, 4)
    tg = [
        {"boxes": torch.tensor([[4.0, 4, 30, 30]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    loss = m.compute_loss(out, tg)
    loss["loss"].backward()
    assert m.decoder[0].cross_attn.q.weight.grad is not None  # the auxiliary loss reaches the first layer
    m.eval()
    m.set_postprocess(0.2, 0.5, 100)
    with torch.no_grad():
        d = m(x)
    assert d["boxes"].shape == (2, 6, 4) and d["classes"].dtype == torch.int64
    assert bool((d["scores"][:, :-1] >= d["scores"][:, 1:]).all())  # best first
    assert d["num_dets"].tolist() == (d["scores"] >= 0.2).sum(1).tolist()


@pytest.mark.onnxruntime
@pytest.mark.openvino
def test_export_has_no_nms_and_matches_on_ort_and_openvino(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    from edgecv.export.check import check_module
    from edgecv.export.detection import prepare_detection_export
    from edgecv.export.sources import load_model

    loaded = prepare_detection_export(load_model("detr_tiny"), nms="graph", score_threshold=0.05)
    dec = loaded.contract.decode
    assert dec["nms"] == "none" and dec["format"] == "set" and dec["max_det"] == 6 and "iou_threshold" not in dec
    assert loaded.contract.output_names == ["boxes", "scores", "classes", "num_dets"]
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    res = check_module(loaded.module, x, tmp_path, "torchscript", 17)
    assert res["export"]["ok"], res["export"]["error"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert "NonMaxSuppression" not in ops
    for rt in ("onnxruntime", "openvino"):
        assert res[rt]["ok"], f"{rt}: {res[rt]['error']}"
    with pytest.raises(ConfigError, match="--nms host: DETR is a set-prediction detector"):
        prepare_detection_export(load_model("detr_tiny"), nms="host")
    with pytest.raises(ConfigError, match="--nms none: FasterRCNNDetector predicts overlapping candidates"):
        prepare_detection_export(load_model("fasterrcnn_tiny"), nms="none")


def test_runtime_decoder_for_nms_none_reads_the_padded_outputs() -> None:
    import numpy as np

    from edgecv.bundle import Contract
    from edgecv.tasks.decode import DECODERS, decoder_key, get_decoder

    c = Contract(
        task="detect",
        input_shape=[1, 3, 64, 64],
        class_names=[str(i) for i in range(8)],
        output_names=["boxes", "scores", "classes", "num_dets"],
        decode={"nms": "none", "format": "set", "score_threshold": 0.3, "max_det": 6, "num_classes": 8},
    )
    assert decoder_key(c) == "detect:none" and "detect:none" in DECODERS.names()
    dec = get_decoder(c)
    outs = {
        "boxes": np.array([[[1, 2, 10, 12], [0, 0, 5, 5]]], np.float32),
        "scores": np.array([[0.9, 0.2]], np.float32),
        "classes": np.array([[3, 1]], np.int64),
        "num_dets": np.array([2], np.int64),
    }
    from edgecv.tasks.preprocess import Transform

    res = dec.decode(outs, [Transform(0.5, 0.5, 0.0, 0.0, (128, 128))])
    dets = res[0].to_json()["detections"]
    assert len(dets) == 1 and dets[0]["class_id"] == 3 and dets[0]["box"] == [2.0, 4.0, 20.0, 24.0]
