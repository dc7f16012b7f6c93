"""Measure edgecv's package import graph by parsing the source with ``ast`` (nothing is imported).

Usage::

    python scripts/import_graph.py            # text report: edges, cycles, imports against DESIGN.md layering
    python scripts/import_graph.py --mermaid  # a Mermaid ``graph TD`` of module-level package imports
    python scripts/import_graph.py --json     # the same data for machines

A "package" is the first component below ``edgecv`` (``edgecv.backends.tensorrt`` → ``backends``; top-level
modules such as ``bundle.py`` are their own package). Each edge records whether at least one import sits at module
level (runs on ``import``) or only inside functions (runs when called). Imports under ``if TYPE_CHECKING:`` are
listed separately: they never run. Relative imports are resolved against the importing module.

Runtime-tier script: standard library only, no torch, no edgecv import. Used to write docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "edgecv"

# DESIGN.md's layering, lowest layer = 0. A module may import its own layer or lower ones; an import of a
# higher layer points "up". Build and runtime tier sit side by side (layer 2) but must not import each other
# in the runtime → build direction (checked separately).
BASE = {"errors", "types", "registry", "_lazy", "_io", "_console", "netguard", "root"}
# The tiers as tests/test_imports.py and the import-linter contracts in pyproject.toml draw them: ``data`` is build
# tier (data/datasets.py imports torch at module level) except its torch-free reader and layout finder, which the
# runtime tier uses.
BUILD = {"zoo", "train", "rewrite", "export", "data"}
RUNTIME = {
    "backends",
    "quant",
    "validate",
    "bench",
    "stream",
    "bundle",
    "tasks",
    "jetson",
    "serve",
    "results",
    "report",
}
RUNTIME_DATA = ("edgecv.data.readers", "edgecv.data.layout")
LAYER = {**{p: 0 for p in BASE}, "config": 1, **{p: 2 for p in BUILD | RUNTIME}, "pipeline": 3, "cli": 4, "__main__": 5}
# DESIGN rule 12: a leaf never imports a package above it. Leaves: the packages DESIGN names (backends, tasks, data,
# zoo) plus the two single-module owners (bundle, jetson); every other tier-2 package combines leaves.
LEAVES = {"backends", "tasks", "data", "zoo", "bundle", "jetson"}
# Plumbing everything uses; left out of the Mermaid diagram unless --all.
PLUMBING = BASE - {"netguard"}


def package_of(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "root"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom, known: set[str]) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = mod.split(".")
        if not is_pkg:
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    # ``from edgecv import _io`` / ``from . import sources`` name submodules; ``from edgecv import __version__``
    # names an attribute of the package itself.
    names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    return list(dict.fromkeys(names))


def imports(mod: str, path: Path, known: set[str]) -> list[tuple[str, str, int]]:
    """(imported edgecv module, where: 'module' | 'function' | 'type_checking', line) for one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    where: dict[int, str] = {}

    def visit(node: ast.AST, ctx: str) -> None:
        for child in ast.iter_child_nodes(node):
            c = ctx
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                c = "function" if ctx != "type_checking" else ctx
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.body:
                    where[id(sub)] = "type_checking"
                    visit_one(sub, "type_checking")
                for sub in child.orelse:
                    visit_one(sub, ctx)
                continue
            visit_one(child, c)

    def visit_one(node: ast.AST, ctx: str) -> None:
        where[id(node)] = ctx
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and ctx == "module":
            ctx = "function"
        visit(node, ctx)

    visit(tree, "module")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _resolve(mod, is_pkg, node, known)
        else:
            continue
        for n in names:
            if n == "edgecv" or n.startswith("edgecv."):
                found.append((n, where.get(id(node), "module"), node.lineno))
    return found


def external(path: Path) -> list[tuple[str, str]]:
    """Top-level third-party names imported at module level (for the torch check)."""
    tree = ast.parse(path.read_text())
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], "module") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module.split(".")[0], "module"))
    return out


