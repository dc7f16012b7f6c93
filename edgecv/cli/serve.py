"""``edgecv serve`` (an Open Inference Protocol server over a bundle) and ``edgecv repo`` (a Triton / OpenVINO
Model Server model repository from a bundle)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgecv.cli.options import BundleArg, DeviceOpt, ForceOpt, JsonOpt, SomePrecisionOpt, ThreadsOpt


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("repo")(repo)


def serve(
    bundle: BundleArg,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            "-b",
            help="Engine the server uses, NAME[:PRECISION]: openvino, onnxruntime, tensorrt (default: the best "
            "artifact the bundle holds for this machine, as run picks).",
        ),
    ] = None,
    precision: SomePrecisionOpt = None,
    device: DeviceOpt = None,
    threads: Annotated[
        int | None, typer.Option("--threads", help="CPU threads per worker (default: CPUs / workers).")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="HTTP port (Open Inference Protocol REST).")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Prometheus /metrics port.")] = 8002,
    workers: Annotated[
        int, typer.Option("--workers", help="Inference worker processes (0: in the server process).")
    ] = 2,
    max_batch_time: Annotated[
        float,
        typer.Option(
            "--max-batch-time",
            help="Milliseconds the server waits to merge requests into one batch (0: no batching).",
        ),
    ] = 2.0,
    max_batch_size: Annotated[
        int | None,
        typer.Option("--max-batch-size", help="Requests merged at most (default: the bundle's largest batch)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--model-name", help="Served model name (default: the bundle's).")] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Bearer token clients must send (or EDGECV_TOKEN); required off loopback."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Serve BUNDLE over the Open Inference Protocol (KServe v2, HTTP + gRPC) with MLServer.

    Server-side batching, worker processes, /v2/health/live|ready, model metadata carrying the bundle's
    contract, Prometheus metrics. Stop with Ctrl-C.
    """
    from edgecv.cli._output import emit_json, err_console
    from edgecv.netguard import resolve_token
    from edgecv.serve.server import ServeConfig, check_config, choose_target, describe
    from edgecv.serve.server import serve as run_server

    backend, precision = choose_target(str(bundle), backend, precision)
    cfg = ServeConfig(
        bundle=str(bundle),
        backend=backend,
        precision=precision,
        device=device,
        threads=threads,
        host=host,
        http_port=port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        workers=workers,
        max_batch_time_ms=max_batch_time,
        max_batch_size=max_batch_size,
        token=resolve_token(token),
        name=name,
    )
    check_config(cfg)
    d = describe(cfg)
    if json_out:
        emit_json("serve", d, passed=True)
    else:
        err_console.print(
            f"edgecv serve: {d['bundle']} on {backend}:{precision}; {d['http']}  {d['grpc']}  "
            f"metrics {d['metrics']}; {workers} worker(s); batching "
            f"{'off' if max_batch_time <= 0 else f'{max_batch_time:g} ms'}",
            highlight=False,
        )
    run_server(cfg)


def repo(
    bundle: BundleArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Model repository folder to write.")],
    fmt: Annotated[
        str, typer.Option("--server", help="The model server the repository is for: triton or ovms.")
    ] = "triton",
    name: Annotated[
        str | None, typer.Option("--model-name", help="Model name in the repository (default: the bundle's).")
    ] = None,
    instances: Annotated[int, typer.Option("--instances", help="instance_group count per model.")] = 1,
    max_queue_delay_us: Annotated[
        int, typer.Option("--max-queue-delay-us", help="dynamic_batching max_queue_delay_microseconds.")
    ] = 2000,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a Triton (or OpenVINO Model Server) model repository from BUNDLE's artifacts.

    Triton: one model per artifact (onnxruntime_onnx, openvino, tensorrt_plan) with config.pbtxt carrying
    names, dims, dtypes, max_batch_size, dynamic_batching, instance_group and the contract in parameters.
    """
    from edgecv.bundle import Bundle
    from edgecv.cli._output import console, emit_json, table
    from edgecv.serve.repository import write_repository

    rep = write_repository(
        Bundle.open(bundle),
        output,
        fmt=fmt,
        name=name,
        instances=instances,
        max_queue_delay_us=max_queue_delay_us,
        force=force,
    )
    if json_out:
        emit_json("repo", rep, passed=True)
        return
    console.print(
        table(
            f"{fmt} repository {rep['root']}",
            ["model", "platform / backend", "files", "max batch"],
            [[m["name"], m["platform"], ", ".join(m["files"]), m["max_batch_size"]] for m in rep["models"]],
        )
    )
    for note in rep.get("notes", []):
        console.print(f"[yellow]note:[/] {note}", highlight=False)


__all__ = ["DeviceOpt", "ThreadsOpt", "register"]
