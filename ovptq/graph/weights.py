"""Where a weighted op finds its weight: any float constant sub-graph on its weight port.

That covers a plain Constant, f16 weights decompressed by Convert, Reshape / Transpose of constants, an existing
FakeQuantize on the weight, and constant arithmetic. `weight_value` evaluates the sub-graph op by op with
OpenVINO's own reference implementations (`Node.evaluate`), giving the weight exactly as the op sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openvino as ov

from ovptq.graph.graph import Graph
from ovptq.hardware import OP_RULES, Role


@dataclass(frozen=True)
class Weight:
    """The weight input of a weighted op."""

    node: str                       # the weighted op
    port: int                       # its input port holding the weight
    source: str                     # the op producing the weight (a Constant, Convert, Reshape, ...)
    source_port: int
    channel_axes: tuple[int, ...]   # axes of the op's weight input that index output channels
    shape: tuple[int, ...]          # the weight as the op sees it


def find_weight(graph: Graph, node: str) -> Weight | None:
    """The constant weight of a weighted op, or None (e.g. a MatMul of two activations)."""
    rule = OP_RULES.get(graph.type(node))
    if rule is None or rule.role is not Role.WEIGHTED:
        return None
    for port in rule.weight_ports:
        if port >= graph.num_inputs(node):
            continue
        shape = graph.op(node).get_input_partial_shape(port)
        weight = None if shape.rank.is_dynamic else weight_at(
            graph, node, port, weight_channel_axes(graph, node, port, shape.rank.get_length()))
        if weight is not None:
            return weight
    return None


def weight_at(graph: Graph, node: str, port: int, channel_axes: tuple[int, ...]) -> Weight | None:
    """Input `port` of `node` as a weight, if a float constant sub-graph of static shape feeds it."""
    source = graph.producer(node, port)
    if not graph.is_constant(source.node) or not graph.is_float_output(source.node, source.port):
        return None
    shape = graph.op(node).get_input_partial_shape(port)
    if shape.is_dynamic:
        return None
    return Weight(node, port, source.node, source.port, channel_axes, tuple(d.get_length() for d in shape))


def weight_channel_axes(graph: Graph, node: str, port: int, rank: int) -> tuple[int, ...]:
    """Axes of the weight input that index output channels (`OP_RULES` layouts; for a MatMul, by its transposes,
    with every leading batch axis too)."""
    layout = OP_RULES[graph.type(node)].layout
    if layout.weight_axes is not None:
        return layout.weight_axes
    if rank < 2:
        return ()
    attrs = graph.op(node).get_attributes()
    if port == 1:  # [..., K, N] or, transposed, [..., N, K]
        out_axis = rank - 2 if attrs["transpose_b"] else rank - 1
    else:          # [..., M, K] or, transposed, [..., K, M]
        out_axis = rank - 1 if attrs["transpose_a"] else rank - 2
    return tuple(range(rank - 2)) + (out_axis,)


def feature_axis(weight: Weight) -> int:
    """The axis of a 2-D weight that indexes the op's input features: the one that is not an output channel."""
    return 1 - weight.channel_axes[-1]


def is_depthwise(graph: Graph, node: str) -> bool:
    """A GroupConvolution with one input and one output channel per group, and more than one group."""
    if graph.type(node) != "GroupConvolution":
        return False
    shape = graph.op(node).get_input_partial_shape(1)
    if shape.rank.is_dynamic or shape.rank.get_length() < 3 or shape.is_dynamic:
        return False
    groups, out_per_group, in_per_group = (shape[i].get_length() for i in range(3))
    return groups > 1 and out_per_group == 1 and in_per_group == 1


def weight_value(graph: Graph, weight: Weight) -> np.ndarray:
    """The weight tensor exactly as the op receives it, in float32."""
    value = constant_value(graph, weight.source, weight.source_port, {})
    return np.asarray(value, dtype=np.float32).reshape(weight.shape)


def constant_value(graph: Graph, node: str, port: int, memo: dict[int, list[np.ndarray]]) -> np.ndarray:
    """Evaluate output `port` of a constant sub-graph node with OpenVINO's reference kernels."""
    return output_value(graph.op(node).output(port), memo)


def output_value(tensor: ov.Output, memo: dict[int, list[np.ndarray]] | None = None) -> np.ndarray:
    """The value of a constant sub-graph's output, in its own element type, evaluated op by op with OpenVINO's
    reference kernels; `memo` (by op instance) shares the work between the outputs of one sub-graph."""
    memo = {} if memo is None else memo
    op = tensor.get_node()
    key = op.get_instance_id()
    if key not in memo:
        if op.get_type_name() == "Constant":
            memo[key] = [op.get_data()]
        else:
            inputs = [ov.Tensor(np.ascontiguousarray(output_value(op.input_value(p), memo)))
                      for p in range(op.get_input_size())]
            outputs = [ov.Tensor(op.get_output_element_type(i), op.get_output_shape(i))
                       for i in range(op.get_output_size())]
            if not op.evaluate(outputs, inputs):
                raise ValueError(f"OpenVINO cannot evaluate {op.get_type_name()} '{op.get_friendly_name()}' on "
                                 "constants")
            memo[key] = [t.data.copy() for t in outputs]
    return memo[key][tensor.get_index()]
