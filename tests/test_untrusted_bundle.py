"""A bundle is untrusted input (issue 12): no code runs from it, nothing outside it is touched, no user file is lost.

Each test reproduces one of the ten bugs found by trying bundles as a hostile user would; each failed before the fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecv._io import sha256_path

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime]


# ------------------------------------------------------------------------------------------------ helpers
def edit_manifest(bundle: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    """Change manifest.json as an attacker would (the manifest itself carries no hash)."""
    m = json.loads((bundle / "manifest.json").read_text())
    fn(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def rehash(bundle: Path, rel: str) -> None:
    """Re-record a file's hash after changing it, so the file looks legitimate."""
    edit_manifest(bundle, lambda m: m["files"].__setitem__(rel, sha256_path(bundle / rel)))


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (sha256_path(p) if p.is_file() else "dir") for p in sorted(folder.rglob("*"))}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder of the user's, beside the bundle, that nothing may read into a result or change."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "keep.txt").write_text("the user's file\n")
    (d / "model.xml").write_text("<net/>\n")
    return d


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path_factory.mktemp("vid") / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25, (160, 120))
    rng = np.random.default_rng(0)
    for i in range(30):
        frame = np.full((120, 160, 3), (i * 8) % 255, np.uint8)
        frame[20:60, 30 + i : 70 + i] = rng.integers(0, 255, 3)
        w.write(frame)
    w.release()
    return path


# ------------------------------------------------------------------------------------------------ 1. no code runs
EVIL = """
from pathlib import Path
Path(__file__).with_name("PWNED").write_text("code from the bundle ran")
def build(**kw):
    import torch
    return torch.nn.Identity()
"""


@pytest.mark.parametrize("kind", ["zoo", "file", "torchvision", "checkpoint", "torchscript", "torch_export", ""])
def test_validate_never_imports_a_file_the_manifest_names(cli, bundle_dir: Path, kind: str) -> None:
    (bundle_dir / "evil.py").write_text(EVIL)
    spec = f"{bundle_dir / 'evil.py'}:build"
    edit_manifest(bundle_dir, lambda m: m["provenance"].__setitem__("source", {"kind": kind, "spec": spec}))
    proc = cli("validate", str(bundle_dir), "-b", "onnxruntime", "--json")
    assert not (bundle_dir / "PWNED").exists(), "a file named by the bundle was imported"
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["reference"] == "npz"  # the saved reference, since nothing safe can rebuild the model
    # the torch backend itself cannot be had from such a bundle: one line, exit 2, still nothing ran
    bench = cli("bench", str(bundle_dir), "-b", "torch", "--iters", "2", "--warmup", "0")
    assert "pass --model-source" in one_error_line(bench) or "registered" in bench.stderr
    assert not (bundle_dir / "PWNED").exists()


def test_a_source_named_on_the_command_line_rebuilds_the_live_reference(cli, bundle_dir: Path) -> None:
    """The user's own --source is trusted (as any import is): the live torch reference comes back."""
    helpers = Path(__file__).with_name("helpers.py")
    proc = cli("validate", str(bundle_dir), "-b", "onnxruntime", "--json", "--model-source", f"{helpers}:tiny_cnn")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["reference"] == "live" and "agrees with reference.npz" in d["reference_note"]
    without = json.loads(cli("validate", str(bundle_dir), "-b", "onnxruntime", "--json").stdout)
    assert without["reference"] == "npz" and "pass --model-source" in without["reference_note"]


def test_zoo_name_that_is_a_path_is_refused(bundle_dir: Path) -> None:
    from edgecv.bundle import Bundle
    from edgecv.errors import ModelSourceError
    from edgecv.export.sources import load_model_from_manifest

    (bundle_dir / "evil.py").write_text(EVIL)
    for spec in (f"{bundle_dir}/evil.py:build", "../evil", "resnet18:../../x", "a b"):
        edit_manifest(bundle_dir, lambda m, s=spec: m["provenance"].__setitem__("source", {"kind": "zoo", "spec": s}))
        with pytest.raises(ModelSourceError):
            load_model_from_manifest(Bundle.open(bundle_dir).manifest)
    assert not (bundle_dir / "PWNED").exists()


