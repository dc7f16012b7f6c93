"""Accuracy budget: keep the most sensitive layers in floating point until INT8 loses at most ``max_drop`` points.

The search is backend-agnostic. It takes a ``quantize(excluded) -> Runner`` callable (ORT QDQ, NNCF IR …), a
task metric, and the layers ranked most-sensitive-first (by :func:`edgecv.quant.layers.rank_by_sensitivity`:
each layer's output error minus the error it inherited, measured once on the plain INT8 model). It adds layers
to the float set one at a time, re-quantizing and re-scoring each time, and stops at the first set that meets
the budget. If none does, it raises :class:`~edgecv.errors.AccuracyError` with the best result and every layer
tried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from edgecv.errors import AccuracyError

if TYPE_CHECKING:
    from edgecv.backends.base import Runner
    from edgecv.validate.metrics import MetricFn, ValSet

DEFAULT_MAX_TRIALS = 12


@dataclass
class Trial:
    """One quantized candidate: which layers stayed float and what it scored."""

    kept_float: list[str]
    metric: float
    drop: float


@dataclass
class BudgetResult:
    """Every trial scored, and the one chosen (the smallest float set found that meets the budget)."""

    fp32_metric: float
    max_drop: float
    trials: list[Trial] = field(default_factory=list)
    chosen: Trial | None = None

    @property
    def best(self) -> Trial:
        return min(self.trials, key=lambda t: (t.drop, len(t.kept_float)))

    @property
    def met(self) -> bool:
        return self.chosen is not None and self.chosen.drop <= self.max_drop

    @property
    def kept_float(self) -> list[str]:
        return (self.chosen or self.best).kept_float

    def add(self, trial: Trial) -> Trial:
        self.trials.append(trial)
        if trial.drop <= self.max_drop and (
            self.chosen is None or len(trial.kept_float) <= len(self.chosen.kept_float)
        ):
            self.chosen = trial
        return trial

    def to_dict(self) -> dict[str, Any]:
        return {
            "fp32_metric": self.fp32_metric,
            "max_drop": self.max_drop,
            "met": self.met,
            "chosen": self.chosen.kept_float if self.chosen else None,
            "trials": [asdict(t) for t in self.trials],
        }


def score(runner: Runner, metric: MetricFn, val: ValSet) -> float:
    """Load ``runner``, compute ``metric`` on ``val``, close it."""
    with runner:
        return float(metric(runner, val))


def search_keep_float(
    quantize: Callable[[list[str]], Runner],
    metric: MetricFn,
    val: ValSet,
    fp32_metric: float,
    max_drop: float,
    ranked: list[list[str]],
    base: list[str] | None = None,
    first: Trial | None = None,
    max_trials: int = DEFAULT_MAX_TRIALS,
    unit: str = "points",
    prune: bool = True,
) -> BudgetResult:
    """Grow the float set along ``ranked`` until ``fp32_metric - metric <= max_drop``, then prune it.

    Once the budget holds, each added layer is tried back in INT8 (last added first) and stays INT8 when the
    budget still holds, so the recorded set is minimal along the ranking.

    Args:
        quantize: builds a runner for an INT8 model that keeps the given node names in float.
        metric / val: the task metric (points) and validation data.
        fp32_metric: the same metric on the fp32 model, same backend.
        max_drop: allowed drop in metric points.
        ranked: candidate groups of layers (a layer and the ops that must go float with it), most sensitive first.
        base: layers kept float regardless (detector heads, a choice made on another backend).
        first: an already-scored trial of ``base`` (saves one quantization).
        max_trials: stop growing after this many candidate sets (pruning may add as many again).
        prune: try each added layer back in INT8 after the budget is met.
        unit: metric unit for the error message.

    Raises:
        AccuracyError: no set met the budget; the message gives the best result and the layers tried.
    """
    base = list(base or [])
    result = BudgetResult(fp32_metric, max_drop)
    if first is None:
        m = score(quantize(base), metric, val)
        first = Trial(list(base), m, fp32_metric - m)
    result.add(first)
    kept = list(base)
    for group in ranked:
        new = [n for n in group if n not in kept]
        if not new:
            continue
        if result.met or len(result.trials) >= max_trials:
            break
        kept = [*kept, *new]
        m = score(quantize(kept), metric, val)
        result.add(Trial(list(kept), m, fp32_metric - m))
    if result.met and prune and len(result.trials) > 1:
        seen = {frozenset(t.kept_float) for t in result.trials}
        for name in reversed([n for n in kept if n not in base]):
            trial_set = [n for n in kept if n != name]
            if frozenset(trial_set) in seen:  # already scored (e.g. the plain INT8 model): it failed
                continue
            m = score(quantize(trial_set), metric, val)
            if result.add(Trial(list(trial_set), m, fp32_metric - m)).drop <= max_drop:
                kept = trial_set
    if not result.met:
        best = result.best
        tried = [n for n in kept if n not in base]
        raise AccuracyError(
            f"INT8 accuracy budget not met: expected a drop <= {max_drop:g} {unit}, best was "
            f"{best.drop:.2f} ({fp32_metric:.2f} fp32 -> {best.metric:.2f} int8) with {len(best.kept_float)} "
            f"layers kept float; layers tried in float: {tried or 'none (no candidates)'}"
        )
    return result
