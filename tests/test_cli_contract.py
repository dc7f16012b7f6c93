"""The CLI contract (issue 20): one ``-b NAME[:PRECISION]`` syntax, one JSON envelope whose ``passed`` equals
``exit code == 0``, every artifact checked by default, sizes that count every file, and the small promises
(``--quiet``, shell completion)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecv._io import sha256_path
from edgecv.bundle import REFERENCE_FILE, Bundle

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime, pytest.mark.openvino]


def _env() -> dict[str, str]:
    return {"OMP_NUM_THREADS": "1"}


def _envelope(proc, command: str) -> dict:
    """The JSON on stdout (nothing else there), its schema named, and ``passed`` agreeing with the exit code."""
    d = json.loads(proc.stdout)
    assert d["schema"] == f"edgecv/{command}/1", d.get("schema")
    assert d["passed"] is (proc.returncode == 0), (d["passed"], proc.returncode, proc.stderr[-500:])
    return d


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory, pristine: Path, cli) -> Path:
    """The tiny bundle with an OpenVINO fp32 and an ONNX Runtime fp16 artifact, built by one compile call."""
    dst = tmp_path_factory.mktemp("contract") / "tiny"
    shutil.copytree(pristine, dst)
    proc = cli("compile", str(dst), "-b", "OpenVINO", "-b", "onnxruntime:FP16", "--json", env=_env())
    d = _envelope(proc, "compile")
    assert proc.returncode == 0
    assert [(a["backend"], a["precision"]) for a in d["artifacts"]] == [("openvino", "fp32"), ("onnxruntime", "fp16")]
    return dst


def test_compile_builds_every_backend_and_counts_every_file(compiled: Path) -> None:
    b = Bundle.open(compiled)
    assert {k for k in b.manifest.artifacts} == {"openvino:fp32", "onnxruntime:fp16"}
    # an IR is two files: the size is both, not the .xml alone
    xml = compiled / "openvino/fp32/model.xml"
    from edgecv.cli.compile import artifact_size

    assert artifact_size(b, "openvino/fp32/model.xml") == xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def test_validate_defaults_to_every_artifact(compiled: Path, cli) -> None:
    proc = cli("validate", str(compiled), "--json", "--no-record", env=_env())
    d = _envelope(proc, "validate")
    got = {(r["backend"], r["precision"]) for r in d["results"]}
    assert {("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "fp16")} <= got, got
    assert proc.returncode == 0


def test_validate_json_says_failed_when_the_exit_code_does(compiled: Path, tmp_path: Path, cli) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(compiled, bad)
    b = Bundle.open(bad)
    ref = b.load_reference()
    arrays = {f"input/{k}": v for k, v in ref["inputs"].items()}
    arrays.update({f"output/{k}": v * 3.0 for k, v in ref["outputs"].items()})  # a reference the model misses
    with open(bad / REFERENCE_FILE, "wb") as f:
        np.savez(f, **arrays)
    b.manifest.files[REFERENCE_FILE] = sha256_path(bad / REFERENCE_FILE)
    b.save()
    assert set(np.load(compiled / REFERENCE_FILE).files) == set(np.load(bad / REFERENCE_FILE).files)
    proc = cli("validate", str(bad), "-b", "onnxruntime", "--reference", "npz", "--json", "--no-record", env=_env())
    d = _envelope(proc, "validate")
    assert proc.returncode == 1 and d["passed"] is False


def test_bench_precision_filter_and_torch(compiled: Path, cli) -> None:
    proc = cli(
        "bench",
        str(compiled),
        "-p",
        "fp16",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--no-peak",
        "--no-stages",
        "--no-record",
        "--json",
        env=_env(),
    )
    d = _envelope(proc, "bench")
    got = {(r["backend"], r["precision"]) for r in d["rows"]}
    # torch runs fp16 (autocast), the fp16 artifact and OpenVINO's fp16 hint; nothing at another precision
    assert {("torch", "fp16"), ("onnxruntime", "fp16"), ("openvino", "fp16")} == got, got
    # int8: no artifact here, so one line naming the command (with --calib) that builds one
    proc = cli("bench", str(compiled), "-p", "INT8", "--no-record", env=_env())
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "int8" in line and "edgecv compile" in line and "--calib" in line


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-b", "torch"], "torch is the reference"),
        (["-p", "int4"], "expected one of fp32, fp16, bf16, int8, found 'int4'"),
        (["-b", "openvino:int3"], "found 'int3'"),
        (["-b", "nosuch"], "nosuch"),
    ],
)
def test_run_refuses_in_one_line(compiled: Path, tmp_path: Path, cli, args: list[str], needle: str) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    proc = cli("run", str(compiled), "--source", str(folder), *args, env=_env())
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert needle in line and "compile --precision int4" not in line


def test_run_picks_the_best_artifact_and_quiet_is_quiet(compiled: Path, tmp_path: Path, cli) -> None:
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((40, 40, 3), 60 * i, np.uint8))
    proc = cli("run", str(compiled), "--source", str(folder), "--json", "-", "--threads", "1", env=_env())
    d = _envelope(proc, "run")
    # artifacts: openvino fp32 and onnxruntime fp16; fp16 ranks above fp32
    assert (d["runner"]["backend"], d["runner"]["precision"]) == ("onnxruntime", "fp16"), d["runner"]
    assert d["frames_processed"] == 3
    proc = cli(
        "run", str(compiled), "--source", str(folder), "-b", "OPENVINO:fp32", "--quiet", "--threads", "1", env=_env()
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_every_cheap_command_speaks_the_envelope(compiled: Path, tmp_path: Path, cli) -> None:
    cases = [
        (["doctor", "--json"], "doctor"),
        (["rewrite", "--list", "--json"], "rewrite"),
        (
            [
                "data",
                "synth",
                "--task",
                "classify",
                "-o",
                str(tmp_path / "d"),
                "--n-train",
                "4",
                "--n-val",
                "4",
                "--size",
                "32",
                "--json",
            ],
            "data-synth",
        ),
        (["data", "check", str(tmp_path / "d" / "val"), "--task", "classify", "--json"], "data-check"),
        (["report", str(compiled), "-o", str(tmp_path / "r.html"), "--json"], "report"),
    ]
    for args, name in cases:
        proc = cli(*args, env=_env())
        assert proc.returncode == 0, (args, proc.stderr[-800:])
        _envelope(proc, name)


def test_shell_completion_is_on(cli) -> None:
    proc = cli("--help", env={**_env(), "COLUMNS": "200"})
    assert "--install-completion" in proc.stdout


def test_precision_is_one_vocabulary() -> None:
    from edgecv.config import schema
    from edgecv.errors import ConfigError
    from edgecv.types import PRECISIONS, parse_backend_spec, parse_precision

    assert parse_precision(" INT8 ") == "int8"
    assert parse_backend_spec("OpenVINO:BF16") == ("openvino", "bf16")
    with pytest.raises(ConfigError, match="expected one of fp32, fp16, bf16, int8, found 'int4'"):
        parse_precision("int4")
    import typing

    assert typing.get_args(schema.PrecisionName) == PRECISIONS
    # no module keeps its own copy of the list
    root = Path(__file__).resolve().parents[1] / "edgecv"
    copies = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if '("fp32", "fp16", "bf16", "int8")' in p.read_text() and p.name != "types.py"
    ]
    assert copies == [], copies
    assert os.sep  # (paths above are relative to the package)


def test_recipe_paths_are_relative_to_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecv.config.schema import load_recipe

    (tmp_path / "proj" / "recipes").mkdir(parents=True)
    (tmp_path / "proj" / "calib").mkdir()
    recipe = tmp_path / "proj" / "recipes" / "r.yaml"
    recipe.write_text(
        "model: {name: resnet_tiny}\nquantize: {calib: ../calib}\n"
        "data: {task: classify, train: ../train, val: ../val}\n"
    )
    monkeypatch.chdir(tmp_path)  # anywhere but the recipe's folder
    r = load_recipe(recipe)
    assert r.quantize is not None and r.quantize.calib == str((tmp_path / "proj" / "calib").resolve())
    assert r.data is not None and r.data.val == str((tmp_path / "proj" / "val").resolve())
    # the shipped recipes name their calibration folders relative to themselves
    root = Path(__file__).resolve().parents[1]
    assert Path(load_recipe(root / "recipes" / "classifier.yaml").quantize.calib).is_dir()  # type: ignore[union-attr]


def test_rewritten_model_loads_from_another_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from edgecv.rewrite.compare import load_rewritten, save_rewritten

    (tmp_path / "work" / "models").mkdir(parents=True)
    (tmp_path / "work" / "models" / "m.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
    )
    monkeypatch.chdir(tmp_path / "work")
    from edgecv.export.sources import load_model

    model = load_model("models/m.py:build").module
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # the saved weights differ from the factory's
    out = tmp_path / "work" / "out" / "r.pt"
    out.parent.mkdir()
    save_rewritten(out, model, "models/m.py:build", [], {}, [1, 3, 8, 8])
    assert torch.load(out, weights_only=True)["arch"] == "../models/m.py:build"
    monkeypatch.chdir(tmp_path)
    again = load_rewritten(Path("work/out/r.pt"))
    assert torch.equal(again[0].weight, model[0].weight)


def test_benchmark_from_a_model_to_one_table(tmp_path: Path, cli) -> None:
    # random weights: the reference photos may all give one class, which validate reports as not checked
    proc = cli(
        "benchmark",
        "resnet_tiny",
        "-o",
        str(tmp_path / "b"),
        "--min-time",
        "0.1",
        "--allow-unchecked",
        "--csv",
        str(tmp_path / "t.csv"),
        "--md",
        str(tmp_path / "t.md"),
        "--json",
        env=_env(),
    )
    d = _envelope(proc, "benchmark")
    assert proc.returncode == 0, proc.stderr[-1500:]
    got = {(r["backend"], r["precision"]) for r in d["summary"]}
    assert {("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")} <= got, got
    assert all(r["agrees_with_torch"] for r in d["summary"]) and all(r["p50_ms"] > 0 for r in d["summary"])
    # no --calib: INT8 is left out, and the output says so
    assert any(s.startswith("onnxruntime:int8: no calibration data") for s in d["skipped"])
    # OpenVINO precisions beyond fp32 are asked of the device, never assumed
    from edgecv.bench.roofline import supported_precisions

    caps = supported_precisions("openvino", "CPU")
    for prec in ("bf16", "fp16"):
        assert (("openvino", prec) in got) == (prec in caps)
    lines = (tmp_path / "t.csv").read_text().strip().splitlines()
    assert lines[0].startswith("backend,precision,ran") and len(lines) == 1 + len(d["summary"])
    assert (tmp_path / "t.md").read_text().count("\n") == 2 + len(d["summary"])
