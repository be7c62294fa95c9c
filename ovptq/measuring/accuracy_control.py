"""`quantize_with_accuracy_control`: the default INT8 model, then quantizers back in float until the caller's metric
is within `max_drop` of FP32, in few calls of `validation_fn`.

    drop = metric(FP32) - metric(INT8)                      DropType.ABSOLUTE
    drop = (metric(FP32) - metric(INT8)) / |metric(FP32)|   DropType.RELATIVE     (higher metric = better)

1. Validate the FP32 model once, then the default INT8 model (ovptq.quantize's pipeline). Within budget: done.
2. Rank groups, a linear layer with the input quantizers that lead to no other int8 layer, by the output SQNR
   each gains back in float: one compiled model per group, inferred on the `ranking_subset_size` validation items
   where INT8 and FP32 disagree most (by per-sample metric values when validation_fn returns them, else by output
   error). No validation_fn call.
3. Restore in steps, one validation each, cheapest first:
   a. the safety net's repairs with a stricter bound (`strict_sqnr_db`): ranges and 8-bit weights, little float;
   b. the activation quantizers of the k best groups (their int8 weights stay), k = 1, 2, 4, ... until the budget
      is met, then bisection for the smallest such k;
   c. the same with whole groups (weights too).
   When a step makes the metric worse than the step before, the groups left are ranked again on that model.
4. Nothing meets the budget: a warning gives the best metric reached, and that model is returned.

What was restored, each step's metric and the number of validations go to the log and to rt_info
(ovptq/accuracy_control); `ovptq.inspect` names the layers it kept float.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from ovptq.dataset import Dataset, ModelInput, bind_requests
from ovptq.errors import DatasetError, ParameterError, ValidationError
from ovptq.hardware import LINEAR_TYPES
from ovptq.measuring import measure, safety_net
from ovptq.measuring.speed_check import quantizers_of
from ovptq.measuring.trial import PlanChange, Trials, built, changed
from ovptq.parameters import AdvancedQuantizationParameters, DropType, TargetDevice
from ovptq.quantize import load_model, quantized_state
from ovptq.rewrite import rewrite
from ovptq.state import State
from ovptq.wording import counted

log = logging.getLogger("ovptq")


@dataclass(frozen=True)
class AdvancedAccuracyRestorerParameters:
    """max_num_iterations: validations allowed after the FP32 and the default INT8 ones (None: no limit).
    ranking_subset_size: validation items the ranking infers on, the most affected of the first
        ranking_pool_size.
    strict_sqnr_db: the safety net's bound in the first restoring step.
    restore_activations_first: try restoring activation quantizers alone before whole groups."""

    max_num_iterations: int | None = None
    ranking_subset_size: int = 8
    ranking_pool_size: int = 64
    strict_sqnr_db: float = 30.0
    restore_activations_first: bool = True

    def checked(self) -> "AdvancedAccuracyRestorerParameters":
        for name in ("ranking_subset_size", "ranking_pool_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"advanced_accuracy_restorer_parameters.{name}={value!r} must be a positive "
                                     "integer.")
        if self.max_num_iterations is not None and (isinstance(self.max_num_iterations, bool) or not isinstance(
                self.max_num_iterations, int) or self.max_num_iterations < 0):
            raise ParameterError(f"advanced_accuracy_restorer_parameters.max_num_iterations="
                                 f"{self.max_num_iterations!r} must be a non-negative integer or None.")
        return self


@dataclass(frozen=True)
class Budget:
    """The FP32 metric and how far below it the INT8 metric may be."""

    fp32: float
    max_drop: float
    drop_type: DropType

    def drop(self, metric: float) -> float:
        drop = self.fp32 - metric
        return drop / abs(self.fp32) if self.drop_type is DropType.RELATIVE and self.fp32 else drop

    def met(self, metric: float) -> bool:
        return self.drop(metric) <= self.max_drop + 1e-12


@dataclass(frozen=True)
class Step:
    """One validated model: what it restored and the metric it reached."""

    what: str
    metric: float
    restored: tuple[str, ...] = ()


@dataclass
class _Search:
    """The validations of one call, and the best model seen."""

    validate: Callable[[ov.Model, str], tuple[float, list | None]]
    budget: Budget
    limit: int | None
    steps: list[Step] = field(default_factory=list)
    best: tuple[float, State, tuple[str, ...]] | None = None
    seen: dict[tuple, float] = field(default_factory=dict)

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and len(self.steps) - 1 >= self.limit  # the default model's is not counted

    def score(self, state: State, what: str, restored: tuple[str, ...]) -> float:
        """The metric of the state's model; a model with the same quantizers as one validated before is not
        validated again (restoring activations can leave a set of groups unchanged)."""
        key = quantizers(state)
        if key in self.seen:
            return self.seen[key]
        metric, _ = self.validate(state.result, what)
        self.seen[key] = metric
        self.steps.append(Step(what, metric, restored))
        log.info("Accuracy control: %s -> metric %.4f (drop %.4f, budget %.4f).", what, metric,
                 self.budget.drop(metric), self.budget.max_drop)
        if self.best is None or self._key(metric, restored) > self._key(self.best[0], self.best[2]):
            self.best = (metric, state, restored)
        return metric

    def _key(self, metric: float, restored: tuple[str, ...]) -> tuple:
        """Better: a model within budget over one that is not; within budget, fewer layers restored; else a higher
        metric."""
        return (1, -len(restored), metric) if self.budget.met(metric) else (0, metric, -len(restored))


def quantizers(state: State) -> tuple[frozenset[str], frozenset[str]]:
    """The activation quantizers and the int8 weights of the state's plan: what tells two models apart."""
    return frozenset(q.name for q in state.plan.activations), frozenset(w.node for w in state.plan.weights)


