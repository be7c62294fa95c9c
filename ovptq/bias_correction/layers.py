"""Which layers bias correction works on, and where their bias is.

A correctable layer is a quantized Convolution, GroupConvolution (depthwise included), ConvolutionBackpropData
without padding, or MatMul with a 2-D constant weight on input 1 (by the layouts of `ovptq.hardware`). Its bias is
the constant of an Add (or Subtract) that is the layer's only consumer and broadcasts along the output channel
axis only; a layer without one gets a new bias Add when it needs a correction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ovptq.graph.graph import Graph, Port
from ovptq.graph.weights import constant_value, find_weight
from ovptq.hardware import CONV, DECONV, GROUP_CONV, MATMUL, OP_RULES, WeightLayout
from ovptq.placement.plan import QuantizationPlan
from ovptq.statistics.reductions import MeanReduction


@dataclass(frozen=True)
class Layer:
    node: str
    layout: WeightLayout            # CONV, GROUP_CONV, DECONV or MATMUL
    data: Port                      # the tensor the layer reads (its producer's output)
    output_channels: int
    channel_axis: int               # of the layer's output
    bias: str | None = None         # the bias Add / Subtract
    bias_port: int = 1              # its constant input
    bias_sign: float = 1.0          # -1 for Subtract

    def input_reduction(self, graph: Graph) -> MeanReduction:
        """What the layer's weight error needs to know about its input (its layout's `input_mean`)."""
        if self.layout.input_mean != "taps":
            return MeanReduction(self.data.node, self.data.port, self.layout.input_mean)
        attrs = graph.op(self.node).get_attributes()
        kernel = tuple(int(d) for d in graph.op(self.node).get_input_shape(1)[-len(attrs["strides"]):])
        return MeanReduction(self.data.node, self.data.port, "taps", kernel, tuple(attrs["strides"]),
                             tuple(attrs["dilations"]), tuple(attrs["pads_begin"]), tuple(attrs["pads_end"]))

    def output_reduction(self) -> MeanReduction:
        """Per-sample, per-channel means of the layer's biased output (what the full correction matches)."""
        return MeanReduction(self.bias or self.node, 0, "channel" if self.layout.output_axis == 1 else "last",
                             per_sample=True)


def find_layers(graph: Graph, plan: QuantizationPlan) -> list[Layer]:
    """The correctable layers among the plan's weight-quantized ops, in topological order."""
    quantized = {w.node for w in plan.weights}
    layers = []
    for node in graph.order:
        if node not in quantized:
            continue
        layer = _layer(graph, node)
        if layer is not None:
            layers.append(layer)
    return layers


def _layer(graph: Graph, node: str) -> Layer | None:
    rule = OP_RULES.get(graph.type(node))
    layout = rule.layout if rule is not None else None
    weight = find_weight(graph, node)
    out_shape = graph.output_shape(node)
    if weight is None or out_shape.rank.is_dynamic:
        return None
    rank = out_shape.rank.get_length()
    if layout is CONV or layout is GROUP_CONV:
        if rank < 3 or out_shape[1].is_dynamic:  # spatial sizes may be dynamic: tap means are sliced to fit
            return None
    elif layout is DECONV:
        attrs = graph.op(node).get_attributes()
        in_shape = graph.op(node).get_input_partial_shape(0)
        if (any(attrs["pads_begin"]) or any(attrs["pads_end"]) or in_shape.rank != out_shape.rank
                or any(d.is_dynamic for shape in (in_shape, out_shape) for d in list(shape)[1:])):
            return None  # the shift scales with spatial in / spatial out: any batch, static sizes
    elif layout is MATMUL:
        if (weight.port != 1 or len(weight.shape) != 2 or out_shape[rank - 1].is_dynamic
                or graph.op(node).get_attributes()["transpose_a"]):
            return None
    else:
        return None
    axis = layout.output_axis % rank
    channels = out_shape[axis].get_length()
    data = graph.producer(node, 0)
    bias, port, sign = _find_bias(graph, node, axis, rank, channels)
    return Layer(node, layout, data, channels, axis, bias, port, sign)


def _find_bias(graph: Graph, node: str, axis: int, rank: int, channels: int) -> tuple[str | None, int, float]:
    consumers = graph.consumers(node, 0)
    if len(consumers) != 1 or graph.type(consumers[0].node) not in ("Add", "Subtract"):
        return None, 1, 1.0
    candidate = consumers[0].node
    other = 1 - consumers[0].port
    if graph.type(candidate) == "Subtract" and other == 0:
        return None, 1, 1.0  # constant - y is not a bias
    source = graph.producer(candidate, other)
    if not graph.is_constant(source.node):
        return None, 1, 1.0
    shape = tuple(graph.op(candidate).get_input_partial_shape(other).to_shape())
    aligned = (1,) * (rank - len(shape)) + shape
    if any(d != 1 for i, d in enumerate(aligned) if i != axis) or aligned[axis] not in (1, channels):
        return None, 1, 1.0
    return candidate, other, (-1.0 if graph.type(candidate) == "Subtract" else 1.0)


def bias_value(graph: Graph, layer: Layer, constants: Mapping | None = None) -> np.ndarray:
    """The layer's bias per output channel (zeros when it has none); `constants` holds inputs SmoothQuant
    replaced."""
    if layer.bias is None:
        return np.zeros(layer.output_channels, np.float32)
    edit = (constants or {}).get((layer.bias, layer.bias_port))
    if edit is not None:
        value = edit.value.reshape(-1)
    else:
        source = graph.producer(layer.bias, layer.bias_port)
        value = np.asarray(constant_value(graph, source.node, source.port, {}), np.float32).reshape(-1)
    return np.broadcast_to(value, (layer.output_channels,)).astype(np.float32) * layer.bias_sign
