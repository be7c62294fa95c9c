"""SmoothQuant: move activation outliers into the weights of the MatMuls that read them.

For a tensor x read only by MatMuls with constant weights W (x @ W, features on x's last axis), per feature j:
    s_j = a_j^alpha / w_j^(1 - alpha),   a_j = max |x_j| over the calibration data,  w_j = max |W[j, :]| (all readers)
clipped to [the 10th percentile of s, 100] so quiet features are not blown up. Then x' = x / s and
W'[j, :] = s_j W[j, :] give x' @ W' = x @ W exactly, while x' has a far flatter per-feature range for its per-tensor
8-bit quantizer. When even the 10th percentile is above 100, the clip would make every s_j equal: such a tensor
is left alone (a uniform s changes no quantized value).

1/s is folded into the op producing x when that op is linear and x is its only use: the gamma and beta of a
LayerNorm / MVN affine, or the weight and bias of a MatMul + bias. Otherwise one Multiply(x, 1/s) goes in front
of the readers, and x's quantizer quantizes its output. Everything comes from the one statistics pass: its
per-sample per-feature minima and maxima of x give both a_j and the per-tensor range of x / s exactly.

The stage writes nothing: it returns the new constants and Multiplys as edits, and the statistics of x / s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from ovptq.graph.graph import Graph
from ovptq.graph.weights import feature_axis, find_weight, weight_value
from ovptq.hardware import SHAPE_OPS
from ovptq.outcomes import Smoothing
from ovptq.parameters import RangeEstimator
from ovptq.placement.plan import QuantizationPlan
from ovptq.ranges.activations import state_reductions
from ovptq.rewrite.edits import ConstantInput, ScaledConstant, Scaling
from ovptq.state import Stage, State
from ovptq.statistics.reductions import RangeReduction, TensorStatistics

log = logging.getLogger("ovptq")

FACTOR_MAX = 100.0
FACTOR_FLOOR_QUANTILE = 0.1


@dataclass(frozen=True)
class SmoothGroup:
    quantizer: str                  # the activation quantizer of x in the plan
    producer: str
    port: int
    layers: tuple[str, ...]         # the MatMuls reading x (input 0), constant weights on input 1
    features: int

    def reduction(self) -> RangeReduction:
        return RangeReduction(self.producer, self.port, per_channel=True, axis=-1, rows=True)


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
    """Whether `node` is, up to shape-only ops, a MatMul of two activations (Softmax x V with its heads merged):
    smoothing such tensors cost accuracy (benchmarks/README.md)."""
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


def smoothing_factors(graph: Graph, group: SmoothGroup, stats: TensorStatistics, alpha: float,
                      constants: Mapping | None = None) -> np.ndarray | None:
    """s per feature (see the module docstring), or None when the clip would make it uniform. `constants` holds the
    weights earlier groups already rescaled."""
    activation = np.maximum(np.maximum(np.abs(stats.global_min), np.abs(stats.global_max)), 1e-5).astype(np.float64)
    weight = np.full(group.features, 1e-5)
    for node in group.layers:
        value = np.abs(current_weight(graph, node, constants).astype(np.float64))
        weight = np.maximum(weight, value.max(axis=1 - feature_axis(find_weight(graph, node))))
    s = activation ** alpha / weight ** (1 - alpha)
    floor = np.quantile(s, FACTOR_FLOOR_QUANTILE)
    if floor > FACTOR_MAX:
        return None
    return np.clip(s, floor, FACTOR_MAX)


def smoothed_statistics(stats: TensorStatistics, s: np.ndarray) -> TensorStatistics:
    """The per-tensor statistics of x / s, exact from the per-sample per-feature extremes of x (s > 0)."""
    mins, maxs = stats.rows
    return TensorStatistics.of_rows((mins / s).min(axis=1), (maxs / s).max(axis=1))


def current_weight(graph: Graph, node: str, constants: Mapping | None = None) -> np.ndarray:
    """The weight on input 1 in float32: as an earlier group rescaled it, else the model's."""
    edit = (constants or {}).get((node, 1))
    if edit is not None:
        return edit.value
    return _original_weight(graph, node)()


def _original_weight(graph: Graph, node: str):
    """A function giving the model's own weight on `node`'s input 1, in float32."""
    weight = find_weight(graph, node)
    return lambda: weight_value(graph, weight).astype(np.float32)


def _rescale(graph: Graph, constants: dict, node: str, factor: np.ndarray) -> None:
    """Input 1 of `node` (a weight) times `factor`, on top of earlier rescalings; computed when read."""
    edit = constants.get((node, 1))
    if isinstance(edit, ScaledConstant):
        constants[(node, 1)] = replace(edit, factors=(*edit.factors, factor))
    else:
        constants[(node, 1)] = ScaledConstant(node, 1, _original_weight(graph, node), (factor,),
                                              f"{node}/smooth_quant/input_1")


