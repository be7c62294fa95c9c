"""Placement: a pure function from (graph, hardware table, fused units, ignored nodes, options) to a plan, and the
pipeline stage that calls it with the user's options.

1. Demands: every quantizable op asks for a quantizer on each float activation input (rules in
   `ovptq.hardware`); nodes inside fused units ask for none; `x op constant` element-wise ops ask for none.
2. Propagation, from the outputs towards the inputs: when every consumer of every output of a precision-preserving
   op (MaxPool, Reshape, ...) asks for a quantizer, the demands merge and move to the op's input. At a Concat they
   move to every input and those inputs form one unified-range group. A fan-out with a consumer that wants float
   data keeps one quantizer that feeds only the consumers that asked. They do not move above a Transpose fed by
   a MatMul, nor above the shape-only ops after it (`QUANTIZERS_STAY_BELOW`).
3. Merging: per channel only if every merged demand allows it; symmetric if any needs it.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from ovptq.graph.graph import Graph, Port
from ovptq.graph.weights import find_weight, is_depthwise, weight_at
from ovptq.hardware import (EMBEDDING_MIN_ROWS, FIRST_LAYER_TYPES, OP_RULES, OVERFLOW_FIX_TYPES,
                             QUANTIZERS_STAY_BELOW, SHAPE_OPS, Role)
from ovptq.parameters import ModelType, OverflowFix, QuantizationPreset
from ovptq.patterns.matcher import IN, Match, find_matches
from ovptq.patterns.registry import PATTERNS
from ovptq.placement.plan import ActivationQuantizer, QuantizationPlan, WeightQuantizer
from ovptq.placement.regions import transformer_float_nodes
from ovptq.scope import postprocessing_nodes, resolve_ignored
from ovptq.state import Stage, State

log = logging.getLogger("ovptq")


@dataclass(frozen=True)
class PlacementOptions:
    symmetric_activations: bool = True      # the PERFORMANCE preset; MIXED makes them asymmetric where allowed
    quantize_outputs: bool = False
    overflow_fix: OverflowFix = OverflowFix.FIRST_LAYER
    transformer: bool = False               # model_type="transformer": TRANSFORMER_FLOAT_OPS float everywhere


@dataclass(frozen=True)
class _Demand:
    per_channel: bool
    symmetric: bool
    groups: frozenset[int] = field(default_factory=frozenset)


def _merge(demands: list[_Demand]) -> _Demand:
    return _Demand(per_channel=all(d.per_channel for d in demands),
                   symmetric=any(d.symmetric for d in demands),
                   groups=frozenset().union(*(d.groups for d in demands)))


def fused_nodes(graph: Graph, matches: list[Match]) -> set[str]:
    """Nodes inside fused units that ask for no input quantizers."""
    steps = {(p.name, s.label): s for p in PATTERNS for s in p.steps}
    return {node for m in matches for label, node in m.nodes.items()
            if label != IN and not steps[(m.pattern, label)].keeps_rules}


def plan_quantizers(graph: Graph, ignored: dict[str, str], options: PlacementOptions = PlacementOptions(),
                    matches: list[Match] | None = None) -> QuantizationPlan:
    """Where the quantizers go. `ignored` maps nodes that must stay float to the reason."""
    matches = find_matches(graph, PATTERNS) if matches is None else matches
    float_rules = {node: rule for node, rule in transformer_float_nodes(graph, matches, options.transformer).items()
                   if node not in ignored}
    demands = _initial_demands(graph, ignored, fused_nodes(graph, matches) | set(float_rules),
                               options.quantize_outputs)
    activations, merged_groups = _propagate(graph, demands, ignored)
    weights = _weight_quantizers(graph, {**ignored, **float_rules}, options.overflow_fix)
    weights += _embedding_quantizers(graph, ignored)
    activations = _finalize(activations, merged_groups, options.symmetric_activations)
    return QuantizationPlan(activations, weights, dict(ignored), float_rules)


def _initial_demands(graph: Graph, ignored: dict[str, str], fused: set[str],
                     quantize_outputs: bool) -> dict[Port, _Demand]:
    """The input quantizers each op wants. An op without weights wants them only when an int8 kernel (a weighted
    op) lies downstream: the quantizers of a ReduceMean that feeds only a model output buy no int8 kernel and cost
    accuracy (a VAD's speech probability clipped below its 0.5 threshold, seen on silero_vad)."""
    demands: dict[Port, _Demand] = {}
    before_kernels = _upstream_of_weighted_ops(graph)
    for node in graph.order:
        if not graph.is_data(node) or node in ignored or node in fused:
            continue
        if graph.type(node) == "Result":
            if quantize_outputs and graph.is_activation_input(node, 0):
                demands[Port(node, 0)] = _Demand(False, False)
            continue
        rule = OP_RULES.get(graph.type(node))
        if rule is None or rule.role not in (Role.WEIGHTED, Role.QUANTIZABLE):
            continue
        ports = rule.data_ports if rule.data_ports is not None else range(graph.num_inputs(node))
        inputs = [p for p in ports if p < graph.num_inputs(node) and graph.is_activation_input(node, p)]
        symmetric = rule.symmetric_inputs
        if rule.role is Role.WEIGHTED:
            weight = find_weight(graph, node)
            if weight is not None:
                inputs = [p for p in inputs if p != weight.port]
            elif graph.type(node) == "MatMul" and len(inputs) == 2:
                symmetric = True  # the CPU runs activation x activation MatMuls in int8 only without zero points
            else:
                continue          # weights computed at run time: the plugin cannot run this op in int8
        elif not rule.with_constant and len(inputs) < 2:
            continue              # x op constant: a lone quantizer here buys nothing
        elif node not in before_kernels and not quantize_outputs:
            continue              # no int8 kernel downstream
        per_channel = rule.per_channel_input and is_depthwise(graph, node)
        for port in inputs:
            demands[Port(node, port)] = _Demand(per_channel, symmetric)
    return demands


def _upstream_of_weighted_ops(graph: Graph) -> set[str]:
    """Every node with a weighted op (Convolution, MatMul, ...) somewhere downstream of it."""
    stack = [n for n in graph.order if (rule := OP_RULES.get(graph.type(n))) is not None and rule.role is Role.WEIGHTED]
    found: set[str] = set()
    while stack:
        for parent in graph.nx.predecessors(stack.pop()):
            if parent not in found:
                found.add(parent)
                stack.append(parent)
    return found


def _propagate(graph: Graph, demands: dict[Port, _Demand],
               ignored: dict[str, str]) -> tuple[list[ActivationQuantizer], list[frozenset[int]]]:
    """Move demands towards the inputs through precision-preserving ops.

    Returns the quantizers where they stop, and the sets of unified groups that merging joined into one.
    """
    pending: dict[str, dict[Port, _Demand]] = defaultdict(dict)  # producer -> {consumer input: demand}
    for consumer, demand in demands.items():
        pending[graph.producer(consumer.node, consumer.port).node][consumer] = demand
    placed: list[ActivationQuantizer] = []
    joined: list[frozenset[int]] = []
    next_group = 0
    for node in reversed(graph.order):
        wanted = pending.pop(node, None)
        if not wanted:
            continue
        by_port: dict[int, dict[Port, _Demand]] = defaultdict(dict)
        for consumer, demand in wanted.items():
            by_port[graph.producer(consumer.node, consumer.port).port][consumer] = demand
        moved_to = _inputs_to_move_to(graph, node, by_port, ignored)
        if moved_to:
            merged = _merge(list(wanted.values()))
            joined.append(merged.groups)
            if graph.type(node) == "Concat":
                merged = _Demand(False, merged.symmetric, merged.groups | {next_group})
                next_group += 1
            for port in moved_to:
                source = graph.producer(node, port).node
                pending[source][Port(node, port)] = merged
            continue
        for port, consumers in sorted(by_port.items()):
            merged = _merge(list(consumers.values()))
            joined.append(merged.groups)
            whole = set(consumers) == set(graph.consumers(node, port))
            ordered = tuple(sorted(consumers, key=lambda c: (graph.order_index(c.node), c.port)))
            name = f"{node}/fq_output_{port}" if whole else f"{ordered[0].node}/fq_input_{ordered[0].port}"
            placed.append(ActivationQuantizer(name, node, port, ordered, whole, merged.per_channel,
                                              merged.symmetric, _group_key(merged.groups)))
    return placed, joined


def _group_key(groups: frozenset[int]) -> int | None:
    return min(groups) if groups else None


def _inputs_to_move_to(graph: Graph, node: str, by_port: dict[int, dict[Port, _Demand]],
                       ignored: dict[str, str]) -> list[int]:
    """The input ports the demands at `node`'s outputs move to, or [] if they stop at its outputs."""
    rule = OP_RULES.get(graph.type(node))
    if rule is None or rule.role not in (Role.AGNOSTIC, Role.CONCAT) or node in ignored:
        return []
    for port in range(graph.op(node).get_output_size()):
        consumers = set(graph.consumers(node, port))
        if consumers and set(by_port.get(port, {})) != consumers:
            return []  # some consumer of this op wants float data
    if rule.role is Role.CONCAT:
        ports = list(range(graph.num_inputs(node)))
    else:
        ports = list(rule.data_ports or (0,))
    if not all(graph.is_activation_input(node, p) for p in ports):
        return []
    if _stays_below(graph, node):
        return []
    return ports


def _stays_below(graph: Graph, node: str) -> bool:
    """Whether demands stop below `node`: an op of QUANTIZERS_STAY_BELOW fed by one of its producer types, or a
    shape-only op after such an op."""
    while graph.type(node) in SHAPE_OPS:
        producer = graph.producer(node, 0).node
        if graph.type(producer) in QUANTIZERS_STAY_BELOW.get(graph.type(node), ()):
            return True
        node = producer
    return False


def _finalize(quantizers: list[ActivationQuantizer], joined: list[frozenset[int]],
              symmetric_preset: bool) -> list[ActivationQuantizer]:
    """Join groups that merging connected, give each group one mode (per tensor), and apply the preset."""
    parent: dict[int, int] = {}

    def root(g: int) -> int:
        while parent.setdefault(g, g) != g:
            g = parent[g]
        return g

    for groups in joined:  # demands merged at a fan-out may carry several group ids: those groups are one
        first, *rest = sorted(groups) or [None]
        for g in rest:
            parent[root(g)] = root(first)
    members: dict[int, list[ActivationQuantizer]] = defaultdict(list)
    for q in quantizers:
        if q.group is not None:
            members[root(q.group)].append(q)
    group_needs = {g: any(q.symmetric for q in qs) for g, qs in members.items()}
    numbering = {g: i for i, g in enumerate(sorted(members))}
    result = []
    for q in quantizers:
        if q.group is None:
            result.append(ActivationQuantizer(q.name, q.producer, q.port, q.consumers, q.whole, q.per_channel,
                                              q.symmetric or symmetric_preset, None, q.symmetric))
        else:
            g = root(q.group)
            result.append(ActivationQuantizer(q.name, q.producer, q.port, q.consumers, q.whole, False,
                                              group_needs[g] or symmetric_preset, numbering[g], group_needs[g]))
    return sorted(result, key=lambda q: q.name)


def _weight_quantizers(graph: Graph, ignored: dict[str, str], overflow_fix: OverflowFix) -> list[WeightQuantizer]:
    first_layers = _first_layers(graph, ignored) if overflow_fix is OverflowFix.FIRST_LAYER else set()
    result = []
    for node in graph.order:
        if not graph.is_data(node) or node in ignored:
            continue
        weight = find_weight(graph, node)
        if weight is None:
            continue
        half = (overflow_fix is OverflowFix.ENABLE and graph.type(node) in OVERFLOW_FIX_TYPES) or node in first_layers
        result.append(WeightQuantizer(node, weight.port, weight.channel_axes, half))
    return result


def _embedding_quantizers(graph: Graph, ignored: dict[str, str]) -> list[WeightQuantizer]:
    """Gathers of rows (axis 0, no batch dims) from a constant float [rows, width] table of at least
    EMBEDDING_MIN_ROWS rows, at indices that come from the data."""
    result = []
    for node in graph.order:
        if graph.type(node) != "Gather" or node in ignored or not graph.is_data(node):
            continue
        op = graph.op(node)
        table, indices, axis = (graph.producer(node, port) for port in range(3))
        shape = op.get_input_partial_shape(0)
        if (graph.is_data(indices.node) and graph.type(axis.node) == "Constant"
                and int(np.asarray(graph.op(axis.node).get_data()).reshape(-1)[0]) == 0
                and op.get_attributes().get("batch_dims", 0) == 0 and shape.is_static and len(shape) == 2
                and shape[0].get_length() >= EMBEDDING_MIN_ROWS
                and weight_at(graph, node, 0, (0,)) is not None):
            result.append(WeightQuantizer(node, 0, (0,), embedding=True))
    return result


def _first_layers(graph: Graph, ignored: dict[str, str]) -> set[str]:
    """The first Convolution reached breadth-first from each model input."""
    found = set()
    for parameter in graph.parameters():
        queue, seen = [parameter], {parameter}
        while queue:
            node = queue.pop(0)
            if graph.type(node) in FIRST_LAYER_TYPES and node not in ignored and find_weight(graph, node):
                found.add(node)
                break
            for consumer in graph.consumers(node):
                if consumer.node not in seen:
                    seen.add(consumer.node)
                    queue.append(consumer.node)
    return found


def _rule_float(plan: QuantizationPlan, under_rules: QuantizationPlan) -> dict[str, tuple[str, ...]]:
    """The quantizers of `plan` that the transformer rules would keep float (`under_rules` is the plan with them):
    those of a tensor none of whose readers keeps a quantizer under the rules, and the weights the rules drop."""
    still_read = {c for q in under_rules.activations for c in q.consumers}
    kept_weights = {w.node for w in under_rules.weights}
    return {"rule_float_activations": tuple(q.name for q in plan.activations if not set(q.consumers) & still_read),
            "rule_float_weights": tuple(w.node for w in plan.weights if w.node not in kept_weights and not w.embedding)}


def placement_options(state: State, **changes) -> PlacementOptions:
    """The placement options of the state's options, with `changes` (e.g. transformer=True)."""
    options = state.options
    return replace(PlacementOptions(symmetric_activations=options.preset is QuantizationPreset.PERFORMANCE,
                                    quantize_outputs=options.advanced.quantize_outputs,
                                    overflow_fix=options.advanced.overflow_fix,
                                    transformer=options.model_type is ModelType.TRANSFORMER), **changes)


def _place(state: State) -> State:
    """The plan for the state's graph and options; with nothing to quantize, the result is a copy of the caller's
    model."""
    options = state.options
    ignored = {**postprocessing_nodes(state.graph),
               **resolve_ignored(state.graph, options.ignored_scope, state.renamed)}
    plan = plan_quantizers(state.graph, ignored, placement_options(state))
    if plan and options.model_type is not ModelType.TRANSFORMER:
        plan = replace(plan, **_rule_float(plan, plan_quantizers(state.graph, ignored,
                                                                  placement_options(state, transformer=True))))
    if not plan:
        log.warning("The model has no op ovptq can quantize (Convolution, MatMul, ...); it is returned unchanged.")
        return replace(state, plan=plan, result=state.source.clone(), finished=True)
    log.info("Placement: %d activation and %d weight quantizers.", len(plan.activations), len(plan.weights))
    return replace(state, plan=plan)


STAGE = Stage("placement", _place,
              record=lambda state: {"transformer_rules": json.dumps(dict(state.plan.float_rules))})
