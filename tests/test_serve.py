"""edgecv serve (MLServer), the remote backend (tritonclient) and edgecv repo (Triton / OVMS repositories).

The server runs in a subprocess on free loopback ports and is stopped at the end; MLServer is never imported into
the test process (its protobufs and tritonclient's both register ``inference.*`` and clash in one process).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, run_cli

TOKEN = "edgecv-test-token-0123456789"


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _http(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw.strip().startswith(b"{") else {"text": raw.decode()}
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw.strip().startswith(b"{") else {"text": raw.decode()}


# ------------------------------------------------------------------------------------------------ no server
def test_check_request_inputs_reasons() -> None:
    from edgecv.serve.server import check_request_inputs

    specs = [SimpleNamespace(name="input", datatype="FP32", shape=[-1, 3, 4, 4])]

    def req(name: str = "input", dt: str = "FP32", shape: tuple[int, ...] = (1, 3, 4, 4), n: int | None = None) -> Any:
        data = SimpleNamespace(root=[0.0] * (n if n is not None else int(np.prod(shape))))
        return [SimpleNamespace(name=name, datatype=dt, shape=list(shape), data=data)]

    assert check_request_inputs(req(), specs, 8) is None
    assert check_request_inputs(req(shape=(8, 3, 4, 4)), specs, 8) is None
    assert check_request_inputs(req(name="x"), specs, 8) == "expected inputs ['input'], found ['x']"
    assert check_request_inputs(req(dt="INT32"), specs, 8) == "input 'input': expected datatype FP32, found INT32"
    assert (
        check_request_inputs(req(shape=(1, 3, 4, 5)), specs, 8)
        == "input 'input': expected shape ?x3x4x4, found 1x3x4x5"
    )
    assert (
        check_request_inputs(req(shape=(9, 3, 4, 4)), specs, 8) == "input 'input': expected a batch of 1 to 8, found 9"
    )
    assert (
        check_request_inputs(req(n=5), specs, 8) == "input 'input': expected 48 values for shape [1, 3, 4, 4], found 5"
    )


def test_parse_endpoint() -> None:
    from edgecv.backends.remote import parse_endpoint
    from edgecv.errors import ConfigError

    assert parse_endpoint("http://127.0.0.1:8000") == ("http", "127.0.0.1:8000", False)
    assert parse_endpoint("127.0.0.1:9000") == ("http", "127.0.0.1:9000", False)
    assert parse_endpoint("grpc://localhost:8001") == ("grpc", "localhost:8001", False)
    assert parse_endpoint("https://host") == ("http", "host:443", True)
    with pytest.raises(ConfigError, match="expected http://HOST:PORT"):
        parse_endpoint("ftp://x:1")


def test_serve_refuses_network_bind_without_token(pristine: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGECV_TOKEN"}
    proc = subprocess.run(
        [sys.executable, "-m", "edgecv", "serve", str(pristine), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "expected a token" in lines[0], proc.stderr


def test_remote_needs_an_endpoint(pristine: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGECV_ENDPOINT"}
    proc = run_cli("validate", str(pristine), "-b", "remote", env=env)
    assert proc.returncode == 2
    assert "expected --endpoint" in proc.stderr


# ------------------------------------------------------------------------------------------------ repo
@pytest.mark.onnxruntime
def test_repo_triton_configs_parse_and_match_bundle(bundle_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from edgecv.backends.oip import CONTRACT_KEY
    from edgecv.bundle import Bundle, Contract
    from edgecv.serve.repository import io_specs

    assert run_cli("compile", str(bundle_dir), "--backend", "openvino", "--precision", "fp32").returncode == 0
    assert run_cli("compile", str(bundle_dir), "--backend", "onnxruntime", "--precision", "fp16").returncode == 0
    out = tmp_path / "repo"
    proc = run_cli("repo", str(bundle_dir), "--server", "triton", "-o", str(out), "--json", "--instances", "2")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    b = Bundle.open(bundle_dir)
    ins, outs = io_specs(b)
    names = {m["name"]: m for m in rep["models"]}
    assert set(names) == {"tiny_onnxruntime_fp32", "tiny_onnxruntime_fp16", "tiny_openvino_fp32"}
    for name in names:
        cfg = text_format.Parse((out / name / "config.pbtxt").read_text(), mc.ModelConfig())
        assert cfg.name == name
        assert cfg.max_batch_size == b.contract.batch_range[2] == 8
        assert [i.name for i in cfg.input] == [s.name for s in ins]
        assert [o.name for o in cfg.output] == [s.name for s in outs]
        for t, s in [*zip(cfg.input, ins), *zip(cfg.output, outs)]:
            assert list(t.dims) == [d for d in s.shape[1:]]  # the batch dimension is max_batch_size's
            assert mc.DataType.Name(t.data_type) == "TYPE_FP32"
        assert list(cfg.dynamic_batching.preferred_batch_size) == [8]
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        assert cfg.instance_group[0].count == 2 and cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        assert Contract.from_json(cfg.parameters[CONTRACT_KEY].string_value) == b.contract
        if "openvino" in name:
            assert cfg.backend == "openvino" and not cfg.platform
            assert sorted(p.name for p in (out / name / "1").iterdir()) == ["model.bin", "model.xml"]
        else:
            assert cfg.platform == "onnxruntime_onnx"
            assert (out / name / "1" / "model.onnx").is_file()
    fp32 = (out / "tiny_onnxruntime_fp32" / "1" / "model.onnx").read_bytes()
    assert fp32 == b.onnx_path.read_bytes()
    # a second write needs --force; a foreign folder and the bundle itself are refused; nothing is destroyed
    again = run_cli("repo", str(bundle_dir), "-o", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    assert run_cli("repo", str(bundle_dir), "-o", str(out), "--force").returncode == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    proc = run_cli("repo", str(bundle_dir), "-o", str(foreign), "--force")
    assert proc.returncode == 2 and "did not make" in proc.stderr
    assert (foreign / "keep.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    proc = run_cli("repo", str(bundle_dir), "-o", str(bundle_dir / "repo"))
    assert proc.returncode == 2 and "outside the bundle" in proc.stderr
    Bundle.open(bundle_dir).verify()


def test_triton_config_scalar_output_and_tensorrt_cc(tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from edgecv.serve.repository import triton_config
    from edgecv.types import TensorSpec

    text = triton_config(
        "det",
        "tensorrt",
        [TensorSpec("input", (None, 3, 96, 96))],
        [TensorSpec("boxes", (None, 100, 4)), TensorSpec("num_dets", (None,), "int64")],
        {"edgecv_task": "detect"},
        (1, 4, 16),
        cc_files={"8.6": "model_sm86.plan", "8.7": "model_sm87.plan"},
        default_file="model_sm86.plan",
    )
    cfg = text_format.Parse(text, mc.ModelConfig())
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16
    assert dict(cfg.cc_model_filenames) == {"8.6": "model_sm86.plan", "8.7": "model_sm87.plan"}
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 16]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    nd = cfg.output[1]
    assert nd.name == "num_dets" and list(nd.dims) == [1] and nd.HasField("reshape") and not nd.reshape.shape
    assert mc.DataType.Name(nd.data_type) == "TYPE_INT64"


@pytest.mark.onnxruntime
def test_repo_ovms(pristine: Path, tmp_path: Path) -> None:
    out = tmp_path / "ovms"
    proc = run_cli("repo", str(pristine), "--server", "ovms", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((out / "config.json").read_text())
    [entry] = cfg["model_config_list"]
    c = entry["config"]
    assert c["name"] == "tiny_onnxruntime_fp32" and c["base_path"] == "./tiny_onnxruntime_fp32"
    assert c["shape"] == {"input": "(1:8,3,32,32)"}
    assert (out / "tiny_onnxruntime_fp32" / "1" / "model.onnx").is_file()
    assert json.loads((out / "tiny_onnxruntime_fp32" / "edgecv_contract.json").read_text())["batch_range"] == [1, 1, 8]


# ------------------------------------------------------------------------------------------------ live server
@pytest.fixture(scope="module")
def server(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if importlib.util.find_spec("mlserver") is None:  # never imported here: see the module docstring
        pytest.skip("mlserver is not installed (pip install 'edgecv[serve]')")
    pytest.importorskip("tritonclient.grpc")
    pytest.importorskip("onnxruntime")
    http, grpc_port, metrics = _free_ports(3)
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    fh = log.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgecv",
            "serve",
            str(pristine),
            "-b",
            "onnxruntime",
            "--port",
            str(http),
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(metrics),
            "--workers",
            "1",
            "--threads",
            "1",
            "--max-batch-time",
            "5",
            "--token",
            TOKEN,
        ],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{http}"
    deadline = time.time() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if _http(f"{base}/v2/models/tiny/ready", token=TOKEN)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"server not ready in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield SimpleNamespace(
            proc=proc,
            http=base,
            grpc=f"grpc://127.0.0.1:{grpc_port}",
            metrics=f"http://127.0.0.1:{metrics}/metrics",
            bundle=pristine,
            log=log,
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        fh.close()


@pytest.mark.onnxruntime
def test_server_health_metadata_metrics_and_token(server: Any) -> None:
    from edgecv.bundle import Bundle, Contract

    assert _http(f"{server.http}/v2/health/live")[0] == 200  # probes need no token
    assert _http(f"{server.http}/v2/health/ready")[0] == 200
    code, body = _http(f"{server.http}/v2/models/tiny")
    assert code == 401 and "bearer token" in body["error"]
    code, meta = _http(f"{server.http}/v2/models/tiny", token=TOKEN)
    assert code == 200
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    assert Contract.from_json(meta["parameters"]["edgecv_contract"]) == Bundle.open(server.bundle).contract
    assert meta["parameters"]["edgecv_backend"] == "onnxruntime"
    assert _http(server.metrics)[0] == 401
    code, text = _http(server.metrics, token=TOKEN)
    assert code == 200 and "rest_server_requests_total" in text["text"]

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    c = grpcclient.InferenceServerClient(server.grpc.removeprefix("grpc://"))
    assert c.is_server_live()  # ServerLive stays open
    with pytest.raises(InferenceServerException, match="bearer token"):
        c.get_model_metadata("tiny")
    assert c.get_model_metadata("tiny", headers={"authorization": f"Bearer {TOKEN}"}).name == "tiny"
    c.close()


@pytest.mark.onnxruntime
def test_bad_requests_are_400_and_server_keeps_serving(server: Any) -> None:
    url = f"{server.http}/v2/models/tiny/infer"
    good = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]}
    bad = [
        (
            {"inputs": [{"name": "x", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]},
            "expected inputs ['input'], found ['x']",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 3, 32, 31], "datatype": "FP32", "data": [0.5] * 2976}]},
            "input 'input': expected shape ?x3x32x32, found 1x3x32x31",
        ),
        (
            {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "INT64", "data": [0] * 3072}]},
            "input 'input': expected datatype FP32, found INT64",
        ),
        (
            {"inputs": [{"name": "input", "shape": [9, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072 * 9}]},
            "input 'input': expected a batch of 1 to 8, found 9",
        ),
    ]
    for body, reason in bad:
        code, resp = _http(url, body, token=TOKEN)
        assert code == 400, resp
        assert resp["error"] == reason and "\n" not in resp["error"]
    code, resp = _http(url, good, token=TOKEN)
    assert code == 200 and resp["outputs"][0]["shape"] == [1, 10]
    assert server.proc.poll() is None


@pytest.mark.onnxruntime
@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_remote_runner_equals_local_runner(server: Any, proto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecv.backends import open_runner
    from edgecv.bundle import Bundle
    from edgecv.errors import InputError

    monkeypatch.setenv("EDGECV_TOKEN", TOKEN)
    b = Bundle.open(server.bundle)
    x = b.load_reference()["inputs"]["input"] if "inputs" in b.load_reference() else None
    if x is None:
        x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    endpoint = server.http if proto == "http" else server.grpc
    with open_runner(b, "onnxruntime", threads=1) as local, open_runner(b, "remote", endpoint=endpoint) as remote:
        assert remote.input_spec == local.input_spec and remote.output_spec == local.output_spec
        assert remote.precision == "fp32" and remote.describe()["model"] == "tiny"
        want = local.infer({"input": x})["output"]
        got = remote.infer({"input": x})["output"]
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)  # the same engine on the same bytes: bit-identical
        with pytest.raises(InputError, match="expected dtype float32"):
            remote.infer({"input": x.astype(np.float64)})  # checked client-side first, like every runner


@pytest.mark.onnxruntime
def test_concurrent_clients_batch_on_server(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecv.backends import open_runner
    from edgecv.bench.concurrent import bench_concurrent
    from edgecv.bundle import Bundle

    monkeypatch.setenv("EDGECV_TOKEN", TOKEN)
    b = Bundle.open(server.bundle)
    feed = {"input": np.zeros((1, 3, 32, 32), np.float32)}
    res = bench_concurrent(
        lambda: open_runner(b, "remote", endpoint=server.grpc), feed, 3, label="remote", warmup=1, min_time_s=0.5
    )
    assert res.clients == 3 and res.requests >= 3 and res.batch == 1
    assert res.throughput == pytest.approx(res.requests / res.wall_s)
    assert res.p50_ms <= res.p99_ms
    code, text = _http(server.metrics, token=TOKEN)  # the adaptive batcher and the workers report to Prometheus
    assert code == 200
    for metric in (
        "batch_request_queue_count",
        "parallel_request_queue_count",
        "model_infer_request_success_total",
        "edgecv_infer_batch_items_count",
    ):
        assert metric in text["text"]
    import re

    items = float(re.search(r"^edgecv_infer_batch_items_sum\{[^}]*\} (\S+)$", text["text"], re.MULTILINE).group(1))
    calls = float(re.search(r"^edgecv_infer_batch_items_count\{[^}]*\} (\S+)$", text["text"], re.MULTILINE).group(1))
    assert calls >= 1 and items >= calls  # every call ran at least one item; merged ones ran more


@pytest.mark.onnxruntime
def test_validate_and_bench_remote_cli(server: Any) -> None:
    env = {"EDGECV_TOKEN": TOKEN}
    proc = run_cli(
        "validate",
        str(server.bundle),
        "-b",
        "onnxruntime",
        "-b",
        "remote",
        "--endpoint",
        server.grpc,
        "--reference",
        "npz",
        "--json",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    errs = {r["backend"]: r["outputs"][0]["max_abs"] for r in rep["rows"]}
    assert errs["remote"] == errs["onnxruntime"]
    proc = run_cli(
        "bench",
        str(server.bundle),
        "-b",
        "remote",
        "--endpoint",
        server.http,
        "--iters",
        "5",
        "--warmup",
        "1",
        "--rounds",
        "1",
        "--no-stages",
        "--concurrency",
        "1",
        "--concurrency",
        "2",
        "--min-time",
        "0.5",
        "--json",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["rows"][0]["backend"] == "remote" and d["rows"][0]["latency"]["iters"] == 5
    assert [c["clients"] for c in d["concurrency"]] == [1, 2]
    assert all(c["requests"] > 0 for c in d["concurrency"])
    # a wrong token is one line and exit 2
    proc = run_cli(
        "validate", str(server.bundle), "-b", "remote", "--endpoint", server.http, env={"EDGECV_TOKEN": "x" * 20}
    )
    assert proc.returncode == 2 and "bearer token" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.onnxruntime
def test_server_dying_is_one_line_and_exit_2(server: Any) -> None:
    """Last test of the module: stop the server, then every client command says so in one line."""
    os.killpg(server.proc.pid, signal.SIGTERM)
    server.proc.wait(timeout=30)
    env = {"EDGECV_TOKEN": TOKEN}
    for endpoint in (server.http, server.grpc):
        proc = run_cli("validate", str(server.bundle), "-b", "remote", "--endpoint", endpoint, env=env)
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: remote:fp32:") and "model 'tiny'" in last


def test_repo_tensorrt_engines_per_compute_capability(bundle_dir: Path, tmp_path: Path) -> None:
    """Engines are GPU-generation specific: each recorded compute capability gets its own plan file and a
    cc_model_filenames entry; OVMS, which cannot load engines, skips them and says so."""
    pytest.importorskip("tritonclient.grpc")
    pytest.importorskip("onnx")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    from edgecv.bundle import Artifact, Bundle
    from edgecv.serve.repository import write_repository

    b = Bundle.open(bundle_dir)
    files = {}
    for cc, payload in (("8.6", b"engine-for-sm86"), ("8.7", b"engine-for-sm87")):
        src = tmp_path / f"e{cc}"
        src.write_bytes(payload)
        files[f"tensorrt/fp16/model_sm{cc.replace('.', '')}.engine"] = src
    b.add_artifact(
        Artifact(
            backend="tensorrt",
            precision="fp16",
            path="tensorrt/fp16/model_sm86.engine",
            build_flags={"batch_range": [1, 2, 4]},
            extra={"engines": {"8.6": "tensorrt/fp16/model_sm86.engine", "8.7": "tensorrt/fp16/model_sm87.engine"}},
        ),
        files,
    )
    rep = write_repository(Bundle.open(bundle_dir), tmp_path / "triton")
    m = next(x for x in rep["models"] if x["backend"] == "tensorrt")
    mdir = tmp_path / "triton" / m["name"]
    cfg = text_format.Parse((mdir / "config.pbtxt").read_text(), mc.ModelConfig())
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 4  # the engine's own profile, not the bundle's
    assert dict(cfg.cc_model_filenames) == {"8.6": "model_sm86.plan", "8.7": "model_sm87.plan"}
    assert (mdir / "1" / "model_sm87.plan").read_bytes() == b"engine-for-sm87"
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    ovms = write_repository(Bundle.open(bundle_dir), tmp_path / "ovms", fmt="ovms")
    assert all(x["backend"] != "tensorrt" for x in ovms["models"])
    assert any("cannot load TensorRT" in n for n in ovms["notes"])
    # a tampered engine is refused (hash check), and nothing is left behind
    (bundle_dir / "tensorrt/fp16/model_sm87.engine").write_bytes(b"tampered")
    with pytest.raises(Exception, match="(?i)hash|sha|modified|changed"):
        write_repository(Bundle.open(bundle_dir, verify=False), tmp_path / "again")
    assert not (tmp_path / "again").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".again")]