class _Validator:
    """validation_fn, counted, with its result checked."""

    def __init__(self, validation_fn: Callable, validation_dataset: Dataset, core: ov.Core):
        self.fn, self.dataset, self.core = validation_fn, validation_dataset, core
        self.name = getattr(validation_fn, "__qualname__", None) or repr(validation_fn)
        self.calls = 0

    def __call__(self, model: ov.Model, what: str) -> tuple[float, list | None]:
        self.calls += 1
        compiled = self.core.compile_model(model, "CPU")
        try:
            result = self.fn(compiled, self.dataset.get_data())
        except Exception as error:
            raise ValidationError(f"validation_fn {self.name} raised {type(error).__name__} on {what}: {error}") \
                from error
        metric, values = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real | np.number) or not math.isfinite(metric):
            raise ValidationError(f"validation_fn {self.name} returned {result!r} on {what}: it must return a finite "
                                  "number (higher is better), or (number, per-sample values).")
        return float(metric), (list(values) if values is not None else None)


def quantize_with_accuracy_control(
        model: ov.Model | str | Path, calibration_dataset: Dataset, validation_dataset: Dataset,
        validation_fn: Callable[[ov.CompiledModel, Any], float | tuple[float, list]], max_drop: float = 0.01,
        drop_type: DropType | str = DropType.ABSOLUTE, *, subset_size: int = 300, fast_bias_correction: bool = True,
        model_type=None, preset=None, target_device=TargetDevice.ANY, ignored_scope=None,
        advanced_quantization_parameters: AdvancedQuantizationParameters | None = None,
        advanced_accuracy_restorer_parameters: AdvancedAccuracyRestorerParameters | None = None) -> ov.Model:
    """An INT8 model whose `validation_fn` metric is within `max_drop` of the FP32 model's (as
    `nncf.quantize_with_accuracy_control`). `validation_fn(compiled_model, validation_dataset.get_data())` returns
    the metric, higher is better, or (metric, per-sample values). When no model meets the budget, the best one
    reached is returned with a warning. The caller's model is not modified."""
    started = time.perf_counter()
    drop_type = DropType.parse(drop_type, "drop_type")
    restorer = (advanced_accuracy_restorer_parameters or AdvancedAccuracyRestorerParameters())
    if not isinstance(restorer, AdvancedAccuracyRestorerParameters):
        raise ParameterError("advanced_accuracy_restorer_parameters must be an "
                             f"ovptq.AdvancedAccuracyRestorerParameters, not {type(restorer).__name__}.")
    restorer = restorer.checked()
    if isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real) or not 0 <= max_drop < math.inf:
        raise ParameterError(f"max_drop={max_drop!r} must be a non-negative number.")
    if not isinstance(validation_dataset, Dataset):
        raise ParameterError(f"validation_dataset must be an ovptq.Dataset, not {type(validation_dataset).__name__}.")
    if not callable(validation_fn):
        raise ParameterError(f"validation_fn must be callable, not {type(validation_fn).__name__}.")
    core = ov.Core()
    source = load_model(model, core)
    validator = _Validator(validation_fn, validation_dataset, core)
    fp32_metric, fp32_values = validator(source, "the FP32 model")
    budget = Budget(fp32_metric, float(max_drop), drop_type)
    state = quantized_state(source, calibration_dataset, preset=preset, target_device=target_device,
                            subset_size=subset_size, fast_bias_correction=fast_bias_correction, model_type=model_type,
                            ignored_scope=ignored_scope, advanced_parameters=advanced_quantization_parameters)
    search = _Search(validator, budget, restorer.max_num_iterations)
    int8_metric, int8_values = validator(state.result, "the default INT8 model")
    search.best = (int8_metric, state, ())
    search.seen[quantizers(state)] = int8_metric
    search.steps.append(Step("default INT8 model", int8_metric))
    log.info("Accuracy control: FP32 %.4f, default INT8 %.4f (drop %.4f, budget %.4f).", fp32_metric, int8_metric,
             budget.drop(int8_metric), budget.max_drop)
    if not budget.met(int8_metric):
        _restore(state, search, validation_dataset, restorer, _per_sample_drop(fp32_values, int8_values))
    metric, final, restored = search.best
    met = budget.met(metric)
    if not met:
        log.warning("Accuracy control: no model met max_drop=%s (%s): the best reached %.4f (drop %.4f) and is "
                    "returned.", max_drop, drop_type, metric, budget.drop(metric))
    record = {"fp32_metric": fp32_metric, "int8_metric": int8_metric, "final_metric": metric, "met": met,
              "max_drop": budget.max_drop, "drop_type": str(drop_type), "validations": validator.calls,
              "restored": list(restored), "steps": [{"what": s.what, "metric": s.metric} for s in search.steps]}
    log.info("Accuracy control: %.4f (FP32 %.4f) with %s restored, %s, %.1f s.", metric, fp32_metric,
             counted(len(restored), "layer"), counted(validator.calls, "validation"), time.perf_counter() - started)
    return rewrite.stamped(final.result, {"accuracy_control": json.dumps(record)})


