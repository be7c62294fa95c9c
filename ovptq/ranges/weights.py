"""Weight quantization: each planned weight as int8 values and a per-output-channel scale, w ~= int8 * scale.

The weight is the one the op sees after SmoothQuant (its scaled constant, when it took one), evaluated through any
constant sub-graph. Ops that read one weight sub-graph share one int8 weight. Only the int8 values and scales are
kept; the float weight is evaluated again when bias correction asks for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

import numpy as np

from ovptq.graph.graph import Graph
from ovptq.graph.weights import weight_at, weight_value
from ovptq.outcomes import QuantizedWeight
from ovptq.parameters import RangeEstimator
from ovptq.placement.plan import WeightQuantizer
from ovptq.ranges.formulas import FQParams, quantize_weight, symmetric_weight, weight_absmax, weight_quantile
from ovptq.state import Stage, State


def float_weight(graph: Graph, quantizer: WeightQuantizer, replaced: Mapping | None = None) -> np.ndarray:
    """The weight as the op sees it, in float32: `replaced[(node, port)]` (a constant SmoothQuant wrote) if there is
    one, else the model's own weight sub-graph evaluated."""
    edit = (replaced or {}).get((quantizer.node, quantizer.port))
    if edit is not None:
        return edit.value
    return weight_value(graph, weight_at(graph, quantizer.node, quantizer.port, quantizer.channel_axes))


def weight_params(value: np.ndarray, quantizer: WeightQuantizer, estimator: RangeEstimator,
                  quantile: float) -> FQParams:
    """The symmetric per-channel range of a weight value."""
    if estimator is RangeEstimator.MEAN_QUANTILE:
        absmax = weight_quantile(value, quantizer.channel_axes, quantile)
    else:
        absmax = weight_absmax(value, quantizer.channel_axes)
    return symmetric_weight(absmax, quantizer.half_range)


def quantize_weights(graph: Graph, weights: tuple[WeightQuantizer, ...], estimator: RangeEstimator,
                     quantile: float, replaced: Mapping | None = None) -> dict[str, QuantizedWeight]:
    """Weighted op -> its int8 weight, for every weight quantizer of a plan."""
    shared: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    result = {}
    for quantizer in weights:
        edit = (replaced or {}).get((quantizer.node, quantizer.port))
        producer = graph.producer(quantizer.node, quantizer.port)
        source = (edit.name, 0) if edit is not None else (producer.node, producer.port)
        key = (*source, quantizer.channel_axes, quantizer.half_range)
        if key not in shared:
            value = float_weight(graph, quantizer, replaced)
            shared[key] = quantize_weight(value, weight_params(value, quantizer, estimator, quantile))
        integers, scale = shared[key]
        result[quantizer.node] = QuantizedWeight(quantizer, source, integers, scale)
    return result


def _run(state: State) -> State:
    advanced = state.options.advanced
    replaced = state.smoothing.constants if state.smoothing is not None else None
    return replace(state, weights=MappingProxyType(quantize_weights(
        state.graph, state.plan.weights, advanced.weights_range_estimator, advanced.quantile_outlier_prob, replaced)))


STAGE = Stage("weight quantization", _run)
