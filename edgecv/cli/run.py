"""``edgecv run``: the deployed model on a camera, video file, network stream, GStreamer pipeline or image folder."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typing_extensions import Self

from edgecv.cli.options import (
    BundleArg,
    DeviceOpt,
    EndpointOpt,
    RebuildOpt,
    RecordOpt,
    RemoteModelOpt,
    RunBackendOpt,
    SomePrecisionOpt,
    with_remote,
)


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or just ``PORT`` (loopback) → (host, port)."""
    from edgecv.errors import ConfigError

    t = text.strip()
    host = "127.0.0.1"
    if t.startswith("["):
        h, _, p = t[1:].partition("]:")
        host, port_s = h, p
    elif ":" in t:
        host, _, port_s = t.rpartition(":")
    else:
        port_s = t
    try:
        port = int(port_s)
    except ValueError:
        port = -1
    if not (0 <= port <= 65535) or not host:
        raise ConfigError(f"--serve: expected HOST:PORT (e.g. 127.0.0.1:8080), found '{text}'")
    return host, port


def _pick_backend(bundle: object, backend: str | None, precision: str | None) -> tuple[str, str]:
    """``-b NAME[:PRECISION]`` as every command reads it; without ``-b``, the best artifact the bundle holds here."""
    from edgecv.backends import RUNNERS
    from edgecv.errors import ConfigError
    from edgecv.types import parse_backend_spec, parse_precision
    from edgecv.validate.runs import best_target

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


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        bundle: BundleArg,
        source: Annotated[
            list[str] | None,
            typer.Option(
                "--source",
                "-s",
                help="Camera index (0), device (/dev/video0), video file, image folder, "
                "rtsp/rtmp/http(s)/udp URL, or a GStreamer pipeline with --gst. Repeat it for "
                "several streams in one run (NAME=SOURCE names one; default cam0, cam1, …).",
                show_default=False,
            ),
        ] = None,
        backend: RunBackendOpt = None,
        precision: SomePrecisionOpt = None,
        device: DeviceOpt = None,
        threads: Annotated[
            int | None,
            typer.Option(
                "--threads",
                help="CPU threads for the engine (default: the engine's own; on a machine with <= 4 "
                "cores, cores - 1, so capture keeps a core to decode).",
            ),
        ] = None,
        gst: Annotated[bool, typer.Option("--gst", help="--source is a GStreamer pipeline (ends in appsink).")] = False,
        drop: Annotated[
            str | None,
            typer.Option(
                "--drop",
                help="When inference lags: latest (infer the newest "
                "frame; default for live sources), oldest, or wait (never "
                "drop; default for files and folders).",
            ),
        ] = None,
        stride: Annotated[int, typer.Option("--stride", help="Process every N-th frame.")] = 1,
        max_fps: Annotated[
            float | None, typer.Option("--max-fps", help="At most this many frames/s enter the pipeline.")
        ] = None,
        max_frames: Annotated[int | None, typer.Option("--max-frames", help="Stop after N frames.")] = None,
        save: Annotated[Path | None, typer.Option("--save", help="Write the annotated video (.mp4/.mkv/.avi).")] = None,
        jsonl: Annotated[Path | None, typer.Option("--jsonl", help="One JSON line per processed frame.")] = None,
        serve: Annotated[
            str | None, typer.Option("--serve", help="MJPEG endpoint HOST:PORT (e.g. 127.0.0.1:8080).")
        ] = None,
        show: Annotated[
            bool, typer.Option("--show", help="Show a window (needs a display and OpenCV highgui).")
        ] = False,
        json_out: Annotated[
            str | None,
            typer.Option("--json", help="Write the summary as JSON to FILE ('-' for stdout, instead of the table)."),
        ] = None,
        rebuild: RebuildOpt = False,
        open_timeout: Annotated[
            float, typer.Option("--open-timeout", help="Seconds to wait for the source to open.")
        ] = 10.0,
        reconnect_max: Annotated[
            int,
            typer.Option(
                "--reconnect-max", help="Reconnect attempts per outage of a network source (exponential backoff)."
            ),
        ] = 10,
        loop: Annotated[bool, typer.Option("--loop", help="Restart a file or folder source at its end.")] = False,
        writer: Annotated[
            str,
            typer.Option(
                "--writer", help="Video writer: auto (ffmpeg H.264 when ffmpeg is on PATH), ffmpeg, opencv (mp4v)."
            ),
        ] = "auto",
        save_preset: Annotated[
            str,
            typer.Option(
                "--save-preset",
                help="libx264 preset for --save with the ffmpeg writer; the encoder shares the CPU "
                "with the model (ultrafast: least CPU, largest file).",
            ),
        ] = "ultrafast",
        buffer_size: Annotated[
            int | None,
            typer.Option("--buffer", help="Capture buffer size in frames (default 1 for latest, 2 otherwise)."),
        ] = None,
        decode: Annotated[
            str,
            typer.Option(
                "--decode",
                help="Video decoding for files and URLs: auto (a hardware decoder when OpenCV's FFmpeg "
                "finds one, e.g. VAAPI; else software), hw (hardware or fail), sw.",
            ),
        ] = "auto",
        quiet: Annotated[
            bool, typer.Option("--quiet", "-q", help="No live status line and no summary table (errors still print).")
        ] = False,
        force: Annotated[bool, typer.Option("--force", help="Replace existing --save/--jsonl/--json files.")] = False,
        token: Annotated[
            str | None,
            typer.Option(
                "--token",
                help="Token every --serve request must carry (Bearer header or ?token=); required to bind "
                "a non-loopback address. Default: the EDGECV_TOKEN environment variable.",
            ),
        ] = None,
        max_clients: Annotated[int, typer.Option("--max-clients", help="--serve: most clients at once.")] = 8,
        conf: Annotated[
            float,
            typer.Option(
                "--conf",
                help="Detectors: keep detections scoring at least this (the bundle's own threshold is set "
                "low for mAP).",
            ),
        ] = 0.25,
        sources_file: Annotated[
            Path | None,
            typer.Option(
                "--sources",
                help="cameras.yaml: several named streams (url/device/file/gst, max_fps, drop, save "
                "and jsonl paths with {name}); see the README.",
            ),
        ] = None,
        batch_wait_ms: Annotated[
            float,
            typer.Option(
                "--batch-wait-ms",
                help="Several streams: the longest a batch waits for frames of other streams after its first one.",
            ),
        ] = 5.0,
        max_batch: Annotated[
            int | None,
            typer.Option("--max-batch", help="Several streams: most frames per batch (default: the bundle's largest)."),
        ] = None,
        requests: Annotated[
            int | None,
            typer.Option(
                "--requests",
                help="Several streams: batches in flight at once (default: the engine's choice; "
                "OpenVINO's optimal number with the throughput hint, else 2).",
            ),
        ] = None,
        require_all: Annotated[
            bool,
            typer.Option(
                "--require-all",
                help="Several streams: exit 2 before anything runs when a source does not open "
                "(default: name it and run the others).",
            ),
        ] = False,
        mqtt: Annotated[
            str | None,
            typer.Option(
                "--mqtt",
                help="Publish every frame's results: mqtt://[user:pass@]HOST[:1883]/TOPIC/{stream} (mqtts:// for TLS).",
            ),
        ] = None,
        mqtt_qos: Annotated[int, typer.Option("--mqtt-qos", help="MQTT QoS: 0 or 1.")] = 0,
        mqtt_user: Annotated[str | None, typer.Option("--mqtt-user", help="MQTT user name.")] = None,
        mqtt_password: Annotated[
            str | None, typer.Option("--mqtt-password", help="MQTT password (default: EDGECV_MQTT_PASSWORD).")
        ] = None,
        mqtt_ca: Annotated[str | None, typer.Option("--mqtt-ca", help="TLS: CA certificates to trust.")] = None,
        mqtt_cert: Annotated[str | None, typer.Option("--mqtt-cert", help="TLS: client certificate.")] = None,
        mqtt_key: Annotated[str | None, typer.Option("--mqtt-key", help="TLS: client key.")] = None,
        mqtt_insecure: Annotated[
            bool, typer.Option("--mqtt-insecure", help="TLS: do not check the broker's host name.")
        ] = False,
        mqtt_buffer: Annotated[
            int,
            typer.Option(
                "--mqtt-buffer",
                help="Messages kept while the broker is away; beyond it the oldest are dropped and counted.",
            ),
        ] = 1000,
        endpoint: EndpointOpt = None,
        model: RemoteModelOpt = None,
        record: RecordOpt = True,
    ) -> None:
        """Run a bundle on a stream: capture → preprocess → infer → decode → sinks, with live metrics.

        Several streams (--source repeated, --sources cameras.yaml, or --mqtt) share one engine: frames of
        different streams are batched, inference overlaps through the engine's asynchronous API."""
        from edgecv.errors import ConfigError as _ConfigError

        if sources_file is not None or len(source or []) > 1 or mqtt is not None:
            if sources_file is not None and source:
                raise _ConfigError("--sources: expected either --source (repeated) or --sources FILE, found both")
            if show:
                raise _ConfigError(
                    "--show: expected one stream, found several; use --serve HOST:PORT for the live page"
                )
            _run_multi(
                {
                    "bundle": bundle,
                    "sources": list(source or []),
                    "sources_file": sources_file,
                    "backend": backend,
                    "precision": precision,
                    "device": device,
                    "threads": threads,
                    "gst": gst,
                    "drop": drop,
                    "stride": stride,
                    "max_fps": max_fps,
                    "max_frames": max_frames,
                    "save": save,
                    "jsonl": jsonl,
                    "serve": serve,
                    "json_out": json_out,
                    "rebuild": rebuild,
                    "open_timeout": open_timeout,
                    "reconnect_max": reconnect_max,
                    "loop": loop,
                    "writer": writer,
                    "save_preset": save_preset,
                    "buffer_size": buffer_size,
                    "decode": decode,
                    "quiet": quiet,
                    "force": force,
                    "token": token,
                    "max_clients": max_clients,
                    "conf": conf,
                    "endpoint": endpoint,
                    "model": model,
                    "record": record,
                    "batch_wait_ms": batch_wait_ms,
                    "max_batch": max_batch,
                    "requests": requests,
                    "require_all": require_all,
                    "mqtt": mqtt,
                    "mqtt_qos": mqtt_qos,
                    "mqtt_user": mqtt_user,
                    "mqtt_password": mqtt_password,
                    "mqtt_ca": mqtt_ca,
                    "mqtt_cert": mqtt_cert,
                    "mqtt_key": mqtt_key,
                    "mqtt_insecure": mqtt_insecure,
                    "mqtt_buffer": mqtt_buffer,
                }
            )
            return
        if not source:
            raise _ConfigError(
                "--source: expected a camera, file, folder, URL or pipeline (or --sources FILE), found none"
            )
        _run_single(
            bundle=bundle,
            source=source[0],
            backend=backend,
            precision=precision,
            device=device,
            threads=threads,
            gst=gst,
            drop=drop,
            stride=stride,
            max_fps=max_fps,
            max_frames=max_frames,
            save=save,
            jsonl=jsonl,
            serve=serve,
            show=show,
            json_out=json_out,
            rebuild=rebuild,
            open_timeout=open_timeout,
            reconnect_max=reconnect_max,
            loop=loop,
            writer=writer,
            save_preset=save_preset,
            buffer_size=buffer_size,
            decode=decode,
            quiet=quiet,
            force=force,
            token=token,
            max_clients=max_clients,
            conf=conf,
            endpoint=endpoint,
            model=model,
            record=record,
        )


