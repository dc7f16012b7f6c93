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


def _documented_schemas() -> dict[str, tuple[str, list[str]]]:
    """docs/json.md's per-command table: command → (its schema name, the top-level keys it promises)."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "json.md").read_text()
    section = doc.split("## Each command's keys", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(edgecv/([a-z-]+)/\d+)` \| ([^|]*) \|", section, re.MULTILINE)
    return {name: (schema, re.findall(r"`([a-z_0-9]+)`", keys)) for schema, name, keys in rows}


#: latency statistics: in a row they live in one nested ``latency`` object, never flat beside the row's other keys
LATENCY_KEYS = {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput"}


def _one_key_per_idea(d: object, where: str = "") -> list[str]:
    """Finding 5's JSON keys: a list of rows is ``rows`` (never ``results`` / ``summary``), and a row (a dict in a
    list) that carries latency has it nested in ``latency`` with no flat statistic beside it. Returns the breaches."""
    bad: list[str] = []
    if isinstance(d, dict):
        for k, v in d.items():
            if k in ("results", "summary") and isinstance(v, list):
                bad.append(f"{where}.{k}: a list of rows named '{k}', not 'rows'")
            bad += _one_key_per_idea(v, f"{where}.{k}")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            if isinstance(v, dict):
                # a number is a flat statistic; a dict keyed by stage (run's timeline buckets) is a breakdown
                flat = sorted(k for k in LATENCY_KEYS & set(v) if isinstance(v[k], (int, float)))
                if flat:
                    bad.append(f"{where}[{i}]: latency {flat} flat in the row, not nested in 'latency'")
                lat = v.get("latency")
                if lat is not None and not (isinstance(lat, dict) and {"p50_ms", "p99_ms", "throughput"} <= set(lat)):
                    bad.append(f"{where}[{i}].latency: expected p50_ms, p99_ms, throughput, found {lat!r}")
            bad += _one_key_per_idea(v, f"{where}[{i}]")
    return bad


def test_one_key_per_idea_catches_the_version_1_shapes() -> None:
    """The check every document goes through bites on what edgecv/validate/1 and pipeline/1 printed."""
    assert _one_key_per_idea({"results": [{"backend": "onnxruntime"}]})
    assert _one_key_per_idea({"summary": [{"backend": "openvino", "p50_ms": 1.0, "p99_ms": 2.0}]}) == [
        ".summary: a list of rows named 'summary', not 'rows'",
        ".summary[0]: latency ['p50_ms', 'p99_ms'] flat in the row, not nested in 'latency'",
    ]
    assert _one_key_per_idea({"concurrency": [{"clients": 2, "throughput": 9.0}]})
    assert not _one_key_per_idea({"rows": [{"t": 1.0, "mean_ms": {"infer": 3.0}}]})
    assert not _one_key_per_idea(
        {"rows": [{"latency": {"p50_ms": 1.0, "p99_ms": 2.0, "throughput": 3.0}}, {"latency": None}]}
    )


def _envelope(proc, command: str) -> dict:
    """The JSON on stdout (nothing else there), its schema named as docs/json.md documents it, the top-level keys
    it documents, one key per idea (rows, nested latency), and ``passed`` agreeing with the exit code."""
    from edgecv._console import json_schema

    d = json.loads(proc.stdout)
    assert d["schema"] == json_schema(command), d.get("schema")
    assert d["passed"] is (proc.returncode == 0), (d["passed"], proc.returncode, proc.stderr[-500:])
    assert not _one_key_per_idea(d), (command, _one_key_per_idea(d))
    if os.environ.get("EDGECV_DUMP_KEYS"):  # (how docs/json.md's table was first filled)
        with open(os.environ["EDGECV_DUMP_KEYS"], "a") as f:
            f.write(json.dumps([command, sorted(d)]) + "\n")
        return d
    documented = _documented_schemas()
    assert command in documented, f"docs/json.md documents no {json_schema(command)}"
    schema, keys = documented[command]
    assert schema == d["schema"], (command, "docs/json.md documents", schema, "the command prints", d["schema"])
    missing = [k for k in keys if k not in d]
    assert not missing, (command, missing, sorted(d))
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
    got = {(r["backend"], r["precision"]) for r in d["rows"]}
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


def test_int8_default_is_the_artifact_the_bundle_has(tmp_path: Path) -> None:
    """Finding 3: `run -p int8` takes the INT8 model the bundle holds whatever its engine (it said there was none
    though an OpenVINO one existed), and with none the hint is a compile command that works (with --calib)."""
    from helpers import make_tiny_bundle

    from edgecv.backends.runs import best_target
    from edgecv.bundle import Artifact
    from edgecv.errors import ConfigError

    b = make_tiny_bundle(tmp_path / "b", size=32)
    with pytest.raises(
        ConfigError, match=r"^--precision int8: expected an artifact at int8 .*edgecv compile .*--calib"
    ):
        best_target(b, "int8")
    with b.update() as manifest:
        art = Artifact(backend="openvino", precision="int8", path="openvino/int8/model.xml", device="CPU")
        manifest.artifacts[art.key] = art
    assert best_target(b, "int8") == ("openvino", "int8")
    assert best_target(b) == ("openvino", "int8")  # int8 ranks first among the bundle's artifacts


def test_run_picks_the_best_artifact_and_quiet_is_quiet(compiled: Path, tmp_path: Path, cli) -> None:
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((40, 40, 3), 60 * i, np.uint8))
    proc = cli("run", str(compiled), "--source", str(folder), "--json", "--threads", "1", env=_env())
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


def test_every_other_command_speaks_the_envelope(compiled: Path, tmp_path: Path, cli) -> None:
    """The commands no other test here runs with --json: on the shipped classifier (export, lint, models), the tiny
    bundle (quantize, repo, serve) and the smallest recipe (train, pipeline)."""
    import subprocess
    import sys

    import cv2

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        cv2.imwrite(str(frames / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name: mobilenet_v2_tiny}\n"
        "data: {task: classify, synth: {n_train: 8, n_val: 4, size: 32, seed: 3}, batch_size: 4}\n"
        "train: {epochs: 1, seed: 0}\n"
    )
    untrained = tmp_path / "u.yaml"  # the pipeline without training: export, validate, bench
    untrained.write_text(
        "model: {name: mobilenet_v2_tiny}\nexport: {input_shape: [1, 3, 32, 32]}\n"
        "validate: {backends: [onnxruntime]}\nbench: {backends: [onnxruntime], batches: [1]}\n"
    )
    cases = [
        (["models", "shapes_*", "--json"], "models"),
        (["lint", "shapes_classifier", "--samples", "1", "--json"], "lint"),
        (["export", "shapes_classifier", "-o", str(tmp_path / "e"), "--n-reference", "2", "--json"], "export"),
        (["calib", "sample", str(frames), "-n", "2", "-o", str(tmp_path / "c"), "--json"], "calib"),
        (
            ["quantize", str(compiled), "-o", str(tmp_path / "q"), "--calib", str(frames), "--method", "minmax"]
            + ["--json"],
            "quantize",
        ),
        (["repo", str(compiled), "--server", "triton", "-o", str(tmp_path / "repo"), "--json"], "repo"),
        (["train", str(recipe), "-o", str(tmp_path / "t"), "--json"], "train"),
        (["pipeline", str(untrained), "-o", str(tmp_path / "p"), "--min-time", "0.05", "--json"], "pipeline"),
    ]
    for args, name in cases:
        proc = cli(*args, env=_env())
        assert proc.returncode == 0, (args, proc.stderr[-800:])
        _envelope(proc, name)
    # serve prints its document once the configuration is checked, then serves until stopped: read it, stop it
    env = {**os.environ, **_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    port = 18000 + os.getpid() % 1000
    args = ["serve", str(compiled), "-b", "onnxruntime", "--port", str(port), "--json"]
    with subprocess.Popen(
        [sys.executable, "-m", "edgecv", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as srv:
        text = ""
        try:
            assert srv.stdout is not None
            for line in srv.stdout:
                text += line
                if line.startswith("}"):
                    break
        finally:
            srv.kill()
    d = json.loads(text)
    assert d["schema"] == _documented_schemas()["serve"][0] == "edgecv/serve/1" and d["passed"] is True, text
    # a configuration serve refuses is one line and no document, exit 2
    proc = cli("serve", str(compiled), "-b", "onnxruntime:int8", "--port", str(port), "--json", env=_env())
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# every command the app registers → the test in this file that runs it with --json and checks its envelope
# (_envelope: the documented schema name and keys, passed == exit code 0); a new command fails until it has one
ENVELOPE_TESTS: dict[str, str] = {
    "anchors": "test_data_check_and_anchors_take_the_root",
    "bench": "test_bench_precision_filter_and_torch",
    "benchmark": "test_benchmark_from_a_model_to_one_table",
    "calib sample": "test_every_other_command_speaks_the_envelope",
    "compile": "compiled",
    "data check": "test_every_cheap_command_speaks_the_envelope",
    "data synth": "test_every_cheap_command_speaks_the_envelope",
    "doctor": "test_every_cheap_command_speaks_the_envelope",
    "export": "test_every_other_command_speaks_the_envelope",
    "lint": "test_every_other_command_speaks_the_envelope",
    "models": "test_every_other_command_speaks_the_envelope",
    "pipeline": "test_every_other_command_speaks_the_envelope",
    "quantize": "test_every_other_command_speaks_the_envelope",
    "repo": "test_every_other_command_speaks_the_envelope",
    "report": "test_every_cheap_command_speaks_the_envelope",
    "rewrite": "test_every_cheap_command_speaks_the_envelope",
    "run": "test_run_picks_the_best_artifact_and_quiet_is_quiet",
    "serve": "test_every_other_command_speaks_the_envelope",
    "train": "test_every_other_command_speaks_the_envelope",
    "validate": "test_validate_defaults_to_every_artifact",
}


def _schema_name(command: str) -> str:
    return {"calib sample": "calib"}.get(command, command.replace(" ", "-"))


def test_every_command_has_its_envelope_checked() -> None:
    """Done-when 1: every command of the app (listed from Typer, so a new one fails here) has a test above that runs
    it with --json and checks the envelope; docs/json.md documents each schema."""
    import inspect

    import typer.main

    from edgecv.cli.app import app

    commands = sorted(name for name, _ in _reference_script()._commands(typer.main.get_command(app)))
    assert commands == sorted(ENVELOPE_TESTS), set(commands) ^ set(ENVELOPE_TESTS)
    from edgecv._console import json_schema

    schemas = _documented_schemas()
    doc = (Path(__file__).resolve().parents[1] / "docs" / "json.md").read_text()
    changes = doc.split("## What changed from version 1", 1)[1]
    for command, test in ENVELOPE_TESTS.items():
        fn = globals()[test]
        src = inspect.getsource(getattr(fn, "__wrapped__", fn))
        name = _schema_name(command)
        assert "_envelope(" in src and f'"{name}"' in src and "--json" in src, (command, test)
        assert name in schemas, f"docs/json.md documents no edgecv/{name}/<version>"
        # the documented version is the one the command prints; a version past 1 says what changed
        assert schemas[name][0] == json_schema(name), (name, schemas[name][0], json_schema(name))
        assert not json_schema(name).endswith("/2") or f"`{json_schema(name)}`" in changes, name


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
    got = {(r["backend"], r["precision"]) for r in d["rows"]}
    assert {("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")} <= got, got
    assert all(r["agrees_with_torch"] for r in d["rows"])
    assert all(
        0 < r["latency"]["p50_ms"] <= r["latency"]["p99_ms"] and r["latency"]["throughput"] > 0 for r in d["rows"]
    )
    # no --calib: INT8 is left out, and the output says so
    assert any(s.startswith("onnxruntime:int8: no calibration data") for s in d["skipped"])
    # OpenVINO precisions beyond fp32 are asked of the device, never assumed
    from edgecv.bench.roofline import supported_precisions

    caps = supported_precisions("openvino", "CPU")
    for prec in ("bf16", "fp16"):
        assert (("openvino", prec) in got) == (prec in caps)
    lines = (tmp_path / "t.csv").read_text().strip().splitlines()
    assert lines[0].startswith("backend,precision,ran") and len(lines) == 1 + len(d["rows"])
    assert (tmp_path / "t.md").read_text().count("\n") == 2 + len(d["rows"])


def _imagefolder(root: Path, classes: tuple[str, ...] = ("c0", "c3")) -> Path:
    """train/ and val/ splits of two of the tiny bundle's classes (c0..c9), two images each."""
    import cv2

    for split in ("train", "val"):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(2):
                cv2.imwrite(str(d / f"{i}.png"), np.full((40, 40, 3), 50 * i + 90 * k, np.uint8))
    return root


