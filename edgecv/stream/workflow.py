"""``edgecv run`` as a library call: sources, sinks, engine and pipeline assembled from one :class:`RunOptions`.

:func:`run_stream` checks everything that can be checked before the model loads (options, sources, output paths,
the server's address and token), so bad input is one line with nothing written; then it opens the bundle, picks
the engine, builds the sinks from the registry (:data:`edgecv.stream.sinks.SINKS`) and runs the single-stream
:class:`~edgecv.stream.pipeline.StreamPipeline`, or :class:`~edgecv.stream.multi.MultiStreamPipeline` for several
sources (or a sink that speaks for several streams, MQTT). The CLI only parses options into a :class:`RunOptions`
and prints what comes back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecv.errors import ConfigError
from edgecv.stream.sinkbase import Sink
from edgecv.stream.sinks import SinkContext, SinkKind, expand, sink_kinds

if TYPE_CHECKING:
    from edgecv.backends.base import Runner
    from edgecv.bundle import Bundle
    from edgecv.stream.cameras import CameraSpec
    from edgecv.stream.pipeline import StreamConfig

log = logging.getLogger("edgecv.stream")

#: ``(bundle, backend, precision, **kw)`` → an unloaded runner (``edgecv.backends.open_runner`` by default)
Opener = Callable[..., "Runner"]


@dataclass
class RunOptions:
    """Every option of ``edgecv run`` (the CLI's flags, one field each; see ``edgecv run --help``)."""

    bundle: Path
    sources: list[str] = field(default_factory=list)
    sources_file: Path | None = None
    backend: str | None = None
    precision: str | None = None
    device: str | None = None
    threads: int | None = None
    gst: bool = False
    drop: str | None = None
    stride: int = 1
    max_fps: float | None = None
    max_frames: int | None = None
    save: Path | None = None
    jsonl: Path | None = None
    labels: str | None = None
    serve: str | None = None
    show: bool = False
    json_out: str | None = None
    rebuild: bool = False
    open_timeout: float = 10.0
    reconnect_max: int = 10
    loop: bool = False
    writer: str = "auto"
    save_preset: str = "ultrafast"
    buffer_size: int | None = None
    decode: str = "auto"
    force: bool = False
    token: str | None = None
    max_clients: int = 8
    conf: float = 0.25
    endpoint: str | None = None
    model: str | None = None
    record: bool = True
    batch_wait_ms: float = 5.0
    max_batch: int | None = None
    requests: int | None = None
    require_all: bool = False
    mqtt: str | None = None
    mqtt_qos: int = 0
    mqtt_user: str | None = None
    mqtt_password: str | None = None
    mqtt_ca: str | None = None
    mqtt_cert: str | None = None
    mqtt_key: str | None = None
    mqtt_insecure: bool = False
    mqtt_buffer: int = 1000

    @property
    def multi(self) -> bool:
        """Several streams on one engine: several sources, a cameras file, or a sink that needs stream names."""
        forced = any(k.forces_multi and k.applies(getattr(self, k.option), "multi") for k in sink_kinds())
        return self.sources_file is not None or len(self.sources) > 1 or forced

    @property
    def json_file(self) -> Path | None:
        return Path(self.json_out) if self.json_out not in (None, "-") else None


def pick_backend(bundle: Bundle, backend: str | None, precision: str | None) -> tuple[str, str]:
    """``-b NAME[:PRECISION]`` as every command reads it; without ``-b``, the best artifact the bundle holds here."""
    from edgecv.backends import RUNNERS
    from edgecv.backends.runs import best_target
    from edgecv.types import parse_backend_spec, parse_precision

    if backend is None:
        return best_target(bundle, parse_precision(precision) if precision else None)  # type: ignore[arg-type]
    name, prec = parse_backend_spec(backend, precision or "fp32")
    if name == "torch":
        raise ConfigError(
            "--backend torch: expected a deployment engine (onnxruntime, openvino, tensorrt, "
            "remote); torch is the reference that 'edgecv validate' compares against"
        )
    RUNNERS.get(name)  # unknown → one line listing the choices
    return name, prec


def decoder_outputs(runner: Runner, contract: Any) -> list[str] | None:
    """The outputs the decoder reads: every output but the validation-only pre-NMS candidates (None: all)."""
    from edgecv.tasks.decode import PRE_NMS_OUTPUTS

    names = [s.name for s in runner.output_spec]
    keep = [n for n in names if n not in PRE_NMS_OUTPUTS]
    return keep if len(keep) < len(names) else None


@dataclass
class _Plan:
    """What the checks before the model loads decided: the streams, their settings and every sink to build."""

    names: list[str | None]
    specs: list[Any]
    configs: list[StreamConfig]
    values: list[dict[str, Any]]  # each stream's sink option values ({name} expanded, cameras.yaml applied)
    per: list[list[tuple[SinkKind, Any]]]  # each stream's own sinks
    shared: list[tuple[SinkKind, Any]]  # sinks every stream writes to (multi-stream runs)
    inputs: list[Path]

    @property
    def mode(self) -> str:
        return "single" if self.names == [None] else "multi"

    def context(
        self,
        values: dict[str, Any],
        o: RunOptions,
        contract: Any = None,
        stream: str | None = None,
        on_info: Callable[[str], None] | None = None,
    ) -> SinkContext:
        names = [x for x in self.names if x]
        return SinkContext(values, o, contract, stream, names, self.inputs, on_info or (lambda line: None))


def _stream_config(o: RunOptions, cam: CameraSpec | None) -> StreamConfig:
    from edgecv.stream.pipeline import StreamConfig

    cfg = StreamConfig(
        drop=(cam.drop if cam is not None else None) or o.drop,
        stride=o.stride,
        max_fps=(cam.max_fps if cam is not None else None) or o.max_fps,
        max_frames=o.max_frames,
        open_timeout=o.open_timeout,
        reconnect_max=o.reconnect_max,
        loop=o.loop,
        buffer_size=o.buffer_size,
    )
    try:
        cfg.validate()
    except ConfigError as exc:
        if cam is None:
            raise
        raise ConfigError(f"stream '{cam.name}': {exc}") from exc
    return cfg


def _kinds(o: RunOptions, mode: str) -> list[SinkKind]:
    return [k for k in sink_kinds() if k.applies(getattr(o, k.option), mode)]


def plan(o: RunOptions) -> _Plan:
    """Every check that needs no model: options, sources, output paths, the server's bind. Raises ConfigError."""
    from edgecv._io import check_output_files
    from edgecv.stream.buffer import POLICIES
    from edgecv.stream.cameras import cameras_from_flags, load_cameras
    from edgecv.stream.sources import open_source, parse_source

    if o.drop is not None and o.drop not in POLICIES:
        raise ConfigError(f"--drop: expected one of {', '.join(POLICIES)}, found '{o.drop}'")
    mode = "multi" if o.multi else "single"
    if mode == "single":
        if not o.sources:
            raise ConfigError(
                "--source: expected a camera, file, folder, URL or pipeline (or --sources FILE), found none"
            )
        cfg = _stream_config(o, None)
        cams: list[CameraSpec | None] = [None]
        specs = [parse_source(o.sources[0], gst=o.gst)]
        configs = [cfg]
    else:
        from edgecv.stream.multi import MultiConfig

        if o.sources_file is not None and o.sources:
            raise ConfigError("--sources: expected either --source (repeated) or --sources FILE, found both")
        if o.show:
            raise ConfigError("--show: expected one stream, found several; use --serve HOST:PORT for the live page")
        MultiConfig(o.batch_wait_ms, o.max_batch, o.requests, o.require_all).validate()
        real = load_cameras(o.sources_file) if o.sources_file is not None else cameras_from_flags(o.sources, gst=o.gst)
        cams = list(real)
        specs, configs = [], []
        for c in real:
            specs.append(c.source_spec())
            configs.append(_stream_config(o, c))
    names = [c.name if c is not None else None for c in cams]
    kinds = _kinds(o, mode)
    for k in kinds:
        v = getattr(o, k.option)
        if mode == "multi" and k.templated and len(cams) > 1 and not k.shared(v) and "{name}" not in str(v):
            raise ConfigError(
                f"{k.flag}: expected a path with {{name}} for {len(cams)} streams (e.g. out/{{name}}.mp4), found '{v}'"
            )
    shared = [(k, getattr(o, k.option)) for k in kinds if mode == "multi" and k.shared(getattr(o, k.option))]
    shared_names = {k.name for k, _ in shared}
    values: list[dict[str, Any]] = []
    per: list[list[tuple[SinkKind, Any]]] = []
    for cam in cams:
        mine: dict[str, Any] = {}
        own_sinks: list[tuple[SinkKind, Any]] = []
        for k in sink_kinds():
            own = getattr(cam, k.camera_key, None) if cam is not None and k.camera_key else None
            if own is None and k.name in shared_names:
                continue
            v = own if own is not None else getattr(o, k.option)
            if (k.templated or own is not None) and cam is not None:
                v = expand(v, cam.name)
            mine.setdefault(k.option, v)
            if k.applies(v, mode):
                own_sinks.append((k, v))
        values.append(mine)
        per.append(own_sinks)
    inputs = sorted({p for s in specs for p in s.inputs()})
    p = _Plan(names, specs, configs, values, per, shared, inputs)
    files: dict[str, Path | None] = {"--summary": o.json_file}
    for k, v in shared:
        if k.output is not None:
            files[k.flag] = k.output(v)
        if k.precheck is not None:
            k.precheck(v, k.flag, p.context({k.option: v}, o))
    for name, mine, own_sinks in zip(names, values, per):
        for k, v in own_sinks:
            flag = k.flag if name is None else f"{name} {k.option}"
            if k.output is not None:
                files[flag] = k.output(v)
            if k.precheck is not None:
                k.precheck(v, flag, p.context(mine, o, stream=name))
    check_output_files(inputs, files, o.force)
    for spec in specs:
        open_source(spec, decode=o.decode)  # a bad --video-decode is one line before the model loads
    return p


def build_sinks(
    o: RunOptions, p: _Plan, contract: Any, on_info: Callable[[str], None]
) -> tuple[list[Sink], list[list[Sink]]]:
    """The run's sinks from the registry, in its order: (shared by every stream, each stream's own). A
    single-stream run has all of them in the first list. Every sink built so far is closed when one fails."""
    shared: list[Sink] = []
    per: list[list[Sink]] = [[] for _ in p.names]
    try:
        for k, v in p.shared:
            shared.append(k.build(v, p.context({k.option: v}, o, contract, None, on_info)))
        for i, (name, mine, own_sinks) in enumerate(zip(p.names, p.values, p.per)):
            for k, v in own_sinks:
                sink = k.build(v, p.context(mine, o, contract, name, on_info))
                (shared if p.mode == "single" else per[i]).append(sink)
    except BaseException:
        for s in shared + [x for m in per for x in m]:
            s.close()
        raise
    return shared, per


def run_stream(
    o: RunOptions,
    *,
    opener: Opener | None = None,
    on_status: Callable[[str], None] | None = None,
    on_info: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run a bundle on one or several streams into the sinks the options ask for; returns the run's summary
    (also written to ``--summary FILE``, and recorded in the bundle unless ``record`` is off).

    Args:
        o: the options.
        opener: opens the runner (default :func:`edgecv.backends.open_runner`; the CLI passes one that can also
            open ``torch``).
        on_status: called about twice a second with the live status line.
        on_info: called with one-line notices (the URL a server listens on).

    Raises:
        ConfigError: bad options, sources or outputs (before the model loads; nothing is written).
        SourceError, SinkError, BackendError: the run failed (sinks are finalized; ``--summary FILE`` gets the summary
            so far).
    """
    from edgecv._io import write_json
    from edgecv.backends import open_runner
    from edgecv.backends.tensorrt_guard import REBUILD
    from edgecv.bundle import Bundle
    from edgecv.results import record_result
    from edgecv.stream.pipeline import stream_engine_threads
    from edgecv.stream.sources import open_source
    from edgecv.tasks.decode import with_conf

    info = on_info or (lambda line: None)
    p = plan(o)
    REBUILD.set(o.rebuild)
    b = Bundle.open(o.bundle)
    backend, precision = pick_backend(b, o.backend, o.precision)
    contract = with_conf(b.contract, o.conf)
    shared, per = build_sinks(o, p, contract, info)
    threads = o.threads if o.threads is not None else stream_engine_threads()  # small machines: a core for capture
    kw: dict[str, Any] = {}
    if o.multi and backend in ("openvino", "onnxruntime"):
        # several batches in flight: the threads go to requests run at once, not into one request
        kw["performance"] = "throughput"
    if backend == "remote" and (o.endpoint or o.model):
        kw.update(endpoint=o.endpoint, model=o.model)
    try:
        runner = (opener or open_runner)(b, backend, precision=precision, device=o.device, threads=threads, **kw)
    except BaseException:
        for s in shared + [x for m in per for x in m]:
            s.close()
        raise
    pipe: Any = None
    with runner:
        outputs = decoder_outputs(runner, contract)
        try:
            if o.multi:
                from edgecv.stream.multi import MultiConfig, MultiStreamPipeline, StreamInput

                streams = [
                    StreamInput(str(name), open_source(spec, decode=o.decode), cfg, mine)
                    for name, spec, cfg, mine in zip(p.names, p.specs, p.configs, per)
                ]
                mcfg = MultiConfig(o.batch_wait_ms, o.max_batch, o.requests, o.require_all)
                pipe = MultiStreamPipeline(
                    streams, runner, contract, shared, mcfg, on_status=on_status, outputs=outputs
                )
            else:
                from edgecv.stream.pipeline import StreamPipeline

                pipe = StreamPipeline(
                    open_source(p.specs[0], decode=o.decode),
                    runner,
                    contract,
                    shared,
                    p.configs[0],
                    on_status=on_status,
                    outputs=outputs,
                )
            summary = pipe.run()
        except BaseException:
            if pipe is not None and pipe.last_summary is not None and o.json_file is not None:
                write_json(o.json_file, pipe.last_summary)
            raise
    summary["bundle"] = str(b.root)
    record_result(b, "run", summary, enabled=o.record)
    if o.json_file is not None:
        write_json(o.json_file, summary)
    return summary
