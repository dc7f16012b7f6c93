"""The recipe schema. Every section forbids unknown keys, so a typo fails early and names its dotted path."""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgecv.errors import ConfigError
from edgecv.types import Precision as PrecisionName

TaskName = Literal["classify", "detect", "segment"]
OptimizerName = Literal["sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw"]
ScheduleName = Literal["none", "constant", "step", "cosine", "linear"]
BackendName = Literal["torch", "onnxruntime", "openvino", "tensorrt"]
DataFormat = Literal["imagefolder", "coco", "yolo", "masks", "images"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """Which model to build: a zoo ``name`` or a ``source`` ("package.module:factory"), optional weights."""

    name: str | None = None
    source: str | None = None
    weights: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    init: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.name is None) == (self.source is None):
            raise ValueError("expected exactly one of 'name' (zoo model) or 'source' ('module:factory')")
        return self


class SynthConfig(_Strict):
    """Generate the data set with ``edgecv data synth`` instead of reading ``train``/``val`` folders."""

    n_train: int = Field(default=2000, ge=1)
    n_val: int = Field(default=400, ge=1)
    size: int = Field(default=96, ge=16, le=2048)
    seed: int = Field(default=0, ge=0)


class AugmentConfig(_Strict):
    hflip: bool = False
    vflip: bool = False
    brightness: float = Field(default=0.0, ge=0.0, le=1.0)
    contrast: float = Field(default=0.0, ge=0.0, le=1.0)
    translate: float = Field(default=0.0, ge=0.0, le=0.5)
    rotate: float = Field(default=0.0, ge=0.0, le=180.0)  # degrees, uniform in ±rotate (random affine)
    scale: float = Field(default=0.0, ge=0.0, lt=1.0)  # zoom factor uniform in 1 ± scale (random affine)


class DataConfig(_Strict):
    task: TaskName = "classify"
    train: str | None = None
    val: str | None = None
    format: DataFormat | None = None
    synth: SynthConfig | None = None
    image_size: int | None = Field(default=None, ge=8, le=4096)
    batch_size: int = Field(default=32, ge=1)
    workers: int = Field(default=0, ge=0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _has_source(self) -> DataConfig:
        if self.synth is None and self.train is None:
            raise ValueError("expected 'train' (a data folder) or 'synth' (generated data)")
        return self


class OptimizerConfig(_Strict):
    name: OptimizerName = "adamw"
    lr: float = Field(default=1e-3, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0.0)
    alpha: float = Field(default=0.99, gt=0.0, lt=1.0)  # rmsprop smoothing
    rho: float = Field(default=0.9, gt=0.0, lt=1.0)  # adadelta decay of the squared-gradient/update averages


class ScheduleConfig(_Strict):
    """Main schedule (per iteration) composed after an optional linear warm-up of ``warmup_epochs``."""

    name: ScheduleName = "cosine"
    warmup_epochs: float = Field(default=0.0, ge=0.0)
    warmup_start: float = Field(default=0.1, gt=0.0, le=1.0)
    step_size: int = Field(default=10, ge=1)
    gamma: float = Field(default=0.1, gt=0.0, le=1.0)
    min_lr: float = Field(default=0.0, ge=0.0)


class DistillConfig(_Strict):
    """Knowledge distillation from a teacher (zoo name or "module:factory"), with its weights."""

    teacher: str
    teacher_weights: str | None = None
    teacher_kwargs: dict[str, Any] = Field(default_factory=dict)
    temperature: float = Field(default=4.0, gt=0.0)
    alpha: float = Field(default=0.5, ge=0.0, le=1.0)


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    clip_grad: float | None = Field(default=None, gt=0.0)
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    amp: bool = True
    seed: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, ge=1)
    distill: DistillConfig | None = None


class RewriteConfig(_Strict):
    passes: list[str] = Field(default_factory=list)


class ExportConfig(_Strict):
    opset: int = Field(default=17, ge=7, le=30)
    dynamic_batch: bool = True
    simplify: bool = True
    input_shape: list[int] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ExportConfig:
        if self.input_shape is not None and (len(self.input_shape) != 4 or min(self.input_shape) <= 0):
            raise ValueError(f"input_shape: expected 4 positive dims [N, C, H, W], got {self.input_shape}")
        return self


class QuantizeConfig(_Strict):
    method: Literal["minmax", "entropy", "percentile", "auto"] = "minmax"  # as edgecv compile --method
    calib: str | None = None
    max_drop: float | None = Field(default=None, ge=0.0)
    samples: int = Field(default=300, ge=1)


class CompileTarget(_Strict):
    backend: Literal["onnxruntime", "openvino", "tensorrt"]
    precision: PrecisionName = "fp32"