# ------------------------------------------------------------------------------------------------ 2. confinement
@pytest.mark.parametrize(
    "path",
    [
        "../outside/model.xml",
        "../../x/model.xml",
        "/etc/passwd",
        "openvino/../../x.xml",
        "~/model.xml",
        "C:\\\\x\\\\model.xml",
    ],
)
def test_artifact_path_outside_the_bundle_is_refused(cli, bundle_dir: Path, outside: Path, path: str) -> None:
    art = {"backend": "openvino", "precision": "fp32", "path": path}
    edit_manifest(bundle_dir, lambda m: m["artifacts"].__setitem__("openvino:fp32", art))
    before = tree_digest(outside)
    line = one_error_line(cli("validate", str(bundle_dir), "-b", "openvino"))
    assert "inside the bundle" in line
    assert tree_digest(outside) == before


def test_artifact_not_hash_listed_is_refused(bundle_dir: Path) -> None:
    from edgecv.backends import open_runner
    from edgecv.bundle import Bundle
    from edgecv.errors import BundleError

    (bundle_dir / "openvino" / "fp32").mkdir(parents=True)
    shutil.copy(bundle_dir / "model.onnx", bundle_dir / "openvino" / "fp32" / "model.onnx")
    art = {"backend": "onnxruntime", "precision": "fp16", "path": "openvino/fp32/model.onnx"}
    edit_manifest(bundle_dir, lambda m: m["artifacts"].__setitem__("onnxruntime:fp16", art))
    with pytest.raises(BundleError, match="not among the files its manifest hashes"):
        open_runner(Bundle.open(bundle_dir, verify=False), "onnxruntime", "fp16")


@pytest.mark.parametrize("entry", ["/etc/shadow", "/etc/passwd", "../outside/keep.txt"])
def test_files_entry_outside_the_bundle_is_never_read(cli, bundle_dir: Path, outside: Path, entry: str) -> None:
    edit_manifest(bundle_dir, lambda m: m["files"].__setitem__(entry, "0" * 64))
    proc = cli("validate", str(bundle_dir), "-b", "onnxruntime")
    line = one_error_line(proc)
    assert "inside the bundle" in line
    digest = sha256_path(outside / "keep.txt")
    assert digest[:12] not in proc.stderr + proc.stdout


def test_symlink_leading_out_is_refused_for_reading(cli, bundle_dir: Path, outside: Path) -> None:
    (bundle_dir / "openvino").symlink_to(outside, target_is_directory=True)
    edit_manifest(
        bundle_dir, lambda m: m["files"].__setitem__("openvino/model.xml", sha256_path(outside / "model.xml"))
    )
    line = one_error_line(cli("validate", str(bundle_dir), "-b", "onnxruntime"))
    assert "symlink" in line


# ------------------------------------------------------------------------------------------------ 3. symlink writes
@pytest.mark.openvino
def test_compile_never_writes_or_deletes_through_a_symlink(cli, bundle_dir: Path, outside: Path) -> None:
    (outside / "fp32").mkdir()
    (outside / "fp32" / "precious.txt").write_text("do not delete\n")
    (bundle_dir / "openvino").symlink_to(outside, target_is_directory=True)
    before = tree_digest(outside)
    line = one_error_line(cli("compile", str(bundle_dir), "-b", "openvino", "-p", "fp32"))
    assert "symlink" in line
    assert tree_digest(outside) == before
    assert not [p for p in bundle_dir.iterdir() if p.name.startswith(".build-")]


# ------------------------------------------------------------------------------------------------ 4. concurrency
@pytest.mark.openvino
def test_concurrent_compiles_all_land(bundle_dir: Path) -> None:
    env = dict(os.environ)
    env.pop("EDGECV_DEBUG", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "edgecv", "compile", str(bundle_dir), "-b", backend, "-p", prec],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for backend, prec in (("openvino", "fp32"), ("openvino", "fp16"), ("onnxruntime", "fp16"))
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    from edgecv.bundle import Bundle

    b = Bundle.open(bundle_dir)  # every hash still matches
    assert {"openvino:fp32", "openvino:fp16", "onnxruntime:fp16"} <= set(b.manifest.artifacts)
    assert {"openvino/fp32", "openvino/fp16", "onnxruntime/fp16"} <= set(b.manifest.files)