def _run_single(
    *,
    bundle: Path,
    source: str,
    backend: str | None,
    precision: str | None,
    device: str | None,
    threads: int | None,
    gst: bool,
    drop: str | None,
    stride: int,
    max_fps: float | None,
    max_frames: int | None,
    save: Path | None,
    jsonl: Path | None,
    serve: str | None,
    show: bool,
    json_out: str | None,
    rebuild: bool,
    open_timeout: float,
    reconnect_max: int,
    loop: bool,
    writer: str,
    save_preset: str,
    buffer_size: int | None,
    decode: str,
    quiet: bool,
    force: bool,
    token: str | None,
    max_clients: int,
    conf: float,
    endpoint: str | None,
    model: str | None,
    record: bool,
) -> None:
    """One stream: the pipeline of stages in threads (unchanged since before multi-stream runs)."""
    from edgecv import netguard
    from edgecv._io import write_json
    from edgecv.backends import open_runner
    from edgecv.bundle import Bundle
    from edgecv.cli._output import emit_json, err_console
    from edgecv.errors import ConfigError, SourceError
    from edgecv.stream import StreamConfig, StreamPipeline, open_source, parse_source
    from edgecv.stream.buffer import POLICIES
    from edgecv.stream.sinks import JsonlSink, MjpegServer, Sink, VideoSink, WindowSink, check_outputs
    from edgecv.stream.sources import abandoned_threads

    logging.basicConfig(level=logging.WARNING, format="edgecv: %(message)s", stream=sys.stderr)
    if drop is not None and drop not in POLICIES:
        raise ConfigError(f"--drop: expected one of {', '.join(POLICIES)}, found '{drop}'")
    cfg = StreamConfig(
        drop=drop,
        stride=stride,
        max_fps=max_fps,
        max_frames=max_frames,
        open_timeout=open_timeout,
        reconnect_max=reconnect_max,
        loop=loop,
        buffer_size=buffer_size,
    )
    cfg.validate()
    spec = parse_source(source, gst=gst)
    json_file = Path(json_out) if json_out not in (None, "-") else None
    check_outputs(spec, {"--save": save, "--jsonl": jsonl, "--json": json_file}, force=force)
    serve_at = parse_hostport(serve) if serve is not None else None
    tok = netguard.resolve_token(token)
    if serve_at is not None:
        netguard.check_bind(serve_at[0], tok)
    open_source(spec, decode=decode)  # a bad --decode is one line before the model loads
    from edgecv.backends.tensorrt_guard import REBUILD

    REBUILD.set(rebuild)
    b = Bundle.open(bundle)
    backend, precision = _pick_backend(b, backend, precision)
    sinks: list[Sink] = []
    try:
        if save is not None:
            sinks.append(VideoSink(save, writer=writer, preset=save_preset))
        if jsonl is not None:
            sinks.append(JsonlSink(jsonl))
        if serve_at is not None:
            srv = MjpegServer(*serve_at, token=tok, max_clients=max_clients)
            sinks.append(srv)
            err_console.print(f"MJPEG stream at {srv.url} (stream: {srv.url}stream.mjpg)", highlight=False)
        if show:
            sinks.append(WindowSink())
    except BaseException:
        for s in sinks:
            s.close()
        raise
    if threads is None:
        from edgecv.stream.pipeline import stream_engine_threads

        threads = stream_engine_threads()  # a small machine keeps a core for capture/decode
    runner = with_remote(open_runner, endpoint, model)(b, backend, precision=precision, device=device, threads=threads)
    status = _StatusPrinter(enabled=not quiet)
    with runner:
        from edgecv.tasks.decode import with_conf

        contract = with_conf(b.contract, conf)
        pipe = StreamPipeline(open_source(spec, decode=decode), runner, contract, sinks, cfg, on_status=status.update)
        try:
            with status:
                summary = pipe.run()
        except SourceError as exc:
            if pipe.last_summary is not None and json_out not in (None, "-"):
                write_json(Path(json_out), pipe.last_summary)
            if abandoned_threads():
                # an open attempt is stuck inside OpenCV/FFmpeg and cannot be cancelled; a normal exit
                # would abort in C++ teardown ("terminate called…"), so report and leave at once
                sys.stderr.write(f"error: {exc}\n")
                sys.stderr.flush()
                os._exit(exc.exit_code)
            raise
        except BaseException:
            if pipe.last_summary is not None and json_out not in (None, "-"):
                write_json(Path(json_out), pipe.last_summary)
            raise
    summary["bundle"] = str(b.root)
    from edgecv.results import record_result

    record_result(b, "run", summary, enabled=record)
    if json_out == "-":
        emit_json("run", summary, passed=True)
        return
    if json_out is not None:
        write_json(Path(json_out), summary)
    if not quiet:
        _print_summary(summary)


