"""Which nodes stay float: the user's `IgnoredScope`, and detection post-processing found automatically."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import networkx as nx

from ovptq.errors import IgnoredScopeError, ParameterError
from ovptq.graph.graph import Graph
from ovptq.graph.normalize import caller_names
from ovptq.graph.weights import find_weight
from ovptq.hardware import OP_RULES, POSTPROCESSING_MARKERS, Role

log = logging.getLogger("ovptq")


@dataclass(frozen=True)
class Subgraph:
    """Every node on a path from one of `inputs` to one of `outputs` (node names), both ends included."""

    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass
class IgnoredScope:
    """Nodes to keep in float. Patterns are Python regexes matched at the start of a name (`re.match`).

    With `validate=True`, a rule that matches no node raises one `IgnoredScopeError` listing every such rule.
    """

    names: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    subgraphs: list[Subgraph] = field(default_factory=list)
    validate: bool = True

    def __post_init__(self):
        for attr in ("names", "patterns", "types", "subgraphs"):
            value = getattr(self, attr)
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise ParameterError(f"IgnoredScope.{attr} must be a list, not {type(value).__name__} "
                                     f"({value!r}); write {attr}=[{value!r}].")
        for pattern in self.patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ParameterError(f"IgnoredScope pattern {pattern!r} is not a valid regex: {error}.") from None


def resolve_ignored(graph: Graph, scope: IgnoredScope | None, renamed: dict[str, str] | None = None
                    ) -> dict[str, str]:
    """Map each ignored node to the rule that ignores it. `renamed` maps de-duplicated names to the originals. A name
    no op has any more (graph normalisation fused that op away) means the data ops it was fused into; a pattern
    matches those names too."""
    ignored: dict[str, str] = {}
    if scope is None:
        return ignored
    renamed = renamed or {}
    own = {node: renamed.get(node, node) for node in graph.order}
    original = {node: caller_names(graph.op(node)) | {own[node]} for node in graph.order}
    unmatched: list[str] = []

    def mark(nodes: list[str], rule: str) -> None:
        if not nodes:
            unmatched.append(rule)
        for node in nodes:
            ignored.setdefault(node, rule)

    for name in scope.names:
        exact = [n for n in graph.order if own[n] == name]
        mark(exact or [n for n in graph.order if graph.is_data(n) and name in original[n]], f"names: {name!r}")
    for pattern in scope.patterns:
        regex = re.compile(pattern)
        mark([n for n in graph.order if graph.is_data(n) and any(map(regex.match, original[n]))],
             f"patterns: {pattern!r}")
    for kind in scope.types:
        mark([n for n in graph.order if graph.type(n) == kind and graph.is_data(n)], f"types: {kind!r}")
    for subgraph in scope.subgraphs:
        mark(_subgraph_nodes(graph, subgraph, original), f"subgraphs: {subgraph}")
    if unmatched and scope.validate:
        raise IgnoredScopeError("IgnoredScope rules that match no node of the model: " + "; ".join(unmatched)
                                + ". Check the names against the model (they are friendly names, e.g. from "
                                "model.get_ordered_ops()), or pass IgnoredScope(..., validate=False).")
    for rule in unmatched:
        log.warning("IgnoredScope rule matches no node: %s", rule)
    _warn_not_quantizable(graph, [n for n in ignored if ignored[n].startswith("names")])
    return ignored


def _warn_not_quantizable(graph: Graph, nodes: list[str]) -> None:
    for node in nodes:
        rule = OP_RULES.get(graph.type(node))
        if not graph.is_data(node) or rule is None or (rule.role is Role.WEIGHTED and find_weight(graph, node) is None
                                                       and graph.type(node) != "MatMul"):
            log.warning("Ignored node %r (%s) is not an op ovptq quantizes, so ignoring it changes nothing; name the "
                        "Convolution/MatMul that consumes it instead.", node, graph.type(node))


def _subgraph_nodes(graph: Graph, subgraph: Subgraph, original: dict[str, frozenset[str]]) -> list[str]:
    by_original: dict[str, list[str]] = {}
    for node, names in original.items():
        for name in names:
            by_original.setdefault(name, []).append(node)
    starts = [n for name in subgraph.inputs for n in by_original.get(name, [])]
    ends = [n for name in subgraph.outputs for n in by_original.get(name, [])]
    if not starts or not ends:
        return []
    reach_forward = set(starts).union(*(nx.descendants(graph.nx, s) for s in starts))
    reach_backward = set(ends).union(*(nx.ancestors(graph.nx, e) for e in ends))
    return [n for n in graph.order if n in reach_forward and n in reach_backward]


def postprocessing_nodes(graph: Graph) -> dict[str, str]:
    """Non-weighted ops on paths from the last weighted ops to outputs that pass TopK / NMS: they stay float."""
    ignored: dict[str, str] = {}
    for result in graph.results():
        region, stack = set(), [result]
        while stack:  # walk back from the output until a weighted op or an input
            node = stack.pop()
            if node in region or not graph.is_data(node):
                continue
            rule = OP_RULES.get(graph.type(node))
            if rule is not None and rule.role is Role.WEIGHTED or graph.type(node) == "Parameter":
                continue
            region.add(node)
            stack.extend(graph.nx.predecessors(node))
        if any(graph.type(n) in POSTPROCESSING_MARKERS for n in region):
            for node in region:
                ignored.setdefault(node, "post-processing (a path to an output through TopK/NMS)")
    return ignored