def _masks(root: Path) -> Path:
    import cv2

    for sub in ("images", "masks"):
        (root / "val" / sub).mkdir(parents=True)
    cv2.imwrite(str(root / "val" / "images" / "a.png"), np.zeros((16, 16, 3), np.uint8))
    cv2.imwrite(str(root / "val" / "masks" / "a.png"), np.zeros((16, 16), np.uint8))
    return root


def test_val_takes_the_root_or_the_split_and_refuses_early(pristine: Path, tmp_path: Path, cli) -> None:
    """Finding 9: --val accepts the data set root and its split alike, and a wrong layout fails before any work."""
    data = _imagefolder(tmp_path / "cls")
    metrics = []
    for val in (data, data / "val"):
        proc = cli(
            "validate", str(pristine), "-b", "onnxruntime", "--val", str(val), "--no-record", "--json", env=_env()
        )
        d = _envelope(proc, "validate")
        assert proc.returncode == 0, proc.stderr[-800:]
        tm = d["task_metric"]
        assert all({"backend", "precision", "precision_ran", "metric", "delta"} <= set(r) for r in tm["rows"])
        metrics.append((tm["n"], [(r["backend"], r["metric"]) for r in tm["rows"] if r["backend"] != "torch"]))
    assert metrics[0] == metrics[1] and metrics[0][0] == 4, metrics
    seg = _masks(tmp_path / "seg")
    empty = tmp_path / "empty"
    (empty / "val").mkdir(parents=True)
    out = tmp_path / "q"
    for args in (
        ["validate", str(pristine), "-b", "onnxruntime", "--val", str(seg), "--no-record"],
        ["quantize", str(pristine), "-o", str(out), "--calib", str(data / "val"), "--val", str(seg)],
        # --val before the bundle on the command line: the same check, as early
        ["quantize", "--val", str(seg), "-o", str(out), "--calib", str(data / "val"), str(pristine)],
        ["compile", str(pristine), "-b", "onnxruntime:int8", "--calib", str(data / "val"), "--val", str(empty)],
    ):
        proc = cli(*args, env=_env())
        assert proc.returncode == 2, (args, proc.stderr)
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: --val for classify: expected an ImageFolder tree"), line
        assert "found segment data" in line or "(0 images in all)" in line, line
        assert proc.stdout == "" and not out.exists()
    assert Bundle.open(pristine).artifact("onnxruntime", "int8") is None  # compile built nothing
    # the classes are checked up front too
    other = _imagefolder(tmp_path / "other", classes=("cat", "dog"))
    proc = cli("validate", str(pristine), "-b", "onnxruntime", "--val", str(other), "--no-record", env=_env())
    assert proc.returncode == 2 and "found folder 'cat'" in proc.stderr and proc.stdout == ""