class _StatusPrinter:
    """The live status line: rich Live on a terminal, a plain line every 10 s otherwise (logs, CI)."""

    def __init__(self, enabled: bool = True) -> None:
        from edgecv.cli._output import err_console

        self.console = err_console
        self.enabled = enabled
        self.live: Any = None
        import time

        self._last_plain = time.monotonic()  # first plain line after 10 s, not at start

    def __enter__(self) -> Self:
        if self.enabled and self.console.is_terminal:
            from rich.live import Live
            from rich.text import Text

            self.live = Live(Text("opening source…"), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)
            self.live = None

    def update(self, line: str) -> None:
        if not self.enabled:
            return
        if self.live is not None:
            from rich.text import Text

            self.live.update(Text(line))
            return
        import time

        now = time.monotonic()
        if now - self._last_plain >= 10.0:
            self._last_plain = now
            sys.stderr.write(line + "\n")
            sys.stderr.flush()


def _print_summary(s: dict[str, Any]) -> None:
    from edgecv.cli._output import console, print_table
    from edgecv.stream.metrics import STAGE_HELP, STAGES

    rows = []
    for st in STAGES:
        d = s["latency_ms"].get(st, {})
        if d.get("n"):
            rows.append([st, d["n"], d["p50"], d["p90"], d["p99"], d["max"]])
    r = s.get("runner", {})
    thr = f", {r['threads']} thread{'s' if r['threads'] != 1 else ''}" if r.get("threads") else ""
    if s["source"].get("decoder"):
        thr += f"; {s['source']['decoder']} decode"
    print_table(
        f"edgecv run: {s['source']['kind']} {s['source']['target']} on {r.get('backend')} "
        f"{r.get('precision')} {r.get('device')}{thr}",
        ["stage", "frames", "p50 ms", "p90 ms", "p99 ms", "max ms"],
        rows,
        digits=2,
        caption="; ".join(f"{k}: {v}" for k, v in STAGE_HELP.items()),
    )
    console.print(
        f"processed {s['frames_processed']} of {s['frames_read']} frames read in {s['duration_s']:.2f} s | "
        f"fps in {s['fps_in']:.2f} out {s['fps_out']:.2f} | policy {s['policy']} dropped {s['dropped']} | "
        f"skipped corrupt {s['skipped_corrupt']} | reconnects {s['reconnects']} | stopped by {s['stopped_by']}",
        highlight=False,
    )
    slow = s.get("slowest_stage")
    if slow and s["frames_processed"] > 1:
        busy = ", ".join(f"{k} {v:.2f}" for k, v in slow["busy_p50_ms"].items())
        why = (
            " (waiting for the video encoder)" if slow["stage"] == "sinks" and "VideoSink" in s.get("sinks", {}) else ""
        )
        console.print(
            f"slowest stage: {slow['stage']}{why}, {slow['p50_ms']:.2f} ms/frame p50, at most "
            f"{slow['max_fps']} fps on its own | ms/frame p50: {busy}",
            highlight=False,
        )
    for name, d in s.get("sinks", {}).items():
        if d:
            console.print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in d.items()), highlight=False)