def build() -> dict:
    mods = modules()
    edges: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for mod, path in mods.items():
        src = package_of(mod)
        for target, where, line in imports(mod, path, set(mods)):
            dst = package_of(target)
            if dst == src:
                continue
            edges[(src, dst)][where].append(f"{mod}:{line} -> {target}")

    # cycles between packages, over module-level edges and over all run-time edges
    def cycles(kinds: set[str]) -> list[list[str]]:
        g: dict[str, set[str]] = defaultdict(set)
        for (a, b), w in edges.items():
            if kinds & set(w):
                g[a].add(b)
        # Tarjan SCC
        index, low, stack, on, out, i = {}, {}, [], set(), [], [0]

        def strong(v: str) -> None:
            index[v] = low[v] = i[0]
            i[0] += 1
            stack.append(v)
            on.add(v)
            for w2 in sorted(g[v]):
                if w2 not in index:
                    strong(w2)
                    low[v] = min(low[v], low[w2])
                elif w2 in on:
                    low[v] = min(low[v], index[w2])
            if low[v] == index[v]:
                comp = []
                while True:
                    w2 = stack.pop()
                    on.discard(w2)
                    comp.append(w2)
                    if w2 == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

        for v in sorted(set(g) | {b for s in g.values() for b in s}):
            if v not in index:
                strong(v)
        return out

    up, tier, leaf = [], [], []
    for (a, b), w in sorted(edges.items()):
        kinds = sorted(k for k in w if k != "type_checking")
        if not kinds:
            continue
        la, lb = LAYER.get(a, 2), LAYER.get(b, 2)
        examples = [e for k in kinds for e in w[k]]
        if lb > la:
            up.append({"from": a, "to": b, "where": kinds, "examples": examples})
        into_build = [e for e in examples if not e.rpartition(" -> ")[2].startswith(RUNTIME_DATA)]
        if a in RUNTIME and b in BUILD and into_build:
            tier.append({"from": a, "to": b, "where": kinds, "examples": into_build})
        if a in LEAVES and LAYER.get(b, 2) == 2 and b not in LEAVES:
            leaf.append({"from": a, "to": b, "where": kinds, "examples": examples})
    torch_top = {"runtime": [], "build": []}
    for mod, path in mods.items():
        pkg = package_of(mod)
        if any(name in ("torch", "torchvision") for name, _ in external(path)):
            torch_top["build" if pkg in BUILD else "runtime"].append(mod)
    return {
        "edges": [
            {"from": a, "to": b, "where": sorted(w), "count": {k: len(v) for k, v in w.items()}}
            for (a, b), w in sorted(edges.items())
        ],
        "cycles_module_level": cycles({"module"}),
        "cycles_any_runtime_import": cycles({"module", "function"}),
        "upward_imports": up,
        "runtime_to_build": tier,
        "leaf_to_sibling": leaf,
        "runtime_module_level_torch": torch_top,
        "_edges_detail": {f"{a}->{b}": {k: v for k, v in w.items()} for (a, b), w in sorted(edges.items())},
    }


def mermaid(data: dict, everything: bool = False) -> str:
    lines = ["graph TD"]
    for e in data["edges"]:
        if not everything and (e["to"] in PLUMBING or e["from"] == "__main__"):
            continue
        if "module" in e["where"]:
            lines.append(f"  {e['from']} --> {e['to']}")
        elif "function" in e["where"]:
            lines.append(f"  {e['from']} -.-> {e['to']}")
    lines.append("  %% solid: imported at module level; dotted: only inside functions")
    if not everything:
        lines.append("  %% edges into errors/types/registry/_lazy/_io/_console/edgecv root left out (--all shows them)")
    return "\n".join(lines)


def report(data: dict, detail: bool) -> str:
    out = ["package import edges (M = module level, F = inside functions only, T = TYPE_CHECKING only):"]
    for e in data["edges"]:
        tag = "M" if "module" in e["where"] else "F" if "function" in e["where"] else "T"
        out.append(f"  {tag}  {e['from']:>9} -> {e['to']:<9} {e['count']}")
    out.append(f"cycles among module-level imports: {data['cycles_module_level'] or 'none'}")
    out.append(f"cycles counting function-level imports too: {data['cycles_any_runtime_import'] or 'none'}")
    for key, title in (
        ("upward_imports", "imports pointing up DESIGN.md's layers"),
        ("runtime_to_build", "runtime tier importing the build tier"),
        ("leaf_to_sibling", "leaf package importing a non-leaf package above it (rule 12)"),
    ):
        out.append(f"{title}: {len(data[key])}")
        for u in data[key]:
            out.append(f"  {u['from']} -> {u['to']} ({', '.join(u['where'])})")
            if detail:
                out += [f"      {x}" for x in u["examples"]]
    t = data["runtime_module_level_torch"]
    out.append(f"non-build-tier modules importing torch at module level: {t['runtime'] or 'none'}")
    out.append(f"build-tier modules importing torch at module level: {len(t['build'])}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mermaid", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--all", action="store_true", help="Mermaid: include edges into the plumbing modules")
    ap.add_argument("--detail", action="store_true", help="list the import lines behind each flagged edge")
    ap.add_argument("--cycle", nargs=2, metavar=("A", "B"), help="show every import line between two packages")
    args = ap.parse_args(argv)
    data = build()
    if args.cycle:
        a, b = args.cycle
        for key in (f"{a}->{b}", f"{b}->{a}"):
            print(key)
            for k, v in data["_edges_detail"].get(key, {}).items():
                print(f"  [{k}]")
                print("\n".join(f"    {x}" for x in v))
    elif args.json:
        data.pop("_edges_detail")
        print(json.dumps(data, indent=1))
    elif args.mermaid:
        print(mermaid(data, args.all))
    else:
        print(report(data, args.detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
