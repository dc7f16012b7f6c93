"""INT8: calibration sources, QDQ (ORT), NNCF IR (OpenVINO), accuracy budget, method auto, heads, diagnosis.

A tiny CNN is trained for a few seconds on a separable synthetic task (class = dominant colour), so top-1
means something; an "outlier" copy of it has one conv channel scaled by 1000 (and the next conv's weights
divided by 1000: same function in fp32) so per-tensor INT8 activations of that layer crush every other channel.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_bundle

pytestmark = [pytest.mark.onnxruntime, pytest.mark.torch, pytest.mark.stream]

SIZE = 32
CLASSES = ["red", "green", "blue", "gray"]


# ------------------------------------------------------------------------------------------------ fixtures
def _synthetic_image(cls: int, rng: np.random.Generator) -> np.ndarray:
    """A BGR uint8 image whose class is its dominant colour, with noise and a random bright square."""
    img = rng.integers(40, 110, (SIZE + 8, SIZE + 8, 3)).astype(np.int32)
    if cls < 3:
        img[..., 2 - cls] += 110  # BGR: red is channel 2
    else:
        img += 40
    y, x = rng.integers(0, SIZE - 8, 2)
    img[y : y + 8, x : x + 8] += rng.integers(0, 60)
    return img.clip(0, 255).astype(np.uint8)


def _write_imagefolder(root: Path, per_class: int, seed: int) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{i:03d}.png"), _synthetic_image(c, rng))
    return root


def _train_tiny(contract, train_dir: Path):
    import torch
    from torch import nn

    from edgecv.validate.metrics import read_imagefolder

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, len(CLASSES)),
    )
    data = list(read_imagefolder(train_dir, contract))
    x = torch.from_numpy(np.concatenate([f[contract.input_name] for f, _ in data]))
    y = torch.tensor([t for _, t in data])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return model.eval()


def _make_outlier(model):
    """Same function in fp32; channel 0 of the first conv is 1000x larger (an outlier activation channel)."""
    import copy

    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        m[0].weight[0] *= 1000.0
        m[0].bias[0] *= 1000.0
        m[2].weight[:, 0] /= 1000.0
    return m


def _export_bundle(model, contract, root: Path):
    import onnx
    import torch

    from edgecv.bundle import CONTRACT_KEY, ONNX_FILE, REFERENCE_FILE, Bundle, Manifest, save_reference

    work = root.parent / f".{root.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32))
    path = work / ONNX_FILE
    torch.onnx.export(
        model,
        (x[:1],),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    m = onnx.load(str(path))
    m.metadata_props.add(key=CONTRACT_KEY, value=contract.to_json())
    onnx.save(m, str(path))
    with torch.no_grad():
        y = model(x).numpy()
    save_reference(work / REFERENCE_FILE, {"input": x.numpy()}, {"output": y})
    b = Bundle.create(
        root,
        Manifest(name=root.name, contract=contract),
        {ONNX_FILE: path, REFERENCE_FILE: work / REFERENCE_FILE},
        force=True,
    )
    work.rmdir()
    return b


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """Trained tiny classifier bundle, its outlier twin, calib folder and val ImageFolder."""
    from edgecv.bundle import Contract

    root = tmp_path_factory.mktemp("quant")
    contract = Contract(
        task="classify",
        input_shape=[1, 3, SIZE, SIZE],
        class_names=CLASSES,
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        batch_range=[1, 1, 8],
    )
    train = _write_imagefolder(root / "train", 30, seed=1)
    val = _write_imagefolder(root / "val", 15, seed=2)
    calib = _write_imagefolder(root / "calib", 10, seed=3)
    model = _train_tiny(contract, train)
    good = _export_bundle(model, contract, root / "good")
    outlier = _export_bundle(_make_outlier(model), contract, root / "outlier")
    return {"root": root, "contract": contract, "val": val, "calib": calib, "good": good.root, "outlier": outlier.root}


def _copy_bundle(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture()
def tiny(tmp_path):
    """make_tiny_bundle + an .npz of 40 calibration inputs."""
    b = make_tiny_bundle(tmp_path / "tiny", size=32)
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(5).standard_normal((40, 3, 32, 32)).astype(np.float32))
    return b, calib


# ------------------------------------------------------------------------------------------------ calibration
def test_calib_folder_count_limit_and_preprocessing(task) -> None:
    import cv2

    from edgecv.quant.calib import ImageFolderSource, open_calibration
    from edgecv.tasks.preprocess import preprocess

    src = open_calibration(task["calib"], task["contract"])
    assert isinstance(src, ImageFolderSource) and len(src) == 40
    feeds = list(src)
    assert len(feeds) == 40 and set(feeds[0]) == {"input"}
    assert feeds[0]["input"].shape == (1, 3, SIZE, SIZE) and feeds[0]["input"].dtype == np.float32
    want = preprocess(cv2.imread(str(src.files[0])), task["contract"])[0]
    np.testing.assert_array_equal(feeds[0]["input"], want)
    # contract mean/std applied: RGB channel order, (x/255 - 0.5)/0.25
    raw = cv2.cvtColor(cv2.resize(cv2.imread(str(src.files[0])), (SIZE, SIZE)), cv2.COLOR_BGR2RGB)
    np.testing.assert_allclose(feeds[0]["input"][0].transpose(1, 2, 0), (raw / 255.0 - 0.5) / 0.25, atol=1e-5)
    limited = open_calibration(task["calib"], task["contract"], limit=7)
    assert len(limited) == 7 == len(list(limited))


def test_calib_video_sampled_evenly(tmp_path, task) -> None:
    import cv2

    from edgecv.quant.calib import VideoSource, open_calibration
    from edgecv.tasks.preprocess import preprocess

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 40))
    frames = [np.full((40, 48, 3), 10 * i, dtype=np.uint8) for i in range(21)]
    for f in frames:
        writer.write(f)
    writer.release()
    src = open_calibration(path, task["contract"], limit=5)
    assert isinstance(src, VideoSource) and len(src) == 5
    assert src.indices == [0, 5, 10, 15, 20]
    feeds = list(src)
    assert len(feeds) == 5
    for idx, feed in zip(src.indices, feeds):
        # MJPG is lossy: compare to the preprocessed original frame within a small tolerance
        want = preprocess(frames[idx], task["contract"])[0]
        assert np.abs(feed["input"] - want).mean() < 0.1


def test_calib_npz_and_errors(tmp_path, tiny) -> None:
    from edgecv.errors import ConfigError, DataError
    from edgecv.quant.calib import NpzSource, open_calibration

    b, calib = tiny
    src = open_calibration(calib, b.contract, limit=10)
    assert isinstance(src, NpzSource) and len(src) == 10
    arrs = [f["input"] for f in src]
    full = np.load(calib)["input"]
    np.testing.assert_array_equal(arrs[0], full[:1])
    np.testing.assert_array_equal(arrs[-1], full[39:40])
    # a bundle's reference.npz works as calibration data too
    assert len(open_calibration(b.reference_path, b.contract)) == 4
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((3, 3, 16, 16), np.float32))
    with pytest.raises(DataError, match=r"expected shape \(N, 3, 32, 32\)"):
        open_calibration(bad, b.contract)
    with pytest.raises(ConfigError, match="needs calibration data"):
        open_calibration(None, b.contract)
    with pytest.raises(ConfigError, match="found nothing"):
        open_calibration(tmp_path / "nope", b.contract)


def test_few_samples_warns(tiny) -> None:
    from edgecv.quant.calib import CalibrationWarning, check_sample_count, open_calibration

    b, calib = tiny
    src = open_calibration(calib, b.contract)
    with pytest.warns(CalibrationWarning, match="40 samples.*at least 300"):
        check_sample_count(src, "openvino", "minmax")
    with pytest.warns(CalibrationWarning, match="at least 100"):
        check_sample_count(src, "onnxruntime", "entropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_sample_count(src, "onnxruntime", "minmax") == 40


def test_auto_warns_naming_the_method_it_chose(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 finding 11: under --method auto the sample-count warning names the method the INT8 model was built
    with (it used to name minmax before the choice), and it is given once."""
    from edgecv.quant import QuantConfig, api, quantize
    from edgecv.quant.calib import CalibrationWarning

    b, calib = tiny
    monkeypatch.setattr(api, "METHODS", ("entropy",))  # the only candidate: auto must choose entropy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        art = quantize(b, QuantConfig(backend="onnxruntime", calib=calib, method="auto")).artifact
    assert art is not None and art.build_flags["method"] == "entropy"
    notes = [str(w.message) for w in caught if issubclass(w.category, CalibrationWarning)]
    assert len(notes) == 1, notes
    assert notes[0].startswith("calibrating onnxruntime (entropy, chosen by --method auto) with 40 samples"), notes
    assert notes[0].endswith("at least 100 are recommended for stable ranges"), notes