def smooth(graph: Graph, groups: list[SmoothGroup], statistics: Mapping, alpha: float,
           quantizers: Mapping[str, RangeReduction]) -> Smoothing:
    """Smooth each group in turn (a layer may read one group and produce the next: its weight chains). The
    statistics of x / s replace those of x under x's quantizer reduction (`quantizers`, by quantizer name)."""
    constants: dict[tuple[str, int], ConstantInput | ScaledConstant] = {}
    scalings, overrides, input_factors, output_factors, where = [], {}, {}, {}, {}
    for group in groups:
        stats = statistics[group.reduction()]
        s = smoothing_factors(graph, group, stats, alpha, constants)
        if s is None:
            log.info("SmoothQuant leaves '%s' alone: its smoothing factors all exceed %g.", group.producer,
                     FACTOR_MAX)
            continue
        overrides[quantizers[group.quantizer]] = smoothed_statistics(stats, s)
        for node in group.layers:
            axis = feature_axis(find_weight(graph, node))
            _rescale(graph, constants, node, _along(s, axis))
        folded = _fold(graph, group, 1.0 / s, constants)
        if folded is None:
            name = f"{group.producer}/smooth_quant"
            scalings.append(Scaling(group.producer, group.port, (1.0 / s).astype(np.float32), group.layers, name,
                                    f"{name}/inverse"))
        where[group.quantizer] = folded or "Multiply"
        input_factors.update({layer: s for layer in group.layers})
        if folded:
            output_factors[folded] = s
    return Smoothing(MappingProxyType(constants), tuple(scalings), MappingProxyType(overrides),
                     MappingProxyType(input_factors), MappingProxyType(output_factors), MappingProxyType(where))


def _along(vector: np.ndarray, axis: int) -> np.ndarray:
    """`vector` shaped to scale axis `axis` of a 2-D array."""
    return vector[:, None] if axis == 0 else vector[None, :]


def _fold(graph: Graph, group: SmoothGroup, inverse: np.ndarray, constants: dict) -> str | None:
    """Fold x *= inverse into the producer: an Add of a constant (beta / bias) after a Multiply by a constant
    (gamma) or after a MatMul with a constant weight. Only when x feeds nothing but the group's readers and each
    op of the chain feeds only the next. Returns the op that took it, or None."""
    add = group.producer
    if graph.type(add) != "Add" or {c.node for c in graph.consumers(add, group.port)} != set(group.layers):
        return None
    data = [p for p in range(2) if graph.is_data(graph.producer(add, p).node)]
    bias = _constant(graph, add, 1 - data[0], group.features, constants) if len(data) == 1 else None
    if bias is None:
        return None
    inner = graph.producer(add, data[0]).node
    if len(graph.consumers(inner)) != 1:
        return None
    if graph.type(inner) == "Multiply":
        constant = [p for p in range(2) if not graph.is_data(graph.producer(inner, p).node)]
        gamma = _constant(graph, inner, constant[0], group.features, constants) if len(constant) == 1 else None
        if gamma is None:
            return None
        _replace(constants, inner, constant[0], gamma * inverse)
    elif graph.type(inner) == "MatMul" and _smoothable_producer(graph, inner, group.features):
        output_axis = find_weight(graph, inner).channel_axes[-1]
        _rescale(graph, constants, inner, _along(inverse, output_axis))
    else:
        return None
    _replace(constants, add, 1 - data[0], bias * inverse)
    return inner


def _smoothable_producer(graph: Graph, node: str, features: int) -> bool:
    if graph.op(node).get_attributes()["transpose_a"] or graph.op(node).input_value(1).get_partial_shape().rank \
            .get_length() != 2 or not graph.is_constant(graph.producer(node, 1).node):
        return False
    shape = graph.op(node).input_value(1).get_partial_shape().to_shape()
    return shape[0 if graph.op(node).get_attributes()["transpose_b"] else 1] == features


def _constant(graph: Graph, node: str, port: int, features: int, constants: dict) -> np.ndarray | None:
    """The constant on `node`'s input `port` broadcast to [features] along the last axis, if it broadcasts so."""
    edit = constants.get((node, port))
    if edit is not None:
        value = edit.value
    else:
        source = graph.op(node).input_value(port).get_node()
        if source.get_type_name() == "Convert" and source.input_value(0).get_node().get_type_name() == "Constant":
            source = source.input_value(0).get_node()
        if source.get_type_name() != "Constant":
            return None
        value = source.get_data().astype(np.float32)
    if value.ndim == 0 or value.size != value.shape[-1] or value.shape[-1] not in (1, features):
        return None
    return np.broadcast_to(value.reshape(-1), (features,)).astype(np.float32)


def _replace(constants: dict, node: str, port: int, value: np.ndarray) -> None:
    constants[(node, port)] = ConstantInput(node, port, np.ascontiguousarray(value, np.float32),
                                            f"{node}/smooth_quant/input_{port}")


def _groups(state: State) -> list[SmoothGroup]:
    """The tensors to smooth; none with quantile ranges, which cannot be derived for x / s."""
    if state.options.advanced.activations_range_estimator is RangeEstimator.MEAN_QUANTILE:
        return []
    return smoothing_groups(state.graph, state.plan)


def _run(state: State) -> State:
    advanced = state.options.advanced
    groups = _groups(state)
    if advanced.activations_range_estimator is RangeEstimator.MEAN_QUANTILE:
        log.warning("SmoothQuant skipped: the quantile range estimator cannot be derived for the smoothed tensors; "
                    "use minmax or mean_minmax to combine them.")
    if not groups:
        return state
    smoothing = smooth(state.graph, groups, state.statistics, advanced.smooth_quant_alphas.matmul,
                       state_reductions(state))
    log.info("SmoothQuant: %d tensors, 1/s folded into the producer for %d.", len(smoothing.where),
             sum(where != "Multiply" for where in smoothing.where.values()))
    return replace(state, smoothing=smoothing)


def _record(state: State) -> dict[str, str]:
    """quantizer -> the op that took 1/s, or "Multiply"."""
    return {"smooth_quant": json.dumps(dict(state.smoothing.where) if state.smoothing is not None else {})}


STAGE = Stage("SmoothQuant", _run, reductions=lambda state: [g.reduction() for g in _groups(state)],
              enabled=lambda options: options.smooth_quant, record=_record)
