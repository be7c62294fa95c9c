"""SmoothQuant: move activation outliers into the weights of the MatMuls that read them.

For a tensor x read only by MatMuls with constant weights W (x @ W, features on x's last axis), per feature j:
    s_j = a_j^alpha / w_j^(1 - alpha),   a_j = max |x_j| over the calibration data,  w_j = max |W[j, :]| (all readers)
clipped to [the 10th percentile of s, 100] so quiet features are not blown up. Then x' = x / s and
W'[j, :] = s_j W[j, :] give x' @ W' = x @ W exactly, while x' has a far flatter per-feature range for its per-tensor
8-bit quantizer.

1/s is folded into the op producing x when that op is linear and x is its only use: the gamma and beta of a
LayerNorm / MVN affine, or the weight and bias of a MatMul + bias. Otherwise one Multiply(x, 1/s) is inserted in
front of the readers (the peer always inserts it). Everything is computed from the one statistics pass: its
per-sample per-feature minima and maxima of x give both a_j and the per-tensor range of x / s exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import openvino.opset13 as ops

from ovptq.graph.graph import Graph
from ovptq.graph.weights import find_weight, weight_value
from ovptq.hardware import SHAPE_OPS
from ovptq.placement.plan import ActivationQuantizer, QuantizationPlan
from ovptq.statistics.collect import TensorRequest, TensorStatistics

log = logging.getLogger("ovptq")

SCALE_MAX = 100.0
SCALE_FLOOR_QUANTILE = 0.1


@dataclass(frozen=True)
class SmoothGroup:
    quantizer: str                  # the activation quantizer of x in the plan
    producer: str
    port: int
    layers: tuple[str, ...]         # the MatMuls reading x (input 0), constant weights on input 1
    features: int

    def request(self) -> TensorRequest:
        return TensorRequest(self.producer, self.port, per_channel=True, axis=-1, rows=True)


def smoothing_groups(graph: Graph, plan: QuantizationPlan) -> list[SmoothGroup]:
    """Tensors whose quantizer feeds only MatMuls x @ W with a constant 2-D W that no other op uses, except
    attention outputs."""
    weighted = {w.node for w in plan.weights}
    groups = []
    for q in plan.activations:
        layers = tuple(c.node for c in q.consumers)
        if q.per_channel or not all(c.port == 0 and _smoothable(graph, c.node, weighted) for c in q.consumers):
            continue
        if _attention_output(graph, q.producer):
            continue
        shape = graph.output_shape(q.producer, q.port)
        if shape.rank.is_dynamic or shape[shape.rank.get_length() - 1].is_dynamic:
            continue
        groups.append(SmoothGroup(q.name, q.producer, q.port, layers, shape[shape.rank.get_length() - 1].get_length()))
    return groups


def _attention_output(graph: Graph, node: str) -> bool:
    """Whether `node` is, up to shape-only ops, a MatMul of two activations (Softmax x V with its heads merged).
    Such tensors are left alone: smoothing them lowered all-MiniLM-L6-v2's mean cosine to FP32 from 0.9953 to
    0.9949."""
    while graph.type(node) in SHAPE_OPS:
        node = graph.producer(node, 0).node
    return graph.type(node) == "MatMul" and find_weight(graph, node) is None


def _smoothable(graph: Graph, node: str, weighted: set[str]) -> bool:
    if graph.type(node) != "MatMul" or node not in weighted or graph.op(node).get_attributes()["transpose_a"]:
        return False
    weight = find_weight(graph, node)
    if weight is None or weight.port != 1 or len(weight.shape) != 2:
        return False
    return all(c.node == node for c in graph.consumers(weight.source, weight.source_port))  # not shared


def scales(graph: Graph, group: SmoothGroup, stats: TensorStatistics, alpha: float) -> np.ndarray:
    """s per feature (see the module docstring)."""
    activation = np.maximum(np.maximum(np.abs(stats.global_min), np.abs(stats.global_max)), 1e-5).astype(np.float64)
    weight = np.full(group.features, 1e-5)
    for node in group.layers:
        value = np.abs(current_weight(graph, node).astype(np.float64))
        per_feature = value.max(axis=0) if graph.op(node).get_attributes()["transpose_b"] else value.max(axis=1)
        weight = np.maximum(weight, per_feature)
    s = activation ** alpha / weight ** (1 - alpha)
    return np.clip(s, np.quantile(s, SCALE_FLOOR_QUANTILE), SCALE_MAX)


def smoothed_statistics(stats: TensorStatistics, s: np.ndarray) -> TensorStatistics:
    """The per-tensor statistics of x / s, exact from the per-sample per-feature extremes of x (s > 0)."""
    mins, maxs = stats.rows
    return TensorStatistics.of_rows((mins / s).min(axis=1), (maxs / s).max(axis=1))


def apply(graph: Graph, plan: QuantizationPlan, group: SmoothGroup, s: np.ndarray) -> str:
    """Scale the readers' weights by s and x by 1/s; return where 1/s went. May add a Multiply to the model (then
    the plan's quantizer moves to its output). Reads weights from the live model, so groups may chain."""
    for node in group.layers:
        value = current_weight(graph, node)
        transposed = graph.op(node).get_attributes()["transpose_b"]
        _set_input(graph, node, 1, value * (s[None, :] if transposed else s[:, None]))
    folded = _fold(graph, group, 1.0 / s)
    if folded:
        return folded
    output = graph.op(group.producer).output(group.port)
    inverse = ops.constant((1.0 / s).astype(np.float32), name=f"{group.producer}/smooth_quant/inverse")
    multiply = ops.multiply(output, inverse, name=f"{group.producer}/smooth_quant")
    for node in group.layers:
        graph.op(node).input(0).replace_source_output(multiply.output(0))
    index = next(i for i, q in enumerate(plan.activations) if q.name == group.quantizer)
    q = plan.activations[index]
    plan.activations[index] = ActivationQuantizer(q.name, multiply.get_friendly_name(), 0, q.consumers, True,
                                                  q.per_channel, q.symmetric, q.group)
    return "Multiply"


