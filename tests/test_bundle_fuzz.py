"""Property: any manifest.json gives either a valid bundle or one line of BundleError, never another exception.

Two strategies: arbitrary JSON documents, and a real manifest with fields replaced by arbitrary JSON (the contract,
file entries, artifact paths, the recorded source) — the second reaches deep into validation. A bundle that opens is
then used as the runtime tier uses it (contract geometry, reference, every artifact's file), which must also end in
success or a BundleError. ``make test`` runs a few hundred examples; the ``slow`` version runs 10,000.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecv.bundle import Bundle
from edgecv.errors import BundleError

pytestmark = [pytest.mark.torch]  # the pristine bundle is exported with torch

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "../../etc/passwd",
            "/etc/shadow",
            "model.onnx",
            "openvino/fp32/model.xml",
            "a\x00b",
            "C:\\x",
            "~/x",
            "reference.npz",
            "..",
            ".",
            "",
            "x" * 2000,
            "fp32",
            "int8",
            "classify",
            "detect",
            "letterbox",
            "NHWC",
            "uint8",
            "BGR",
        ]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=6)),
    max_leaves=30,
)
KEYS = ["format_version", "name", "contract", "provenance", "files", "artifacts", "history"]
CONTRACT_KEYS = [
    "task",
    "input_name",
    "input_shape",
    "layout",
    "dtype",
    "color",
    "resize",
    "crop_ratio",
    "interpolation",
    "antialias",
    "pad_value",
    "scale",
    "mean",
    "std",
    "class_names",
    "output_names",
    "decode",
    "batch_range",
]
SHAPES = st.lists(st.integers(min_value=-5, max_value=300_000), min_size=0, max_size=6)


@st.composite
def mutated_manifest(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    m = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        where = draw(st.sampled_from(["top", "contract", "shape", "files", "artifact", "source", "drop"]))
        if where == "top":
            m[draw(st.sampled_from(KEYS))] = draw(JSON)
        elif where == "contract" and isinstance(m.get("contract"), dict):
            m["contract"][draw(st.sampled_from(CONTRACT_KEYS))] = draw(JSON)
        elif where == "shape" and isinstance(m.get("contract"), dict):
            m["contract"][draw(st.sampled_from(["input_shape", "batch_range"]))] = draw(SHAPES)
        elif where == "files" and isinstance(m.get("files"), dict):
            m["files"][draw(SCALARS.map(str))] = draw(st.one_of(st.text(max_size=64), JSON))
        elif where == "artifact":
            m["artifacts"] = {
                draw(st.text(max_size=12)): {
                    "backend": draw(st.sampled_from(["openvino", "onnxruntime", "tensorrt", "x"])),
                    "precision": draw(st.sampled_from(["fp32", "fp16", "int8", "q"])),
                    "path": draw(SCALARS.map(str)),
                    "extra": draw(JSON),
                }
            }
        elif where == "source" and isinstance(m.get("provenance"), dict):
            m["provenance"]["source"] = draw(JSON)
        elif where == "drop" and m:
            m.pop(draw(st.sampled_from(sorted(m))), None)
    return m


def _exercise(root: Path) -> bool:
    """Open the bundle and use it as validate/run/bench do; only success or BundleError may come out."""
    try:
        b = Bundle.open(root)
        c = b.contract
        assert c.hw[0] > 0 and c.channels > 0 and c.input_shape[0] <= 1024
        b.load_reference()
        for art in b.manifest.artifacts.values():
            b.file(art.path)
    except BundleError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, repr(msg)
        assert len(msg) < 2000
        return False
    return True


def _run(pristine: Path, tmp_path: Path, docs: Any, max_examples: int) -> dict[str, int]:
    root = tmp_path / "fuzz"
    shutil.copytree(pristine, root)
    base = json.loads((root / "manifest.json").read_text())
    strategy = st.one_of(JSON, mutated_manifest(base)) if docs is None else docs
    seen = {"examples": 0, "opened": 0, "refused": 0}

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=max_examples < 1000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(doc=strategy)
    def check(doc: Any) -> None:
        try:
            text = json.dumps(doc)
        except (ValueError, RecursionError):
            return
        (root / "manifest.json").write_text(text)
        seen["examples"] += 1
        seen["opened" if _exercise(root) else "refused"] += 1

    check()
    print(f"manifest fuzz: {seen}")
    assert (root / "model.onnx").is_file()  # nothing the fuzzer wrote into the manifest deleted a file
    return seen


def test_manifest_fuzz(pristine: Path, tmp_path: Path) -> None:
    seen = _run(pristine, tmp_path, None, 300)
    assert seen["examples"] >= 250 and seen["opened"] > 0 and seen["refused"] > 0  # both outcomes were reached


@pytest.mark.slow
def test_manifest_fuzz_long(pristine: Path, tmp_path: Path) -> None:
    seen = _run(pristine, tmp_path, None, 10_000)
    assert seen["examples"] >= 10_000 and seen["opened"] > 0 and seen["refused"] > 0


def test_fuzz_finds_what_it_should(pristine: Path, tmp_path: Path) -> None:
    """The harness is not vacuous: known-bad manifests do reach BundleError, and the pristine one opens."""
    root = tmp_path / "b"
    shutil.copytree(pristine, root)
    Bundle.open(root)
    good = json.loads((root / "manifest.json").read_text())
    for bad in (
        {**good, "files": {"/etc/shadow": "0" * 64}},
        {**good, "contract": {**good["contract"], "input_shape": [1, 3, 10**6, 10**6]}},
        {**good, "artifacts": {"k": {"backend": "openvino", "precision": "fp32", "path": "../x"}}},
        [1],
        3,
    ):
        (root / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(BundleError):
            Bundle.open(root)
