"""Results kept in the bundle: what ``validate``, ``bench``, ``run`` and ``quantize --max-drop`` measured.

Each command's JSON result is written to ``results/<kind>-<time>-<host>.json`` inside the bundle with when it
ran, on which host, with which versions and from which command line, and its sha256 goes into the manifest
like every other file (so ``Bundle.open`` refuses a result edited afterwards). ``edgecv report`` reads them
back with :func:`load_results`, which keeps results from other hosts apart (a laptop's latencies never land in
a Jetson's figures) and names a corrupt file in one line instead of failing.

:func:`record_result` is the one place that writes a result and updates the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv import __version__
from edgecv._io import write_json

if TYPE_CHECKING:
    from edgecv.bundle import Bundle

RESULTS_DIR = "results"
SCHEMA = 1
#: commands whose results are kept; the report knows how to draw each
KINDS = ("validate", "bench", "run", "quantize")
_ENGINES = ("numpy", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "torch", "cv2")


def this_host() -> dict[str, Any]:
    """Who measured: node name, CPU, core count, and ``id``, a short hash of them that tells hosts apart."""
    info: dict[str, Any] = {
        "node": platform.node(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "system": platform.system(),
        "cpu_count": os.cpu_count(),
    }
    key = "|".join(str(info[k]) for k in ("node", "machine", "processor", "system", "cpu_count"))
    info["id"] = hashlib.sha256(key.encode()).hexdigest()[:12]
    return info


def _cpu_model() -> str:
    """The CPU's model name (``platform.processor()`` is empty on most Linux systems)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    """Versions of edgecv, Python and every engine this process imported (none is imported here)."""
    from edgecv._lazy import version_of

    out = {"edgecv": __version__, "python": platform.python_version()}
    for mod in _ENGINES:
        if mod in sys.modules:
            v = version_of(mod) or getattr(sys.modules[mod], "__version__", None)
            if v:
                out[mod] = str(v)
    return out


def record_result(
    bundle: Bundle, kind: str, result: dict[str, Any], argv: list[str] | None = None, *, enabled: bool = True
) -> Path | None:
    """Write one command's result into ``bundle/results/`` and list its hash in the manifest.

    Args:
        bundle: the opened bundle the command ran on.
        kind: the command, one of :data:`KINDS`.
        result: the command's JSON result (what ``--json`` prints).
        argv: the command line (default: ``sys.argv``).
        enabled: False (``--no-record``) writes nothing.

    Returns:
        The path written, or None when recording is off.
    """
    if not enabled:
        return None
    if kind not in KINDS:
        raise ValueError(f"result kind: expected one of {', '.join(KINDS)}, found '{kind}'")
    from edgecv.bundle import now_iso

    host = this_host()
    stamp = now_iso()
    doc = {
        "schema": SCHEMA,
        "kind": kind,
        "time": stamp,
        "host": host,
        "versions": _versions(),
        "command": _command_line(sys.argv if argv is None else argv),
        "result": result,
    }
    # unique and sortable: time to the microsecond, then the host, so concurrent hosts never collide
    import datetime as _dt

    fine = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    rel = f"{RESULTS_DIR}/{kind}-{fine}-{host['id']}.json"
    try:
        scratch = bundle.scratch()  # .build-<pid>-…: removed by the next run if this one is killed
        tmpdir = scratch.__enter__()
    except OSError as exc:  # a read-only bundle (shipped on read-only media): the command's answer still stands
        sys.stderr.write(
            f"warning: result not kept in '{bundle.root}' ({exc.strerror or exc}); pass --no-record to skip recording\n"
        )
        return None
    try:
        tmp = Path(tmpdir) / "result.json"
        write_json(tmp, doc)
        # one locked read-modify-write of the manifest as it is now on disk (a compile may have added an artifact
        # while this command ran): the file joins the hash list and the history
        with bundle.update() as manifest:
            dst = bundle.add_file(rel, tmp)
            manifest.history.append({"event": "result", "kind": kind, "path": rel, "time": stamp})
    finally:
        scratch.__exit__(None, None, None)
    return dst


def _command_line(argv: list[str]) -> list[str]:
    """The command as a user would type it: ``edgecv`` instead of the script path (``…/edgecv/__main__.py``)."""
    args = [str(a) for a in argv]
    if args and (Path(args[0]).name in ("edgecv", "__main__.py") or args[0] == "-m"):
        args = ["edgecv", *args[1:]]
    return args


@dataclass
class Results:
    """The results found in a bundle, newest last: this host's, other hosts', and files that could not be read."""

    mine: list[dict[str, Any]] = field(default_factory=list)
    others: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per unreadable file
    host: dict[str, Any] = field(default_factory=dict)

    def latest(self, kind: str) -> dict[str, Any] | None:
        """This host's newest result of ``kind``."""
        found = [r for r in self.mine if r["kind"] == kind]
        return found[-1] if found else None

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.mine if r["kind"] == kind]


def load_results(bundle: Bundle, host_id: str | None = None) -> Results:
    """Read every ``results/*.json`` of ``bundle``, split by host (default: this one), oldest first.

    A file that is not valid JSON, not a result document, or whose hash differs from the manifest's is skipped
    and named in :attr:`Results.skipped`; a result file the manifest does not list is skipped the same way.
    """
    from edgecv._io import sha256_path

    host = this_host()
    hid = host_id or host["id"]
    out = Results(host=host)
    folder = bundle.root / RESULTS_DIR
    if not folder.is_dir():
        return out
    docs = []
    for p in sorted(folder.glob("*.json")):
        rel = f"{RESULTS_DIR}/{p.name}"
        listed = bundle.manifest.files.get(rel)
        if listed is None:
            out.skipped.append(f"{rel}: not listed in the manifest (written by hand?), skipped")
            continue
        if sha256_path(p) != listed:
            out.skipped.append(f"{rel}: changed after it was recorded (sha256 differs from the manifest), skipped")
            continue
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            out.skipped.append(f"{rel}: expected a JSON result, found unreadable content ({exc}), skipped")
            continue
        missing = [k for k in ("kind", "time", "host", "result") if not isinstance(doc, dict) or k not in doc]
        if (
            missing
            or doc.get("kind") not in KINDS
            or not isinstance(doc.get("host"), dict)
            or not isinstance(doc.get("result"), dict)
        ):
            what = f"missing {', '.join(missing)}" if missing else f"kind '{doc.get('kind')}'"
            out.skipped.append(
                f"{rel}: expected a result document (kind in {', '.join(KINDS)}, time, host, "
                f"result), found {what}, skipped"
            )
            continue
        doc["path"] = rel
        docs.append(doc)
    docs.sort(key=lambda d: (str(d["time"]), d["path"]))
    for d in docs:
        (out.mine if d["host"].get("id") == hid else out.others).append(d)
    return out


__all__ = ["KINDS", "RESULTS_DIR", "Results", "load_results", "record_result", "this_host"]
