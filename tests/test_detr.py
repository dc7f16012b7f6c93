"""DETR-style detector: Hungarian matching is the minimum-cost assignment, the set loss is zero for a perfect
prediction, eval outputs need no NMS (none in the ONNX graph, ``decode.nms: none`` in the contract), and the export
matches torch on ONNX Runtime and OpenVINO."""

from __future__ import annotations

import itertools
import math

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
    logits = torch.randn(6, 8, generator=g)
    boxes = torch.rand(6, 4, generator=g) * 0.5 + 0.25
    labels = torch.tensor([1, 4, 4])
    tb = torch.rand(3, 4, generator=g) * 0.5 + 0.25
    qi, ti = m.match(logits, boxes, labels, tb)
    p = logits.sigmoid()[:, labels]  # Deformable DETR's focal cost, written out
    focal = 0.25 * (1 - p) ** 2 * -torch.log(p) - 0.75 * p**2 * -torch.log(1 - p)
    cost = (
        2 * focal + 5 * torch.cdist(boxes, tb, p=1) - 2 * generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(tb))
    )
    best = min(sum(float(cost[q, t]) for t, q in enumerate(perm)) for perm in itertools.permutations(range(6), 3))
    assert len(qi) == 3 and sorted(ti.tolist()) == [0, 1, 2]
    assert sum(float(cost[q, t]) for q, t in zip(qi, ti)) == pytest.approx(best, abs=1e-5)
    # the batched matching (one cost matrix, one assignment per image block) gives the per-image answers
    lg2, bx2 = torch.randn(6, 8, generator=g), torch.rand(6, 4, generator=g) * 0.5 + 0.25
    lb2, tb2 = torch.tensor([7, 0]), torch.rand(2, 4, generator=g) * 0.5 + 0.25
    empty = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))
    bi, q_all, t_all = m.match_batch(
        torch.stack([logits, lg2, lg2]),
        torch.stack([boxes, bx2, bx2]),
        torch.cat([labels, lb2, empty[0]]),
        torch.cat([tb, tb2, empty[1]]),
        [3, 2, 0],
    )
    q2, t2 = m.match(lg2, bx2, lb2, tb2)
    assert bi.tolist() == [0] * 3 + [1] * 2
    assert q_all.tolist() == qi.tolist() + q2.tolist() and t_all.tolist() == ti.tolist() + (t2 + 3).tolist()


def test_set_loss_is_zero_on_matched_boxes_when_the_prediction_is_exact() -> None:
    m = _model()
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.3, 0.1, 0.2]] + [[0.8, 0.8, 0.1, 0.1]] * 4])
    logits = torch.full((1, 6, 8), -10.0)  # every query says "no object" (all sigmoids low) …
    logits[0, 0, 2] = logits[0, 1, 5] = 20.0  # … except the two that predict the targets
    tgt = [{"boxes": cxcywh_to_xyxy(boxes[0, :2]) * 64, "labels": torch.tensor([2, 5])}]
    loss = m.set_loss(logits, boxes, tgt)
    assert float(loss["loss_bbox"]) == pytest.approx(0, abs=1e-5)
    assert float(loss["loss_giou"]) == pytest.approx(0, abs=1e-5)
    assert float(loss["loss_ce"]) < 1e-3
    # against swapped labels the focal class cost outweighs the box costs: each query is matched to the target of
    # its own class, so the boxes are the wrong ones (L1 per box |0.2|+|0.2|+|0.1|+0 = 0.5)
    bad = m.set_loss(logits, boxes, [{"boxes": tgt[0]["boxes"], "labels": torch.tensor([5, 2])}])
    assert float(bad["loss_ce"]) < 1e-3
    assert float(bad["loss_bbox"]) == pytest.approx(0.5, abs=1e-5) and float(bad["loss_giou"]) > 0.5
    # and with the classes wrong too (a query on each box, both the other class), the class term pays
    wrong = logits.clone()
    wrong[0, 0, 2] = wrong[0, 1, 5] = -10.0
    wrong[0, 0, 3] = wrong[0, 1, 4] = 20.0
    assert float(m.set_loss(wrong, boxes, tgt)["loss_ce"]) > 1.0


def test_training_step_uses_every_decoder_layer_and_eval_sorts_without_nms() -> None:
    m = _model().train()
    x = torch.rand(2, 3, 64, 64)
    out = m(x)
    assert out["logits"].shape == (2, 2, 6, 8) and out["boxes"].shape == (2, 2, 6, 4)
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