def _per_sample_drop(fp32_values: list | None, int8_values: list | None) -> np.ndarray | None:
    if fp32_values is None or int8_values is None or len(fp32_values) != len(int8_values):
        return None
    return np.asarray(fp32_values, dtype=float) - np.asarray(int8_values, dtype=float)


def _restore(state: State, search: _Search, dataset: Dataset, restorer: AdvancedAccuracyRestorerParameters,
             sample_drop: np.ndarray | None) -> None:
    """The restoring steps, each validated; the best model stays in `search`."""
    base, base_metric = state, search.best[0]
    if state.options.advanced.safety_net and not search.exhausted:
        fixed = safety_net.check(state, restorer.strict_sqnr_db)
        if fixed.safety_net is not None and fixed.safety_net.repairs:
            metric = search.score(fixed, f"safety net to {restorer.strict_sqnr_db:.0f} dB "
                                         f"({len(fixed.safety_net.repairs)} repairs)", ())
            if search.budget.met(metric):
                return
            if metric > base_metric:
                base, base_metric = fixed, metric
    pool, on_validation_items = _ranking_items(base, dataset, restorer)
    feeds, reference = _ranking_feeds(base, pool, restorer, sample_drop if on_validation_items else None)
    ranked = rank(base, _groups(base), feeds, reference)
    for mode in (["activations"] if restorer.restore_activations_first else []) + ["layers"]:
        if search.exhausted or _bisect(base, base_metric, ranked, mode, search, feeds, reference):
            return


def _groups(state: State) -> list[str]:
    """The int8 linear layers of the plan (a group is a layer with its input quantizers)."""
    layers = {w.node for w in state.plan.weights if not w.embedding}
    layers |= {c.node for q in state.plan.activations for c in q.consumers if state.graph.type(c.node) in LINEAR_TYPES}
    return sorted(layers, key=state.graph.order_index)


def restoring(state: State, layers: list[str], mode: str) -> PlanChange:
    """`layers` back in float (mode "layers"), or only the activation quantizers that lead to nothing but them
    (mode "activations")."""
    change = quantizers_of(state, set(layers))
    return change if mode == "layers" else PlanChange(change.floated)


def restored(state: State, layers: list[str], mode: str) -> State:
    """The state with `restoring(state, layers, mode)`, rebuilt."""
    return built(changed(state, restoring(state, layers, mode)))


