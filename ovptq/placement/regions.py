"""Transformer structure found in the graph: the nodes the rules of `ovptq.hardware.TRANSFORMER_RULES` keep float.

The rules apply wherever their structure appears (an attention block inside a CNN included); with
model_type="transformer" the op types of `TRANSFORMER_FLOAT_OPS` also stay float everywhere.
"""

from __future__ import annotations

from ovptq.graph.graph import Graph
from ovptq.hardware import TRANSFORMER_FLOAT_OPS, TRANSFORMER_RULES, FloatRule
from ovptq.patterns.matcher import Match

NORMALISATION = "normalisation"


def transformer_float_nodes(graph: Graph, matches: list[Match], whole_model: bool = False) -> dict[str, str]:
    """node -> the rule that keeps its inputs float."""
    normalisations = {n for n in graph.order if graph.type(n) == "MVN"} | {
        m.nodes["mean"] for m in matches if m.pattern == "layer_norm"}

    def kinds(node: str) -> set[str]:
        return {graph.type(node), NORMALISATION} if node in normalisations else {graph.type(node)}

    found = {}
    for node in graph.order:
        if not graph.is_data(node):
            continue
        rule = next((r for r in TRANSFORMER_RULES if _applies(graph, node, r, kinds)), None)
        if rule is not None:
            found[node] = rule.name
        elif whole_model and graph.type(node) in TRANSFORMER_FLOAT_OPS:
            found[node] = f"model_type=transformer keeps {graph.type(node)} float"
    return found


def _applies(graph: Graph, node: str, rule: FloatRule, kinds) -> bool:
    if not kinds(node) & rule.ops:
        return False
    if rule.two_activations and sum(graph.is_activation_input(node, p) for p in range(graph.num_inputs(node))) < 2:
        return False
    if rule.feeds and not _reaches(graph, node, rule.feeds, rule.through, kinds, forward=True):
        return False
    if rule.fed_by and not _reaches(graph, node, rule.fed_by, rule.through, kinds, forward=False):
        return False
    return True


def _reaches(graph: Graph, node: str, targets: frozenset[str], through: frozenset[str], kinds,
             forward: bool) -> bool:
    """Whether a walk from `node` (along data edges, forward or backward) passing only `through` ops meets one of
    `targets`."""
    def step(n: str) -> list[str]:
        if forward:
            return [c.node for c in graph.consumers(n)]
        return [graph.producer(n, p).node for p in range(graph.num_inputs(n)) if graph.is_activation_input(n, p)]

    frontier, seen = step(node), {node}
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        if kinds(current) & targets:
            return True
        if graph.type(current) in through:
            frontier.extend(step(current))
    return False
