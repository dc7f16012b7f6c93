"""Model sources: zoo, torchvision, file.py:factory, checkpoints (weights_only), TorchScript, .pt2, manifests."""

from __future__ import annotations

import os
import pickle
import shutil
import textwrap
from pathlib import Path

import pytest

from edgecv.bundle import Manifest
from edgecv.errors import ConfigError, ModelSourceError, UnknownNameError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

from edgecv.export.sources import archive_kind, load_model, load_model_from_manifest, parse_input_shape

HERE = Path(__file__).resolve().parent

FACTORY = textwrap.dedent("""
    import torch
    from torch import nn

    def build(num_classes=10):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, num_classes))

    def not_a_module():
        return 42

    def broken():
        raise ValueError("bad config")
""")


class Evil:
    """A pickle payload that would create a file if it were ever unpickled with code execution."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.fixture()
def factory_file(tmp_path: Path) -> Path:
    p = tmp_path / "mymodel.py"
    p.write_text(FACTORY)
    return p


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------------------ zoo
def test_zoo_name_contract_from_cfg() -> None:
    lm = load_model("resnet18")
    assert lm.source_info == {"kind": "zoo", "spec": "resnet18", "kwargs": {}, "weights": None, "init_seed": 0}
    assert lm.contract.task == "classify" and lm.contract.input_shape == [1, 3, 224, 224]
    assert not lm.module.training
    out = lm.module(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 1000)
    lm2 = load_model("resnet18", input_shape=(2, 3, 96, 96), model_kwargs={"num_classes": 7})
    assert lm2.contract.input_shape == [2, 3, 96, 96]
    assert lm2.module(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_zoo_weights_round_trip_and_mismatch(tmp_path: Path) -> None:
    src = load_model("resnet18", model_kwargs={"num_classes": 5}).module
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01)
    w = tmp_path / "w.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, w)
    lm = load_model("resnet18", weights=str(w), model_kwargs={"num_classes": 5})
    for (k, a), b in zip(src.state_dict().items(), lm.module.state_dict().values()):
        assert torch.equal(a, b), k
    assert lm.source_info["weights"] == str(w.resolve()) and len(lm.source_info["weights_sha256"]) == 64
    # a 1000-class model cannot take a 5-class head
    with pytest.raises(ModelSourceError) as exc:
        load_model("resnet18", weights=str(w))
    assert "fc.weight" in _one_line(exc) and "num-classes" in str(exc.value)
    # keys from another model are reported as missing/unexpected
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelSourceError) as exc:
        load_model("resnet18", weights=str(tmp_path / "other.pt"))
    assert "missing keys" in _one_line(exc) and "unexpected keys (foo.weight)" in str(exc.value)


def test_random_init_rebuilds_identically_from_manifest() -> None:
    # a bundle exported from a random-init zoo model must rebuild to the same weights for the live torch reference
    torch.manual_seed(123)
    lm = load_model("resnet_tiny")
    after = torch.rand(1).item()
    torch.manual_seed(123)
    assert torch.rand(1).item() == after  # building did not consume the caller's random stream
    rebuilt = load_model_from_manifest(Manifest(provenance={"source": lm.source_info}))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), lm.module(x), rtol=0, atol=0)


def test_unknown_zoo_name_lists_choices() -> None:
    with pytest.raises(UnknownNameError) as exc:
        load_model("resnet19")
    msg = _one_line(exc)
    assert "resnet19" in msg and "resnet18" in msg and "torchvision:<name>" in msg


# ------------------------------------------------------------------------------------------------ torchvision
def test_torchvision_contract_and_local_weights(tmp_path: Path) -> None:
    lm = load_model("torchvision:mobilenet_v3_small")
    assert lm.source_info["spec"] == "torchvision:mobilenet_v3_small"
    c = lm.contract
    # from the default weights' transforms (read without downloading): resize 256, crop 224
    assert c.input_shape == [1, 3, 224, 224] and c.resize == "center_crop"
    assert c.crop_ratio == pytest.approx(224 / 256)
    w = tmp_path / "mnv3.pth"
    sd = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in lm.module.state_dict().items()}
    torch.save(sd, w)
    lm2 = load_model("torchvision:mobilenet_v3_small", weights=w)
    assert all(torch.equal(a, sd[k]) for k, a in lm2.module.state_dict().items())
    with pytest.raises(UnknownNameError) as exc:
        load_model("torchvision:resnet_18")
    assert "did you mean resnet18" in _one_line(exc)
    with pytest.raises(ConfigError):
        load_model("torchvision:resnet18", model_kwargs={"weights": "DEFAULT"})


# ------------------------------------------------------------------------------------------------ file.py:factory
def test_file_factory(factory_file: Path) -> None:
    lm = load_model(f"{factory_file}:build", model_kwargs={"num_classes": 3})
    assert lm.module(torch.randn(2, 3, 8, 8)).shape == (2, 3)
    info = lm.source_info
    assert info["kind"] == "file" and info["spec"] == f"{factory_file.resolve()}:build"
    assert info["kwargs"] == {"num_classes": 3} and info["weights"] is None and len(info["source_sha256"]) == 64
    assert lm.guess_task


@pytest.mark.parametrize(
    ("suffix", "needle"),
    [
        (":nope", "has no function 'nope'; functions found: build, not_a_module, broken"),
        (":not_a_module", "expected a torch.nn.Module, got builtins.int"),
        (":broken", "raised ValueError: bad config"),
        ("", "functions in it: build, not_a_module, broken"),
    ],
)
def test_file_factory_errors(factory_file: Path, suffix: str, needle: str) -> None:
    with pytest.raises(ModelSourceError) as exc:
        load_model(f"{factory_file}{suffix}")
    assert needle in _one_line(exc)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError) as exc:
        load_model(f"{tmp_path}/absent.py:build")
    assert "absent.py' does not exist" in _one_line(exc)
    with pytest.raises(ModelSourceError) as exc:
        load_model(str(tmp_path / "absent.pt"))
    assert "does not exist" in _one_line(exc)


# ------------------------------------------------------------------------------------------------ checkpoints
def test_state_dict_checkpoint_needs_arch(factory_file: Path, tmp_path: Path) -> None:
    ref = load_model(f"{factory_file}:build").module
    with torch.no_grad():
        ref[0].weight.mul_(3.0)
    ck = tmp_path / "ck.pth"
    torch.save(ref.state_dict(), ck)
    assert archive_kind(ck) == "torch_save"
    with pytest.raises(ModelSourceError) as exc:
        load_model(str(ck))
    assert "--arch" in _one_line(exc)
    lm = load_model(str(ck), arch=f"{factory_file}:build")
    assert torch.equal(lm.module[0].weight, ref[0].weight)
    # recorded so the torch runner can rebuild it: the architecture spec plus the checkpoint as weights
    assert lm.source_info["kind"] == "file" and lm.source_info["weights"] == str(ck.resolve())
    # an arch recorded inside the checkpoint (Lightning-style nesting, DDP prefix) needs no flag
    ck2 = tmp_path / "ck2.ckpt"
    torch.save(
        {"arch": f"{factory_file}:build", "state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()}}, ck2
    )
    lm2 = load_model(str(ck2))
    assert torch.equal(lm2.module[0].weight, ref[0].weight)


def test_pickled_module_refused(factory_file: Path, tmp_path: Path) -> None:
    full = tmp_path / "full.pt"
    torch.save(load_model(f"{factory_file}:build").module, full)
    with pytest.raises(ModelSourceError) as exc:
        load_model(str(full))
    msg = _one_line(exc)
    assert "refused" in msg and "torch.nn.modules.container.Sequential" in msg and "state_dict" in msg


@pytest.mark.parametrize("fmt", ["torch_save", "raw_pickle"])
def test_malicious_pickle_never_runs(tmp_path: Path, fmt: str) -> None:
    target = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    if fmt == "torch_save":
        torch.save({"weight": Evil(target)}, bad)
    else:
        bad.write_bytes(pickle.dumps(Evil(target)))
    with pytest.raises(ModelSourceError) as exc:
        load_model(str(bad), arch="resnet18")
    assert "refused" in _one_line(exc) or "cannot read" in str(exc.value)
    with pytest.raises(ModelSourceError):
        load_model("resnet18", weights=str(bad))
    assert not target.exists()


def test_torchscript_and_pt2(factory_file: Path, tmp_path: Path) -> None:
    ref = load_model(f"{factory_file}:build").module
    x = torch.randn(2, 3, 16, 16)
    ts = tmp_path / "m.ts"
    torch.jit.trace(ref, x).save(str(ts))
    pt2 = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(ref, (torch.randn(1, 3, 20, 20),)), pt2)
    assert archive_kind(ts) == "torchscript" and archive_kind(pt2) == "torch_export"

    lts = load_model(str(ts))
    assert lts.source_info["kind"] == "torchscript" and lts.source_info["spec"] == str(ts.resolve())
    assert torch.allclose(lts.module(x), ref(x), atol=1e-6)

    lep = load_model(str(pt2))
    assert lep.source_info["kind"] == "torch_export"
    assert lep.contract.input_shape == [1, 3, 20, 20]  # from the program's example inputs
    x1 = torch.randn(1, 3, 20, 20)
    assert torch.allclose(lep.module(x1), ref(x1), atol=1e-6)
    with pytest.raises(ConfigError):
        load_model(str(ts), arch="resnet18")


# ------------------------------------------------------------------------------------------------ manifest
def test_manifest_round_trip_helpers_format(tmp_path: Path) -> None:
    # the format tests/helpers.py writes
    m = Manifest(
        provenance={
            "source": {
                "spec": f"{HERE / 'helpers.py'}:tiny_cnn",
                "kind": "file",
                "kwargs": {"num_classes": 4, "task": "classify"},
                "weights": None,
            }
        }
    )
    with pytest.raises(ModelSourceError, match="pass --model-source"):
        load_model_from_manifest(m)  # a bundle is data: the file it names is not imported
    module = load_model_from_manifest(m, source=f"{HERE / 'helpers.py'}:tiny_cnn")
    assert module(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_manifest_detects_moved_or_changed_source(factory_file: Path, tmp_path: Path) -> None:
    lm = load_model(f"{factory_file}:build")
    m = Manifest(provenance={"source": lm.source_info})
    given = f"{factory_file}:build"
    assert isinstance(load_model_from_manifest(m, source=given), torch.nn.Module)
    moved = factory_file.with_name("moved.py")
    shutil.copy(factory_file, moved)
    assert isinstance(load_model_from_manifest(m, source=f"{moved}:build"), torch.nn.Module)  # same content
    factory_file.write_text(FACTORY + "\n# edited\n")
    with pytest.raises(ModelSourceError) as exc:
        load_model_from_manifest(m, source=given)
    assert "differs from the model file the bundle was exported from" in _one_line(exc)
    with pytest.raises(ModelSourceError):
        load_model_from_manifest(Manifest())


@pytest.mark.parametrize(
    ("text", "want"), [("1x3x224x224", (1, 3, 224, 224)), ("3x64x64", (1, 3, 64, 64)), ("4,3,32,48", (4, 3, 32, 48))]
)
def test_parse_input_shape(text: str, want: tuple[int, ...]) -> None:
    assert parse_input_shape(text) == want


@pytest.mark.parametrize("text", ["abc", "1x3x0x4", "224", "1x3x2x2x2"])
def test_parse_input_shape_bad(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_input_shape(text)
    assert "expected NxCxHxW" in _one_line(exc)