def test_benchmark_val_is_checked_before_any_work(tmp_path: Path, cli) -> None:
    """Finding 9 for benchmark (it takes a model, not a bundle): --val in no known layout, or in another task's
    layout than the zoo model's, is one line, exit 2, before anything is written; a model whose task shows only
    once loaded gets its task's check right after the export, before any engine is built."""
    seg = _masks(tmp_path / "seg")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "b"
    for model, val, needle in (
        ("resnet_tiny", seg, "error: --val for classify: expected an ImageFolder tree"),
        ("resnet_tiny", empty, "error: --val for classify: expected an ImageFolder tree"),
        ("models/m.py:build", empty, "error: --val: expected a data set in a known layout"),
    ):
        proc = cli("benchmark", model, "-o", str(out), "--val", str(val), env=_env())
        assert proc.returncode == 2, (model, val, proc.stderr[-800:])
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith(needle), line
        assert proc.stdout == "" and not out.exists()
    # a file factory (task known only once loaded): the classify check runs after export, before compile
    from edgecv.errors import DataError
    from edgecv.pipeline import benchmark_model

    (tmp_path / "m.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())\n"
    )
    said: list[str] = []
    with pytest.raises(DataError, match=r"^--val for classify: expected an ImageFolder tree .* found segment data"):
        benchmark_model(f"{tmp_path / 'm.py'}:build", out, val=seg, log=said.append)
    assert any(s.startswith("[export]") for s in said) and not any(s.startswith("[compile]") for s in said), said
    assert Bundle.open(out / "bundle").manifest.artifacts == {}


