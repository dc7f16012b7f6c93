"""Import hygiene (DESIGN.md): the runtime tier runs without torch, and imports point down only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "edgecv"

BUILD_TIER = ("edgecv.zoo", "edgecv.train", "edgecv.rewrite", "edgecv.export", "edgecv.data")
# edgecv.data.readers is the one torch-free image/COCO/YOLO reader (DESIGN: data/) and edgecv.data.layout the one
# torch-free data set layout finder (--val on a device): they belong to the runtime tier
RUNTIME_TIER = (
    "edgecv.backends",
    "edgecv.quant",
    "edgecv.validate",
    "edgecv.bench",
    "edgecv.stream",
    "edgecv.tasks",
    "edgecv.bundle",
    "edgecv.jetson",
    "edgecv.serve",
    "edgecv.results",
    "edgecv.report",
    "edgecv.data.readers",
    "edgecv.data.layout",
)
TOP = ("edgecv.cli", "edgecv.pipeline")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in a file."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []
    top_level = {id(n) for n in tree.body}
    # imports under `if TYPE_CHECKING:` are for type checkers only
    tc_nodes: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            tc_nodes |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in tc_nodes:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                found.append((a.name, id(node) in top_level))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top_level))
    return found


def _under(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_import_direction() -> None:
    bad = []
    for mod, path in _modules().items():
        for imp, _ in _imports(path):
            if _under(imp, TOP) and not _under(mod, ("edgecv.cli", "edgecv.__main__")):
                bad.append(f"{mod} imports {imp} (nothing imports cli/pipeline)")
            if _under(mod, RUNTIME_TIER) and _under(imp, BUILD_TIER) and not _under(imp, RUNTIME_TIER):
                bad.append(f"{mod} (runtime tier) imports {imp} (build tier)")
            if _under(mod, ("edgecv.zoo",)) and _under(imp, ("edgecv.backends",)):
                bad.append(f"{mod} (zoo) imports {imp}")
    # pipeline is the one place that joins the tiers and may be imported by the CLI
    bad = [b for b in bad if not b.startswith("edgecv.pipeline ")]
    assert not bad, "\n".join(bad)


def test_runtime_tier_has_no_module_level_torch() -> None:
    bad = []
    for mod, path in _modules().items():
        if not (
            _under(mod, RUNTIME_TIER)
            or _under(
                mod, ("edgecv.cli", "edgecv.pipeline", "edgecv.errors", "edgecv.registry", "edgecv._lazy", "edgecv._io")
            )
        ):
            continue
        for imp, top in _imports(path):
            if top and (imp.split(".")[0] in {"torch", "torchvision"}):
                bad.append(f"{mod} imports {imp} at module level")
    assert not bad, "\n".join(bad)


BLOCKER = textwrap.dedent(
    """
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name.startswith("torchvision"):
                raise ImportError("torch is blocked in this test (runtime tier must not need it)")
            return None
    sys.meta_path.insert(0, _NoTorch())
    """
)


def no_torch_env(tmp_path: Path) -> dict[str, str]:
    d = tmp_path / "block"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(d), str(ROOT)])
    return env


def test_runtime_tier_imports_without_torch(tmp_path: Path) -> None:
    runtime = sorted(m for m in _modules() if _under(m, RUNTIME_TIER) or _under(m, ("edgecv.cli",)))
    code = textwrap.dedent(
        f"""
        import importlib
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("blocker failed: torch imported")
        for m in {runtime!r}:
            importlib.import_module(m)
        print("ok", len({runtime!r}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=no_torch_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok")


def test_cli_help_without_torch(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgecv", "--help"], capture_output=True, text=True, env=no_torch_env(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for cmd in ("export", "compile", "validate", "bench", "run", "report"):
        assert cmd in proc.stdout


@pytest.mark.onnxruntime
@pytest.mark.torch
def test_bench_existing_bundle_without_torch(tmp_path: Path) -> None:
    from helpers import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / "b")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecv",
            "bench",
            str(bundle.root),
            "--backend",
            "onnxruntime",
            "--min-time",
            "0.1",
            "--warmup",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=no_torch_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "onnxruntime" in proc.stdout
