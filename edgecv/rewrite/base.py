"""The :class:`Pass` interface, the pass registry the passes register into, and the output certificate.

Looking passes up and running them (:func:`~edgecv.rewrite.apply.apply_passes`) is :mod:`edgecv.rewrite.apply`,
which sits above this module and the passes.

A pass takes an ``nn.Module`` in eval mode and returns a rewritten one (a copy unless ``inplace=True``).
*Exact* passes prove themselves on a sample input every time they run and refuse to return a model whose
outputs moved by more than float rounding; *lossy* passes report how far the outputs drifted (max abs,
cosine, top-1 agreement) and say that fine-tuning is needed.

Passes use ``torch.fx`` where the model traces and fall back to walking the module tree where it does not;
the report records which was used.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from edgecv.errors import EdgecvError, one_line
from edgecv.export.stats import count_params
from edgecv.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import fx, nn

METHOD_FX = "fx"
METHOD_WALK = "module walk"


class RewriteError(EdgecvError):
    """A rewrite pass could not run on this model (bad mode, missing sample, unsupported structure)."""


class NotExactError(RewriteError):
    """An *exact* pass changed the model's outputs beyond float tolerance; the rewritten model was discarded."""


# --------------------------------------------------------------------------------------------- reports
@dataclass
class OutputDiff:
    """How far a rewritten model's outputs are from the original's on one sample."""

    max_abs: float
    mean_abs: float
    scale: float  # max |original output|, the yardstick for the exactness tolerance
    cosine: float
    top1_agreement: float | None  # fraction of samples whose argmax class agrees (2-D outputs only)

    @property
    def rel_max(self) -> float:
        return self.max_abs / self.scale if self.scale > 0 else self.max_abs


@dataclass
class PassReport:
    """What one pass did: see :func:`edgecv.rewrite.apply.apply_passes`."""

    name: str
    exact: bool
    method: str = ""
    changes: int = 0
    max_abs: float = 0.0
    mean_abs: float = 0.0
    cosine: float = 1.0
    top1_agreement: float | None = None
    output_scale: float = 0.0
    tolerance: float | None = None  # exact passes: the max-abs bound the certificate enforced
    params_before: int = 0
    params_after: int = 0
    seconds: float = 0.0
    sample_shape: list[int] = field(default_factory=list)
    sample_source: str = "given"
    finetune_needed: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RewriteReport:
    """The per-pass reports of one :func:`edgecv.rewrite.apply.apply_passes` call, in order."""

    passes: list[PassReport] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    max_abs: float = 0.0  # end-to-end drift, final model vs the input model
    cosine: float = 1.0
    top1_agreement: float | None = None

    @property
    def exact(self) -> bool:
        return all(p.exact for p in self.passes)

    @property
    def finetune_needed(self) -> bool:
        return any(p.finetune_needed for p in self.passes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exact": self.exact,
            "finetune_needed": self.finetune_needed,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "max_abs": self.max_abs,
            "cosine": self.cosine,
            "top1_agreement": self.top1_agreement,
            "passes": [p.to_dict() for p in self.passes],
        }


# --------------------------------------------------------------------------------------------- helpers
def _torch() -> Any:
    from edgecv._lazy import lazy_import

    return lazy_import("torch", "torch")


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """All tensors in a (possibly nested) model output, in graph-output order (dicts in insertion order; see
    :mod:`edgecv.validate.torch_adapter`); leaves that are not tensors are skipped."""
    from edgecv.validate.torch_adapter import flatten_outputs as _flatten

    return _flatten(out, skip_other=True)


def run_model(model: nn.Module, sample: torch.Tensor) -> Any:
    torch = _torch()
    with torch.no_grad():
        return model(sample)


def compare_outputs(ref: Any, new: Any) -> OutputDiff:
    """Max/mean abs difference, cosine similarity and top-1 agreement of two model outputs, measured by
    :func:`edgecv.validate.torch_adapter.compare_all` (float64, over all output tensors)."""
    from edgecv.validate.torch_adapter import compare_all, to_numpy

    a, b = flatten_outputs(ref), flatten_outputs(new)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise RewriteError(
            f"rewritten model's outputs changed shape: expected {[list(x.shape) for x in a]}, "
            f"found {[list(y.shape) for y in b]}"
        )
    if not a:
        raise RewriteError(f"model output has no tensors (found {type(ref).__name__})")
    cmp = compare_all([to_numpy(x) for x in a], [to_numpy(y) for y in b])
    return OutputDiff(
        max_abs=cmp.max_abs,
        mean_abs=cmp.mean_abs,
        scale=cmp.scale,
        cosine=cmp.cosine,
        top1_agreement=cmp.top1_agreement,
    )