def _run_multi(o: dict[str, Any]) -> None:
    """Several streams on one engine (``edgecv.stream.multi``): validate everything, connect the broker, then load
    the model once; nothing is written when any of that fails."""
    from edgecv import netguard
    from edgecv._io import check_output_files, write_json
    from edgecv.backends import open_runner
    from edgecv.backends.tensorrt_guard import REBUILD
    from edgecv.bundle import Bundle
    from edgecv.cli._output import emit_json, err_console
    from edgecv.errors import ConfigError
    from edgecv.stream import StreamConfig, open_source
    from edgecv.stream.buffer import POLICIES
    from edgecv.stream.cameras import cameras_from_flags, expand, load_cameras
    from edgecv.stream.multi import MultiConfig, MultiStreamPipeline, StreamInput
    from edgecv.stream.sinks import JsonlSink, Sink, VideoSink

    logging.basicConfig(level=logging.WARNING, format="edgecv: %(message)s", stream=sys.stderr)
    if o["drop"] is not None and o["drop"] not in POLICIES:
        raise ConfigError(f"--drop: expected one of {', '.join(POLICIES)}, found '{o['drop']}'")
    mcfg = MultiConfig(
        batch_wait_ms=o["batch_wait_ms"], max_batch=o["max_batch"], requests=o["requests"], require_all=o["require_all"]
    )
    mcfg.validate()
    if o["sources_file"] is not None:
        cams = load_cameras(o["sources_file"])
    else:
        cams = cameras_from_flags(o["sources"], gst=o["gst"])
    n = len(cams)
    for flag, tmpl in (("--save", o["save"]), ("--jsonl", None)):
        if tmpl is not None and n > 1 and "{name}" not in str(tmpl):
            raise ConfigError(
                f"{flag}: expected a path with {{name}} for {n} streams (e.g. out/{{name}}.mp4), found '{tmpl}'"
            )
    json_file = Path(o["json_out"]) if o["json_out"] not in (None, "-") else None
    specs, cfgs, outs = [], [], []
    for c in cams:
        spec = c.source_spec()
        cfg = StreamConfig(
            drop=c.drop or o["drop"],
            stride=o["stride"],
            max_fps=c.max_fps or o["max_fps"],
            max_frames=o["max_frames"],
            open_timeout=o["open_timeout"],
            reconnect_max=o["reconnect_max"],
            loop=o["loop"],
            buffer_size=o["buffer_size"],
        )
        try:
            cfg.validate()
        except ConfigError as exc:
            raise ConfigError(f"stream '{c.name}': {exc}") from exc
        save = expand(c.save, c.name) or expand(o["save"], c.name)
        per_jsonl = expand(c.jsonl, c.name) or (
            expand(o["jsonl"], c.name) if o["jsonl"] is not None and "{name}" in str(o["jsonl"]) else None
        )
        specs.append(spec)
        cfgs.append(cfg)
        outs.append((save, per_jsonl))
    merged = o["jsonl"] if o["jsonl"] is not None and "{name}" not in str(o["jsonl"]) else None
    files: dict[str, Path | None] = {"--json": json_file, "--jsonl": merged}
    for c, (save, per_jsonl) in zip(cams, outs):
        files[f"{c.name} save"] = save
        files[f"{c.name} jsonl"] = per_jsonl
    inputs = [Path(str(s.target)) for s in specs if s.kind in ("file", "folder")]
    check_output_files(inputs, files, o["force"])
    for spec in specs:
        open_source(spec, decode=o["decode"])  # a bad --decode is one line before the model loads
    serve_at = parse_hostport(o["serve"]) if o["serve"] is not None else None
    tok = netguard.resolve_token(o["token"])
    if serve_at is not None:
        netguard.check_bind(serve_at[0], tok)
    REBUILD.set(o["rebuild"])
    b = Bundle.open(o["bundle"])
    o["backend"], o["precision"] = _pick_backend(b, o["backend"], o["precision"])
    shared: list[Sink] = []
    per_sinks: list[list[Sink]] = []
    try:
        if o["mqtt"] is not None:  # an unreachable broker is one line before anything is written
            from edgecv.stream.mqtt import MqttSink

            shared.append(
                MqttSink(
                    o["mqtt"],
                    qos=o["mqtt_qos"],
                    username=o["mqtt_user"],
                    password=o["mqtt_password"],
                    ca=o["mqtt_ca"],
                    cert=o["mqtt_cert"],
                    key=o["mqtt_key"],
                    insecure=o["mqtt_insecure"],
                    buffer=o["mqtt_buffer"],
                )
            )
        if merged is not None:
            shared.append(JsonlSink(merged))
        for save, per_jsonl in outs:
            mine: list[Sink] = []
            if save is not None:
                mine.append(VideoSink(save, writer=o["writer"], preset=o["save_preset"]))
            if per_jsonl is not None:
                mine.append(JsonlSink(per_jsonl))
            per_sinks.append(mine)
        if serve_at is not None:
            from edgecv.stream.live import LivePage

            page = LivePage([c.name for c in cams], *serve_at, token=tok, max_clients=o["max_clients"])
            shared.append(page)
            err_console.print(f"live page at {page.url}", highlight=False)
    except BaseException:
        for s in shared + [x for m in per_sinks for x in m]:
            s.close()
        raise
    threads = o["threads"]
    if threads is None:
        from edgecv.stream.pipeline import stream_engine_threads

        threads = stream_engine_threads()
    kw: dict[str, Any] = {"performance": "throughput"} if o["backend"] == "openvino" else {}
    runner = with_remote(open_runner, o["endpoint"], o["model"])(
        b, o["backend"], precision=o["precision"], device=o["device"], threads=threads, **kw
    )
    status = _StatusPrinter(enabled=not o["quiet"])
    with runner:
        from edgecv.tasks.decode import with_conf

        contract = with_conf(b.contract, o["conf"])
        streams = [
            StreamInput(c.name, open_source(spec, decode=o["decode"]), cfg, mine)
            for c, spec, cfg, mine in zip(cams, specs, cfgs, per_sinks)
        ]
        pipe = MultiStreamPipeline(streams, runner, contract, shared, mcfg, on_status=status.update)
        try:
            with status:
                summary = pipe.run()
        except BaseException:
            if pipe.last_summary is not None and json_file is not None:
                write_json(json_file, pipe.last_summary)
            raise
    summary["bundle"] = str(b.root)
    from edgecv.results import record_result

    record_result(b, "run", summary, enabled=o["record"])
    if o["json_out"] == "-":
        emit_json("run", summary, passed=True)
        return
    if json_file is not None:
        write_json(json_file, summary)
    if not o["quiet"]:
        _print_multi_summary(summary)