def test_queries_are_anchor_boxes_refined_layer_by_layer() -> None:
    from edgecv.zoo.families.detr import inverse_sigmoid, sine_embed

    m = _model().train()
    out = m(torch.rand(2, 3, 64, 64))
    # the box head starts at zero: layer 0 predicts exactly the learnable anchors, in every image
    anchors = torch.sigmoid(m.anchors).detach()
    assert torch.allclose(out["boxes"][0], anchors.expand(2, -1, -1), atol=1e-6)
    # the anchors are also the queries' positions: the last layer's classes depend on them
    out["logits"][-1].sum().backward()
    assert m.anchors.grad is not None and float(m.anchors.grad.abs().sum()) > 0
    assert torch.allclose(inverse_sigmoid(torch.sigmoid(torch.tensor([-3.0, 0.0, 2.0]))), torch.tensor([-3.0, 0, 2]))
    # sine embedding, by hand for one coordinate, 4 channels: sin(2πx), cos(2πx), sin(2πx/100), cos(2πx/100)
    x = 0.3
    ref = [math.sin(2 * math.pi * x), math.cos(2 * math.pi * x)]
    ref += [math.sin(2 * math.pi * x / 100), math.cos(2 * math.pi * x / 100)]
    assert sine_embed(torch.tensor([[x]]), 4)[0].tolist() == pytest.approx(ref, abs=1e-6)


def test_stride_8_doubles_the_token_grid_and_backbone_gets_its_own_rate() -> None:
    from edgecv.train.optim import build_optimizer

    torch.manual_seed(0)
    m = create_model("detr_tiny", stride=8, backbone_lr_scale=0.1)
    assert m.features(torch.rand(1, 3, 64, 64)).shape == (1, 64, 32)  # (64 / 8)² tokens of dim 32
    assert m.pos.shape == (1, 64, 32)
    opt = build_optimizer(m, {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01})
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert lr_of[id(m.backbone.body[0].conv.weight)] == (pytest.approx(1e-4), 0.01)
    assert lr_of[id(m.backbone.body[0].norm.weight)] == (pytest.approx(1e-4), 0.0)
    assert lr_of[id(m.class_head.weight)] == (1e-3, 0.01) and lr_of[id(m.anchors)] == (1e-3, 0.01)
    assert len(lr_of) == sum(1 for _ in m.parameters())
    with pytest.raises(ConfigError, match="detr stride: expected 8 or 16, found 4"):
        create_model("detr_tiny", stride=4)


def test_detr_shapes_uses_its_backbones_normalisation_and_counts_flops() -> None:
    from edgecv.export.check import model_stats
    from edgecv.zoo import model_cfg

    cfg, bb = model_cfg("detr_shapes"), model_cfg("shapes_classifier")
    assert tuple(cfg["mean"]) == tuple(bb["mean"]) and tuple(cfg["std"]) == tuple(bb["std"])
    st = model_stats("detr_tiny")
    assert st["flops_error"] is None and st["flops_device"] == "meta" and st["flops"] > 1_000_000


def test_two_stage_seeds_the_decoder_with_the_encoders_best_tokens() -> None:
    torch.manual_seed(0)
    m = create_model("detr_tiny", two_stage=True).train()
    out = m(torch.rand(2, 3, 64, 64))
    assert out["enc_logits"].shape == (2, 16, 8) and out["enc_boxes"].shape == (2, 16, 4)  # (64 / 16)² tokens
    # at init the box heads predict zero offsets: encoder boxes are the token cells (side 0.25), and the decoder's
    # first boxes are exactly those of the 6 top-scoring tokens
    assert torch.allclose(out["enc_boxes"][0, 5], torch.tensor([0.375, 0.375, 0.25, 0.25]), atol=1e-6)
    top = out["enc_logits"].max(-1).values.topk(6, dim=1).indices
    picked = torch.gather(out["enc_boxes"], 1, top.unsqueeze(-1).expand(-1, -1, 4))
    assert torch.allclose(out["boxes"][0], picked, atol=1e-6)
    tg = [{"boxes": torch.tensor([[4.0, 4, 30, 30]]), "labels": torch.tensor([1])}] * 2
    m.compute_loss(out, tg)["loss"].backward()
    assert m.enc_class.weight.grad is not None and float(m.enc_class.weight.grad.abs().sum()) > 0  # encoder loss
    assert float(m.enc_box[-1].weight.grad.abs().sum()) > 0  # the zero-initialised offset layer learns
    assert not hasattr(m, "anchors")