def rank(state: State, layers: list[str], feeds: list[dict], reference: list[list[np.ndarray]]) -> list[str]:
    """`layers` by the output SQNR (pooled over outputs, against the FP32 outputs `reference` on `feeds`) each
    gains back in float alone, best first; the trial service measures them two at a time, on this CPU's int8
    kernels, which validation_fn's model runs on (a CPU without VNNI saturates where emulation does not)."""
    if not layers:
        return []
    trials = Trials(state, feeds, reference, on_this_cpu=True)
    baseline, *measured = trials.measure_all([PlanChange(), *(restoring(state, [layer], "layers") for layer in layers)])
    gains = {layer: m.pooled_db - baseline.pooled_db for layer, m in zip(layers, measured)}
    log.debug("Accuracy control ranking (dB gained in float): %s", gains)
    return sorted(layers, key=lambda layer: -gains[layer])


def _ranking_items(state: State, validation: Dataset, restorer: AdvancedAccuracyRestorerParameters) \
        -> tuple[list[dict], bool]:
    """The first `ranking_pool_size` validation items as model feeds, and True. Validation items that are not model
    inputs (NNCF-style `(input, label)` items with no transform_fn, which only validation_fn reads) give the first
    calibration items instead, and False: the per-sample metric drop of the validation items does not apply to
    them."""
    inputs = ModelInput.of(state.model)
    try:
        return [bind_requests(item, inputs, index)[0]
                for index, item in validation.items(restorer.ranking_pool_size, "accuracy control")], True
    except DatasetError as error:
        log.info("Accuracy control: the validation items are not model inputs (%s), so only validation_fn reads "
                 "them; the groups are ranked on the calibration items instead. A validation Dataset with a "
                 "transform_fn that returns the model inputs ranks on the validation items.", error)
    calibration = state.replay or state.dataset
    return [bind_requests(item, inputs, index)[0]
            for index, item in calibration.items(restorer.ranking_pool_size, "accuracy control")], False


def _ranking_feeds(state: State, pool: list[dict], restorer: AdvancedAccuracyRestorerParameters,
                   sample_drop: np.ndarray | None) -> tuple[list[dict], list[list[np.ndarray]]]:
    """The `ranking_subset_size` feeds of `pool` where INT8 and FP32 disagree most (by the per-sample metric drop
    when known, else by the output error), with the FP32 outputs on them."""
    reference = measure.run(state.core, state.model, pool)
    if len(pool) <= restorer.ranking_subset_size:
        return pool, reference
    errors = measure.sample_errors(reference, measure.run(state.core, state.result, pool))
    if sample_drop is not None and len(sample_drop) >= len(pool):
        order = np.lexsort((-errors, -sample_drop[:len(pool)]))
    else:
        order = np.argsort(-errors, kind="stable")
    chosen = order[:restorer.ranking_subset_size]
    return [pool[i] for i in chosen], [[output[i] for i in chosen] for output in reference]


def _bisect(base: State, base_metric: float, ranked: list[str], mode: str, search: _Search,
            feeds: list[dict], reference: list[list[np.ndarray]]) -> bool:
    """Restore the k best-ranked groups for k = 1, 2, 4, ..., then bisect between the last k that missed the
    budget and the first that met it. True when the budget was met."""
    low, k, previous = 0, 1, base_metric
    met_at = None
    while not search.exhausted:
        k = min(k, len(ranked))
        trial = restored(base, ranked[:k], mode)
        metric = search.score(trial, f"{mode} of the {k} best-ranked groups", tuple(ranked[:k]))
        if search.budget.met(metric):
            met_at = k
            break
        if k == len(ranked):
            return False
        if metric < previous and k > 1:
            log.info("Accuracy control: the metric fell (%.4f -> %.4f): ranking the groups left again.", previous,
                     metric)
            ranked = ranked[:k] + rank(trial, ranked[k:], feeds, reference)
        previous, low, k = metric, k, k * 2
    if met_at is None:
        return False
    high = met_at
    while high - low > 1 and not search.exhausted:
        middle = (low + high) // 2
        metric = search.score(restored(base, ranked[:middle], mode), f"{mode} of the {middle} best-ranked groups",
                              tuple(ranked[:middle]))
        low, high = (low, middle) if search.budget.met(metric) else (middle, high)
    return True
