"""What a TensorRT build does, decided once for both the Python builder and the emitted ``trtexec`` script.

No TensorRT import here: :class:`TrtFeatures` is read from whatever ``tensorrt`` module is installed (by feature,
with ``hasattr``, never by parsing version strings), or taken from one of the three presets the emitted script
chooses between at run time (by asking ``trtexec --help`` for the same features). :func:`make_plan` turns a
precision, a target, a device (GPU or ``dla:N``) and the bundle's batch range into a :class:`BuildPlan`;
``edgecv.backends.tensorrt`` applies the plan with the TensorRT API and :func:`trtexec_args` renders the very
same plan as ``trtexec`` options, so the two cannot drift apart.

What TensorRT 11 removed or renamed, checked against NVIDIA's "Migrating from TensorRT 10.x to 11.x" pages
(docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html),
and what edgecv does about each — the same table is in docs/tensorrt.md:

==========================================  =====================================  ===================================
TensorRT ≤ 10 (Python)                      TensorRT 11                            edgecv
==========================================  =====================================  ===================================
``BuilderFlag.FP16``                        removed: strong typing only            fp16 = strongly typed network over an
                                                                                   fp16 ONNX (onnxconverter-common)
``BuilderFlag.INT8``, ``FP8``, ``INT4``     removed: explicit Q/DQ only            int8 = QDQ model from edgecv.quant
``BuilderFlag.BF16``                        removed                                bf16 refused on TensorRT 11
``OBEY_/PREFER_PRECISION_CONSTRAINTS``      removed (strong typing always obeys)   keep_float = node block list in the
                                                                                   fp16 conversion / no Q/DQ in int8
``BuilderFlag.DIRECT_IO``                   removed                                not used
``IBuilderConfig.int8_calibrator``,         removed                                never used (QDQ from ORT instead)
``set_calibration_profile``, ``IInt8*``
``IBuilder.platform_has_fast_fp16/int8``    removed                                not used (precision from the graph)
``NetworkDefinitionCreationFlag.            deprecated and ignored (every          still set where it exists: harmless
STRONGLY_TYPED``                            network is strongly typed)             on 11, required on 10
``IAlgorithmSelector`` and friends          removed (editable timing cache)        not used
``ICudaEngine.device_memory_size``          removed (``device_memory_size_v2``)    not used
DLA (``DeviceType.DLA``)                    absent in 11.0–11.3; 11.4.1 only on    detected by feature (strongly typed
                                            AGX Orin with JetPack ≥ 7.2.2          there); refused in one line where
                                                                                   absent
trtexec ``--fp16`` / ``--int8`` …          removed; ``--stronglyTyped`` always on script picks its TensorRT 11
                                                                                   variant when ``--fp16`` is gone
==========================================  =====================================  ===================================

Kept unchanged from 8.6 to 11 and used here: the name-based I/O API (``num_io_tensors``, ``get_tensor_name``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``), ``set_memory_pool_limit``,
``create_optimization_profile``, timing caches, ``HardwareCompatibilityLevel`` and ``VERSION_COMPATIBLE`` (8.6+),
``create_engine_inspector`` (8.2+).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from edgecv.errors import ConfigError
from edgecv.types import PRECISIONS

if TYPE_CHECKING:
    from edgecv.bundle import Contract


# ====================================================================== features
@dataclass(frozen=True)
class TrtFeatures:
    """What the installed TensorRT can do, by feature.

    Attributes:
        strongly_typed: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists (TensorRT ≥ 9; not in 8.6).
        precision_flags: ``BuilderFlag.FP16``/``INT8`` exist (TensorRT ≤ 10; removed in 11).
        bf16_flag: ``BuilderFlag.BF16`` exists (TensorRT 9–10).
        dla: ``DeviceType.DLA`` exists and the builder reports DLA cores (Orin with TensorRT ≤ 10.x).
        hardware_compat: ``HardwareCompatibilityLevel.AMPERE_PLUS`` exists (8.6+).
        version_compat: ``BuilderFlag.VERSION_COMPATIBLE`` exists (8.6+).
        label: a name for tables and the script (``detected``, or a preset's name).
    """

    strongly_typed: bool
    precision_flags: bool
    bf16_flag: bool
    dla: bool
    hardware_compat: bool
    version_compat: bool
    label: str = "detected"

    @classmethod
    def from_module(cls, trt: Any, dla_cores: int = 0) -> TrtFeatures:
        """Read the features of an imported ``tensorrt`` module (or a fake with the same attribute names)."""
        flags = getattr(trt, "BuilderFlag", None)
        creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
        device_type = getattr(trt, "DeviceType", None)
        hw = getattr(trt, "HardwareCompatibilityLevel", None)
        return cls(
            strongly_typed=hasattr(creation, "STRONGLY_TYPED"),
            precision_flags=hasattr(flags, "FP16") and hasattr(flags, "INT8"),
            bf16_flag=hasattr(flags, "BF16"),
            dla=hasattr(device_type, "DLA") and dla_cores > 0,
            hardware_compat=hasattr(hw, "AMPERE_PLUS"),
            version_compat=hasattr(flags, "VERSION_COMPATIBLE"),
        )


# The three kinds of TensorRT the emitted script can meet; it tells them apart with `trtexec --help`.
LEGACY = TrtFeatures(
    strongly_typed=False,
    precision_flags=True,
    bf16_flag=False,
    dla=True,
    hardware_compat=True,
    version_compat=True,
    label="TensorRT 8.6 (JetPack 6.0, 5.x)",
)
TYPED = replace(LEGACY, strongly_typed=True, bf16_flag=True, label="TensorRT 10 (JetPack 6.1+, 7)")
TYPED_ONLY = replace(TYPED, precision_flags=False, bf16_flag=False, dla=False, label="TensorRT 11")
# TensorRT 11.4.1 brought DLA back, strongly typed, on AGX Orin with JetPack >= 7.2.2 (its trtexec has --useDLACore)
TYPED_ONLY_DLA = replace(TYPED_ONLY, dla=True, label="TensorRT 11 with DLA (11.4.1+)")
SCRIPT_VARIANTS = (TYPED_ONLY_DLA, TYPED_ONLY, TYPED, LEGACY)


# ====================================================================== targets
@dataclass(frozen=True)
class Target:
    """A deployment target's defaults.

    Attributes:
        name: the ``--target`` value.
        jetson: an integrated Jetson module (shared memory, nvpmodel, no hardware-compatible engines).
        compute_capability: ``major.minor`` of its GPU; None for x86 (any discrete GPU).
        dla_cores: DLA cores on the largest module of the family (Orin NX 8 GB has 1; the builder asks the device).
        workspace_mb: default builder workspace (1 GiB on Jetson, where GPU memory is the system's memory).
        jetpack: JetPack releases edgecv supports there.
    """

    name: str
    jetson: bool
    compute_capability: str | None
    dla_cores: int
    workspace_mb: int
    jetpack: str = ""


TARGETS: dict[str, Target] = {
    "orin-nano": Target("orin-nano", True, "8.7", 0, 1024, "6.0 (TensorRT 8.6), 6.1/6.2 (TensorRT 10.3)"),
    "orin-nx": Target("orin-nx", True, "8.7", 2, 1024, "6.0 (TensorRT 8.6), 6.1/6.2 (TensorRT 10.3)"),
    "agx-orin": Target(
        "agx-orin", True, "8.7", 2, 1024, "6.0 (TensorRT 8.6), 6.1/6.2 (TensorRT 10.3), 7.2.2+ (TensorRT 11.4.1)"
    ),
    "thor": Target("thor", True, "11.0", 0, 1024, "7.x (TensorRT 10.x; 11.4.1 from 7.2.2), Python 3.12"),
    "x86": Target("x86", False, None, 0, 4096, ""),
}


def get_target(name: str | None) -> Target:
    """The preset for ``--target`` (default ``x86``); an unknown name raises listing the choices."""
    key = name or "x86"
    if key not in TARGETS:
        raise ConfigError(f"--target: expected one of {', '.join(TARGETS)}, found '{name}'")
    return TARGETS[key]


def parse_device(device: str | None) -> tuple[int, int | None]:
    """``cuda``/``cuda:N``/``gpu`` → (N, None); ``dla``/``dla:N`` → (0, N)."""
    dev = (device or "cuda:0").lower()
    kind, _, index = dev.partition(":")
    if kind not in ("cuda", "gpu", "dla") or (index and not index.isdigit()):
        raise ConfigError(f"tensorrt device: expected cuda, cuda:N, dla:0 or dla:1, found '{device}'")
    if kind == "dla":
        return 0, int(index or 0)
    return int(index or 0), None


# ====================================================================== plan
@dataclass
class BuildPlan:
    """Every decision of one TensorRT build; applied by the builder and rendered by :func:`trtexec_args`.

    Attributes:
        precision: the requested precision.
        onnx_kind: ``float`` (the bundle's model), ``fp16`` (converted graph) or ``qdq`` (int8).
        strongly_typed: build a strongly typed network (precision from the graph's types).
        flags: builder precision flags to set (``fp16``, ``bf16``, ``int8``), empty when strongly typed.
        dla_core: the DLA core, or None for the GPU.
        gpu_fallback: let layers DLA cannot run fall back to the GPU.
        shapes: input name → (min, opt, max) shapes of the single optimization profile; empty for static models.
        workspace_mb: builder workspace limit.
        keep_float: layers constrained to fp32 (weakly typed builds only; in strongly typed ones the graph says).
        fp16_keep: ONNX nodes the fp16 conversion leaves in fp32 (``onnx_kind == "fp16"`` only).
        hardware_compat: ``ampere+`` or None.
        version_compatible: build a version-compatible plan.
        always_typed: every network is strongly typed on this TensorRT (11: no precision flags); trtexec there
            needs no ``--stronglyTyped`` ("always enabled" in NVIDIA's trtexec migration page).
        features: the feature set the plan was made for.
        notes: what the plan changed from the request, for compile's output (e.g. DLA's static shapes).
    """

    precision: str
    onnx_kind: str
    strongly_typed: bool
    flags: list[str]
    dla_core: int | None
    gpu_fallback: bool
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
    workspace_mb: int
    keep_float: list[str] = field(default_factory=list)
    fp16_keep: list[str] = field(default_factory=list)
    hardware_compat: str | None = None
    version_compatible: bool = False
    always_typed: bool = False
    features: str = "detected"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shapes"] = {k: [list(s) for s in v] for k, v in self.shapes.items()}
        return d


def _batch_range(contract: Contract, batch_range: tuple[int, int, int] | None) -> tuple[int, int, int]:
    br = batch_range or tuple(contract.batch_range)
    lo, opt, hi = (int(b) for b in br)
    if not 1 <= lo <= opt <= hi:
        raise ConfigError(f"batch_range: expected min <= opt <= max, all >= 1; found {list(br)}")
    return lo, opt, hi


def make_plan(
    contract: Contract,
    precision: str,
    features: TrtFeatures,
    *,
    target: Target | None = None,
    dla_core: int | None = None,
    batch_range: tuple[int, int, int] | None = None,
    workspace_mb: int | None = None,
    keep_float: list[str] | None = None,
    hardware_compat: str | None = None,
    version_compatible: bool = False,
    dynamic: bool | None = None,
) -> BuildPlan:
    """Decide a build for ``features``; refuse in one line what this TensorRT, target or device cannot do.

    Args:
        contract: the bundle's contract (input name, shape, batch range).
        precision: fp32, fp16, bf16 or int8.
        features: the installed TensorRT's features (or a script variant's).
        target: the deployment target (default x86).
        dla_core: build for this DLA core (Orin), with GPU fallback; None for the GPU.
        batch_range: (min, opt, max) batch; None takes the contract's.
        workspace_mb: builder workspace; None takes the target's default.
        keep_float: ONNX node names to keep in fp32.
        hardware_compat: ``ampere+`` for an engine that runs on any Ampere or newer discrete GPU.
        version_compatible: build a plan later TensorRT versions can load.
        dynamic: whether the model's batch dim is dynamic (default: the contract's ``dynamic_batch``).

    Raises:
        ConfigError: a combination this TensorRT, target or device does not support (one line, with why).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"tensorrt precision: expected one of {', '.join(PRECISIONS)}, found '{precision}'")
    tgt = target or TARGETS["x86"]
    notes: list[str] = []
    keep = list(keep_float or [])

    # ---- device: DLA rules
    if dla_core is not None:
        if precision not in ("fp16", "int8"):
            raise ConfigError(
                f"--device dla:{dla_core}: expected --precision fp16 or int8 (DLA has no fp32/bf16), found {precision}"
            )
        if tgt.dla_cores == 0:
            raise ConfigError(
                f"--device dla:{dla_core}: expected a target with DLA (orin-nx, agx-orin), "
                f"found --target {tgt.name}, which has none"
            )
        if dla_core >= tgt.dla_cores:
            raise ConfigError(
                f"--device dla:{dla_core}: expected a core below {tgt.dla_cores} on {tgt.name}, found {dla_core}"
            )
        if not features.dla:
            raise ConfigError(
                f"--device dla:{dla_core}: this TensorRT ({features.label}) has no DLA support "
                "(absent in TensorRT 11.0–11.3, and on devices without DLA cores); build for the GPU"
            )
        if hardware_compat:
            raise ConfigError(
                "--hardware-compat: expected a GPU build, found --device dla; DLA engines are tied "
                "to the DLA they were built for"
            )
        if version_compatible:
            raise ConfigError(
                "--version-compatible: expected a GPU build, found --device dla; TensorRT's lean "
                "runtime does not run DLA loadables"
            )

    # ---- portability options
    if hardware_compat is not None:
        if hardware_compat != "ampere+":
            raise ConfigError(f"--hardware-compat: expected ampere+, found '{hardware_compat}'")
        if tgt.jetson:
            raise ConfigError(
                f"--hardware-compat ampere+: expected a discrete GPU target (x86), found {tgt.name}; "
                "TensorRT supports hardware-compatible engines only on discrete Ampere+ GPUs"
            )
        if not features.hardware_compat:
            raise ConfigError(
                f"--hardware-compat: this TensorRT ({features.label}) has no HardwareCompatibilityLevel;"
                " expected TensorRT 8.6 or newer"
            )
    if version_compatible and not features.version_compat:
        raise ConfigError(
            f"--version-compatible: this TensorRT ({features.label}) has no VERSION_COMPATIBLE flag; "
            "expected TensorRT 8.6 or newer"
        )

    # ---- precision → graph kind, typing and flags
    onnx_kind, strongly_typed, flags = "float", False, []
    if precision == "int8":
        onnx_kind = "qdq"
        if dla_core is not None and features.precision_flags:
            # DLA on TensorRT <= 10: explicit quantization in a weakly typed network, INT8 with FP16 for the
            # layers DLA runs unquantized (DLA has no fp32), as trtexec --int8 --fp16 --useDLACore does
            flags = ["int8", "fp16"]
        elif features.strongly_typed or not features.precision_flags:
            strongly_typed = True
        else:
            flags = ["int8"]  # TensorRT 8.6: Q/DQ nodes are honoured with the INT8 flag (explicit quantization)
        keep = []  # kept-float layers are the ones the QDQ file leaves without Q/DQ
    elif precision == "fp16":
        if features.precision_flags:
            flags = ["fp16"]
        else:
            onnx_kind, strongly_typed = "fp16", True
    elif precision == "bf16":
        if not features.precision_flags:
            raise ConfigError(
                f"tensorrt bf16: this TensorRT ({features.label}) is strongly typed only and edgecv "
                "converts graphs to fp16, not bf16; expected --precision fp16 or int8"
            )
        if not features.bf16_flag:
            raise ConfigError(f"tensorrt bf16: expected TensorRT 9 or newer (BuilderFlag.BF16), found {features.label}")
        flags = ["bf16"]
    elif not features.precision_flags:
        strongly_typed = True  # TensorRT 11 types every network; fp32 graph → fp32 engine
    # weakly typed builds constrain kept-float layers; strongly typed ones take it from the graph (fp16: the
    # conversion's node block list; int8: the layers the QDQ file leaves without Q/DQ)
    layer_keep = [] if strongly_typed or onnx_kind != "float" else keep

    # ---- shapes
    is_dynamic = contract.dynamic_batch if dynamic is None else dynamic
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}
    if is_dynamic or batch_range:
        lo, opt, hi = _batch_range(contract, batch_range)
        if dla_core is not None and (lo, hi) != (opt, opt):
            notes.append(f"DLA needs static shapes: batch range {lo}/{opt}/{hi} forced to {opt}/{opt}/{opt}")
            lo = hi = opt
        rest = tuple(int(d) for d in contract.input_shape[1:])
        shapes[contract.input_name] = ((lo, *rest), (opt, *rest), (hi, *rest))

    ws = int(workspace_mb if workspace_mb is not None else tgt.workspace_mb)
    if ws < 1:
        raise ConfigError(f"--workspace-mb: expected a positive number, found {ws}")
    return BuildPlan(
        precision=precision,
        onnx_kind=onnx_kind,
        strongly_typed=strongly_typed,
        flags=flags,
        dla_core=dla_core,
        gpu_fallback=dla_core is not None,
        shapes=shapes,
        workspace_mb=ws,
        keep_float=layer_keep,
        fp16_keep=keep if onnx_kind == "fp16" else [],
        hardware_compat=hardware_compat,
        version_compatible=version_compatible,
        always_typed=not features.precision_flags,
        features=features.label,
        notes=notes,
    )


