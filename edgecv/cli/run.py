"""``edgecv run``: the deployed model on a camera, video file, network stream, GStreamer pipeline or image folder."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgecv.cli.options import BundleArg, DeviceOpt, RebuildOpt, RecordOpt, RunBackendOpt, SomePrecisionOpt
from edgecv.cli.options import EndpointOpt, RemoteModelOpt, with_remote


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
        raise ConfigError("--backend torch: expected a deployment engine (onnxruntime, openvino, tensorrt, "
                          "remote); torch is the reference that 'edgecv validate' compares against")
    RUNNERS.get(name)  # unknown → one line listing the choices
    return name, prec


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        bundle: BundleArg,
        source: Annotated[str, typer.Option("--source", "-s", help="Camera index (0), device (/dev/video0), video "
                                            "file, image folder, rtsp/rtmp/http(s)/udp URL, or a GStreamer "
                                            "pipeline with --gst.", show_default=False)],
        backend: RunBackendOpt = None,
        precision: SomePrecisionOpt = None,
        device: DeviceOpt = None,
        threads: Annotated[Optional[int], typer.Option(
            "--threads", help="CPU threads for the engine (default: the engine's own; on a machine with <= 4 "
                              "cores, cores - 1, so capture keeps a core to decode).")] = None,
        gst: Annotated[bool, typer.Option("--gst", help="--source is a GStreamer pipeline (ends in appsink).")] = False,
        drop: Annotated[Optional[str], typer.Option("--drop", help="When inference lags: latest (infer the newest "
                                                    "frame; default for live sources), oldest, or wait (never "
                                                    "drop; default for files and folders).")] = None,
        stride: Annotated[int, typer.Option("--stride", help="Process every N-th frame.")] = 1,
        max_fps: Annotated[Optional[float], typer.Option("--max-fps", help="At most this many frames/s enter "
                                                         "the pipeline.")] = None,
        max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Stop after N frames.")] = None,
        save: Annotated[Optional[Path], typer.Option("--save", help="Write the annotated video (.mp4/.mkv/.avi).")]
        = None,
        jsonl: Annotated[Optional[Path], typer.Option("--jsonl", help="One JSON line per processed frame.")] = None,
        serve: Annotated[Optional[str], typer.Option("--serve", help="MJPEG endpoint HOST:PORT "
                                                     "(e.g. 127.0.0.1:8080).")] = None,
        show: Annotated[bool, typer.Option("--show", help="Show a window (needs a display and OpenCV "
                                           "highgui).")] = False,
        json_out: Annotated[Optional[str], typer.Option("--json", help="Write the summary as JSON to FILE "
                                                        "('-' for stdout, instead of the table).")] = None,
        rebuild: RebuildOpt = False,
        open_timeout: Annotated[float, typer.Option("--open-timeout", help="Seconds to wait for the source "
                                                    "to open.")] = 10.0,
        reconnect_max: Annotated[int, typer.Option("--reconnect-max", help="Reconnect attempts per outage of a "
                                                   "network source (exponential backoff).")] = 10,
        loop: Annotated[bool, typer.Option("--loop", help="Restart a file or folder source at its end.")] = False,
        writer: Annotated[str, typer.Option("--writer", help="Video writer: auto (ffmpeg H.264 when ffmpeg is on "
                                            "PATH), ffmpeg, opencv (mp4v).")] = "auto",
        save_preset: Annotated[str, typer.Option(
            "--save-preset", help="libx264 preset for --save with the ffmpeg writer; the encoder shares the CPU "
                                  "with the model (ultrafast: least CPU, largest file).")] = "ultrafast",
        buffer_size: Annotated[Optional[int], typer.Option("--buffer", help="Capture buffer size in frames "
                                                           "(default 1 for latest, 2 otherwise).")] = None,
        decode: Annotated[str, typer.Option(
            "--decode", help="Video decoding for files and URLs: auto (a hardware decoder when OpenCV's FFmpeg "
                             "finds one, e.g. VAAPI; else software), hw (hardware or fail), sw.")] = "auto",
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live status line and no summary table (errors still print).")] = False,
        force: Annotated[bool, typer.Option("--force", help="Replace existing --save/--jsonl/--json files.")]
        = False,
        token: Annotated[Optional[str], typer.Option(
            "--token", help="Token every --serve request must carry (Bearer header or ?token=); required to bind "
                            "a non-loopback address. Default: the EDGECV_TOKEN environment variable.")] = None,
        max_clients: Annotated[int, typer.Option("--max-clients", help="--serve: most clients at once.")] = 8,
        conf: Annotated[float, typer.Option(
            "--conf", help="Detectors: keep detections scoring at least this (the bundle's own threshold is set "
                           "low for mAP).")] = 0.25,
        endpoint: EndpointOpt = None,
        model: RemoteModelOpt = None,
        record: RecordOpt = True,
    ) -> None:
        """Run a bundle on a stream: capture → preprocess → infer → decode → sinks, with live metrics."""
        from edgecv._io import write_json
        from edgecv.backends import open_runner
        from edgecv.bundle import Bundle
        from edgecv.cli._output import emit_json, err_console
        from edgecv.stream import StreamConfig, StreamPipeline, open_source, parse_source
        from edgecv.stream.buffer import POLICIES
        from edgecv import netguard
        from edgecv.stream.sinks import JsonlSink, MjpegServer, Sink, VideoSink, WindowSink, check_outputs

        from edgecv.errors import ConfigError, SourceError
        from edgecv.stream.sources import abandoned_threads

        logging.basicConfig(level=logging.WARNING, format="edgecv: %(message)s", stream=sys.stderr)
        if drop is not None and drop not in POLICIES:
            raise ConfigError(f"--drop: expected one of {', '.join(POLICIES)}, found '{drop}'")
        cfg = StreamConfig(drop=drop, stride=stride, max_fps=max_fps, max_frames=max_frames,
                           open_timeout=open_timeout, reconnect_max=reconnect_max, loop=loop,
                           buffer_size=buffer_size)
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
        runner = with_remote(open_runner, endpoint, model)(b, backend, precision=precision, device=device,
                                                          threads=threads)
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

    def __enter__(self) -> _StatusPrinter:
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
    print_table(f"edgecv run: {s['source']['kind']} {s['source']['target']} on {r.get('backend')} "
                f"{r.get('precision')} {r.get('device')}{thr}",
                ["stage", "frames", "p50 ms", "p90 ms", "p99 ms", "max ms"], rows, digits=2,
                caption="; ".join(f"{k}: {v}" for k, v in STAGE_HELP.items()))
    console.print(
        f"processed {s['frames_processed']} of {s['frames_read']} frames read in {s['duration_s']:.2f} s | "
        f"fps in {s['fps_in']:.2f} out {s['fps_out']:.2f} | policy {s['policy']} dropped {s['dropped']} | "
        f"skipped corrupt {s['skipped_corrupt']} | reconnects {s['reconnects']} | stopped by {s['stopped_by']}",
        highlight=False)
    slow = s.get("slowest_stage")
    if slow and s["frames_processed"] > 1:
        busy = ", ".join(f"{k} {v:.2f}" for k, v in slow["busy_p50_ms"].items())
        why = " (waiting for the video encoder)" if slow["stage"] == "sinks" and "VideoSink" in s.get("sinks", {}) else ""
        console.print(f"slowest stage: {slow['stage']}{why}, {slow['p50_ms']:.2f} ms/frame p50, at most "
                      f"{slow['max_fps']} fps on its own | ms/frame p50: {busy}", highlight=False)
    for name, d in s.get("sinks", {}).items():
        if d:
            console.print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in d.items()), highlight=False)