# ------------------------------------------------------------------------------------------------ artifacts
def test_ort_qdq_artifact(tiny) -> None:
    import onnx

    from edgecv.backends.onnxruntime import OnnxRuntimeRunner
    from edgecv.bundle import Bundle
    from edgecv.quant import QuantConfig, quantize
    from edgecv.quant.layers import quantized_nodes

    b, calib = tiny
    art = quantize(b, QuantConfig(backend="onnxruntime", calib=calib, method="minmax")).artifact
    assert art.key == "onnxruntime:int8" and art.path == "onnxruntime/int8/model.qdq.onnx"
    reopened = Bundle.open(b.root)  # hashes verified
    saved = reopened.artifact("onnxruntime", "int8")
    assert saved is not None and saved.extra["samples"] == 40 and saved.extra["method"] == "minmax"
    assert saved.extra["kept_float"] == [] and saved.build_flags["format"] == "QDQ"
    model = onnx.load(str(b.path(art.path)))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and "DequantizeLinear" in ops
    # symmetric activations: every activation zero point is 0 (TensorRT needs it)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zps and all(np.all(z == 0) for z in zps)
    assert {"/0/Conv", "/3/Conv", "/8/Gemm"} <= set(quantized_nodes(model))
    ref = b.load_reference()
    with OnnxRuntimeRunner.from_path(b.path(art.path), device="CPU") as r:
        out = r.infer({"input": ref["inputs"]["input"]})["output"]
    assert _cos(out, ref["outputs"]["output"]) > 0.99
    assert not np.allclose(out, ref["outputs"]["output"], atol=1e-6)  # really quantized
    assert saved.extra["metrics"]["output_cosine"] > 0.99


