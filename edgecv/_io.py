"""Atomic file writes and hashing. Every artifact edgecv writes goes through here (DESIGN rule 11)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error delete it.

    Works for files and folders: whatever the caller creates at the yielded path replaces ``path``.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # the pid in the name lets a later run tell a killed run's leftovers from a concurrent run's (clean_stale)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.unlink(tmp_name)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if dest.is_dir() and not dest.is_symlink() and tmp.is_dir():
            old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | os.PathLike[str]) -> str:
    """Hash of a file, or of every file under a folder (names and contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


# leftovers of a killed run: atomic_path's ".<name>.<pid>.<rand>.tmp" / ".<name>.<pid>.old", scratch folders
# ".build-<pid>-…" in a bundle, and "edgecv-<what>-<pid>-…" in the system temp folder
_STALE = re.compile(r"^(?:\.build-(\d+)-.*|\..+\.(\d+)\.(?:[^.]+\.tmp|old)|edgecv-[a-z0-9]+-(\d+)-.*)$")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def clean_stale(folder: str | os.PathLike[str], depth: int = 3) -> list[Path]:
    """Remove temporary files and folders under ``folder`` (``depth`` levels) whose process is gone; returns them.

    Only names edgecv makes, carrying a pid, are touched, and never through a symlink."""
    removed: list[Path] = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for e in entries:
        m = _STALE.match(e.name)
        if m:
            pid = int(next(g for g in m.groups() if g))
            if pid != os.getpid() and not pid_alive(pid):
                p = Path(e.path)
                with contextlib.suppress(OSError):
                    if e.is_dir(follow_symlinks=False):
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                    removed.append(p)
            continue
        if depth > 1 and e.is_dir(follow_symlinks=False):
            removed += clean_stale(e.path, depth - 1)
    return removed


def scratch_dir(what: str) -> tempfile.TemporaryDirectory[str]:
    """A folder in the system temp folder named ``edgecv-<what>-<pid>-…``; stale ones (their process is gone)
    are removed first, so ``kill -9`` during a long job leaves nothing behind for good."""
    tmp = Path(tempfile.gettempdir())
    for e in list(tmp.glob("edgecv-*-*-*")):
        m = _STALE.match(e.name)
        if m and m.group(3) and int(m.group(3)) != os.getpid() and not pid_alive(int(m.group(3))):
            with contextlib.suppress(OSError):
                shutil.rmtree(e) if e.is_dir() and not e.is_symlink() else e.unlink()
    return tempfile.TemporaryDirectory(prefix=f"edgecv-{what}-{os.getpid()}-")


def describe_write_error(exc: BaseException, folder: str | os.PathLike[str]) -> str:
    """One line for a failed write. Engines report a full disk in their own words (OpenVINO: "basic_ios::clear:
    iostream error"), so the free space is checked and named when it is the likely cause."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"no space left on the device ({os.strerror(exc.errno)})"
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < 64 * 1024 * 1024:
        return f"no space left on the device ({free / 2**20:.1f} MiB free): {' '.join(str(exc).split())[:120]}"
    return " ".join(str(exc).split())[:300]


def check_output_dir(
    path: Path,
    force: bool,
    is_ours: Callable[[Path], bool],
    what: str,
    ours_desc: str,
    error: type[Exception] | None = None,
) -> None:
    """The one rule for every command that writes a folder: a new or empty folder is fine; a folder holding what
    this command writes (``is_ours(path)``) is replaced only with ``--force``; any other non-empty folder (or a
    file) is refused, ``--force`` or not, so no user file is lost."""
    from edgecv.errors import ConfigError

    err = error or ConfigError
    path = Path(path)
    if path.is_symlink() and not path.is_dir():
        raise err(f"expected a folder for the {what}, found a symlink at '{path}'")
    if not path.exists():
        return
    if not path.is_dir():
        raise err(f"expected a folder for the {what}, found a file at '{path}'")
    if not any(path.iterdir()):
        return
    if is_ours(path):
        if not force:
            raise err(f"'{path}' already holds a {what}; pass --force to replace it")
        return
    raise err(
        f"expected an empty or new folder for the {what} (or {ours_desc}, with --force), found other "
        f"files in '{path}'; edgecv does not delete them"
    )


def check_output_files(sources: list[Path], outputs: dict[str, Path | None], force: bool = False) -> None:
    """Outputs never destroy inputs: refuse an output file that is one of ``sources`` (symlinks and hard links
    resolved) or lies inside a source folder, two outputs on one path, a folder where a file goes, and an existing
    file unless ``force`` (``--force``) says to replace it. Call it before anything is opened or written.

    Args:
        sources: the files and folders the command reads.
        outputs: flag name (for the message) → output path, or None when not given.
        force: replace existing output files.
    """
    from edgecv.errors import ConfigError

    srcs = [Path(s).expanduser().resolve() for s in sources]
    seen: dict[Path, str] = {}
    for flag, out in outputs.items():
        if out is None:
            continue
        real = Path(out).expanduser().resolve()
        for src, given in zip(srcs, sources):
            same = real == src or (real.exists() and src.exists() and os.path.samefile(real, src))
            if same:
                raise ConfigError(
                    f"{flag}: expected an output path other than the input '{given}', found the input itself ('{out}')"
                )
            if src.is_dir() and real.is_relative_to(src):
                raise ConfigError(
                    f"{flag}: expected an output outside the input folder '{given}', found '{out}' inside it"
                )
        if real in seen:
            raise ConfigError(f"{flag}: expected its own file, found the same path as {seen[real]} ('{out}')")
        seen[real] = flag
        if real.is_dir():
            raise ConfigError(f"{flag}: expected a file name, found a folder at '{out}'")
        if real.exists() and not force:
            raise ConfigError(
                f"{flag}: '{out}' exists; pass --force to replace it (edgecv does not overwrite results unasked)"
            )
