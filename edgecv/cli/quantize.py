"""``edgecv quantize``: a new bundle whose model.onnx is the QDQ INT8 model (ORT, OpenVINO and TensorRT read it)."""

from __future__ import annotations

import typer

from edgecv.cli.options import (
    METHOD_DEFAULT,
    BundleArg,
    CalibLimitOpt,
    CalibOpt,
    ForceOpt,
    JsonOpt,
    MaxDropOpt,
    MethodOpt,
    OutOpt,
    QuantizeHeadOpt,
    RecordOpt,
    ValOpt,
    quant_config,
)


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize)


def quantize(
    bundle: BundleArg,
    output: OutOpt,
    calib: CalibOpt = None,
    method: MethodOpt = METHOD_DEFAULT,
    val: ValOpt = None,
    max_drop: MaxDropOpt = None,
    calib_limit: CalibLimitOpt = None,
    quantize_head: QuantizeHeadOpt = False,
    force: ForceOpt = False,
    record: RecordOpt = True,
    json: JsonOpt = False,
) -> None:
    """Quantize a bundle to INT8 (QDQ ONNX) with calibration data, optionally under an accuracy budget."""
    import warnings

    from edgecv.cli._output import emit_json, err_console, print_table
    from edgecv.quant.api import quantize as run_quantize
    from edgecv.quant.api import summarize
    from edgecv.quant.calib import CalibrationWarning

    config = quant_config(
        calib=calib,
        method=method,
        val=val,
        max_drop=max_drop,
        calib_limit=calib_limit,
        quantize_head=quantize_head,
        out=output,
        force=force,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        result = run_quantize(bundle, config)
    out = result.bundle
    notes = [str(w.message) for w in caught if issubclass(w.category, CalibrationWarning)]
    info = result.info
    if max_drop is not None:  # an accuracy-budgeted search: keep what it measured in the new bundle
        from edgecv.results import record_result

        record_result(out, "quantize", {"bundle": str(out.root), "warnings": notes, **info}, enabled=record)
    if json:
        emit_json("quantize", {"bundle": str(out.root), "warnings": notes, **info}, passed=True)
        return
    for n in notes:
        err_console.print(f"warning: {n}", markup=False, highlight=False, soft_wrap=True)  # one line, never wrapped
    print_table(f"INT8 bundle {out.root}", ["", "value"], summarize(info))