def current_weight(graph: Graph, node: str) -> np.ndarray:
    """The weight on input 1 as the model holds it now (a replaced weight is a plain Constant)."""
    source = graph.op(node).input_value(1).get_node()
    if source.get_type_name() == "Constant":
        return source.get_data().astype(np.float32)
    return weight_value(graph, find_weight(graph, node)).astype(np.float32)


def _fold(graph: Graph, group: SmoothGroup, inverse: np.ndarray) -> str | None:
    """Fold x *= inverse into the producer: an Add of a constant (beta / bias) after a Multiply by a constant
    (gamma) or after a MatMul with a constant weight. Only when x feeds nothing but the group's readers and each
    op of the chain feeds only the next. Returns the op that took it, or None."""
    add = group.producer
    if graph.type(add) != "Add" or {c.node for c in graph.consumers(add, group.port)} != set(group.layers):
        return None
    data = [p for p in range(2) if graph.is_data(graph.producer(add, p).node)]
    bias = _constant(graph, add, 1 - data[0], group.features) if len(data) == 1 else None
    if bias is None:
        return None
    inner = graph.producer(add, data[0]).node
    if len(graph.consumers(inner)) != 1:
        return None
    if graph.type(inner) == "Multiply":
        constant = [p for p in range(2) if not graph.is_data(graph.producer(inner, p).node)]
        gamma = _constant(graph, inner, constant[0], group.features) if len(constant) == 1 else None
        if gamma is None:
            return None
        _set_input(graph, inner, constant[0], gamma * inverse)
    elif graph.type(inner) == "MatMul" and _smoothable_producer(graph, inner, group.features):
        transposed = graph.op(inner).get_attributes()["transpose_b"]
        weight = current_weight(graph, inner)
        _set_input(graph, inner, 1, weight * (inverse[:, None] if transposed else inverse[None, :]))
    else:
        return None
    _set_input(graph, add, 1 - data[0], bias * inverse)
    return inner


def _smoothable_producer(graph: Graph, node: str, features: int) -> bool:
    if graph.op(node).get_attributes()["transpose_a"] or graph.op(node).input_value(1).get_partial_shape().rank \
            .get_length() != 2 or not graph.is_constant(graph.producer(node, 1).node):
        return False
    shape = graph.op(node).input_value(1).get_partial_shape().to_shape()
    return shape[0 if graph.op(node).get_attributes()["transpose_b"] else 1] == features


def _constant(graph: Graph, node: str, port: int, features: int) -> np.ndarray | None:
    """The constant on `node`'s input `port` broadcast to [features] along the last axis, if it broadcasts so."""
    source = graph.op(node).input_value(port).get_node()
    if source.get_type_name() == "Convert" and source.input_value(0).get_node().get_type_name() == "Constant":
        source = source.input_value(0).get_node()
    if source.get_type_name() != "Constant":
        return None
    value = source.get_data().astype(np.float32)
    if value.ndim == 0 or value.size != value.shape[-1] or value.shape[-1] not in (1, features):
        return None
    return np.broadcast_to(value.reshape(-1), (features,)).astype(np.float32)


def _set_input(graph: Graph, node: str, port: int, value: np.ndarray) -> None:
    constant = ops.constant(np.ascontiguousarray(value, np.float32), name=f"{node}/smooth_quant/input_{port}")
    graph.op(node).input(port).replace_source_output(constant.output(0))