def test_layers_refuses_other_backends_at_once(pristine: Path, cli) -> None:
    """Finding 9: validate --layers reads layers through ONNX Runtime only; anything else fails before loading."""
    proc = cli("validate", str(pristine), "-b", "openvino", "--layers", "--no-record", env=_env())
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "--layers: expected -b onnxruntime among the backends" in line and "found -b openvino:fp32" in line
    proc = cli("validate", str(pristine), "--layers", "--no-record", env=_env())  # no INT8 model in the bundle
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "--layers: expected an INT8 ONNX model" in line and "edgecv compile" in line and "--calib" in line


def test_data_check_and_anchors_take_the_root(tmp_path: Path, cli) -> None:
    """Finding 9: data check and anchors accept the root validate accepts (no 'pass labels_dir')."""
    root = tmp_path / "det"
    args = ["data", "synth", "--task", "detect", "-o", str(root), "--n-train", "3", "--n-val", "3", "--size", "32"]
    assert cli(*args, env=_env()).returncode == 0
    for given, split, layout in (
        (root, "train", "yolo"),
        (root, "val", "yolo"),
        (root / "images" / "val", "train", "yolo"),
        (root / "val.json", "train", "coco"),
    ):
        proc = cli("data", "check", str(given), "--task", "detect", "--split", split, "--json", env=_env())
        d = _envelope(proc, "data-check")
        assert (d["layout"], d["images"]) == (layout, 3), (given, d)
    proc = cli("anchors", str(root), "-k", "2", "--json", env=_env())
    assert _envelope(proc, "anchors")["boxes"] > 0
    proc = cli("data", "check", str(root), "--task", "segment", env=_env())
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "expected image + mask folders" in line and "found detect data" in line


