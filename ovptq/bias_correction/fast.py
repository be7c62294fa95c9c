"""Fast bias correction: each layer's bias moves by the exact mean error of its int8 weights (see `correct.py`),
from the statistics pass alone."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from ovptq.bias_correction.correct import (FAST_THRESHOLD, BiasCorrection, accept, output_magnitude,
                                           weight_error_shift)
from ovptq.bias_correction.layers import Layer, bias_value, find_layers
from ovptq.graph.graph import Graph
from ovptq.graph.values import is_non_negative
from ovptq.placement.plan import QuantizationPlan
from ovptq.ranges.activations import state_reductions
from ovptq.ranges.weights import QuantizedWeight, float_weight
from ovptq.state import Stage, State
from ovptq.statistics.reductions import RangeReduction

log = logging.getLogger("ovptq")


def input_range_reduction(graph: Graph, layer: Layer, quantizers: Mapping[str, RangeReduction],
                          plan: QuantizationPlan) -> RangeReduction:
    """The range reduction of the layer's input: its quantizer's when the quantizer sits on that very tensor."""
    for q in plan.activations:
        if q.producer == layer.data.node and q.port == layer.data.port:
            return quantizers[q.name]
    return RangeReduction(layer.data.node, layer.data.port, non_negative=is_non_negative(graph, layer.data.node))


def reductions(graph: Graph, plan: QuantizationPlan, layers: list[Layer],
               quantizers: Mapping[str, RangeReduction]) -> list:
    """Per layer: its input taps (or means) and its input's range (`quantizers`: the plan's quantizer reductions)."""
    found = []
    for layer in layers:
        found.append(layer.input_reduction(graph))
        found.append(input_range_reduction(graph, layer, quantizers, plan))
    return list(dict.fromkeys(found))


def fast_correction(graph: Graph, layers: list[Layer], weights: Mapping[str, QuantizedWeight], statistics: Mapping,
                    magnitudes: Mapping[str, float], threshold: float | None = None,
                    input_factors: Mapping[str, np.ndarray] | None = None,
                    replaced: Mapping | None = None) -> BiasCorrection:
    """Correct each layer's bias by the exact mean error of its int8 weights on the calibration data.

    `magnitudes` holds each layer input's mean per-sample max |x|; `input_factors` SmoothQuant's s of the MatMuls
    whose input became x / s (their measured input means are of x); `replaced` the constants SmoothQuant wrote.
    """
    input_factors = input_factors or {}
    threshold = FAST_THRESHOLD if threshold is None else threshold
    records, output_magnitudes, shifts = [], {}, {}
    for layer in layers:
        quantized = weights[layer.node]
        weight = float_weight(graph, quantized.quantizer, replaced)
        output_magnitudes[layer.node] = output_magnitude(weight, quantized.quantizer.channel_axes,
                                                         magnitudes[layer.node])
        input_mean = statistics[layer.input_reduction(graph)]
        if layer.node in input_factors:
            input_mean = input_mean / input_factors[layer.node]
        shift = weight_error_shift(graph, layer, weight, quantized.dequantized(), input_mean)
        shifts[layer.node], record = accept(layer, shift, output_magnitudes[layer.node], threshold, "fast",
                                            layer.bias is not None)
        records.append(record)
    start = BiasCorrection(tuple(layers), {layer.node: bias_value(graph, layer, replaced).astype(np.float64)
                                           for layer in layers}, frozenset(), (), output_magnitudes)
    return replace(start.with_shifts(shifts), records=tuple(records))


def _layers(state: State) -> list[Layer]:
    return find_layers(state.graph, state.plan)


def _reductions(state: State) -> list:
    return reductions(state.graph, state.plan, _layers(state), state_reductions(state))


def _run(state: State) -> State:
    layers = _layers(state)
    if not layers:
        return state
    advanced = state.options.advanced
    quantizers = state_reductions(state)
    ranges = state.range_statistics()
    magnitudes = {layer.node: float(np.max(ranges[input_range_reduction(state.graph, layer, quantizers,
                                                                        state.plan)].mean_absmax))
                  for layer in layers}
    smoothing = state.smoothing
    correction = fast_correction(state.graph, layers, state.weights, state.statistics, magnitudes,
                                 advanced.bias_correction_threshold,
                                 smoothing.input_factors if smoothing else None,
                                 smoothing.constants if smoothing else None)
    if state.options.fast_bias_correction:
        log.info("Bias correction (fast): %d of %d layers corrected.", correction.corrected(), len(layers))
    return replace(state, bias_correction=correction)


def _record(state: State) -> dict[str, str]:
    """What each correction (fast, then full when it ran) did to each layer."""
    records = state.bias_correction.records if state.bias_correction is not None else ()
    return {"bias_correction": json.dumps([record.as_dict() for record in records])}


STAGE = Stage("fast bias correction", _run, reductions=_reductions, enabled=lambda options: options.bias_correction,
              record=_record)
