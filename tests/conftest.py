"""Shared fixtures. Hardware/framework markers are turned into skips here, in one place (torchvision style)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def _has_tensorrt() -> bool:
    # tensorrt-stubs installs a stub-only 'tensorrt' namespace package: importable, but without Builder
    if not _has("tensorrt"):
        return False
    import tensorrt

    return hasattr(tensorrt, "Builder")


def _has_cuda() -> bool:
    if not _has("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


_REQUIRES = {
    "torch": (lambda: _has("torch"), "torch is not installed"),
    "onnxruntime": (lambda: _has("onnxruntime"), "onnxruntime is not installed"),
    "openvino": (lambda: _has("openvino"), "openvino is not installed"),
    "tensorrt": (lambda: _has_tensorrt() and _has_cuda(), "tensorrt and a CUDA GPU are not available"),
    "cuda": (_has_cuda, "no CUDA GPU"),
    "stream": (lambda: _has("cv2"), "OpenCV is not installed"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cache: dict[str, tuple[bool, str]] = {}
    for item in items:
        for name, (check, why) in _REQUIRES.items():
            if name in item.keywords:
                if name not in cache:
                    cache[name] = (check(), why)
                ok, reason = cache[name]
                if not ok:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = False,
    cwd: str | Path | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``edgecv ARGS`` in a subprocess, as a user would."""
    full_env = dict(os.environ)
    full_env.setdefault("EDGECV_DEBUG", "0")
    full_env.pop("EDGECV_DEBUG", None)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "edgecv", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"edgecv {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def cli():
    return run_cli


def has_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny classify bundle (32 px), built once per test module; copy it with ``bundle_dir`` before changing."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from helpers import make_tiny_bundle

    root = tmp_path_factory.mktemp("pristine") / "tiny"
    make_tiny_bundle(root, size=32)
    return root


@pytest.fixture
def bundle_dir(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of ``pristine`` that a test may compile into or corrupt."""
    dst = tmp_path / "tiny"
    shutil.copytree(pristine, dst)
    return dst