def infer_sample(model: nn.Module, batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """A seeded random input shaped for the model's first conv / linear layer, for exact-pass certificates."""
    torch = _torch()
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            nd = len(m.kernel_size)
            return torch.randn(batch, m.in_channels, *([size] * nd), generator=gen)
        if isinstance(m, nn.Linear):
            return torch.randn(batch, m.in_features, generator=gen)
    raise RewriteError(
        "no sample input given and the model has no conv/linear layer to infer an input shape from; "
        "pass sample=torch.randn(...) (CLI: --input-shape)"
    )


def _fused_leaf_types() -> tuple[type, ...]:
    from torch.ao.nn.intrinsic.modules.fused import _FusedModule

    from edgecv.rewrite.modules import ConvAct

    return (ConvAct, _FusedModule)


def try_trace(model: nn.Module, leaf: Callable[[Any], bool] | None = None) -> tuple[fx.GraphModule | None, str]:
    """``torch.fx.symbolic_trace(model)`` or ``(None, why)`` when the model does not trace.

    Fused modules made by earlier passes (``ConvAct``, ``torch.ao.nn.intrinsic`` fused modules) are kept as leaves
    so a later pass does not trace them apart again.
    """
    from torch import fx

    leaves = _fused_leaf_types()

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, leaves) or (leaf is not None and leaf(m)) or super().is_leaf_module(m, qualname)

    try:
        tracer = _Tracer()
        graph = tracer.trace(model)
        name = type(model).__name__
        return fx.GraphModule(tracer.root, graph, name), ""
    except Exception as exc:  # noqa: BLE001 - fx raises many kinds (TraceError, TypeError, NotImplementedError...)
        return None, one_line(exc, 200)


