"""``edgecv bench``: latency, throughput, load time and memory of a bundle on each backend, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecv.cli.options import (
    BackendsOpt,
    BundleArg,
    DeviceOpt,
    EndpointOpt,
    JsonOpt,
    ModelSourceOpt,
    ModelWeightsOpt,
    RebuildOpt,
    RecordOpt,
    RemoteModelOpt,
    SomePrecisionOpt,
    ThreadsOpt,
    with_remote,
)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    bundle: BundleArg,
    backend: BackendsOpt = None,
    precision: SomePrecisionOpt = None,
    batch: Annotated[list[int] | None, typer.Option("--batch", help="Batch size (repeatable); default 1.")] = None,
    threads: ThreadsOpt = None,
    device: DeviceOpt = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls before timing.")] = 10,
    min_time: Annotated[
        float, typer.Option("--min-time", help="Seconds to time each backend and batch (at least).")
    ] = 1.0,
    iters: Annotated[
        int | None,
        typer.Option("--iters", help="Time exactly N calls per backend and batch (overrides --min-time)."),
    ] = None,
    rounds: Annotated[
        int, typer.Option("--rounds", help="Interleaving rounds: backends take turns, order rotating each round.")
    ] = 3,
    sequential: Annotated[
        bool,
        typer.Option("--sequential", help="Measure one backend at a time (load, time, close) instead of interleaving."),
    ] = False,
    stages: Annotated[
        bool | None,
        typer.Option(
            "--stages/--no-stages",
            help="Also time pre-processing, inference and post-processing separately "
            "on camera-sized frames (default: on for detectors).",
        ),
    ] = None,
    frame_size: Annotated[
        str, typer.Option("--frame-size", help="Camera frame size WxH for --stages (e.g. 1280x720).")
    ] = "640x480",
    conf: Annotated[
        float,
        typer.Option(
            "--conf",
            help="Detectors, --stages: the score threshold post-processing keeps, as edgecv run's "
            "--conf (the bundle's own is set low for mAP).",
        ),
    ] = 0.25,
    source: ModelSourceOpt = None,
    weights: ModelWeightsOpt = None,
    rebuild: RebuildOpt = False,
    concurrency: Annotated[
        list[int] | None,
        typer.Option(
            "--concurrency",
            help="Also measure N concurrent clients per backend (repeatable; e.g. 1 and 4 "
            "against a server): latency and throughput, as perf_analyzer.",
        ),
    ] = None,
    endpoint: EndpointOpt = None,
    model: RemoteModelOpt = None,
    peak: Annotated[
        bool,
        typer.Option(
            "--peak/--no-peak",
            help="Measure this machine's peak GOP/s per precision with a probe (dense "
            "convolutions / GEMM) through the same engine, timed side by side with the "
            "rows, and print the % of it every row reached.",
        ),
    ] = True,
    cached_peak: Annotated[
        bool,
        typer.Option(
            "--cached-peak",
            help="Use this host's cached probe screening as the peak instead of timing the probe "
            "with the rows: faster, but measured at another moment, so on a busy machine "
            "% of peak moves with the load.",
        ),
    ] = False,
    csv_out: Annotated[
        Path | None,
        typer.Option("--csv", help="Also write a sectioned CSV report (as OpenVINO benchmark_app's) to this file."),
    ] = None,
    record: RecordOpt = True,
    json_out: JsonOpt = False,
) -> None:
    """Benchmark BUNDLE on each backend at each batch size (default: torch, every engine installed here on
    model.onnx, and every artifact the bundle records that this machine can run).

    --backend takes NAME or NAME:PRECISION (e.g. openvino:bf16) and repeats; --precision is the default.
    Speedup is the ratio of medians against torch eager at the same batch, measured in this same run.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edgecv.backends.runs import bundle_targets, parse_backend_specs, require_artifacts
    from edgecv.bench.core import bench_bundle
    from edgecv.bundle import Bundle
    from edgecv.cli._output import emit_json, err_console, table
    from edgecv.cli.validate import wide_console
    from edgecv.errors import ConfigError
    from edgecv.pipeline import runner_opener
    from edgecv.types import parse_precision

    if iters is not None and iters < 1:
        raise ConfigError(f"--iters: expected a positive integer, found {iters}")
    from edgecv.backends.tensorrt_guard import REBUILD

    REBUILD.set(rebuild)
    b = Bundle.open(bundle)
    open_runner = with_remote(runner_opener(source, weights), endpoint, model)
    specs = (
        parse_backend_specs(backend, precision or "fp32")
        if backend
        else bundle_targets(b, parse_precision(precision) if precision else None, include_torch=True)
    )
    if not specs:
        raise ConfigError("--backend: none given and no inference engine is installed")
    require_artifacts(b, specs)
    kw = {"min_time_s": 0.0, "min_iters": iters, "max_iters": iters} if iters is not None else {"min_time_s": min_time}
    from edgecv.bench.roofline import annotate, probe_companions

    # the probes are timed in the same rounds as the rows, so load on a shared machine hits both alike
    probes = probe_companions(specs, device=device, threads=threads) if peak and not cached_peak else None
    # the progress bar goes to stderr so that --json output on stdout stays parseable
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as bar:
        task = bar.add_task("bench", total=1.0)
        rep = bench_bundle(
            b,
            specs,
            batch or [1],
            threads=threads,
            device=device,
            warmup=warmup,
            rounds=rounds,
            interleave=not sequential,
            opener=open_runner,
            progress=lambda desc, frac: bar.update(task, description=desc, completed=frac),
            companions=probes,
            **kw,  # type: ignore[arg-type]
        )
    from edgecv.jetson import clock_warning

    jetson_warning = clock_warning(rep.host.get("jetson"))
    if jetson_warning:
        err_console.print(f"[yellow]warning:[/] {jetson_warning}", highlight=False)
    try:
        fw, fh = (int(v) for v in frame_size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--frame-size: expected WxH such as 1280x720, found '{frame_size}'") from None
    # stages: --iters fixes the frame count (at least 50), else at least 50 frames and --min-time seconds
    split = (
        _stage_split(
            b,
            specs,
            threads,
            device,
            open_runner,
            (fh, fw),
            conf=conf,
            n=max(50, iters or 0),
            min_time_s=0.0 if iters is not None else min_time,
        )
        if (stages if stages is not None else b.contract.task == "detect")
        else None
    )
    conc = None
    if concurrency:
        from edgecv.bench.concurrent import bench_bundle_concurrent

        conc = bench_bundle_concurrent(
            b,
            specs,
            batch or [1],
            concurrency,
            open_runner,
            device=device,
            threads=threads,
            warmup=min(warmup, 5),
            min_time_s=max(min_time, 0.5),
        )
    import sys

    from edgecv.results import record_result

    annotate(rep, b, peak=peak, threads=threads, device=device)
    if csv_out is not None:
        from edgecv.bench.csvreport import write_bench_csv

        write_bench_csv(rep, csv_out, sys.argv)
    d = rep.to_dict()
    if split is not None:
        d["stages"] = split
    if conc is not None:
        d["concurrency"] = [c.to_dict() for c in conc]
    record_result(b, "bench", d, enabled=record)
    if json_out:
        emit_json("bench", d, passed=_unusable(rep) is None)
        _raise_if_unusable(rep)
        return
    console = wide_console()
    rows = []
    for r in rep.rows:
        s = r.stats
        if s is None:
            rows.append(
                [
                    r.label,
                    r.precision_ran,
                    r.batch,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    r.load_time_s,
                    r.peak_rss_mb,
                    None,
                ]
            )
            continue
        rows.append(
            [
                r.label,
                r.precision_ran,
                r.batch,
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.mean_ms,
                s.std_ms,
                s.throughput,
                r.gops_per_s,
                None if r.pct_peak is None else f"{r.pct_peak:.0f}%" + ("†" if r.peak_raised else ""),
                r.load_time_s,
                r.peak_rss_mb,
                None if r.speedup_vs_torch is None else f"{r.speedup_vs_torch:.2f}x",
            ]
        )
    st = rep.settings
    caption = (
        f"{st['mode']}; {st['rounds']} round(s){' interleaved' if st['interleave'] else ''}; "
        f"threads {st['threads'] or 'default'}; input {st['input']}; peak RSS = {st['peak_rss']}"
        + ("" if "speedup_baseline" in st else "; no torch in this run, so no speedup column")
    )
    console.print(
        table(
            f"bench {rep.bundle}",
            [
                "backend",
                "ran",
                "batch",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "mean ms",
                "std ms",
                "items/s",
                "GOP/s",
                "% peak",
                "load s",
                "peak RSS MB",
                "vs torch",
            ],
            rows,
            digits=2,
            caption=caption + "; " + _roofline_caption(rep.settings.get("roofline")),
        )
    )
    for r in rep.rows:
        if r.error:
            console.print(f"[red]{r.label} batch {r.batch}:[/] {r.error}", highlight=False)
    if split is not None:
        console.print(
            table(
                f"per-frame stages, batch 1, {frame_size} frames (median ms; p99 in brackets)",
                ["backend", "frames", "pre", "infer", "post", "total", "infer share", "serial fps"],
                [
                    [
                        k,
                        v["n"],
                        f"{v['pre_ms']:.2f} ({v['pre_p99_ms']:.2f})",
                        f"{v['infer_ms']:.2f} ({v['infer_p99_ms']:.2f})",
                        f"{v['post_ms']:.2f} ({v['post_p99_ms']:.2f})",
                        f"{v['total_ms']:.2f} ({v['total_p99_ms']:.2f})",
                        f"{100 * v['infer_ms'] / max(v['total_ms'], 1e-9):.0f}%",
                        f"{v['fps']:.1f}",
                    ]
                    for k, v in split.items()
                ],
                caption="serial fps: frames / time when pre, infer and post run one after another "
                "(compare edgecv run's fps out)",
            )
        )
    if conc is not None and concurrency:
        base = {(c.label, c.batch): c.throughput for c in conc if c.clients == min(concurrency)}
        console.print(
            table(
                "concurrent clients (each its own runner / connection; throughput over the wall clock)",
                [
                    "backend",
                    "batch",
                    "clients",
                    "requests",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "items/s",
                    f"vs {min(concurrency)} client(s)",
                ],
                [
                    [
                        c.label,
                        c.batch,
                        c.clients,
                        c.requests,
                        c.p50_ms,
                        c.p90_ms,
                        c.p99_ms,
                        c.throughput,
                        f"{c.throughput / base[(c.label, c.batch)]:.2f}x",
                    ]
                    for c in conc
                ],
                digits=2,
            )
        )
    _raise_if_unusable(rep)


def _stage_split(
    bundle: object,
    specs: list[tuple[str, str]],
    threads: int | None,
    device: str | None,
    opener: object,
    hw: tuple[int, int] = (480, 640),
    conf: float | None = None,
    n: int = 50,
    min_time_s: float = 0.0,
) -> dict[str, dict[str, float]]:
    """Pre / infer / post per backend on camera-sized frames, one backend at a time. Detectors decode with
    ``conf`` as the score threshold, as ``edgecv run --conf`` does."""
    from edgecv.bench.stages import sample_frames, stage_times
    from edgecv.tasks.decode import with_conf

    contract = bundle.contract  # type: ignore[attr-defined]
    if conf is not None:
        contract = with_conf(contract, conf)
    frames = sample_frames(contract, hw=hw)
    out: dict[str, dict[str, float]] = {}
    for backend, precision in specs:
        with opener(bundle, backend, precision, device=device, threads=threads) as r:  # type: ignore[operator]
            out[f"{backend}:{precision}"] = stage_times(r, contract, frames, n=n, min_time_s=min_time_s).to_dict()
    return out


def _unusable(rep: object) -> str | None:
    """The first backend that produced no measurement at all (it could not load or run the model), as one line;
    a batch size a fixed-batch model cannot take stays an error row of an otherwise usable backend."""
    rows = getattr(rep, "rows", [])
    for label in dict.fromkeys(r.label for r in rows):
        mine = [r for r in rows if r.label == label]
        if mine and all(r.error for r in mine):
            return f"{label}: {mine[0].error}"
    return None


def _raise_if_unusable(rep: object) -> None:
    """Exit 2 when a backend produced no measurement at all (see :func:`_unusable`)."""
    from edgecv.errors import BackendError

    line = _unusable(rep)
    if line is not None:
        raise BackendError(line)


def _roofline_caption(roof: dict | None) -> str:  # type: ignore[type-arg]
    """Where GOP/s and % peak come from: the model's operations and each precision's measured peak."""
    if not roof:
        return ""
    if "error" in roof:
        return str(roof["error"])
    parts = [f"GOP/s from {roof['ops']['gops']:.3g} GOP per item (2 x MACs from the ONNX graph) / median"]
    raised = roof.get("raised", {})
    for k, p in roof["peaks"].items():
        if k in raised:
            continue
        parts.append(f"peak {k} {p['gops_per_s']:.0f} GOP/s (probe {p['form']}, {p.get('source', 'screened')})")
    parts += [
        f"† peak {k} raised to {v['gops_per_s']:.0f} GOP/s, the rate {v['by']} reached: faster than the "
        f"best probe form ({v['probe_form']}, {v['probe_gops_per_s']:.0f} GOP/s)"
        for k, v in raised.items()
    ]
    parts += [f"no peak for {k}: {why}" for k, why in roof["no_peak"].items()]
    parts += [f"probe {k} failed: {why}" for k, why in roof.get("probe_errors", {}).items()]
    return "; ".join(parts)
