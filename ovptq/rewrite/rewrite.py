"""Rewrite ovptq's copy of the model: FakeQuantize on activations, int8 weights, parameters in rt_info.

Weights become `Constant(i8) -> Convert -> Multiply(scale per output channel)`, the form the CPU plugin reads as
int8 weights with a dequantization scale: w ~= int8 * scale, scale = (ih - il) / 254 = ih / 127.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.graph.graph import Graph, numpy_dtype
from ovptq.graph.weights import weight_at, weight_value
from ovptq.parameters import RangeEstimator
from ovptq.placement.plan import QuantizationPlan, WeightQuantizer
from ovptq.ranges import FQParams, quantize_weight, symmetric_weight, weight_absmax, weight_quantile


def insert_activation_quantizers(graph: Graph, plan: QuantizationPlan, params: dict[str, FQParams]) -> int:
    """Insert one FakeQuantize per activation quantizer of the plan; return how many were inserted."""
    for q in plan.activations:
        output = graph.op(q.producer).output(q.port)
        fq_params = params[q.name]
        rank = output.get_partial_shape().rank.get_length()
        low, high = _range_constants(fq_params, rank, q.per_channel, output.get_element_type(), q.name)
        fq = ops.fake_quantize(output, low, high, low, high, fq_params.levels, name=q.name)
        for consumer in q.consumers:
            graph.op(consumer.node).input(consumer.port).replace_source_output(fq.output(0))
    return len(plan.activations)


def _range_constants(params: FQParams, rank: int, per_channel: bool, element_type: ov.Type, name: str):
    """The FakeQuantize's low and high constants, named after it (unnamed ops get process-global counter names,
    which would make two runs' IRs differ)."""
    dtype = numpy_dtype(element_type) if element_type.is_real() else np.float32
    shape = [1, -1] + [1] * (rank - 2) if per_channel else []
    return (ops.constant(np.asarray(params.low, dtype).reshape(shape), name=f"{name}/low"),
            ops.constant(np.asarray(params.high, dtype).reshape(shape), name=f"{name}/high"))


def weight_params(graph: Graph, quantizer: WeightQuantizer, estimator: RangeEstimator,
                  quantile: float) -> tuple[np.ndarray, FQParams]:
    """The weight as the op sees it and its symmetric per-channel range."""
    weight = weight_at(graph, quantizer.node, quantizer.port, quantizer.channel_axes)
    value = weight_value(graph, weight)
    if estimator is RangeEstimator.MEAN_QUANTILE:
        absmax = weight_quantile(value, quantizer.channel_axes, quantile)
    else:
        absmax = weight_absmax(value, quantizer.channel_axes)
    return value, symmetric_weight(absmax, quantizer.half_range)


@dataclass(frozen=True)
class CompressedWeight:
    """How a weight was compressed; `values()` recomputes the float and dequantized weights on demand, so no copy
    of every weight is held in memory."""

    graph: Graph
    quantizer: WeightQuantizer
    estimator: RangeEstimator
    quantile: float

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """(float weight, int8 * scale) as the op sees them."""
        value, params = weight_params(self.graph, self.quantizer, self.estimator, self.quantile)
        integers, scale = quantize_weight(value, params)
        return value, np.multiply(integers, scale, dtype=np.float32)


def compress_weights(graph: Graph, plan: QuantizationPlan, estimator: RangeEstimator,
                     quantile: float) -> dict[str, CompressedWeight]:
    """Replace each planned weight by int8 values and a per-channel scale; return, per weighted op, how.

    Ops that share one weight path share the int8 constant too.
    """
    shared: dict[tuple, ov.Output] = {}
    weights = {}
    for quantizer in plan.weights:
        target = graph.op(quantizer.node).input(quantizer.port)
        source = target.get_source_output()
        key = (source.get_node().get_friendly_name(), source.get_index(), quantizer.channel_axes,
               quantizer.half_range)
        if key not in shared:
            value, params = weight_params(graph, quantizer, estimator, quantile)
            integers, scale = quantize_weight(value, params)
            element_type = source.get_element_type()
            name = f"{quantizer.node}/fq_weights_{quantizer.port}"
            int8 = ops.constant(integers, name=f"{name}/int8")
            convert = ops.convert(int8, element_type, name=f"{name}/convert")
            scale_constant = ops.constant(scale.astype(numpy_dtype(element_type)), name=f"{name}/scale")
            shared[key] = ops.multiply(convert, scale_constant, name=name).output(0)
        target.replace_source_output(shared[key])
        weights[quantizer.node] = CompressedWeight(graph, quantizer, estimator, quantile)
    return weights


def write_rt_info(model: ov.Model, values: dict[str, object]) -> None:
    """Record the quantization parameters under rt_info/ovptq/..."""
    for key, value in values.items():
        model.set_rt_info(str(value), ["ovptq", *key.split("/")])