# ====================================================================== trtexec
def _shape(s: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in s)


def trtexec_args(
    plan: BuildPlan, onnx: str, engine: str, timing_cache: str, layer_info: str | None = None
) -> list[str]:
    """The ``trtexec`` arguments that build ``plan`` (the same decisions the Python builder applies)."""
    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    if plan.strongly_typed and not plan.always_typed:
        args.append("--stronglyTyped")
    args += [f"--{f}" for f in plan.flags]
    if plan.dla_core is not None:
        args.append(f"--useDLACore={plan.dla_core}")
        if plan.gpu_fallback:
            args.append("--allowGPUFallback")
    for name, (lo, opt, hi) in plan.shapes.items():
        args += [
            f"--minShapes={name}:{_shape(lo)}",
            f"--optShapes={name}:{_shape(opt)}",
            f"--maxShapes={name}:{_shape(hi)}",
        ]
    args += [f"--timingCacheFile={timing_cache}", f"--memPoolSize=workspace:{plan.workspace_mb}M"]
    if plan.keep_float:
        args += [
            "--precisionConstraints=obey",
            "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in plan.keep_float),
            "--layerOutputTypes=" + ",".join(f"{n}:fp32" for n in plan.keep_float),
        ]
    if plan.hardware_compat:
        args.append(f"--hardwareCompatibilityLevel={plan.hardware_compat}")
    if plan.version_compatible:
        args.append("--versionCompatible")
    # DETAILED verbosity, as the Python builder sets, so layer placement (DLA fallbacks) can be read back
    args.append("--profilingVerbosity=detailed")
    if layer_info:
        args.append(f"--exportLayerInfo={layer_info}")
    return args