def test_stale_temporaries_of_a_killed_run_are_cleaned(bundle_dir: Path, tmp_path: Path) -> None:
    import tempfile

    from edgecv._io import scratch_dir
    from edgecv.bundle import Bundle

    dead = subprocess.Popen(["true"])
    dead.wait()
    pid = dead.pid
    stale = [
        bundle_dir / f".build-{pid}-abc",
        bundle_dir / f".model.onnx.{pid}.x1y2z3.tmp",
        Path(tempfile.gettempdir()) / f"edgecv-int8-{pid}-abc",
    ]
    live = bundle_dir / f".build-{os.getpid()}-mine"  # a concurrent run's (this process is alive)
    for p in (*stale, live):
        p.mkdir() if "tmp" not in p.name else p.write_text("x")
    b = Bundle.open(bundle_dir)
    with b.update():
        pass
    with scratch_dir("int8"):
        pass
    assert not any(p.exists() for p in stale)
    assert live.exists()
    live.rmdir()


# ------------------------------------------------------------------------------------------------ 5. full disk
@contextlib.contextmanager
def small_disk(tmp_path: Path, size_kb: int) -> Iterator[Path]:
    """A real filesystem that fills up: a tmpfs of ``size_kb`` (needs root, as CI has)."""
    mnt = tmp_path / f"disk{size_kb}"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}); the full-disk path needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.stream
@pytest.mark.parametrize("writer", ["opencv", "ffmpeg"])
def test_run_save_on_a_full_disk_fails_and_leaves_no_file(
    cli, bundle_dir: Path, video: Path, tmp_path: Path, writer: str
) -> None:
    if writer == "ffmpeg" and not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is not installed")
    with small_disk(tmp_path, 16) as disk:
        out = disk / "out.mp4"
        proc = cli(
            "run",
            str(bundle_dir),
            "--source",
            str(video),
            "--save",
            str(out),
            "--writer",
            writer,
            "--loop",
            "--max-frames",
            "300",
            "-q",
        )
        line = one_error_line(proc)
        assert "out.mp4" in line and ("space" in line or "could not write" in line)
        assert not out.exists()
        assert not list(disk.iterdir()), "a partial file was left behind"


@pytest.mark.stream
def test_run_jsonl_on_a_full_disk_fails_and_leaves_no_file(cli, bundle_dir: Path, video: Path, tmp_path: Path) -> None:
    with small_disk(tmp_path, 4) as disk:
        out = disk / "r.jsonl"
        proc = cli(
            "run", str(bundle_dir), "--source", str(video), "--jsonl", str(out), "--loop", "--max-frames", "400", "-q"
        )
        line = one_error_line(proc)
        assert "r.jsonl" in line and "space" in line
        assert not out.exists()


@pytest.mark.openvino
def test_compile_on_a_full_disk_says_so(cli, pristine: Path, tmp_path: Path) -> None:
    size_kb = int(sum(p.stat().st_size for p in pristine.rglob("*") if p.is_file()) / 1024) + 24
    with small_disk(tmp_path, size_kb) as disk:
        b = disk / "b"
        shutil.copytree(pristine, b)
        line = one_error_line(cli("compile", str(b), "-b", "openvino", "-p", "fp32"))
        assert "no space left" in line and "basic_ios" not in line
        assert not [p for p in b.iterdir() if p.name.startswith(".")], "temporary files left behind"
        assert "openvino:fp32" not in json.loads((b / "manifest.json").read_text())["artifacts"]


