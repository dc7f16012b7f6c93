"""``edgecv quantize``: a new bundle whose model.onnx is the QDQ INT8 model (ORT, OpenVINO and TensorRT read it)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgecv.cli.options import (
    BundleArg,
    CalibLimitOpt,
    CalibOpt,
    ForceOpt,
    JsonOpt,
    MaxDropOpt,
    MethodOpt,
    OutOpt,
    RecordOpt,
    ValOpt,
)

NoFloatHeadOpt = Annotated[
    bool,
    typer.Option(
        "--quantize-head", help="Also quantize the ops after the last Conv/Gemm (detector heads stay float by default)."
    ),
]


def register(app: typer.Typer) -> None:
    @app.command("quantize")
    def quantize(
        bundle: BundleArg,
        output: OutOpt,
        calib: CalibOpt = None,
        method: MethodOpt = "auto",
        val: ValOpt = None,
        max_drop: MaxDropOpt = None,
        limit: CalibLimitOpt = None,
        quantize_head: NoFloatHeadOpt = False,
        force: ForceOpt = False,
        record: RecordOpt = True,
        json: JsonOpt = False,
    ) -> None:
        """Quantize a bundle to INT8 (QDQ ONNX) with calibration data, optionally under an accuracy budget."""
        import warnings

        from edgecv.cli._output import emit_json, err_console, print_table
        from edgecv.quant.api import quantize_bundle, summarize
        from edgecv.quant.calib import CalibrationWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CalibrationWarning)
            out = quantize_bundle(
                bundle,
                calib,
                output,
                method=method,
                val=val,
                max_drop=max_drop,
                limit=limit,
                force=force,
                float_head=not quantize_head,
            )
        notes = [str(w.message) for w in caught if issubclass(w.category, CalibrationWarning)]
        info = out.manifest.provenance["quantized"]
        if max_drop is not None:  # an accuracy-budgeted search: keep what it measured in the new bundle
            from edgecv.results import record_result

            record_result(out, "quantize", {"bundle": str(out.root), "warnings": notes, **info}, enabled=record)
        if json:
            emit_json("quantize", {"bundle": str(out.root), "warnings": notes, **info}, passed=True)
            return
        for n in notes:
            err_console.print(f"[yellow]warning:[/] {n}")
        print_table(f"INT8 bundle {out.root}", ["", "value"], summarize(info))
