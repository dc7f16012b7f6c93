"""torch → ONNX export into a bundle: contract metadata, dynamic batch, simplification, fallback exporter,
reference data, parity, atomicity, and the ``edgecv export`` command."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgecv.bundle import MANIFEST, Bundle, read_onnx_contract
from edgecv.errors import BundleError, MissingDependencyError

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime]

import edgecv.export.onnx as onnx_mod
from edgecv.export import export_model, load_model

# Two consecutive Reshapes that onnxslim merges (the dynamo exporter's own optimizer keeps them), so simplify
# visibly changes the graph; LayerNorm + GELU + Linear keep it a realistic block.
MODEL = textwrap.dedent("""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, num_classes=5):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
            self.norm = nn.LayerNorm(8)
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            y = self.conv(x)
            b, c, h, w = y.shape
            t = y.flatten(2).transpose(1, 2)
            t = t.reshape(b, h * w, 2, c // 2).reshape(b, h * w, c)
            return self.fc(nn.functional.gelu(self.norm(t)).mean(1))

    def build(num_classes=5):
        return Block(num_classes)
""")
SHAPE = (1, 3, 32, 32)


def _ort(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("src") / "block.py"
    p.write_text(MODEL)
    return p


@pytest.fixture(scope="module")
def exported(model_file: Path, tmp_path_factory: pytest.TempPathFactory):
    src = load_model(f"{model_file}:build", input_shape=SHAPE)
    return src, export_model(src, tmp_path_factory.mktemp("out") / "bundle")


def test_bundle_contract_round_trip(exported) -> None:
    _src, res = exported
    b = Bundle.open(res.path)  # verifies every file hash
    assert sorted(b.manifest.files) == ["model.onnx", "reference.npz"]
    embedded = read_onnx_contract(b.onnx_path)
    assert embedded == b.contract == res.contract
    assert b.contract.task == "classify"  # guessed from the (N, 5) output, and said so
    assert any("guessed as classify" in n for n in res.notices)
    assert b.contract.output_names == ["output"] and b.contract.batch_range == [1, 1, 8]
    m = onnx.load(str(b.onnx_path))
    assert m.producer_name == "edgecv" and [o.name for o in m.graph.output] == ["output"]
    assert m.opset_import[0].version == 18 or any(o.version == 18 for o in m.opset_import if o.domain == "")
    prov = b.manifest.provenance
    assert prov["exporter"] == "dynamo" and prov["exporter_notice"] is None
    assert prov["source"]["spec"].endswith("block.py:build") and prov["source"]["kind"] == "file"
    assert set(prov["versions"]) >= {"torch", "onnx", "onnxruntime", "onnxslim", "edgecv"}
    assert prov["build_flags"]["dynamic_batch"] is True and prov["opset"] == 18


def test_dynamic_batch_runs_batch_3(exported) -> None:
    src, res = exported
    m = onnx.load(str(res.bundle.onnx_path))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(1).standard_normal((3, *SHAPE[1:])).astype(np.float32)
    (y,) = _ort(res.bundle.onnx_path).run(None, {"input": x})
    with torch.no_grad():
        want = src.module(torch.from_numpy(x)).numpy()
    assert y.shape == (3, 5)
    np.testing.assert_allclose(y, want, atol=1e-5, rtol=1e-4)


def test_reference_from_real_photos_and_parity(exported) -> None:
    from skimage import data

    from edgecv.tasks.preprocess import preprocess

    src, res = exported
    ref = res.bundle.load_reference()
    x = ref["inputs"]["input"]
    assert x.shape == (4, 3, 32, 32) and res.reference["images"] == ["astronaut", "coffee", "chelsea", "rocket"]
    # the photo reduced (area) to twice the input side, then preprocessed; that reduced image is saved beside the
    # inputs so validate can re-run the contract's preprocessing
    import cv2

    small = cv2.resize(np.ascontiguousarray(data.astronaut()[..., ::-1]), (64, 64), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(ref["images"][0], small)
    want0, _ = preprocess(small, res.contract)
    np.testing.assert_array_equal(x[:1], want0)
    with torch.no_grad():
        y = src.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ref["outputs"]["output"], y, atol=1e-6)
    # samples differ from each other (not one repeated image)
    assert np.abs(x[0] - x[1]).mean() > 0.1
    (p,) = res.parity
    assert res.parity_passed and p["passed"] and p["name"] == "output"
    assert p["max_abs"] < 1e-4 and p["cosine"] > 0.99999
    assert res.bundle.manifest.provenance["parity"][0]["max_abs"] == p["max_abs"]


def test_simplify_changes_graph_no_simplify_keeps_it(exported, model_file: Path, tmp_path: Path) -> None:
    _, res = exported
    assert res.simplified and res.nodes_final == res.nodes_exported - 1  # the two Reshapes became one
    ops = [n.op_type for n in onnx.load(str(res.bundle.onnx_path)).graph.node]
    assert ops.count("Reshape") == 1
    raw = export_model(
        load_model(f"{model_file}:build", input_shape=SHAPE), tmp_path / "raw", simplify=False, n_reference=2
    )
    assert not raw.simplified and raw.nodes_final == raw.nodes_exported == res.nodes_exported
    assert [n.op_type for n in onnx.load(str(raw.bundle.onnx_path)).graph.node].count("Reshape") == 2
    assert raw.parity_passed


def test_fallback_to_torchscript_static_batch(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_mod._torch_onnx_export
    calls: list[bool] = []

    def flaky(*args, **kwargs):
        calls.append(kwargs["dynamo"])
        if kwargs["dynamo"]:
            raise RuntimeError("simulated dynamo failure\nwith a second line")
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_mod, "_torch_onnx_export", flaky)
    monkeypatch.setattr(onnx_mod, "EXTERNAL_DATA_BYTES", 0)  # also covers the TorchScript large-model path
    res = export_model(
        load_model(f"{model_file}:build", input_shape=SHAPE), tmp_path / "b", dynamic_batch=False, n_reference=2
    )
    assert calls == [True, False]
    assert res.exporter == "torchscript"
    notice = next(n for n in res.notices if "dynamo exporter failed" in n)
    assert "simulated dynamo failure with a second line" in notice and "\n" not in notice
    prov = Bundle.open(res.path).manifest.provenance
    assert prov["exporter"] == "torchscript" and prov["exporter_notice"] == notice
    m = onnx.load(str(res.bundle.onnx_path))
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == list(SHAPE)
    assert res.contract.batch_range == [1, 1, 1] and not res.contract.dynamic_batch
    assert res.parity_passed and res.parity[0]["max_abs"] < 1e-4


def test_large_model_path_uses_external_data(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # models over 2 GB cannot be one protobuf; pretend this one is that large
    monkeypatch.setattr(onnx_mod, "EXTERNAL_DATA_BYTES", 0)
    res = export_model(load_model(f"{model_file}:build", input_shape=SHAPE), tmp_path / "b", n_reference=2)
    b = Bundle.open(res.path)
    assert sorted(b.manifest.files) == ["model.onnx", "model.onnx.data", "reference.npz"]
    m = onnx.load(str(b.onnx_path), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    assert read_onnx_contract(b.onnx_path) == b.contract
    assert res.parity_passed and res.file_size > b.onnx_path.stat().st_size
    assert any("over 2 GB" in n for n in res.notices)  # onnxslim is skipped there


def test_interrupted_export_leaves_nothing(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Path] = []

    def boom(onnx_path: Path, *a, **k):
        seen.append(onnx_path)
        assert onnx_path.is_file()  # the ONNX file was written before the crash
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_mod, "_parity", boom)
    out = tmp_path / "out" / "bundle"
    with pytest.raises(KeyboardInterrupt):
        export_model(load_model(f"{model_file}:build", input_shape=SHAPE), out, n_reference=1)
    assert seen
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # the work folder is gone as well
    with pytest.raises(BundleError):
        Bundle.open(out)


def test_existing_bundle_needs_force(exported, model_file: Path) -> None:
    _, res = exported
    with pytest.raises(BundleError) as exc:
        export_model(load_model(f"{model_file}:build", input_shape=SHAPE), res.path)
    assert "--force" in str(exc.value)


def test_pt2_source_and_torchvision_weights(tmp_path: Path) -> None:
    # a torch.export program exported again, with the input shape it was traced at
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    pt2 = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net.eval(), (torch.randn(1, 3, 24, 24),)), pt2)
    res = export_model(load_model(str(pt2)), tmp_path / "b1", dynamic_batch=False, n_reference=2)
    assert res.contract.input_shape == [1, 3, 24, 24] and res.parity_passed
    assert res.bundle.manifest.provenance["source"]["kind"] == "torch_export"

    # local weights into a torchvision model: the reference outputs are those of the loaded weights
    tv = load_model("torchvision:resnet18", input_shape=(1, 3, 32, 32), model_kwargs={"num_classes": 3}).module
    with torch.no_grad():
        for p in tv.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    w = tmp_path / "tv.pt"
    torch.save(tv.state_dict(), w)
    lm = load_model("torchvision:resnet18", weights=w, input_shape=(1, 3, 32, 32), model_kwargs={"num_classes": 3})
    res2 = export_model(lm, tmp_path / "b2", n_reference=2, simplify=False)
    ref = res2.bundle.load_reference()
    with torch.no_grad():
        want = tv.eval()(torch.from_numpy(ref["inputs"]["input"])).numpy()
    np.testing.assert_allclose(ref["outputs"]["output"], want, atol=1e-5)
    assert res2.parity_passed and res2.contract.task == "classify"
    assert res2.bundle.manifest.provenance["source"]["weights"] == str(w.resolve())


def test_rewrite_hook(model_file: Path, tmp_path: Path) -> None:
    # export sits below rewrite: the pass runner is handed in (passes=), never imported by export
    with pytest.raises(MissingDependencyError) as exc:
        export_model(load_model(f"{model_file}:build", input_shape=SHAPE), tmp_path / "a", rewrite=["fold_bn"])
    assert "apply_passes" in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "a").exists()

    got: dict[str, object] = {}

    def apply_passes(model, names, sample):
        got["names"], got["shape"] = list(names), tuple(sample.shape)
        with torch.no_grad():
            model.fc.bias.add_(1.0)  # a visible change, so the export must use the returned model
        return model, {"applied": list(names)}

    src = load_model(f"{model_file}:build", input_shape=SHAPE)
    res = export_model(src, tmp_path / "b", rewrite=["fold_bn"], n_reference=2, passes=apply_passes)
    assert got["names"] == ["fold_bn"] and got["shape"][1:] == SHAPE[1:]
    prov = res.bundle.manifest.provenance
    assert prov["rewrite"] == {"passes": ["fold_bn"], "report": {"applied": ["fold_bn"]}}
    ref = res.bundle.load_reference()
    base = load_model(f"{model_file}:build", input_shape=SHAPE).module
    with torch.no_grad():
        y0 = base(torch.from_numpy(ref["inputs"]["input"])).numpy()
    np.testing.assert_allclose(ref["outputs"]["output"], y0 + 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_export_json(cli, model_file: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\nd\ne\n")
    proc = cli(
        "export",
        f"{model_file}:build",
        "-o",
        str(tmp_path / "b"),
        "--input-shape",
        "1x3x32x32",
        "--class-names",
        str(names),
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        "0.25,0.25,0.25",
        "--max-batch",
        "4",
        "--json",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["exporter"] == "dynamo" and out["parity_passed"] is True
    assert out["parity"][0]["max_abs"] < 1e-4
    c = read_onnx_contract(tmp_path / "b" / "model.onnx")
    assert c is not None and c.class_names == ["a", "b", "c", "d", "e"] and c.mean == [0.5, 0.5, 0.5]
    assert c.std == [0.25] * 3 and c.batch_range == [1, 1, 4] and (tmp_path / "b" / MANIFEST).is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["{tmp}/missing.py:build"], "does not exist"),
        (["resnet_nope"], "unknown model 'resnet_nope'"),
        (["resnet_tiny", "--input-shape", "1x3xabc"], "expected NxCxHxW"),
    ],
)
def test_cli_bad_inputs(cli, tmp_path: Path, args: list[str], needle: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = cli("export", *args, "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
