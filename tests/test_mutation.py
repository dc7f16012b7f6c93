"""Validation that cannot pass vacuously (issue 18): corrupted artifacts fail validate, checks that compared
nothing are "not checked" (never PASS), detectors are compared before NMS, INT8 judges logit scale, tables show the
tolerance applied, INT8 layer ranking works on graph-NMS detectors, ``--method auto`` chooses on a held-out split.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import mutations as mu

from edgecv.bundle import Bundle
from edgecv.validate.compare import TOLERANCES, compare_output, compare_outputs, judge


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutation")


@pytest.fixture(scope="module")
def det_photos(work: Path) -> Path:
    """The shipped detector exported as the issue did: graph NMS, default reference photos (no boxes in them)."""
    from edgecv.export import export_model, load_model
    from edgecv.export.detection import prepare_detection_export

    loaded = prepare_detection_export(load_model("shapes_detector"), nms="graph")
    loaded.reference = None  # not its val split: the scikit-image photos, where it finds no confident box
    export_model(loaded, work / "det-photos", opset=17, force=True)
    return work / "det-photos"


def _validate(d: Path, allow: bool = False, prec: str = "fp32") -> object:
    from edgecv.validate.core import validate_bundle

    return validate_bundle(d, [("onnxruntime", prec)], reference="npz", allow_unchecked=allow)


# ------------------------------------------------------------------------------------------------ item 1
def test_graph_nms_head_bias_corruption_is_caught_before_nms(det_photos: Path, work: Path) -> None:
    """The issue's +0.4 width/height head-bias shift (boxes ×1.49, manifest re-hashed) passed validate ("all checks
    passed": no reference box above the score threshold, nothing compared). Now the pre-NMS candidates are
    compared and fail, and the vacuous box check is "not checked", failing unless accepted."""
    b = Bundle.open(det_photos)
    assert {"pre_nms_boxes", "pre_nms_scores"} <= set(b.contract.output_names)
    clean = _validate(det_photos)
    assert not clean.passed and clean.results[0].verdict == "not checked"  # zero confident reference boxes
    assert any("box recall" in r for r in clean.results[0].not_checked)
    assert _validate(det_photos, allow=True).passed  # accepted explicitly: passes, and says so
    assert _validate(det_photos, allow=True).results[0].verdict == "pass (unchecked accepted)"
    bad = work / "det-bias"
    shutil.copytree(det_photos, bad, dirs_exist_ok=True)
    mu.shift_bias("last", 0.4, mu.yolo_wh(len(b.contract.class_names)))(bad)
    Bundle.open(bad)  # hashes re-computed: the file looks legitimate
    rep = _validate(bad, allow=True)
    assert not rep.passed
    failed = {o.name for o in rep.results[0].outputs if not o.passed}
    assert "pre_nms_boxes" in failed


def test_run_decoder_ignores_the_pre_nms_outputs(det_photos: Path) -> None:
    """`edgecv run` decodes the four standard outputs; the validation-only candidates change nothing there."""
    from edgecv.backends import open_runner
    from edgecv.tasks.decode import get_decoder
    from edgecv.tasks.preprocess import preprocess

    b = Bundle.open(det_photos)
    img = b.load_reference()["images"][0]
    x, tf = preprocess(img, b.contract)
    with open_runner(b, "onnxruntime") as r:
        out = r.infer({b.contract.input_name: x})
    dec = get_decoder(b.contract)
    full = dec.decode(out, [tf])[0]
    four = dec.decode({k: out[k] for k in ("boxes", "scores", "classes", "num_dets")}, [tf])[0]
    assert np.array_equal(full.boxes, four.boxes) and np.array_equal(full.scores, four.scores)
    assert out["pre_nms_scores"].shape[-1] == len(b.contract.class_names)


def test_reference_data_gives_the_detector_boxes_to_compare(work: Path) -> None:
    """export --reference-data DIR (the shipped detector's val split): the reference has confident boxes, so box
    matching is checked and passes without --allow-unchecked."""
    from typer.testing import CliRunner

    from edgecv.cli.app import app

    val = mu.shipped_val("detect", work, n=12)
    res = CliRunner().invoke(
        app,
        [
            "export",
            "shapes_detector",
            "-o",
            str(work / "det-val"),
            "--force",
            "--reference-data",
            str(val),
            "--n-reference",
            "6",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    ref = Bundle.open(work / "det-val").load_reference()
    assert len(ref["images"]) == 6
    rep = _validate(work / "det-val")
    dets = rep.results[0].outputs[0]
    assert dets.boxes_ref and dets.boxes_ref > 0 and dets.box_recall == 1.0
    assert rep.passed and rep.results[0].verdict == "pass"


def test_reference_images_spread_over_classes(tmp_path: Path) -> None:
    from edgecv.data.readers import reference_images
    from edgecv.data.synth import generate

    generate("classify", tmp_path / "cls", n_train=0, n_val=40, size=32, seed=0)
    picked = reference_images(tmp_path / "cls", 8)  # finds the val/ split
    assert len(picked) == 8 and len({p.parent.name for p in picked}) == 8  # eight classes, one each


def test_shipped_models_export_with_their_val_split(work: Path) -> None:
    """`edgecv export shapes_detector` (no --reference-data) takes its reference from the synthetic val split the
    shipped weights were measured on: validate compares boxes, no --allow-unchecked needed."""
    from typer.testing import CliRunner

    from edgecv.cli.app import app
    from edgecv.data.synth import val_images

    res = CliRunner().invoke(app, ["export", "shapes_detector", "-o", str(work / "det-default"), "--force", "--json"])
    assert res.exit_code == 0, res.output
    b = Bundle.open(work / "det-default")
    assert "val split" in b.manifest.provenance["reference"]["data"]
    assert np.array_equal(b.load_reference()["images"][0], val_images("detect", 1, size=96)[0])
    res = CliRunner().invoke(
        app, ["validate", str(work / "det-default"), "-b", "onnxruntime", "--reference", "npz", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["passed"] and out["rows"][0]["verdict"] == "pass"
    assert out["rows"][0]["outputs"][0]["boxes_ref"] > 0


# ------------------------------------------------------------------------------------------------ no vacuous checks
def test_one_class_reference_and_empty_mask_are_not_checked() -> None:
    from edgecv.validate.core import BackendResult

    logits = np.tile(np.array([[5.0, 1.0, 0.0]]), (4, 1)) + np.random.default_rng(0).normal(0, 0.01, (4, 3))
    c = judge(compare_output("output", logits, logits, "classify"), TOLERANCES["fp32"])
    assert c.passed and c.not_checked and "class 0" in c.not_checked[0]
    res = BackendResult("onnxruntime", "fp32", TOLERANCES["fp32"], outputs=[c])
    assert not res.passed and res.verdict == "not checked"
    res.allow_unchecked = True
    assert res.passed
    seg = np.zeros((2, 3, 8, 8))
    seg[:, 0] = 1.0  # every pixel class 0: an empty mask
    s = compare_output("output", seg, seg, "segment")
    assert s.not_checked and "empty mask" in s.not_checked[0]
    two = np.array([[5.0, 1.0, 0.0], [0.0, 1.0, 5.0]])
    assert not compare_output("output", two, two, "classify").not_checked


# ------------------------------------------------------------------------------------------------ item 5
def test_tolerance_shown_is_the_one_applied() -> None:
    """Detection rows printed `cos≥0.98` while the cosine column (mean IoU) was never judged; INT8 classifier rows
    printed an abs bound that was not applied."""
    det_ref = {
        "boxes": np.array([[[0, 0, 10, 10.0]]]),
        "scores": np.array([[0.9]]),
        "classes": np.array([[1]]),
        "num_dets": np.array([1]),
    }
    dets = compare_outputs(det_ref, det_ref, "detect")[0]
    text = TOLERANCES["int8"].describe_for(dets)
    assert "cos" not in text and "recall≥0.95" in text and "IoU≥0.9" in text
    logits = np.array([[5.0, 1.0, 0.0], [0.0, 1.0, 5.0]])
    cls = compare_output("output", logits, logits, "classify")
    t8 = TOLERANCES["int8"].describe_for(cls)
    assert "abs≤" not in t8 and "rel L2≤0.3" in t8 and "top-1≥0.95" in t8
    assert "abs≤0.0001×scale" in TOLERANCES["fp32"].describe_for(cls)


# ------------------------------------------------------------------------------------------------ item 6
@pytest.mark.parametrize("factor, ok", [(10.0, False), (0.5, False), (1.05, True)])
def test_int8_judges_logit_scale(factor: float, ok: bool) -> None:
    """Logits ×10 or ×0.5 keep cosine and top-1; INT8 rows passed them. The relative L2 bound fails them."""
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 3, (8, 10))
    got = ref * factor + rng.normal(0, 0.05, ref.shape)
    c = judge(compare_output("output", ref, got, "classify"), TOLERANCES["int8"])
    assert c.cosine > 0.99 and c.top1_agreement == 1.0
    assert c.passed is ok, c.failures
    if not ok:
        assert any("relative L2" in f for f in c.failures)


# ------------------------------------------------------------------------------------------------ item 2
def test_layer_ranking_and_layers_report_on_graph_nms_detector(det_photos: Path, work: Path) -> None:
    """INT8 layer ranking multiplied NMS outputs of different lengths (ValueError) on a graph-NMS detector; it now
    compares the tensors before NonMaxSuppression, and `validate --layers` works."""
    import onnx

    from edgecv.quant import QuantConfig, quantize
    from edgecv.quant.layers import compare_layers, layer_divergence, rank_by_sensitivity, selection_nodes

    d = work / "det-int8"
    shutil.copytree(det_photos, d, dirs_exist_ok=True)
    calib = mu.shipped_val("detect", work, n=12) / "images" / "val"
    quantize(d, QuantConfig(backend="onnxruntime", calib=calib, method="minmax"))
    b = Bundle.open(d)
    rows = layer_divergence(b)
    assert rows and all(r.op != "NonMaxSuppression" for r in rows)
    art = b.artifact("onnxruntime", "int8")
    assert art is not None
    fp_rel = art.extra.get("fp32_onnx")
    fp = onnx.load(str(b.file(str(fp_rel)) if fp_rel else b.onnx_path))
    q = onnx.load(str(b.file(art.path)))
    after = selection_nodes(fp)
    assert after and not ({r.node for r in rows} & after)
    feeds = [{b.contract.input_name: x[None]} for x in b.load_reference()["inputs"][b.contract.input_name]]
    ranked = rank_by_sensitivity(compare_layers(fp, q, feeds), [n.name for n in q.graph.node])
    assert ranked


def test_max_drop_fallback_on_graph_nms_detector(det_photos: Path, work: Path) -> None:
    """`compile -p int8 --val --max-drop` on a graph-NMS detector ran the layer ranking and crashed; with a budget
    of 0 points the float fallback search runs (and either meets it or says which layers it tried)."""
    from edgecv.errors import AccuracyError
    from edgecv.quant import QuantConfig, quantize

    d = work / "det-budget"
    shutil.copytree(det_photos, d, dirs_exist_ok=True)
    val = mu.shipped_val("detect", work, n=12)
    try:
        res = quantize(
            d, QuantConfig(backend="onnxruntime", calib=val / "images" / "val", method="minmax", val=val, max_drop=0.0)
        ).artifact
    except AccuracyError as exc:
        assert "layers tried in float" in str(exc)
    else:
        extra = Bundle.open(d).artifact("onnxruntime", "int8").extra  # type: ignore[union-attr]
        assert extra["budget"]["met"] and res is not None


# ------------------------------------------------------------------------------------------------ item 8
def test_auto_method_selection_is_held_out_and_detector_cosine_is_pre_nms() -> None:
    from edgecv.bundle import Contract
    from edgecv.quant.api import _cosine_outputs, split_val
    from edgecv.validate.metrics import ValSet

    vs = ValSet(Contract(), [(Path(f"{i}.png"), i) for i in range(9)], lambda p, t: ({}, t))
    sel, cert = split_val(vs)
    si, ci = {t for _, t in sel.items}, {t for _, t in cert.items}
    assert si and ci and not (si & ci) and si | ci == set(range(9))
    det = Contract(
        task="detect",
        output_names=["boxes", "scores", "classes", "num_dets", "pre_nms_boxes", "pre_nms_scores"],
        decode={"format": "nms"},
    )
    assert _cosine_outputs(det) == ["pre_nms_boxes", "pre_nms_scores"]
    assert _cosine_outputs(Contract(task="classify")) is None


def test_auto_method_records_its_held_out_split(tmp_path: Path) -> None:
    from helpers import make_tiny_bundle

    from edgecv.data.synth import generate
    from edgecv.quant import QuantConfig, quantize

    generate("classify", tmp_path / "data", n_train=0, n_val=30, size=32, seed=0)
    dirs = sorted(d for d in (tmp_path / "data" / "val").iterdir() if d.is_dir())
    for i, d in enumerate(dirs):  # the tiny model's classes are c0..c{n-1}
        d.rename(d.parent / f"c{i}")
    b = make_tiny_bundle(tmp_path / "b", size=32, num_classes=len(dirs))
    quantize(
        b.root,
        QuantConfig(
            backend="onnxruntime", calib=tmp_path / "data" / "val", method="auto", val=tmp_path / "data" / "val"
        ),
    )
    extra = Bundle.open(b.root).artifact("onnxruntime", "int8").extra  # type: ignore[union-attr]
    sel = extra["selection"]
    assert sel["samples"] == 10 and sel["certify_samples"] == 20 and "held-out" in sel["by"]
    assert extra["metrics"]["val_samples"] == 20  # the budget and the final metric: the other samples
    assert set(extra["methods_tried"]) == {"minmax", "entropy", "percentile"}


# ------------------------------------------------------------------------------------------------ mutation tests
def _check(rows: list[mu.Row]) -> None:
    table = mu.table(rows)
    assert not rows[0].caught, table  # the clean bundle passes
    missed = [r for r in rows[1:] if r.must_be_caught() and not r.caught]
    assert not missed, table


@pytest.mark.parametrize("key", ["classifier", "detector (graph NMS)"])
def test_mutations_fast(key: str, work: Path) -> None:
    """Weights ×0.5/×1.1, biases +0.4 (the detector's w/h head bias too), colour order and scale in the contract:
    validate fails every corruption that moves the task metric by a point or more (manifests re-hashed)."""
    rows = mu.shipped_rows(key, work / "fast", full=False)
    _check(rows)
    assert sum(r.must_be_caught() for r in rows) >= 3  # the corruptions do matter


@pytest.mark.slow
@pytest.mark.parametrize("key", list(mu.SHIPPED))
def test_mutations_shipped(key: str, work: Path) -> None:
    """Every shipped model (classifier, detector with graph and host NMS, segmenter), corruptions at several
    magnitudes: validate fails every one that moves the task metric by a point or more."""
    rows = mu.shipped_rows(key, work / "slow", full=True)
    print(mu.table(rows))
    (work / f"table-{key.split()[0]}.json").write_text(json.dumps([r.__dict__ for r in rows]))
    _check(rows)
