"""``edgecv run``: the deployed model on a camera, video file, network stream, GStreamer pipeline, image folder or
glob. The command parses its options into :class:`edgecv.stream.workflow.RunOptions`, calls
:func:`~edgecv.stream.workflow.run_stream` and prints what comes back."""

from __future__ import annotations

import dataclasses
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
    JsonOpt,
    RebuildOpt,
    RecordOpt,
    RemoteModelOpt,
    RunBackendOpt,
    SomePrecisionOpt,
)


def run(
    bundle: BundleArg,
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            "-s",
            help="Camera index (0), device (/dev/video0), video file, image folder, image glob ('imgs/*.jpg', "
            "quoted), rtsp/rtmp/http(s)/udp URL, or a GStreamer pipeline with --gst. Repeat it for "
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
    save: Annotated[
        Path | None,
        typer.Option(
            "--save",
            help="Write the annotated video (.mp4/.mkv/.mov/.avi), or with a folder (DIR/) every annotated image "
            "under its own file name (image folders and globs; a video's frames as frame_000042.jpg).",
        ),
    ] = None,
    jsonl: Annotated[
        Path | None,
        typer.Option("--jsonl", help="One JSON line per processed frame (with the image's file name, for images)."),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="With --save DIR/: yolo (DIR/labels/NAME.txt per image: detectors 'class cx cy w h score' "
            "normalized, classifiers the top-k 'class score'), coco (DIR/predictions.json, detectors) or mask "
            "(DIR/masks/NAME.png per image, segmenters).",
        ),
    ] = None,
    serve: Annotated[
        str | None, typer.Option("--serve", help="MJPEG endpoint HOST:PORT (e.g. 127.0.0.1:8080).")
    ] = None,
    show: Annotated[bool, typer.Option("--show", help="Show a window (needs a display and OpenCV highgui).")] = False,
    summary_file: Annotated[
        Path | None,
        typer.Option(
            "--summary",
            help="Write the summary as JSON to FILE (with several streams, rewritten while they run).",
        ),
    ] = None,
    json_flag: JsonOpt = False,
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
            "--video-decode",
            help="Video decoding for files and URLs: auto (a hardware decoder when OpenCV's FFmpeg "
            "finds one, e.g. VAAPI; else software), hw (hardware or fail), sw.",
        ),
    ] = "auto",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No live status line and no summary table (errors still print).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace existing --save/--jsonl/--summary files.")] = False,
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
            help="Detectors: keep detections scoring at least this (the bundle's own threshold is set low for mAP).",
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
    different streams are batched, inference overlaps through the engine's asynchronous API. On an image folder or
    a glob ('imgs/*.jpg'), --save DIR/ and --labels write one annotated image and one label file per image."""
    from edgecv.cli._output import emit_json, err_console
    from edgecv.errors import SourceError
    from edgecv.stream.sources import abandoned_threads
    from edgecv.stream.workflow import RunOptions, run_stream

    logging.basicConfig(level=logging.WARNING, format="edgecv: %(message)s", stream=sys.stderr)
    args = dict(locals())
    args["json_out"] = None if summary_file is None else str(summary_file)
    names = {f.name for f in dataclasses.fields(RunOptions)}
    opts = RunOptions(**{k: v for k, v in args.items() if k in names}, sources=list(source or []))
    status = _StatusPrinter(enabled=not quiet)
    try:
        with status:
            summary = run_stream(
                opts, on_status=status.update, on_info=lambda line: err_console.print(line, highlight=False)
            )
    except SourceError as exc:
        if abandoned_threads():
            # an open attempt is stuck inside OpenCV/FFmpeg and cannot be cancelled; a normal exit
            # would abort in C++ teardown ("terminate called…"), so report and leave at once
            sys.stderr.write(f"error: {exc}\n")
            sys.stderr.flush()
            os._exit(exc.exit_code)
        raise
    if json_flag:
        emit_json("run", summary, passed=True)
    elif not quiet:
        (_print_multi_summary if summary.get("mode") == "multi" else _print_summary)(summary)


def register(app: typer.Typer) -> None:
    app.command("run")(run)


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