# ------------------------------------------------------------------------------------------------ 6. run outputs
@pytest.mark.stream
@pytest.mark.parametrize("flag", ["--jsonl", "--save", "--summary"])
def test_run_refuses_to_write_over_its_source(cli, bundle_dir: Path, video: Path, tmp_path: Path, flag: str) -> None:
    src = tmp_path / "v.mp4"
    shutil.copy(video, src)
    link = tmp_path / "link.mp4"
    link.symlink_to(src)
    digest = sha256_path(src)
    for target in (src, link):
        line = one_error_line(cli("run", str(bundle_dir), "--source", str(src), flag, str(target), "-q"))
        assert "the input itself" in line
    assert sha256_path(src) == digest


@pytest.mark.stream
def test_run_keeps_old_results_unless_forced(cli, bundle_dir: Path, video: Path, tmp_path: Path) -> None:
    old = tmp_path / "r.jsonl"
    old.write_text('{"old": 1}\n')
    line = one_error_line(cli("run", str(bundle_dir), "--source", str(video), "--jsonl", str(old), "-q"))
    assert "--force" in line
    assert old.read_text() == '{"old": 1}\n'
    # a source that fails to open leaves the old file untouched, even with --force
    proc = cli("run", str(bundle_dir), "--source", str(tmp_path / "missing.mp4"), "--jsonl", str(old), "--force", "-q")
    assert proc.returncode == 2
    assert old.read_text() == '{"old": 1}\n'
    ok = cli("run", str(bundle_dir), "--source", str(video), "--jsonl", str(old), "--force", "-q")
    assert ok.returncode == 0, ok.stderr
    assert len(old.read_text().splitlines()) == 30


