"""Open Inference Protocol naming: one owner for how a bundle's tensors and contract look on the wire (OIP
metadata, Triton config).

Used by the server (model metadata), the Triton repository writer (``config.pbtxt``) and the remote runner
(reading metadata back into :class:`~edgecv.types.TensorSpec`).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from edgecv.errors import ConfigError

if TYPE_CHECKING:
    from edgecv.bundle import Bundle
    from edgecv.types import TensorSpec

#: numpy dtype name → Open Inference Protocol datatype
OIP_DTYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "float64": "FP64",
    "uint8": "UINT8",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
}
NUMPY_DTYPES = {v: k for k, v in OIP_DTYPES.items()}

#: the parameter / metadata key under which the bundle's contract travels
CONTRACT_KEY = "edgecv_contract"


def oip_dtype(numpy_name: str) -> str:
    """``float32`` → ``FP32``; unknown dtypes raise one line."""
    try:
        return OIP_DTYPES[numpy_name]
    except KeyError:
        raise ConfigError(f"tensor dtype: expected one of {', '.join(OIP_DTYPES)}, found '{numpy_name}'") from None


def numpy_dtype(oip: str) -> str:
    """``FP32`` → ``float32``."""
    try:
        return NUMPY_DTYPES[oip.upper()]
    except KeyError:
        raise ConfigError(f"datatype: expected one of {', '.join(NUMPY_DTYPES)}, found '{oip}'") from None


def wire_shape(spec: TensorSpec) -> list[int]:
    """The shape with ``-1`` for dynamic dimensions, as OIP metadata and Triton configs write it."""
    return [-1 if d is None else int(d) for d in spec.shape]


def model_name(bundle: Bundle) -> str:
    """The served model's name: the bundle's name made safe for URLs and repository folders."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", bundle.manifest.name or "model").strip("._-")
    return name or "model"


def contract_parameters(bundle: Bundle) -> dict[str, str]:
    """The contract as string parameters (what Triton's ``parameters`` and OIP metadata can carry): the whole
    contract as JSON under :data:`CONTRACT_KEY`, plus the few fields a client wants without parsing JSON."""
    c = bundle.contract
    return {
        CONTRACT_KEY: c.to_json(),
        "edgecv_task": c.task,
        "edgecv_layout": c.layout,
        "edgecv_color": c.color,
        "edgecv_resize": c.resize,
        "edgecv_batch_range": ",".join(str(int(v)) for v in c.batch_range),
    }


def contract_from_parameters(params: dict[str, Any]) -> dict[str, Any] | None:
    """The contract dict back from metadata / config parameters (None when absent or unreadable)."""
    raw = params.get(CONTRACT_KEY)
    if isinstance(raw, dict):  # Triton's config parameters wrap values: {"string_value": "..."}
        raw = raw.get("string_value")
    if not isinstance(raw, str):
        return None
    try:
        out = json.loads(raw)
    except ValueError:
        return None
    return out if isinstance(out, dict) else None
