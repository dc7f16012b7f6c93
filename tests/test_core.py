"""Core pieces: registry, atomic writes, bundle integrity, contract validation, lazy imports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecv._io import atomic_path, sha256_path, write_json
from edgecv._lazy import lazy_import
from edgecv.bundle import MANIFEST, Bundle, Contract, Manifest
from edgecv.errors import BundleError, ConfigError, MissingDependencyError, UnknownNameError
from edgecv.registry import Registry


def test_registry_duplicate_and_unknown() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("alpha", 1)
    reg.register("beta", 2, task="x")
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("alpha", 3)
    with pytest.raises(UnknownNameError) as ei:
        reg.get("alpah")
    msg = str(ei.value)
    assert "did you mean alpha" in msg and "expected one of: alpha, beta" in msg
    assert reg.get("beta") == 2 and reg.meta("beta") == {"task": "x"}
    assert reg.names() == ["alpha", "beta"] and len(reg) == 2


def test_registry_lazy_entry_resolves_on_get() -> None:
    reg: Registry[object] = Registry("lazy")
    reg.register("json_dumps", "json:dumps")
    assert reg.get("json_dumps") is json.dumps


def test_atomic_path_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_folder(tmp_path: Path) -> None:
    target = tmp_path / "b"
    target.mkdir()
    (target / "old").write_text("1")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def _mini_bundle(tmp_path: Path) -> Bundle:
    src = tmp_path / "src.onnx"
    src.write_bytes(b"not really onnx")
    return Bundle.create(tmp_path / "bundle", Manifest(name="m"), {"model.onnx": src})


def test_bundle_create_records_hashes_and_opens(tmp_path: Path) -> None:
    b = _mini_bundle(tmp_path)
    assert b.manifest.files["model.onnx"] == sha256_path(b.root / "model.onnx")
    again = Bundle.open(b.root)
    assert again.manifest.name == "m"
    assert "created" in again.manifest.provenance


def test_bundle_refuses_tampered_file(tmp_path: Path) -> None:
    b = _mini_bundle(tmp_path)
    (b.root / "model.onnx").write_bytes(b"changed")
    with pytest.raises(BundleError, match="changed after it was written"):
        Bundle.open(b.root)


def test_bundle_without_manifest_is_incomplete(tmp_path: Path) -> None:
    d = tmp_path / "half"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match="not a complete bundle"):
        Bundle.open(d)
    with pytest.raises(BundleError, match="found nothing"):
        Bundle.open(tmp_path / "nope")


def test_bundle_create_refuses_existing_without_force(tmp_path: Path) -> None:
    b = _mini_bundle(tmp_path)
    src = tmp_path / "x"
    src.write_text("y")
    with pytest.raises(BundleError, match="--force"):
        Bundle.create(b.root, Manifest(), {"model.onnx": src})


def test_corrupt_manifest_is_one_line_error(tmp_path: Path) -> None:
    b = _mini_bundle(tmp_path)
    data = json.loads((b.root / MANIFEST).read_text())
    data["contract"]["input_shape"] = [1, 3, 0]
    write_json(b.root / MANIFEST, data)
    with pytest.raises(BundleError, match="contract.input_shape"):
        Bundle.open(b.root)


def test_contract_validation_and_properties() -> None:
    c = Contract(input_shape=[1, 3, 96, 128], batch_range=[1, 2, 8])
    assert c.hw == (96, 128) and c.channels == 3 and c.dynamic_batch
    assert Contract.from_json(c.to_json()) == c
    with pytest.raises(ValueError):
        Contract(resize="squash")
    with pytest.raises(ValueError):
        Contract(batch_range=[4, 2, 8])


def test_lazy_import_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgecv\[openvino\]'"):
        lazy_import("openvino.does_not_exist", extra="openvino")
    from edgecv._lazy import is_available

    if not is_available("tensorrt"):  # only stubs (or nothing) on a machine without TensorRT
        with pytest.raises(MissingDependencyError, match=r"edgecv\[tensorrt\]"):
            lazy_import("tensorrt")