def _reference_script():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "cli_reference.py"
    spec = importlib.util.spec_from_file_location("cli_reference", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_name_per_idea() -> None:
    """Finding 4: one option name per idea across commands (docs/cli.md lists them), the retired names are gone,
    -p is --precision wherever it exists and --method has one default."""
    import typer.main

    from edgecv.cli.app import app

    ref = _reference_script()
    names = ref.options_by_name()
    for idea, opt in ref.IDEAS:
        assert opt in names, (idea, opt)
    assert ref.name_problems(names) == []  # every shared name has one declared idea; retired names are gone
    assert "--format" in ref.RETIRED and "--model (remote)" in ref.RETIRED and "--decode (run)" in ref.RETIRED
    # the check bites: a retired name taken again, or a shared name nobody declared, is reported
    assert ref.name_problems({**names, "--format": ["repo"]}) == ["--format is retired but repo still take it"]
    assert ref.name_problems({**names, "--decode": ["export", "run"]})[0].startswith("--decode is taken by export, run")
    assert {"bench", "export", "run"} <= set(names["--conf"])
    method_defaults, short = set(), {}
    for name, cmd in ref._commands(typer.main.get_command(app)):
        for p in cmd.params:
            opts = [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]
            if "--json" in opts:  # a flag in every command (run's summary file is --summary)
                assert getattr(p, "is_flag", False), name
            if "--method" in opts:
                method_defaults.add(p.default)
            for o in opts:
                if len(o) == 2 and o.startswith("-"):
                    long = next((x for x in opts if x.startswith("--")), o)
                    short.setdefault(o, set()).add(long)
    assert method_defaults == {"auto"}
    assert short["-p"] == {"--precision"} and short["-b"] == {"--backend"} and short["-o"] == {"--output"}
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert "## One idea, one name" in doc and "| `--score-threshold` | --conf |" in doc


def test_readme_states_what_the_code_does(tmp_path: Path) -> None:
    """Finding 11: the README's zoo count, its --val examples, the random-init note and calib/README's count agree
    with the code."""
    import re

    from edgecv.data.layout import find_layout
    from edgecv.data.synth import generate
    from edgecv.zoo import list_models

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    (count,) = re.findall(r"^(\d+) models:", readme, re.MULTILINE)
    assert int(count) == len(list_models()), (count, len(list_models()))
    assert re.search(r"`torchvision:`.*starts from \*\*random weights\*\* unless", readme.replace("\n", " "))
    # every `data synth --task T -o DIR` followed by a `--val DIR…` example: that --val resolves for task T
    synths = {out: task for task, out in re.findall(r"data synth --task (\w+) -o (\S+)", readme)}
    checked = 0
    for val in re.findall(r"--val (\S+)", readme):
        base = next((o for o in synths if val == o or val.startswith(o + "/")), None)
        if base is None:
            continue
        generate(synths[base], tmp_path / base, n_train=0, n_val=2, size=32, seed=0, force=True)
        assert find_layout(synths[base], tmp_path / val).images == 2, val
        checked += 1
    assert checked >= 2
    # a --val for a detector is a detect data set, never a bare split folder name
    assert "--calib calib/det --val data/val" not in readme
    calib = (root / "calib" / "README.md").read_text()
    rows = [ln for ln in calib.splitlines() if ln.startswith("| `calib/")]
    words = {2: "two", 3: "three", 4: "four"}
    assert f"These {words[len(rows)]} small sets" in calib, rows
    # the pipeline example: its exporter is the one the recipe's opset gets (dynamo needs 18), its time is its table's
    from edgecv.config.schema import load_recipe

    opset = load_recipe(root / "recipes" / "classifier.yaml").export.opset
    (exporter,) = re.findall(r"│ export +│ +ran │ +[\d.]+ │ (\w+), parity", readme)
    assert exporter == ("dynamo" if opset >= 18 else "torchscript"), (exporter, opset)
    (said,) = re.findall(r"edgecv pipeline recipes/classifier.yaml .*\((\d+) s here", readme)
    (took,) = re.findall(r"│ train +│ +ran │ +([\d.]+) │", readme)
    assert round(float(took)) == int(said), (said, took)
    # the INT8 example's warning is the line the code prints: the method auto kept, the count calib/cls holds
    from edgecv.quant.calib import recommended_samples
    from edgecv.quant.ort import METHODS

    ((backend, method, n, folder, need),) = re.findall(
        r"^warning: calibrating (\w+) \((\w+), chosen by --method auto\) with (\d+) samples from images '([^']+)'; "
        r"at least (\d+) are recommended",
        readme,
        re.MULTILINE,
    )
    assert method in METHODS and f"kept {method}" in readme and int(need) == recommended_samples(backend, method)
    assert int(n) == len([f for f in (root / folder).iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg")])


def test_edgecv_warnings_are_one_clean_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Finding 11: a CalibrationWarning reaches the user as one line on stderr, not Python's warning format."""
    import warnings

    from edgecv.cli import app as app_module
    from edgecv.quant.calib import CalibrationWarning

    saved = warnings.showwarning
    try:
        warnings.showwarning = app_module._show_warning
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = app_module._show_warning
            warnings.warn("calibrating openvino (entropy) with 64 samples", CalibrationWarning, stacklevel=1)
            warnings.warn("a third-party notice", DeprecationWarning, stacklevel=1)
    finally:
        warnings.showwarning = saved
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "warning: calibrating openvino (entropy) with 64 samples"
    assert "CalibrationWarning" not in err[0] and ".py:" not in err[0]
    assert any("DeprecationWarning: a third-party notice" in ln for ln in err[1:])  # others keep Python's format


def test_calibration_warning_names_the_chosen_method_on_one_line(pristine: Path, tmp_path: Path, cli) -> None:
    """Finding 11: compile int8 with --method auto (the default) and few calibration images prints the sample-count
    notice once, as one `warning: ...` line without a Python source path, naming the method the artifact was built
    with (it named minmax before auto had chosen)."""
    import cv2

    bundle = tmp_path / "tiny"
    shutil.copytree(pristine, bundle)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(6):
        cv2.imwrite(str(calib / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    proc = cli("compile", str(bundle), "-b", "onnxruntime:int8", "--calib", str(calib), "--json", env=_env())
    assert _envelope(proc, "compile")["passed"], proc.stderr[-800:]
    method = Bundle.open(bundle).artifact("onnxruntime", "int8").build_flags["method"]  # type: ignore[union-attr]
    notes = [ln for ln in proc.stderr.splitlines() if "calibrating" in ln]
    assert notes == [
        f"warning: calibrating onnxruntime ({method}, chosen by --method auto) with 6 samples from images "
        f"'{calib}'; at least {100 if method != 'minmax' else 32} are recommended for stable ranges"
    ], proc.stderr
    assert "CalibrationWarning" not in proc.stderr and ".py:" not in proc.stderr


def test_a_missing_artifact_is_an_input_error_everywhere(compiled: Path, cli) -> None:
    """Finding 5 (exit codes): validate and bench both refuse a target the bundle cannot run in one line, exit 2, no
    table and no JSON, before any engine loads; the hint is a command that builds it (with --calib)."""
    for args in (
        ["validate", str(compiled), "-b", "onnxruntime:int8", "--no-record"],
        ["validate", str(compiled), "-b", "onnxruntime", "-b", "openvino:int8", "--no-record", "--json"],
        [
            "bench",
            str(compiled),
            "-b",
            "onnxruntime",
            "-b",
            "onnxruntime:INT8",
            "--iters",
            "2",
            "--no-record",
            "--json",
        ],
    ):
        proc = cli(*args, env=_env())
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == "", proc.stdout[:300]
        (line,) = proc.stderr.strip().splitlines()
        assert "expected an INT8 artifact in the bundle, found openvino:fp32, onnxruntime:fp16" in line, line
        assert f"edgecv compile {compiled} -b " in line and "--calib" in line