def set_submodule(root: nn.Module, target: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``target`` (works for Sequential/ModuleList indices)."""
    parent_name, _, leaf = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, leaf, new)


def finish_graph(gm: fx.GraphModule) -> fx.GraphModule:
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def is_plain_sequential(m: Any) -> bool:
    """True when ``m`` runs its children one after another (an ``nn.Sequential`` whose forward is not overridden),
    so each child's output feeds only the next child."""
    from torch import nn

    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def merge_adjacent(model: nn.Module, merge: Callable[[Any, Any], nn.Module | None], skip_identity: bool = False) -> int:
    """Module-walk fallback of the pair passes: in every plain ``nn.Sequential`` (:func:`is_plain_sequential`),
    each pair of neighbours ``(a, b)`` for which ``merge(a, b)`` returns a module becomes that module and an
    ``nn.Identity``. ``skip_identity`` pairs across the ``nn.Identity`` children an earlier merge left. Returns how
    many pairs merged."""
    from torch import nn

    merged = 0
    for seq in list(model.modules()):
        if not is_plain_sequential(seq):
            continue
        keys = [k for k in seq._modules if not (skip_identity and isinstance(seq._modules[k], nn.Identity))]
        for a, b in itertools.pairwise(keys):
            new = merge(seq._modules[a], seq._modules[b])
            if new is not None:
                seq._modules[a] = new
                seq._modules[b] = nn.Identity()
                merged += 1
    return merged


def replace_children(model: nn.Module, fn: Callable[[str, Any], nn.Module | None]) -> list[str]:
    """Replace every submodule for which ``fn(qualified_name, module)`` returns a module; do not descend into
    replacements. Returns the names replaced."""
    done: list[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            qual = f"{prefix}{name}"
            new = fn(qual, child)
            if new is not None:
                setattr(parent, name, new)
                done.append(qual)
            else:
                visit(child, qual + ".")

    visit(model, "")
    return done


def plain_conv2d(m: Any) -> bool:
    from torch import nn

    return type(m) is nn.Conv2d


def conv_like(conv: Any, in_ch: int, out_ch: int, *, groups: int, bias: bool) -> nn.Conv2d:
    """A new ``nn.Conv2d`` with ``conv``'s kernel size, stride, padding, dilation and padding mode."""
    from torch import nn

    return nn.Conv2d(
        in_ch,
        out_ch,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        groups=groups,
        bias=bias,
        padding_mode=conv.padding_mode,
    )


def call_counts(gm: fx.GraphModule) -> dict[str, int]:
    """How many times the graph calls each submodule (by target)."""
    counts: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            counts[n.target] = counts.get(n.target, 0) + 1
    return counts


# --------------------------------------------------------------------------------------------- the Pass
@dataclass
class PassResult:
    """What :meth:`Pass.transform` hands back to the certificate machinery."""

    model: Any
    method: str
    changes: int
    notes: list[str] = field(default_factory=list)


class Pass:
    """A model rewrite. Subclasses set :attr:`name`, :attr:`exact` and implement :meth:`transform`.

    Calling a pass (``p(model, sample)``) runs :meth:`run` and returns the rewritten model; the report of the
    last call is kept in :attr:`last_report`.
    """

    name: ClassVar[str] = "pass"
    exact: ClassVar[bool] = True
    description: ClassVar[str] = ""
    #: exact passes accept ``max_abs <= rtol * max|original output| + atol``. atol is 0 on purpose: a randomly
    #: initialised deep net can have outputs ~1e-10, and any absolute floor would make its certificate vacuous.
    rtol: ClassVar[float] = 1e-5
    atol: ClassVar[float] = 0.0
    #: when float32 fails but stays within ``rtol_rounding * scale``, the rewrite is re-run on a float64 copy and
    #: accepted if that copy gives ``max_abs <= rtol64 * scale``
    rtol_rounding: ClassVar[float] = 1e-3
    rtol64: ClassVar[float] = 1e-9

    def __init__(self) -> None:
        self.last_report: PassReport | None = None

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def _float64_check(self, model: nn.Module, sample: torch.Tensor) -> OutputDiff | None:
        """This pass run on a float64 copy of ``model``, compared with that copy; None if it cannot run."""
        try:
            m64, x64 = copy.deepcopy(model).double(), sample.double()
            ref = run_model(m64, x64)
            res = self.transform(copy.deepcopy(m64), x64)
            return compare_outputs(ref, run_model(res.model.eval(), x64))
        except Exception:  # noqa: BLE001 - e.g. a module with hard-coded float32 buffers
            return None

    def __call__(self, model: nn.Module, sample: torch.Tensor | None = None, inplace: bool = False) -> nn.Module:
        return self.run(model, sample, inplace)[0]

    def run(
        self, model: nn.Module, sample: torch.Tensor | None = None, inplace: bool = False
    ) -> tuple[nn.Module, PassReport]:
        """Rewrite ``model`` and certify (exact) or measure (lossy) the result on ``sample``.

        Args:
            model: the model, in eval mode.
            sample: an input batch. Exact passes synthesize a seeded one from the first layer when it is None;
                lossy passes require it (their drift is measured on it, and some calibrate on it).
            inplace: reuse (and change) ``model``'s modules instead of working on a deep copy. On a failed
                certificate the input model may then already be changed, and the float64 re-check that tells
                float32 rounding from a real change is not available.

        Returns:
            the rewritten model and its :class:`PassReport`.

        Raises:
            RewriteError: the model is in train mode, or a lossy pass got no sample.
            NotExactError: an exact pass moved the outputs beyond tolerance (no model is returned).
        """
        torch = _torch()
        from torch import nn

        if not isinstance(model, nn.Module):
            raise RewriteError(f"pass '{self.name}' expected a torch.nn.Module, found {type(model).__name__}")
        kind = "exact" if self.exact else "lossy"
        if model.training:
            raise RewriteError(
                f"{kind} pass '{self.name}' expected a model in eval mode, found train mode "
                "(BatchNorm/Dropout behave differently); call model.eval() first"
            )
        source = "given"
        if sample is None:
            if not self.exact:
                raise RewriteError(
                    f"lossy pass '{self.name}' needs a sample input to measure (and calibrate) the "
                    "output drift it causes; found sample=None (CLI: --input-shape)"
                )
            sample = infer_sample(model)
            source = "synthesized (seeded noise)"
        if not isinstance(sample, torch.Tensor):
            raise RewriteError(
                f"pass '{self.name}' expected sample to be a torch.Tensor, found {type(sample).__name__}"
            )
        t0 = time.perf_counter()
        ref = run_model(model, sample)
        params_before = count_params(model)
        work = model if inplace else copy.deepcopy(model)
        result = self.transform(work, sample)
        new = result.model
        new.eval()
        diff = compare_outputs(ref, run_model(new, sample))
        report = PassReport(
            name=self.name,
            exact=self.exact,
            method=result.method,
            changes=result.changes,
            max_abs=diff.max_abs,
            mean_abs=diff.mean_abs,
            cosine=diff.cosine,
            top1_agreement=diff.top1_agreement,
            output_scale=diff.scale,
            params_before=params_before,
            params_after=count_params(new),
            sample_shape=list(sample.shape),
            sample_source=source,
            notes=list(result.notes),
        )
        if self.exact:
            tol = self.rtol * diff.scale + self.atol
            report.tolerance = tol
            if not diff.max_abs <= tol:  # also catches NaN
                # fp32 rounding can be amplified (softmax over large logits, deep nets); running the same rewrite
                # on a float64 copy tells rounding from a real change. Needs the untouched input (not inplace),
                # and only moderate fp32 drift is put down to rounding.
                d64 = None if inplace or diff.rel_max > self.rtol_rounding else self._float64_check(model, sample)
                tol64 = self.rtol64 * (d64.scale if d64 else 0.0)
                if d64 is not None and d64.max_abs <= tol64:
                    report.notes.append(
                        f"float32 diff {diff.max_abs:.3g} > {tol:.3g} is rounding: the same rewrite in float64 gives "
                        f"{d64.max_abs:.3g} <= {tol64:.3g} ({self.rtol64:g} x output scale)"
                    )
                else:
                    if inplace:
                        where = " (the input model was modified in place; no float64 check)"
                    elif diff.rel_max > self.rtol_rounding:
                        where = f" (more than {self.rtol_rounding:g} x output scale: not float rounding)"
                    elif d64 is None:
                        where = "; the float64 check could not run"
                    else:
                        where = f"; float64 check {d64.max_abs:.4g} > {tol64:.3g}"
                    raise NotExactError(
                        f"exact pass '{self.name}' changed the outputs: expected max abs diff <= {tol:.3g} "
                        f"({self.rtol:g} x output scale {diff.scale:.4g}), found {diff.max_abs:.4g} "
                        f"(cosine {diff.cosine:.6f}, {result.changes} changes via {result.method}){where}; "
                        "rewritten model discarded"
                    )
        else:
            report.finetune_needed = result.changes > 0
            if result.changes:
                report.notes.append("lossy: fine-tune (e.g. distil from the original) before deploying")
        report.seconds = time.perf_counter() - t0
        self.last_report = report
        return new, report


class GraphPass(Pass):
    """A pass that rewrites the ``torch.fx`` graph when the model traces and walks the module tree when it does not:
    subclasses implement :meth:`rewrite_graph` and :meth:`rewrite_modules` (each returns how many places changed)
    and say in :attr:`walk_note` what the fallback covers."""

    walk_note: ClassVar[str] = ""

    def rewrite_graph(self, gm: fx.GraphModule, sample: torch.Tensor) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def rewrite_modules(self, model: nn.Module, sample: torch.Tensor) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def transform(self, model: nn.Module, sample: torch.Tensor) -> PassResult:
        gm, why = try_trace(model)
        if gm is not None:
            return PassResult(gm, METHOD_FX, self.rewrite_graph(gm, sample))
        n = self.rewrite_modules(model, sample)
        return PassResult(model, METHOD_WALK, n, [f"fx trace failed ({why}); {self.walk_note}"])


PASSES: Registry[type[Pass]] = Registry("rewrite pass")


_P = TypeVar("_P", bound=type[Pass])


@overload
def register_pass(target: _P, /) -> _P: ...
@overload
def register_pass(target: str, /, *, description: str, exact: bool | None = None) -> Callable[[_P], _P]: ...
def register_pass(target: _P | str, /, *, description: str = "", exact: bool | None = None) -> _P | Callable[[_P], _P]:
    """Class decorator: register a :class:`Pass` subclass. ``@register_pass("name", exact=..., description=...)``
    declares the pass's :attr:`~Pass.name`, :attr:`~Pass.exact` (None keeps the inherited one) and
    :attr:`~Pass.description` where it is registered; bare ``@register_pass`` takes the class's own attributes."""
    if isinstance(target, str):
        name = target

        def deco(cls: _P) -> _P:
            cls.name, cls.description = name, description
            if exact is not None:
                cls.exact = exact
            return register_pass(cls)

        return deco
    PASSES.register(target.name, target, exact=target.exact, description=target.description)
    return target