def _print_multi_summary(s: dict[str, Any]) -> None:
    from edgecv.cli._output import console, print_table

    rows = []
    for name, d in s["streams"].items():
        e2e = d["latency_ms"].get("e2e", {})
        slow = d.get("slowest_stage") or {}
        rows.append(
            [
                name,
                f"{d['source']['kind']}:{d['source']['target']}",
                d["frames_processed"],
                d["fps_in"],
                d["fps_out"],
                d["dropped"],
                d["reconnects"],
                e2e.get("p50", "-"),
                e2e.get("p99", "-"),
                slow.get("stage", "-"),
                d["state"] if not d.get("error") else f"{d['state']}: {d['error']}",
            ]
        )
    r = s["engine"]["runner"]
    a = s["engine"].get("async") or {}
    print_table(
        f"edgecv run: {len(rows)} streams on {r.get('backend')} {r.get('precision')} {r.get('device')}"
        f" ({a.get('kind', '-')}, {a.get('requests', '-')} in flight, batch <= {s['engine']['max_batch']})",
        [
            "stream",
            "source",
            "frames",
            "fps in",
            "fps out",
            "dropped",
            "reconnects",
            "e2e p50 ms",
            "e2e p99 ms",
            "slowest stage",
            "state",
        ],
        rows,
        digits=2,
    )
    t = s["total"]
    inf = t["latency_ms"]["infer_batch"]
    console.print(
        f"total: processed {t['frames_processed']} of {t['frames_read']} frames in {t['duration_s']:.2f} s | "
        f"fps in {t['fps_in']:.2f} out {t['fps_out']:.2f} | dropped {t['dropped']} | reconnects {t['reconnects']} "
        f"| {s['engine']['batches']} batches, mean {s['engine']['mean_batch']:.2f} frames | batch inference p50 "
        f"{inf.get('p50', '-')} ms p99 {inf.get('p99', '-')} ms | stopped by {s['stopped_by']}",
        highlight=False,
    )
    slow = t.get("slowest_stage")
    if slow:
        per = ", ".join(f"{k} {v}" for k, v in slow["max_fps_by_stage"].items())
        why = (
            f" (decoding bounds this run on {slow['cpus']} CPUs, not the model)"
            if slow["decode_bound"]
            else " (the live sources' own frame rate)"
            if slow["stage"] == "capture"
            else ""
        )
        console.print(
            f"slowest stage in total: {slow['stage']}{why}, at most {slow['max_fps']} fps | fps each "
            f"stage allows: {per}",
            highlight=False,
        )
    for name, d in s.get("sinks", {}).items():
        if d:
            console.print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in d.items()), highlight=False)