@pytest.mark.openvino
def test_openvino_nncf_int8_ir(tiny) -> None:
    import openvino as ov

    from edgecv.backends.openvino import OpenVINORunner
    from edgecv.quant import QuantConfig, quantize

    b, calib = tiny
    with pytest.warns(UserWarning, match="at least 300"):
        art = quantize(b, QuantConfig(backend="openvino", calib=calib, method="minmax")).artifact
    assert art.path == "openvino/int8/model.xml" and (b.root / "openvino/int8/model.bin").is_file()
    model = ov.Core().read_model(str(b.path(art.path)))
    n_fq = sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    assert n_fq >= 3
    assert art.extra["quantized_layers"] >= 3 and art.extra["samples"] == 40
    ref = b.load_reference()
    with OpenVINORunner.from_path(b.path(art.path), precision="int8") as r:
        out = r.infer({"input": ref["inputs"]["input"]})["output"]
    assert _cos(out, ref["outputs"]["output"]) > 0.98


# ------------------------------------------------------------------------------------------------ budget
def test_budget_keeps_sensitive_layers_float(tmp_path, task) -> None:
    from edgecv.bundle import Bundle
    from edgecv.quant import QuantConfig, quantize

    b = Bundle.open(_copy_bundle(task["outlier"], tmp_path / "outlier"))
    plain = quantize(b, QuantConfig(calib=task["calib"], val=task["val"])).artifact
    m = plain.extra["metrics"]
    assert m["fp32"] >= 95.0 and m["drop"] > 40.0  # the outlier channel wrecks plain INT8
    art = quantize(b, QuantConfig(calib=task["calib"], val=task["val"], max_drop=3.0)).artifact
    m = art.extra["metrics"]
    assert m["drop"] <= 3.0 and m["int8"] >= m["fp32"] - 3.0
    kept = art.extra["kept_float"]
    assert "/2/Conv" in kept  # the conv that reads the outlier tensor
    assert 0 < len(kept) < 4  # not everything: the rest stays INT8
    assert art.extra["budget"]["met"] and art.extra["budget"]["trials"][0]["drop"] > 40.0
    saved = json.loads((b.root / "manifest.json").read_text())["artifacts"]["onnxruntime:int8"]
    assert saved["extra"]["kept_float"] == kept
    # the QDQ model really has those nodes without quantized inputs
    import onnx

    from edgecv.quant.layers import quantized_nodes

    q = set(quantized_nodes(onnx.load(str(b.path(art.path)))))
    assert not q & set(kept) and q


