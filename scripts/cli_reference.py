"""Write docs/cli.md: every option of every ``edgecv`` command, generated from the CLI itself.

    python scripts/cli_reference.py            # rewrite docs/cli.md
    python scripts/cli_reference.py --check    # exit 1 when docs/cli.md is out of date (make test runs this)

The table is how a person checks that one idea has one name: options are listed per command and, below, per
option name with the commands that take it.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

# one idea, one option name (issue 20, finding 4): the name every command that takes the idea uses. Every long
# option that two or more commands take must be listed here (the generator fails otherwise), so a name reused for
# a second idea, or a new shared option, is a decision someone wrote down; a name appears once.
IDEAS: list[tuple[str, str]] = [
    ("engines to run or build, NAME[:PRECISION], repeatable", "--backend"),
    ("numeric precision of every -b without one", "--precision"),
    ("machine-readable output on stdout (one JSON document, docs/json.md)", "--json"),
    ("what the command writes", "--output"),
    ("replace an existing output", "--force"),
    ("detector score threshold (export: built into the model; run/bench: display filter)", "--conf"),
    ("INT8 calibration data", "--calib"),
    ("INT8 calibration method", "--method"),
    ("at most N calibration samples", "--calib-limit"),
    ("INT8: also quantize the ops after the last Conv/Gemm", "--quantize-head"),
    ("validation data set (the root or its val split; README layout table)", "--val"),
    ("at most N validation images", "--val-limit"),
    ("accuracy budget in task-metric points", "--max-drop"),
    ("accept a comparison that had nothing to compare", "--allow-unchecked"),
    ("split a data set root is read at", "--split"),
    ("data set layout: imagefolder, coco, yolo, masks", "--layout"),
    ("task: classify, detect, segment", "--task"),
    ("random seed", "--seed"),
    ("backend device", "--device"),
    ("CPU threads of the backend", "--threads"),
    ("batch size (repeatable)", "--batch"),
    ("largest batch (a dynamic export's; several streams' frames per batch)", "--max-batch"),
    ("model input shape NxCxHxW", "--input-shape"),
    ("ONNX opset", "--opset"),
    ("training epochs", "--epochs"),
    ("also report per layer (lint: ranges; validate: INT8 divergence)", "--layers"),
    ("local state dict", "--weights"),
    ("the model a bundle came from (live torch reference)", "--model-source"),
    ("keep the JSON result in the bundle", "--record"),
    ("TensorRT: rebuild an engine built elsewhere", "--rebuild"),
    ("untimed calls before timing", "--warmup"),
    ("seconds to time", "--min-time"),
    ("also write the table as CSV", "--csv"),
    ("remote server", "--endpoint"),
    ("served model name (serve, repo, and -b remote)", "--model-name"),
    ("bearer token of an HTTP endpoint", "--token"),
]
# names retired so that one idea keeps one name; none of them is accepted any more ("--x (cmd)": by that command)
RETIRED: dict[str, str] = {
    "--score-threshold": "--conf",
    "--limit": "--calib-limit (quantize) or --val-limit (validate, benchmark, pipeline)",
    "--format": "--layout (data check, anchors), --image-format (calib sample), --server (repo): three ideas",
    "--decode (run)": "--video-decode (export's --decode, the head decoder, keeps its name)",
    "--model (remote)": "--model-name",
    "--name": "--model-name",
}


def name_problems(by_name: dict[str, list[str]]) -> list[str]:
    """What breaks "one idea, one name": a shared option not in IDEAS, a name given two ideas, a retired name."""
    ideas = [opt for _, opt in IDEAS]
    out = [f"{o} names {ideas.count(o)} ideas in IDEAS" for o in sorted(set(ideas)) if ideas.count(o) > 1]
    for o, cmds in sorted(by_name.items()):
        if len(set(cmds)) > 1 and o not in ideas and o.replace("--no-", "--", 1) not in ideas:
            out.append(f"{o} is taken by {', '.join(sorted(set(cmds)))}: add its one idea to IDEAS (or rename it)")
    for old in RETIRED:
        name, _, cmd = old.partition(" (")
        takers = [c for c in by_name.get(name, []) if not cmd or c == cmd.rstrip(")")]
        if takers:
            out.append(f"{old} is retired but {', '.join(takers)} still take it")
    return out


def _commands(group, prefix=""):
    # typer >= 0.25 vendors click, so its objects are duck-typed here rather than checked against click's classes
    for name in sorted(group.commands):
        cmd = group.commands[name]
        if getattr(cmd, "hidden", False):
            continue
        full = f"{prefix}{name}"
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, full + " ")
        else:
            yield full, cmd


def _kind(p) -> str:
    if getattr(p, "is_flag", False):
        return "flag"
    ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
    name = getattr(ann, "__name__", None) or str(ann)
    name = {"str": "text", "int": "integer", "float": "number", "Path": "path", "bool": "flag"}.get(name, name)
    return name.replace("list[str]", "text").replace("list[int]", "integer").replace("list[pathlib.Path]", "path")


def options_by_name() -> dict[str, list[str]]:
    """Every long option name → the commands that take it."""
    import typer.main

    from edgecv.cli.app import app

    out: dict[str, list[str]] = defaultdict(list)
    for name, cmd in _commands(typer.main.get_command(app)):
        for p in cmd.params:
            for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]:
                if o.startswith("--") and getattr(p, "param_type_name", "") != "argument":
                    out[o].append(name)
    return out


def render() -> str:
    import typer.main

    from edgecv.cli.app import app

    root = typer.main.get_command(app)
    lines = [
        "# `edgecv` command-line reference",
        "",
        "Generated by `python scripts/cli_reference.py` from the CLI itself; `make test` fails when it is out of "
        "date. Conventions: `-b/--backend NAME[:PRECISION]` (repeatable, case-insensitive) wherever a command "
        "takes engines; `-p/--precision` is the precision of every `-b` given without one; `--json` prints one "
        "JSON document (`docs/json.md`) whose `passed` equals `exit code == 0`; `-o/--output` names what the "
        "command writes; `--force` replaces it.",
        "",
    ]
    by_option: dict[str, list[str]] = defaultdict(list)
    for name, cmd in _commands(root):
        lines += [
            f"## `edgecv {name}`",
            "",
            (cmd.help or "").strip().split("\n")[0],
            "",
            "| option | type | default | help |",
            "|---|---|---|---|",
        ]
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "argument":
                opt = p.name.upper()
            else:
                opt = ", ".join(p.opts + p.secondary_opts)
                for o in p.opts:
                    if o.startswith("--") and o not in ("--help",):
                        by_option[o].append(name)
            if opt in ("--help, -h", "-h, --help", "--install-completion", "--show-completion"):
                continue
            kind = _kind(p)
            default = "" if p.required or p.default in (None, (), []) or callable(p.default) else f"`{p.default}`"
            text = (getattr(p, "help", None) or "").replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| `{opt}` | {kind}{' (repeatable)' if getattr(p, 'multiple', False) else ''} | {default} | {text} |"
            )
        lines.append("")
    lines += [
        "## One idea, one name",
        "",
        "Each idea below has this one option name in every command that takes it (a test checks the names exist "
        "and that the retired ones do not).",
        "",
        "| idea | option | commands |",
        "|---|---|---|",
    ]
    for idea, opt in IDEAS:
        lines.append(f"| {idea} | `{opt}` | {', '.join(sorted(set(by_option.get(opt, []))))} |")
    lines += ["", "Retired names (not accepted):", "", "| retired | use |", "|---|---|"]
    for old, new in RETIRED.items():
        lines.append(f"| `{old}` | {new} |")
    lines += ["", "## Options by name", "", "| option | commands |", "|---|---|"]
    for o in sorted(by_option):
        lines.append(f"| `{o}` | {', '.join(sorted(set(by_option[o])))} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    problems = name_problems(options_by_name())
    if problems:
        sys.stderr.write("one idea, one name:\n" + "".join(f"  {p}\n" for p in problems))
        return 1
    text = render()
    if "--check" in sys.argv[1:]:
        if not DOC.exists() or DOC.read_text() != text:
            sys.stderr.write(f"{DOC} is out of date: run python scripts/cli_reference.py\n")
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
