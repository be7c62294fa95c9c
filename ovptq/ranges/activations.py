"""Activation ranges: the statistics each activation quantizer needs, and its FakeQuantize parameters.

Estimators (`RangeEstimator`): per-tensor quantizers default to MEAN_MINMAX (mean over samples of each sample's
min/max, or abs-max when symmetric), per-channel ones to MINMAX (global min/max per channel). Quantizers of one
unified group (Concat inputs) share one range: the widest of the members'.

A symmetric quantizer whose tensor is one-sided (`one_sided`: e.g. [-0.37, 10]) gets an asymmetric range instead,
unless a consumer needs zero-point-free inputs (activation x activation MatMuls, deconvolutions) or it is per channel.

Sign of a symmetric quantizer: signed when the most negative value seen is more than half a step of the
unsigned grid below 0 (-min > ih / 255 / 2), per channel for per-channel quantizers (a channel of range 0.1 cannot
lose -0.04 to clipping because another channel reaches 20); smaller negatives are clipped at 0 with no more error
than rounding adds, and the tensor keeps twice the resolution.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

import numpy as np

from ovptq.graph.graph import Graph
from ovptq.graph.values import is_non_negative
from ovptq.parameters import RangeEstimator
from ovptq.placement.plan import ActivationQuantizer, QuantizationPlan
from ovptq.ranges.formulas import ACTIVATION_LEVELS, FQParams, asymmetric_activation, symmetric_activation
from ovptq.state import Stage, State
from ovptq.statistics.reductions import RangeReduction, TensorStatistics


ONE_SIDED = 0.6  # see one_sided


def quantizer_reductions(plan: QuantizationPlan, estimator: RangeEstimator | None, quantile: float,
                         graph: Graph | None = None) -> dict[str, RangeReduction]:
    """The range reduction each activation quantizer needs, keyed by quantizer name.

    A tensor known to be >= 0 (`graph` given) needs no minimum: every range contains 0, so a positive minimum would
    be replaced by 0 anyway.
    """
    wants_quantile = estimator is RangeEstimator.MEAN_QUANTILE
    return {q.name: RangeReduction(q.producer, q.port, q.per_channel, quantile if wants_quantile else None,
                                   graph is not None and not wants_quantile and is_non_negative(graph, q.producer))
            for q in plan.activations}


def state_reductions(state: State) -> dict[str, RangeReduction]:
    """`quantizer_reductions` of the state's plan with its options' estimator."""
    advanced = state.options.advanced
    return quantizer_reductions(state.plan, advanced.activations_range_estimator, advanced.quantile_outlier_prob,
                                state.graph)


def _bounds(stats: TensorStatistics, estimator: RangeEstimator, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of the tensor by the estimator; for symmetric quantizers max is an abs-max."""
    if estimator is RangeEstimator.MINMAX:
        low, high = stats.global_min, stats.global_max
        return (low, np.maximum(-low, high)) if symmetric else (low, high)
    if estimator is RangeEstimator.MEAN_QUANTILE:
        low, high = stats.mean_quantile_low, stats.mean_quantile_high
        return (low, np.maximum(-low, high)) if symmetric else (low, high)
    return (stats.mean_min, stats.mean_absmax) if symmetric else (stats.mean_min, stats.mean_max)


def _symmetric(minimum: np.ndarray, absmax: np.ndarray) -> FQParams:
    """Per channel, a minimum within half a step of that channel's own unsigned grid counts as 0."""
    half_step = np.asarray(absmax) / (ACTIVATION_LEVELS - 1) / 2
    return symmetric_activation(np.where(minimum < -half_step, minimum, 0.0), absmax)


def activation_params(plan: QuantizationPlan, statistics: Mapping[str, TensorStatistics],
                      estimator: RangeEstimator | None) -> dict[str, FQParams]:
    """FakeQuantize parameters per activation quantizer name (`statistics` is keyed by quantizer name too)."""
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    sign_min: dict[str, np.ndarray] = {}
    for q in plan.activations:
        chosen = estimator or (RangeEstimator.MINMAX if q.per_channel else RangeEstimator.MEAN_MINMAX)
        bounds[q.name] = _bounds(statistics[q.name], chosen, q.symmetric)
        sign_min[q.name] = statistics[q.name].global_min
    groups: dict[int, list[ActivationQuantizer]] = defaultdict(list)
    for q in plan.activations:
        if q.group is not None:
            groups[q.group].append(q)
    for members in groups.values():
        low = np.min([np.min(bounds[q.name][0]) for q in members])
        high = np.max([np.max(bounds[q.name][1]) for q in members])
        global_low = np.min([np.min(sign_min[q.name]) for q in members])
        for q in members:
            bounds[q.name] = (low, high)
            sign_min[q.name] = global_low
    params = {}
    for q in plan.activations:
        low, high = bounds[q.name]
        if q.symmetric and not q.zero_point_free and one_sided(sign_min[q.name], low, high):
            params[q.name] = asymmetric_activation(low, high)
        else:
            params[q.name] = _symmetric(sign_min[q.name], high) if q.symmetric else asymmetric_activation(low, high)
    return params


def one_sided(sign_min: np.ndarray, low: np.ndarray, absmax: np.ndarray) -> bool:
    """A tensor so one-sided that a signed symmetric grid wastes much of its 8 bits: it needs a sign (see the module
    docstring), yet its range max - min is at most ONE_SIDED x the 2 x absmax a signed grid spans (an HSwish output:
    [-0.37, 10] gives 0.52). An asymmetric grid then has steps at least 1 / ONE_SIDED times finer."""
    half_step = float(np.max(absmax)) / (ACTIVATION_LEVELS - 1) / 2
    signed = float(np.min(sign_min)) < -half_step
    return signed and float(np.max(absmax)) - float(np.min(low)) <= ONE_SIDED * 2 * float(np.max(absmax))


def _run(state: State) -> State:
    statistics = state.range_statistics()
    by_name = {name: statistics[reduction] for name, reduction in state_reductions(state).items()}
    return replace(state, activation_ranges=MappingProxyType(activation_params(
        state.plan, by_name, state.options.advanced.activations_range_estimator)))


STAGE = Stage("activation ranges", _run, reductions=lambda state: list(state_reductions(state).values()))
