"""R-CNN and Fast R-CNN: selective search proposals, RoI pooling export, training losses, the bundle's second input
(rois made on the host) and ``edgecv run`` on a short video. Random weights, tiny images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from edgecv.data.synth import image_rng, render_objects
from edgecv.errors import ConfigError, InputError
from edgecv.tasks.detect import box_iou
from edgecv.tasks.proposals import rois_for_batch, selective_search, tensor_proposals, to_uint8_images
from edgecv.zoo import create_model

pytestmark = pytest.mark.skipif(not hasattr(cv2, "ximgproc"), reason="needs opencv-contrib (cv2.ximgproc)")


def _scene(i: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img, _, boxes = render_objects(image_rng(0, "val", i), size)
    gt = np.array([b for _, b in boxes], np.float32).reshape(-1, 4)
    return np.ascontiguousarray(img[:, :, ::-1]), gt, np.array([c for c, _ in boxes], np.int64)


def _batch(n: int, size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    imgs, targets = [], []
    for i in range(n):
        img, gt, lab = _scene(i, size)
        imgs.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)
        targets.append({"boxes": torch.from_numpy(gt), "labels": torch.from_numpy(lab)})
    return torch.stack(imgs), targets


# ---------------------------------------------------------------------------------------------- proposals
def test_selective_search_returns_capped_deterministic_xyxy_boxes_that_cover_the_objects() -> None:
    hits, total = 0, 0
    for i in range(4):
        img, gt, _ = _scene(i, 96)
        boxes = selective_search(img, max_proposals=150)
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and 1 <= len(boxes) <= 150
        assert (boxes[:, 2] - boxes[:, 0] >= 4).all() and (boxes[:, 3] - boxes[:, 1] >= 4).all()
        assert boxes.min() >= 0 and boxes[:, 2].max() <= 96 and boxes[:, 3].max() <= 96
        assert len(np.unique(boxes, axis=0)) == len(boxes)
        np.testing.assert_array_equal(boxes, selective_search(img, max_proposals=150))  # same image, same order
        np.testing.assert_array_equal(selective_search(img, max_proposals=5), boxes[:5])  # the cap keeps the ranking
        hits += int((box_iou(gt, boxes).max(1) >= 0.5).sum())
        total += len(gt)
    assert total >= 4 and hits / total >= 0.75  # recall of the ground truth at IoU 0.5


def test_rois_layout_and_tensor_proposals_undo_the_preprocessing() -> None:
    rois = rois_for_batch([np.array([[1, 2, 3, 4]], np.float32), np.zeros((0, 4)), np.ones((2, 4))])
    assert rois.dtype == np.float32 and rois.tolist() == [[0, 1, 2, 3, 4], [2, 1, 1, 1, 1], [2, 1, 1, 1, 1]]
    img, _, _ = _scene(0)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    x = ((img.astype(np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)
    np.testing.assert_array_equal(to_uint8_images(x[None], 1 / 255.0, mean, std)[0], img)
    got = tensor_proposals(np.stack([x, x]), mean=mean, std=std, max_proposals=30)
    one = selective_search(img, 30)
    np.testing.assert_array_equal(got[: len(one), 1:], one)
    assert got[: len(one), 0].tolist() == [0] * len(one) and got[len(one) :, 0].tolist() == [1] * len(one)
    with pytest.raises(ConfigError, match="expected one of fast, quality, single, found 'slow'"):
        selective_search(img, mode="slow")
    with pytest.raises(InputError, match=r"expected an \[H,W,3\] uint8 image"):
        selective_search(img.astype(np.float32))


# ---------------------------------------------------------------------------------------------- models
def test_box_encoding_round_trips_and_decoding_clips() -> None:
    from edgecv.zoo.families.rcnn import decode_boxes, encode_boxes

    prop = torch.tensor([[10.0, 10.0, 30.0, 40.0], [0.0, 5.0, 8.0, 9.0]])
    gt = torch.tensor([[12.0, 8.0, 35.0, 44.0], [1.0, 4.0, 9.0, 12.0]])
    t = encode_boxes(gt, prop)
    torch.testing.assert_close(decode_boxes(t[:, None], prop, 64)[:, 0], gt)
    assert torch.allclose(t[0, :2], torch.tensor([10 * (23.5 - 20) / 20, 10 * (26 - 25) / 30]))
    far = decode_boxes(torch.tensor([[[-100.0, 0.0, 0.0, 0.0]]]), prop[:1], 64)
    assert far.min() >= 0 and far.max() <= 64


def test_rcnn_losses_train_the_svms_and_regressors_on_detached_features() -> None:
    torch.manual_seed(0)
    m = create_model("rcnn_tiny").train()
    x, targets = _batch(2)
    losses = m.compute_loss(m(x), targets)
    assert set(losses) == {"loss", "finetune_ce", "svm_hinge", "bbox_ls"} and torch.isfinite(losses["loss"])
    # the hinge loss reaches the SVMs only, never the CNN (the paper trains SVMs on fixed CNN features): the CNN's
    # gradient does not change when the SVM weights do, while the SVMs get one
    conv = next(m.cnn.parameters())

    def grads() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(3)
        g = torch.autograd.grad(m.compute_loss(m(x), targets)["loss"], [conv, m.svm.weight])
        return g[0], g[1]

    g_cnn, g_svm = grads()
    with torch.no_grad():
        m.svm.weight.mul_(50.0).add_(1.0)
    g_cnn2, g_svm2 = grads()
    torch.testing.assert_close(g_cnn, g_cnn2)
    assert g_svm.abs().sum() > 0 and not torch.allclose(g_svm, g_svm2)
    # sampling keeps every ground-truth box as a positive and at most rois_per_image RoIs per image
    props = torch.tensor([[0.0, 0.0, 64.0, 64.0], [1.0, 1.0, 9.0, 9.0]])
    boxes, lab, iou, _, near = m.sample(props, targets[0]["boxes"], targets[0]["labels"])
    n_gt = len(targets[0]["boxes"])
    torch.testing.assert_close(boxes[:n_gt], targets[0]["boxes"])
    assert lab[:n_gt].tolist() == (targets[0]["labels"] + 1).tolist() and (iou[:n_gt] == 1).all()
    assert len(boxes) <= m.rois_per_image and (near[:n_gt] == lab[:n_gt]).all()


def test_fast_rcnn_multitask_loss_and_training_steps_lower_it() -> None:
    torch.manual_seed(0)
    m = create_model("fast_rcnn_tiny").train()
    x, targets = _batch(2)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    first = None
    for _ in range(8):
        torch.manual_seed(1)  # the same RoI sample every step
        losses = m.compute_loss(m(x), targets)
        assert set(losses) == {"loss", "cls_ce", "loc_smooth_l1"}
        torch.testing.assert_close(losses["loss"].detach(), losses["cls_ce"] + losses["loc_smooth_l1"])
        first = float(losses["loss"].detach()) if first is None else first
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert float(losses["loss"].detach()) < 0.7 * first
    with pytest.raises(ConfigError, match="fast_rcnn roi: expected 'pool' or 'align', found 'max'"):
        create_model("fast_rcnn_tiny", roi="max")


@pytest.mark.parametrize(("roi", "op"), [("pool", "MaxRoiPool"), ("align", "RoiAlign")])
def test_roi_pooling_exports_to_onnx_and_matches_on_ort_and_openvino(tmp_path: Path, roi: str, op: str) -> None:
    onnx = pytest.importorskip("onnx")
    from edgecv.export.check import check_module, randomize_norm_stats

    torch.manual_seed(0)
    m = create_model("fast_rcnn_tiny", roi=roi).eval()
    randomize_norm_stats(m)
    x, _ = _batch(2)
    args = m.example_inputs(x)
    assert args[1].shape[1] == 5 and set(args[1][:, 0].tolist()) == {0.0, 1.0}
    res = check_module(m, args, tmp_path, "torchscript", 17)
    assert res["export"]["ok"], res["export"]["error"]
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert op in {n.op_type for n in graph.node} and [i.name for i in graph.input] == ["input", "rois"]
    for rt in ("onnxruntime", "openvino"):
        assert res[rt]["ok"], f"{rt}: {res[rt]['error']}"


def _bundle(name: str, out: Path) -> tuple[object, object]:
    """(prepared model, export result) of a tiny proposal detector bundle (20 boxes, no score threshold)."""
    from edgecv.export.detection import prepare_detection_export
    from edgecv.export.onnx import export_model
    from edgecv.export.sources import load_model

    torch.manual_seed(0)
    loaded = prepare_detection_export(load_model(name), nms="graph", score_threshold=0.0, max_det=20)
    return loaded, export_model(loaded, out, opset=17)


@pytest.fixture(scope="module")
def fast_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, Path]:
    """The fast_rcnn_tiny bundle, exported once for the decode test and the ``edgecv run`` test."""
    out = tmp_path_factory.mktemp("fast_rcnn") / "b"
    loaded, result = _bundle("fast_rcnn_tiny", out)
    return loaded, result, out


def test_bundles_decode_the_same_boxes_as_torch(tmp_path: Path, fast_bundle: tuple[object, object, Path]) -> None:
    pytest.importorskip("onnxruntime")
    from edgecv.export.check import run_onnxruntime
    from edgecv.tasks.decode import get_decoder, make_feed
    from edgecv.tasks.detect import ProposalDecoder
    from edgecv.tasks.preprocess import preprocess

    img, _, _ = _scene(3)
    for name in ("rcnn_tiny", "fast_rcnn_tiny"):
        loaded, result = fast_bundle[:2] if name == "fast_rcnn_tiny" else _bundle(name, tmp_path / name)
        dec = loaded.contract.decode
        assert dec["format"] == "proposals" and dec["nms"] == "host" and dec["proposals"]["input"] == "rois"
        assert dec["proposals"]["method"] == "selective_search" and dec["proposals"]["max_proposals"] == 40
        assert result.parity_passed, result.parity
        contract = result.bundle.manifest.contract
        decoder = get_decoder(contract)
        assert isinstance(decoder, ProposalDecoder)
        x, tf = preprocess(img, contract)
        feed = make_feed(contract, x)
        assert set(feed) == {"input", "rois"} and feed["rois"].shape[1] == 5
        outs = run_onnxruntime(result.bundle.path("model.onnx"), (feed["input"], feed["rois"]))
        got = decoder.decode(dict(zip(contract.output_names, outs)), [tf])[0]
        with torch.no_grad():
            ref = loaded.module(torch.from_numpy(x), torch.from_numpy(feed["rois"]))
        rb, rs, rc = loaded.module.postprocess(ref)[0]
        assert len(got) == len(rs) == 20
        np.testing.assert_allclose(got.scores, rs.numpy(), atol=1e-5)
        np.testing.assert_array_equal(got.classes, rc.numpy())
        np.testing.assert_allclose(got.boxes, tf.to_original(rb.numpy()), atol=1e-3)


@pytest.mark.slow  # two CLI subprocesses (edgecv run, edgecv validate): ~75 s on the shared 2 cores
def test_edgecv_run_computes_proposals_per_frame_and_writes_boxes(
    tmp_path: Path, fast_bundle: tuple[object, object, Path]
) -> None:
    bundle = fast_bundle[2]
    video = tmp_path / "v.mp4"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 10, (64, 64))
    for i in range(4):
        w.write(_scene(i)[0][:, :, ::-1].copy())
    w.release()
    jl = tmp_path / "o.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "edgecv", "run", str(bundle), "--source", str(video), "--drop", "wait"]
    p = subprocess.run([*cmd, "--jsonl", str(jl), "--conf", "0"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    events = [json.loads(line) for line in jl.read_text().splitlines()]
    assert [e["frame"] for e in events] == [0, 1, 2, 3]
    # validate feeds the saved reference inputs plus their host-made rois
    v = subprocess.run(
        [sys.executable, "-m", "edgecv", "validate", str(bundle), "-b", "onnxruntime"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert v.returncode == 0, v.stderr
    for e in events:
        dets = e["results"][0]["detections"]
        assert 1 <= len(dets) <= 20
        for d in dets:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64 and 0 <= d["score"] <= 1 and 0 <= d["class_id"] < 8