@pytest.mark.openvino
def test_budget_choice_applies_to_openvino(tmp_path, task) -> None:
    import openvino as ov

    from edgecv.bundle import Bundle
    from edgecv.quant import QuantConfig, quantize
    from edgecv.quant import openvino as qov

    b = Bundle.open(_copy_bundle(task["outlier"], tmp_path / "outlier"))
    with pytest.warns(UserWarning):  # noqa: PT031 (either build may be the one that warns)
        ort_art = quantize(b, QuantConfig(calib=task["calib"], val=task["val"], max_drop=3.0)).artifact
        ov_art = quantize(
            b, QuantConfig(backend="openvino", calib=task["calib"], val=task["val"], max_drop=3.0)
        ).artifact
    assert set(ort_art.extra["kept_float"]) <= set(ov_art.extra["kept_float"])
    assert ov_art.extra["metrics"]["drop"] <= 3.0
    model = ov.Core().read_model(str(b.path(ov_art.path)))
    quantized = set(qov.quantized_ops(model))
    assert "/2/Conv/WithoutBiases" not in quantized and quantized  # kept float on OpenVINO too


def test_impossible_budget_fails_listing_layers(tmp_path, task) -> None:
    from edgecv.bundle import Bundle
    from edgecv.errors import AccuracyError
    from edgecv.quant import QuantConfig, quantize

    b = Bundle.open(_copy_bundle(task["outlier"], tmp_path / "outlier"))
    with pytest.raises(
        AccuracyError, match=r"budget not met: expected a drop <= -1.*layers tried in float: \[.*/2/Conv"
    ):
        quantize(b, QuantConfig(calib=task["calib"], val=task["val"], max_drop=-1.0))
    assert b.artifact("onnxruntime", "int8") is None  # nothing recorded on failure
    from edgecv.errors import ConfigError

    with pytest.raises(ConfigError, match="--max-drop needs --val"):
        quantize(b, QuantConfig(calib=task["calib"], max_drop=1.0))


def test_method_auto_picks_best(tmp_path, task) -> None:
    from edgecv.bundle import Bundle
    from edgecv.quant import QuantConfig, quantize

    b = Bundle.open(_copy_bundle(task["good"], tmp_path / "good"))
    art = quantize(b, QuantConfig(calib=task["calib"], method="auto")).artifact
    tried = art.extra["methods_tried"]
    assert set(tried) == {"minmax", "entropy", "percentile"}
    assert art.extra["method"] == max(tried, key=tried.get) and art.build_flags["method"] == art.extra["method"]
    assert len(set(tried.values())) > 1  # the methods really differ
    assert art.extra["metrics"]["output_cosine"] == pytest.approx(tried[art.extra["method"]], abs=1e-9)


def test_method_auto_skips_a_method_that_fails(tiny, monkeypatch) -> None:
    """NNCF's histogram (entropy) fails on an R-CNN's near-constant tensors ("Too many bins for data range"):
    --method auto keeps choosing among the methods that work and records why the other failed; when every
    method fails it is one error naming each reason."""
    import edgecv.quant.api as qapi
    from edgecv.errors import BackendError
    from edgecv.quant import QuantConfig, quantize

    real = qapi.quantize_qdq
    broken = {"entropy"}

    def flaky(prepared, out, calib, method, exclude):  # type: ignore[no-untyped-def]
        if method in broken:
            raise BackendError(f"{method} failed: Too many bins for data range")
        return real(prepared, out, calib, method, exclude)

    monkeypatch.setattr(qapi, "quantize_qdq", flaky)
    b, calib = tiny
    art = quantize(b, QuantConfig(backend="onnxruntime", calib=calib, method="auto")).artifact
    assert set(art.extra["methods_tried"]) == {"minmax", "percentile"}
    assert art.extra["methods_failed"] == {"entropy": "entropy failed: Too many bins for data range"}
    assert art.extra["method"] in {"minmax", "percentile"}
    assert ["auto: entropy", "failed: entropy failed: Too many bins for data range"] in qapi.summarize(art.extra)
    broken.update({"minmax", "percentile"})
    with pytest.raises(BackendError, match=r"every calibration method failed: minmax: .*entropy: .*percentile: "):
        quantize(b, QuantConfig(backend="onnxruntime", calib=calib, method="auto"))