# ------------------------------------------------------------------------------------------------ 7. folders
def test_export_force_never_wipes_a_foreign_folder(cli, tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("mine")
    line = one_error_line(cli("export", "mobilenet_v2_tiny", "-o", str(d), "--force"))
    assert "does not delete" in line
    assert (d / "a").read_text() == "mine"


def test_data_synth_and_calib_sample_refuse_a_foreign_folder(cli, tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("mine")
    for args in (
        ("data", "synth", "--task", "classify", "-o", str(d), "--n-train", "2", "--n-val", "1", "--size", "32"),
        ("calib", "sample", str(d), "-o", str(d), "-n", "1"),
    ):
        for force in ((), ("--force",)):
            proc = cli(*args, *force)
            assert proc.returncode == 2, proc.stderr
            assert (d / "a").read_text() == "mine"
    # its own output: refused without --force, replaced with it
    own = tmp_path / "own"
    base = ("data", "synth", "--task", "classify", "-o", str(own), "--n-train", "2", "--n-val", "1", "--size", "32")
    assert cli(*base).returncode == 0
    assert "--force" in one_error_line(cli(*base))
    assert cli(*base, "--force").returncode == 0
    imgs = own / "train"
    sample = tmp_path / "sample"
    assert cli("calib", "sample", str(imgs), "-o", str(sample), "-n", "1").returncode == 0
    assert "--force" in one_error_line(cli("calib", "sample", str(imgs), "-o", str(sample), "-n", "1"))
    assert cli("calib", "sample", str(imgs), "-o", str(sample), "-n", "1", "--force").returncode == 0


# ------------------------------------------------------------------------------------------------ 8. limits
@pytest.mark.stream
@pytest.mark.parametrize(
    "shape", [[1, 3, 100000, 100000], [100000, 3, 32, 32], [1, 100000, 32, 32], [1, 3, 16384, 16384]]
)
def test_contract_sizes_are_bounded_at_open(cli, bundle_dir: Path, video: Path, shape: list[int]) -> None:
    edit_manifest(bundle_dir, lambda m: m["contract"].__setitem__("input_shape", shape))
    for args in (
        ("run", str(bundle_dir), "--source", str(video), "-q"),
        ("bench", str(bundle_dir), "-b", "onnxruntime", "--stages", "--iters", "1"),
    ):
        line = one_error_line(cli(*args))
        assert "input_shape" in line and "at most" in line


# ------------------------------------------------------------------------------------------------ 9. messages
def _npz_object(p: Path) -> None:
    np.savez(p, **{"input/input": np.array([{"a": 1}], dtype=object)})


def _npz_pickle(p: Path) -> None:
    import pickle

    p.write_bytes(pickle.dumps({"input/input": [1, 2]}))


def _npz_plain_npy(p: Path) -> None:
    with open(p, "wb") as f:
        np.save(f, np.zeros((1, 3, 32, 32), np.float32))


@pytest.mark.parametrize("make", [_npz_object, _npz_pickle, _npz_plain_npy])
def test_malformed_reference_is_one_line_naming_the_file(cli, bundle_dir: Path, make: Callable[[Path], None]) -> None:
    make(bundle_dir / "reference.npz")
    rehash(bundle_dir, "reference.npz")
    line = one_error_line(cli("validate", str(bundle_dir), "-b", "onnxruntime"))
    assert "reference.npz" in line and "unexpected" not in line


# ------------------------------------------------------------------------------------------------ 10. network
@pytest.mark.stream
def test_serve_on_a_network_address_needs_a_token(cli, bundle_dir: Path, video: Path) -> None:
    env = {"EDGECV_TOKEN": ""}
    for addr in ("0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.org:8080"):
        line = one_error_line(cli("run", str(bundle_dir), "--source", str(video), "--serve", addr, "-q", env=env))
        assert "token" in line
    assert "at least 16" in one_error_line(
        cli("run", str(bundle_dir), "--source", str(video), "--serve", "0.0.0.0:0", "--token", "short", "-q")
    )


@pytest.mark.stream
def test_mjpeg_server_checks_the_token_and_limits_clients() -> None:
    from edgecv.stream.sinks import MjpegServer

    token = "s3cret-token-0123456789"
    srv = MjpegServer("127.0.0.1", 0, token=token, max_clients=1)
    try:
        srv.write(np.zeros((8, 8, 3), np.uint8), {})
        url = f"http://127.0.0.1:{srv.port}/snapshot.jpg"

        def status(u: str, headers: dict[str, str] | None = None) -> int:
            try:
                with urllib.request.urlopen(urllib.request.Request(u, headers=headers or {}), timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        assert status(url) == 401
        assert status(url + "?token=wrong-token-0123456789") == 401
        assert status(url, {"Authorization": f"Bearer {token}"}) == 200
        assert status(url + f"?token={token}") == 200
        # one client holds the only place: a second is refused, not queued forever
        stream = urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/stream.mjpg?token={token}", timeout=5)
        held = threading.Event()

        def hold() -> None:
            stream.read(10)
            held.set()

        t = threading.Thread(target=hold, daemon=True)
        t.start()
        srv.write(np.ones((8, 8, 3), np.uint8), {})
        assert held.wait(5)
        assert status(f"http://127.0.0.1:{srv.port}/stream.mjpg?token={token}") == 503
        assert status(url + f"?token={token}") == 200  # a snapshot holds no place
        stream.close()
        assert srv.describe()["refused_unauthorized"] == 2 and srv.describe()["refused_full"] >= 1
    finally:
        srv.close()


def test_netguard_rules() -> None:
    from edgecv import netguard
    from edgecv.errors import ConfigError

    assert netguard.is_loopback("127.0.0.1") and netguard.is_loopback("127.8.9.1") and netguard.is_loopback("::1")
    assert netguard.is_loopback("localhost") and netguard.is_loopback("[::1]")
    assert not any(netguard.is_loopback(h) for h in ("0.0.0.0", "::", "", "10.0.0.1", "example.org"))
    netguard.check_bind("127.0.0.1", None)
    with pytest.raises(ConfigError, match="token"):
        netguard.check_bind("0.0.0.0", None)
    netguard.check_bind("0.0.0.0", "x" * 16)
    assert netguard.token_ok(None, None) and not netguard.token_ok("a" * 16, None)
    assert netguard.token_ok("a" * 16, "a" * 16) and not netguard.token_ok("a" * 16, "b" * 16)
    assert netguard.request_token({"Authorization": "Bearer abc"}, "/x?token=zzz") == "abc"
    assert netguard.request_token({}, "/x?token=zzz") == "zzz"