def shell_join(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def script_variants(make: Any) -> list[tuple[TrtFeatures, list[str] | str]]:
    """``make(features) -> args`` for each script variant; a refusal becomes its one-line message."""
    out: list[tuple[TrtFeatures, list[str] | str]] = []
    for feats in SCRIPT_VARIANTS:
        try:
            out.append((feats, make(feats)))
        except ConfigError as exc:
            out.append((feats, str(exc)))
    return out


def render_script(
    variants: list[tuple[TrtFeatures, list[str] | str]],
    header: list[str],
    setup: list[str],
    after: dict[str, list[str]] | None = None,
) -> str:
    """A POSIX shell script that asks ``trtexec --help`` which TensorRT it is and runs the matching variant.

    The probe mirrors :meth:`TrtFeatures.from_module`: ``--fp16`` absent ↔ the precision flags were removed
    (TensorRT 11, where strong typing is always on, whether or not its help still lists ``--stronglyTyped``), with
    ``--useDLACore`` ↔ DLA (11.4.1+ on AGX Orin); else ``--stronglyTyped`` present ↔ ``STRONGLY_TYPED``
    (TensorRT 10); else TensorRT 8.6.
    """
    by_label = {f.label: v for f, v in variants}

    def body(feats: TrtFeatures) -> str:
        v = by_label[feats.label]
        if isinstance(v, str):
            return f"  echo {shlex.quote('edgecv: ' + v)} >&2\n  exit 2\n"
        return f"  {shell_join(v)}\n" + "".join(f"  {line}\n" for line in (after or {}).get(feats.label, []))

    lines = [
        "#!/bin/sh",
        *[f"# {h}" for h in header],
        "set -e",
        *setup,
        'TRTEXEC="${TRTEXEC:-trtexec}"',
        'command -v "$TRTEXEC" >/dev/null 2>&1 || { [ -x /usr/src/tensorrt/bin/trtexec ] && '
        "TRTEXEC=/usr/src/tensorrt/bin/trtexec; }",
        'command -v "$TRTEXEC" >/dev/null 2>&1 || { echo "edgecv: expected trtexec on PATH, in '
        r'/usr/src/tensorrt/bin or in \$TRTEXEC, found none" >&2; exit 2; }',
        'HELP="$("$TRTEXEC" --help 2>&1 || true)"',
        'has() { case "$HELP" in *"$1"*) return 0 ;; esac; return 1; }',
        'trtexec() { "$TRTEXEC" "$@"; }',
        "if ! has --fp16 && has --useDLACore; then",
        f"  # {TYPED_ONLY_DLA.label}: strongly typed only",
    ]
    text = "\n".join(lines) + "\n" + body(TYPED_ONLY_DLA)
    text += f"elif ! has --fp16; then\n  # {TYPED_ONLY.label} (11.0–11.4.0: no DLA): strongly typed only\n" + body(
        TYPED_ONLY
    )
    text += f"elif has --stronglyTyped; then\n  # {TYPED.label}\n" + body(TYPED)
    text += f"else\n  # {LEGACY.label}\n" + body(LEGACY) + "fi\n"
    return text