# ------------------------------------------------------------------------------------------------ heads
def test_detector_head_stays_float(tmp_path) -> None:
    import onnx
    import torch
    from torch import nn

    from edgecv.bundle import Contract
    from edgecv.quant.calib import NpzSource
    from edgecv.quant.layers import float_head_nodes, quantized_nodes
    from edgecv.quant.ort import prepare_fp32, quantize_qdq

    class Det(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
            self.box = nn.Conv2d(8, 4, 1)
            self.cls = nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.stem(x)
            b = self.box(f).flatten(2).transpose(1, 2)
            xy = torch.sigmoid(b[..., :2]) * 2.0 + 0.5
            wh = torch.exp(b[..., 2:])
            c = torch.sigmoid(self.cls(f).flatten(2).transpose(1, 2))
            return torch.cat([xy, wh, c], dim=-1)

    torch.manual_seed(0)
    path = tmp_path / "det.onnx"
    torch.onnx.export(
        Det().eval(),
        (torch.randn(1, 3, 32, 32),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
    )
    prep = prepare_fp32(path, tmp_path / "prep.onnx")
    model = onnx.load(str(prep))
    head = float_head_nodes(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    head_ops = {ops[n] for n in head}
    assert {"Sigmoid", "Exp", "Concat", "Transpose"} <= head_ops and "Conv" not in head_ops
    convs = [n for n, o in ops.items() if o == "Conv"]
    assert not set(convs) & set(head) and len(convs) == 3
    assert ops[
        "/stem/stem.1/Relu" if "/stem/stem.1/Relu" in ops else next(n for n in ops if "Relu" in n)
    ] not in head_ops or all("Relu" not in n for n in head)
    np.savez(tmp_path / "c.npz", input=np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))
    calib = NpzSource(tmp_path / "c.npz", Contract(input_shape=[1, 3, 32, 32]))
    qdq = quantize_qdq(prep, tmp_path / "q.onnx", calib, exclude=head)
    q = onnx.load(str(qdq))
    quantized = set(quantized_nodes(q))
    assert set(convs) <= quantized and not quantized & set(head)
    # the graph output is not quantized: the last op is the float Concat
    assert next(n for n in q.graph.node if "output" in n.output).op_type == "Concat"


# ------------------------------------------------------------------------------------------------ diagnosis
def test_layer_divergence_finds_outlier_layer(tmp_path, task) -> None:
    from edgecv.bundle import Bundle
    from edgecv.quant import QuantConfig, quantize
    from edgecv.quant.calib import open_calibration
    from edgecv.quant.layers import first_diverged, layer_divergence

    b = Bundle.open(_copy_bundle(task["outlier"], tmp_path / "outlier"))
    quantize(b, QuantConfig(calib=task["calib"]))
    feeds = list(open_calibration(task["val"], task["contract"], limit=8))
    rows = layer_divergence(b, feeds=feeds)
    assert [r.node for r in rows][:2] == ["/0/Conv", "/1/Relu"]
    assert rows[0].cosine > 0.999 and not rows[0].diverged  # conv0's own output is fine
    first = first_diverged(rows, 1)[0]
    # Relu output norm is dominated by the 1000x channel; the conv that mixes the crushed channels shows it
    assert first.node == "/2/Conv" and first.rel_error > 0.1 and first.local_error > 0.1
    good = Bundle.open(_copy_bundle(task["good"], tmp_path / "good"))
    quantize(good, QuantConfig(calib=task["calib"]))
    rows = layer_divergence(good, feeds=feeds)
    assert rows and not first_diverged(rows) and min(r.cosine for r in rows) > 0.99


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.openvino
def test_cli_quantize_writes_qdq_bundle_that_ort_and_openvino_run(tmp_path, task, cli) -> None:
    import onnx

    from edgecv.backends.onnxruntime import OnnxRuntimeRunner
    from edgecv.backends.openvino import OpenVINORunner
    from edgecv.bundle import Bundle

    out = tmp_path / "int8"
    proc = cli(
        "quantize",
        str(task["outlier"]),
        "--calib",
        str(task["calib"]),
        "-o",
        str(out),
        "--val",
        str(task["val"]),
        "--max-drop",
        "3",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["samples"] == 40 and info["kept_float"] == ["/2/Conv"] and info["metrics"]["drop"] <= 3
    b = Bundle.open(out)
    assert b.contract == task["contract"] and b.reference_path.is_file() and (out / "fp32/model.onnx").is_file()
    assert b.manifest.provenance["quantized"]["kept_float"] == ["/2/Conv"]
    from edgecv.results import load_results  # the budgeted search is kept in the new bundle's results/

    rec = load_results(b).latest("quantize")
    assert rec is not None and rec["result"]["kept_float"] == ["/2/Conv"] and rec["command"][1] == "quantize"
    model = onnx.load(str(b.onnx_path))
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) >= 2
    ref = b.load_reference()
    x = ref["inputs"]["input"]
    with (
        OnnxRuntimeRunner.from_path(b.onnx_path, device="CPU") as r1,
        OpenVINORunner.from_path(b.onnx_path, precision="int8") as r2,
    ):
        a, o = r1.infer({"input": x})["output"], r2.infer({"input": x})["output"]
    assert _cos(a, ref["outputs"]["output"]) > 0.99 and _cos(o, ref["outputs"]["output"]) > 0.99
    assert _cos(a, o) > 0.99


def test_cli_quantize_errors(tmp_path, task, cli) -> None:
    proc = cli("quantize", str(task["good"]), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "needs calibration data" in proc.stderr and not (tmp_path / "o").exists()
    proc = cli(
        "quantize",
        str(task["outlier"]),
        "--calib",
        str(task["calib"]),
        "-o",
        str(tmp_path / "o"),
        "--val",
        str(task["val"]),
        "--max-drop",
        "-1",
    )
    assert proc.returncode == 2 and "budget not met" in proc.stderr and "/2/Conv" in proc.stderr
    assert not (tmp_path / "o").exists()
    proc = cli(
        "quantize", str(task["good"]), "--calib", str(task["calib"]), "-o", str(tmp_path / "o"), "--method", "kl"
    )
    assert proc.returncode == 2 and "expected one of minmax, entropy, percentile, auto" in proc.stderr


@pytest.mark.openvino
@pytest.mark.slow
def test_openvino_accuracy_control_reverts_same_layer(tmp_path, task) -> None:
    """No prior choice on the bundle: NNCF's quantize_with_accuracy_control picks the layer; it maps back."""
    from edgecv.bundle import Bundle
    from edgecv.quant import QuantConfig, quantize

    b = Bundle.open(_copy_bundle(task["outlier"], tmp_path / "outlier"))
    assert not b.manifest.artifacts
    with pytest.warns(UserWarning):
        art = quantize(b, QuantConfig(backend="openvino", calib=task["calib"], val=task["val"], max_drop=3.0)).artifact
    trials = art.extra["budget"]["trials"]
    assert trials[0]["drop"] > 40.0 and trials[-1]["drop"] <= 3.0
    assert art.extra["kept_float"] == ["/2/Conv"] and art.extra["metrics"]["drop"] <= 3.0


@pytest.mark.openvino
def test_int8_candidate_runner_keeps_float_layers_in_f32(tmp_path: Path) -> None:
    """The budget search must score the model the deployed runner runs: float layers in f32, not the CPU's bf16."""
    from helpers import make_tiny_bundle

    from edgecv.backends.openvino import OpenVINORunner

    bundle = make_tiny_bundle(tmp_path / "b")
    with OpenVINORunner.from_path(bundle.onnx_path, device="CPU") as r:
        assert "float32" in str(r._compiled.get_property("INFERENCE_PRECISION_HINT")).lower()


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_entropy_calibration_on_a_detector_with_nms_in_the_graph(tmp_path: Path) -> None:
    """Tensors after NonMaxSuppression change length per image; histogram calibration must leave them out."""
    import numpy as np
    import onnx

    from edgecv.bundle import Bundle
    from edgecv.export import export_model, load_model
    from edgecv.export.detection import prepare_detection_export
    from edgecv.quant import QuantConfig, quantize
    from edgecv.quant.ort import calibratable_op_types

    loaded = prepare_detection_export(load_model("yolov3_test"), nms="graph")
    export_model(loaded, tmp_path / "det", n_reference=2, dynamic_batch=False)
    bundle = Bundle.open(tmp_path / "det")
    types = calibratable_op_types(onnx.load(str(bundle.onnx_path)))
    assert types is not None and "Conv" in types and "NonMaxSuppression" not in types and "Gather" not in types
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", input=rng.standard_normal((8, *bundle.contract.input_shape[1:]), dtype=np.float32))
    art = quantize(bundle, QuantConfig(backend="onnxruntime", calib=tmp_path / "calib.npz", method="entropy")).artifact
    q = onnx.load(str(bundle.root / art.path))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)


def test_json_stdout_is_only_json_while_calibrators_print(tmp_path, task, cli) -> None:
    """ORT's entropy/percentile calibrators print progress to stdout; --json must still be one JSON document."""
    out = _copy_bundle(task["good"], tmp_path / "b")
    proc = cli(
        "compile",
        str(out),
        "-b",
        "onnxruntime",
        "-p",
        "int8",
        "--calib",
        str(task["calib"]),
        "--method",
        "auto",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["artifacts"][0]["precision"] == "int8"
    assert "histogram" in proc.stderr  # the chatter still reaches the user, on stderr
    proc = cli(
        "quantize",
        str(task["good"]),
        "--calib",
        str(task["calib"]),
        "-o",
        str(tmp_path / "q"),
        "--method",
        "percentile",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["samples"] == 40


def test_chatter_to_stderr_moves_python_and_native_writes(capfd) -> None:
    import os
    import sys

    from edgecv._console import chatter_to_stderr

    with chatter_to_stderr():
        print("py-chatter")
        sys.stdout.flush()
        os.write(1, b"native-chatter\n")
    print("after")
    sys.stdout.flush()
    got = capfd.readouterr()
    assert got.out == "after\n"
    assert "py-chatter" in got.err and "native-chatter" in got.err


# ------------------------------------------------------------------------------------------------ one door
def test_quant_config_is_checked_once_on_construction(tmp_path: Path) -> None:
    """Every INT8 option has one check, in QuantConfig: compile, quantize and the pipeline all build one."""
    from edgecv.backends.base import BuildConfig
    from edgecv.errors import ConfigError, UnknownNameError
    from edgecv.quant import QuantConfig

    with pytest.raises(ConfigError, match="needs calibration data"):
        QuantConfig()
    with pytest.raises(UnknownNameError, match="expected one of onnxruntime, openvino, tensorrt"):
        QuantConfig(backend="tflite", calib="c")
    with pytest.raises(ConfigError, match="--method: expected one of minmax, entropy, percentile, auto"):
        QuantConfig(calib="c", method="kl")
    with pytest.raises(ConfigError, match="--max-drop needs --val"):
        QuantConfig(calib="c", max_drop=1.0)
    with pytest.raises(ConfigError, match="expected backend onnxruntime"):
        QuantConfig(backend="openvino", calib="c", out=tmp_path / "o")
    with pytest.raises(ConfigError, match="only for backend tensorrt"):
        QuantConfig(calib="c", build=BuildConfig(precision="int8", emit_only=True))
    # a trtexec script may build from the bundle's QDQ model: the one case without calibration data
    cfg = QuantConfig(backend="tensorrt", build=BuildConfig(precision="int8", emit_only=True))
    assert cfg.emit_only and cfg.method == "minmax" and cfg.float_head and cfg.val_path is None


def test_ort_builder_records_a_given_qdq_model_and_never_quantizes(tiny) -> None:
    """Builders build from a given ONNX file: ONNX Runtime int8 records a QDQ model, refuses anything else."""
    from edgecv.backends import BUILDERS, open_runner
    from edgecv.backends.base import BuildConfig
    from edgecv.errors import ConfigError
    from edgecv.quant import QuantConfig, quantize

    b, calib = tiny
    builder = BUILDERS.get("onnxruntime")()
    with pytest.raises(ConfigError, match="onnxruntime int8: expected a QDQ ONNX model.*found none"):
        builder.build(b, BuildConfig(precision="int8"))
    with pytest.raises(ConfigError, match="onnxruntime int8: expected Q/DQ nodes in .*found a fp32 model"):
        builder.build(b, BuildConfig(precision="int8", onnx_path=b.onnx_path))
    assert b.artifact("onnxruntime", "int8") is None
    art = quantize(b, QuantConfig(calib=calib)).artifact
    assert art is not None and art.build_flags["format"] == "QDQ" and art.versions["edgecv"]
    qdq = b.path(art.path).read_bytes()
    again = builder.build(b, BuildConfig(precision="int8", onnx_path=b.path(art.path)))
    assert again.path == art.path and b.path(again.path).read_bytes() == qdq
    with open_runner(b, "onnxruntime", "int8", device="CPU") as r:
        assert r.precision == "int8"