def _default_backends() -> list[BackendName]:
    return ["onnxruntime"]


class ValidateConfig(_Strict):
    backends: list[BackendName] = Field(default_factory=_default_backends)
    max_drop: float | None = Field(default=None, ge=0.0)
    # accept checks that had nothing to compare (edgecv validate --allow-unchecked)
    allow_unchecked: bool = False


class BenchConfig(_Strict):
    backends: list[BackendName] = Field(default_factory=_default_backends)
    batches: list[int] = Field(default_factory=lambda: [1])
    threads: int | None = Field(default=None, ge=1)


class Recipe(_Strict):
    """A whole recipe: what to build, train, rewrite, export, quantize, compile, validate and benchmark."""

    model: ModelConfig
    data: DataConfig | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    quantize: QuantizeConfig | None = None
    compile: list[CompileTarget] = Field(default_factory=list)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    bench: BenchConfig = Field(default_factory=BenchConfig)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (aliases, JSON types), e.g. to record the recipe beside a checkpoint."""
        return self.model_dump(mode="json", by_alias=True)


# ---------------------------------------------------------------------------------------------- errors


def _unwrap(tp: Any) -> list[Any]:
    """The BaseModel classes a field annotation may hold (through Optional/list/dict)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    out: list[Any] = []
    for arg in typing.get_args(tp):
        out.extend(_unwrap(arg))
    return out


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the key at ``loc`` (walks field annotations, skipping list indices)."""
    cur: type[BaseModel] | None = root
    for part in loc:
        if cur is None:
            return None
        if isinstance(part, int):
            continue
        field = None
        for fname, f in cur.model_fields.items():
            if part in (fname, f.alias):
                field = f
                break
        if field is None:
            return None
        models = _unwrap(field.annotation)
        cur = models[0] if models else None
    return cur


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(exc: ValidationError, root: type[BaseModel] = Recipe, source: str = "recipe") -> str:
    """One line: the dotted path of the first bad field, what was expected, what was found."""
    errs = exc.errors()
    e = errs[0]
    # pydantic appends the union-member/tag name for some errors; keep only real keys
    loc = tuple(p for p in e["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "literal[")))
    path = _dotted(loc)
    etype = e["type"]
    found = e.get("input")
    if etype == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        allowed = ", ".join(_keys(parent)) if parent else "?"
        where = _dotted(loc[:-1])
        msg = f"{source}: unknown key '{path}' (allowed keys in {where}: {allowed})"
    elif etype == "literal_error":
        expected = e.get("ctx", {}).get("expected", "")
        msg = f"{source}: {path}: expected one of {expected}, found {found!r}"
    elif etype == "missing":
        msg = f"{source}: {path}: required key is missing"
    else:
        text = e["msg"]
        text = text.removeprefix("Value error, ")
        msg = f"{source}: {path}: {text}, found {_short(found)}"
    if len(errs) > 1:
        msg += f" (and {len(errs) - 1} more error{'s' if len(errs) > 2 else ''})"
    return msg


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """Validate already-loaded recipe data; raises :class:`ConfigError` naming the dotted field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, found {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Recipe, source)) from None


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read a YAML recipe with ``yaml.safe_load`` and validate it.

    Args:
        path: the recipe file.

    Returns:
        The validated :class:`Recipe`.

    Raises:
        ConfigError: the file is missing, is not YAML, has an unknown key or a bad value; the message names the
            dotted path (e.g. ``train.optimizer.name``) and the allowed values.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return anchor_paths(parse_recipe(data, source=str(p)), p.parent)


def anchor_paths(recipe: Recipe, base: Path) -> Recipe:
    """Resolve the recipe's relative paths against ``base`` (the recipe file's folder), so that a recipe means the
    same from any working directory: ``data.train``, ``data.val``, ``quantize.calib``, ``model.weights``,
    ``train.distill.teacher_weights`` and a ``file.py:factory`` in ``model.source``."""

    def anchored(value: str | None) -> str | None:
        if not value or Path(value).expanduser().is_absolute():
            return value
        return str((base / Path(value).expanduser()).resolve())

    if recipe.data is not None:
        recipe.data.train = anchored(recipe.data.train)
        recipe.data.val = anchored(recipe.data.val)
    if recipe.quantize is not None:
        recipe.quantize.calib = anchored(recipe.quantize.calib)
    recipe.model.weights = anchored(recipe.model.weights)
    src = recipe.model.source
    if src and ".py:" in src:
        file, _, factory = src.rpartition(":")
        recipe.model.source = f"{anchored(file)}:{factory}"
    if recipe.train.distill is not None:
        recipe.train.distill.teacher_weights = anchored(recipe.train.distill.teacher_weights)
    return recipe
