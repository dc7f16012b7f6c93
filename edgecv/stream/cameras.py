"""Several streams in one run: ``--source`` given more than once, or ``--sources cameras.yaml``.

``cameras.yaml``::

    streams:
      - name: door                       # unique; used in topics, file names and the live page
        url: rtsp://10.0.0.5:554/main    # exactly one of url / device / file / gst
        max_fps: 10                      # optional: at most this many frames/s enter the pipeline
        drop: latest                     # optional: latest / oldest / wait (default by source kind)
        save: out/{name}.mp4             # optional: the annotated video, {name} is the stream name
        jsonl: out/{name}.jsonl          # optional: this stream's results, one JSON line per frame
      - name: yard
        device: /dev/video0              # or a camera index: 0
      - name: clip
        file: clips/yard.mp4
      - name: jetson
        gst: "rtspsrc location=rtsp://… ! rtph264depay ! h264parse ! nvv4l2decoder ! nvvidconv ! appsink"

A bad file is one line naming the dotted path of the bad key (``streams.1.drop: …``), exit 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgecv.errors import ConfigError
from edgecv.stream.sources import SourceSpec, parse_source

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CameraSpec(BaseModel):
    """One stream of a multi-stream run (a ``streams:`` entry of ``cameras.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="unique stream name: letters, digits, '_', '-', '.' (at most 64)")
    url: str | None = None
    device: int | str | None = None
    file: str | None = None
    gst: str | None = None
    max_fps: float | None = Field(default=None, gt=0)
    drop: Literal["latest", "oldest", "wait"] | None = None
    save: str | None = None
    jsonl: str | None = None

    @model_validator(mode="after")
    def _check(self) -> CameraSpec:
        if not NAME_RE.match(self.name):
            raise ValueError(f"name: expected letters, digits, '_', '-' or '.' (at most 64), found '{self.name}'")
        given = [k for k in ("url", "device", "file", "gst") if getattr(self, k) not in (None, "")]
        if len(given) != 1:
            raise ValueError(f"expected exactly one of url, device, file, gst, found {', '.join(given) or 'none'}")
        return self

    def source_spec(self) -> SourceSpec:
        """The classified source (a file that does not exist, a bad URL scheme: one line naming the stream)."""
        try:
            if self.gst:
                return parse_source(self.gst, gst=True)
            if self.device is not None:
                d = str(self.device)
                if not re.fullmatch(r"\d+|/dev/video\d+", d):
                    raise ConfigError(f"expected a camera index or /dev/videoN, found '{d}'")
                return parse_source(d)
            if self.url:
                if "://" not in self.url:
                    raise ConfigError(f"expected a URL (rtsp://, http://, …), found '{self.url}'")
                return parse_source(self.url)
            return parse_source(str(self.file))
        except ConfigError as exc:
            raise ConfigError(f"stream '{self.name}': {exc}") from exc


class CamerasFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    streams: list[CameraSpec] = Field(min_length=1)


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc) or "(top level)"


def load_cameras(path: str | Path) -> list[CameraSpec]:
    """Read and validate ``cameras.yaml``; one line with the dotted path of the first bad key."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--sources: expected a readable YAML file, found '{p}' ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--sources {p}: expected valid YAML, found a syntax error{where}") from exc
    if isinstance(data, list):  # a bare list of streams is accepted too
        data = {"streams": data}
    try:
        cams = CamerasFile.model_validate(data).streams
    except ValidationError as exc:
        e = exc.errors()[0]
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        raise ConfigError(f"--sources {p}: {_loc(tuple(e.get('loc', ())))}: {msg}") from None
    check_unique([c.name for c in cams], f"--sources {p}")
    return cams


def check_unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ConfigError(f"{what}: expected unique stream names, found '{n}' twice")
        seen.add(n)


_NAMED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})=(.+)$")


def cameras_from_flags(
    sources: list[str], gst: bool = False, max_fps: float | None = None, drop: str | None = None
) -> list[CameraSpec]:
    """``--source`` given several times: ``NAME=SOURCE`` names a stream, else it is ``cam0``, ``cam1``, …"""
    cams: list[CameraSpec] = []
    for i, s in enumerate(sources):
        m = _NAMED.match(s)
        # "NAME=" prefix only when what precedes '=' cannot be part of a path or URL
        name, target = (m.group(1), m.group(2)) if m and not Path(s).exists() else (f"cam{i}", s)
        kw: dict[str, Any] = {"name": name, "max_fps": max_fps, "drop": drop}
        spec = parse_source(target, gst=gst)  # classify now: one line for a bad one
        if spec.kind == "gst":
            kw["gst"] = target
        elif spec.kind == "camera":
            kw["device"] = spec.target
        elif spec.kind == "url":
            kw["url"] = target
        else:
            kw["file"] = str(spec.target)
        cams.append(CameraSpec(**kw))
    check_unique([c.name for c in cams], "--source")
    return cams


def expand(template: str | Path | None, name: str) -> Path | None:
    """A per-stream path: ``{name}`` replaced by the stream name."""
    if template is None:
        return None
    return Path(str(template).replace("{name}", name))
