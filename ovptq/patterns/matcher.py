"""A small pattern language for fused units, and a linear-time matcher.

A pattern is a list of steps written in data-flow order, like the subgraph it matches:

    Pattern("swish", [
        Step("sigmoid", {"Sigmoid"}, inputs=("in",)),
        Step("mul", {"Multiply"}, inputs=("in", "sigmoid")),
    ])

`in` names the tensor that enters the unit (the anchor's data input). Each later step names the earlier steps (or
`in`) that feed its data inputs; its other inputs must be constants if `constants` says so. Matching starts at
every node whose type is the first step's (a type index, no subgraph isomorphism) and walks forward through
consumers. A match is strict: a matched node other than the last feeds only nodes of the match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ovptq.graph.graph import Graph

IN = "in"


@dataclass(frozen=True)
class Step:
    label: str
    types: frozenset[str]
    inputs: tuple[str, ...] = ()   # labels of the steps (or IN) feeding the data inputs, in any order
    constants: int = 0              # how many other inputs must be constant (not data-dependent)
    optional: bool = False
    keeps_rules: bool = False       # the node keeps its own quantization rules (e.g. a Conv inside an SE block)

    def __init__(self, label, types, inputs=(), constants=0, optional=False, keeps_rules=False):
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "types", frozenset(types))
        object.__setattr__(self, "inputs", tuple(inputs))
        object.__setattr__(self, "constants", constants)
        object.__setattr__(self, "optional", optional)
        object.__setattr__(self, "keeps_rules", keeps_rules)


@dataclass(frozen=True)
class Pattern:
    name: str
    steps: tuple[Step, ...]
    doc: str = ""

    def __init__(self, name, steps, doc=""):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "steps", tuple(steps))
        object.__setattr__(self, "doc", doc)


@dataclass(frozen=True)
class Match:
    pattern: str
    nodes: dict[str, str] = field(hash=False)  # step label -> node name (IN -> the producer of the entering tensor)

    @property
    def members(self) -> list[str]:
        return [node for label, node in self.nodes.items() if label != IN]


def match_at(graph: Graph, pattern: Pattern, anchor: str) -> Match | None:
    """The match of `pattern` anchored at `anchor`, or None."""
    first = pattern.steps[0]
    if graph.type(anchor) not in first.types or not graph.is_data(anchor):
        return None
    bound = {first.label: anchor}
    data_inputs = _data_producers(graph, anchor)
    if first.inputs:
        if len(data_inputs) != len(first.inputs):
            return None
        bound[IN] = data_inputs[0]
    if not _constants_ok(graph, anchor, first):
        return None
    found = _extend(graph, pattern.steps, 1, bound, {})
    if found is None or not _strict(graph, pattern, found):
        return None
    return Match(pattern.name, found)


def _extend(graph: Graph, steps: tuple[Step, ...], index: int, bound: dict[str, str],
            skipped: dict[str, str]) -> dict[str, str] | None:
    """Bind steps[index:] depth-first; a skipped optional step stands for its first input."""
    if index == len(steps):
        return dict(bound)
    step = steps[index]
    for candidate in _candidates(graph, step, bound, skipped):
        result = _extend(graph, steps, index + 1, {**bound, step.label: candidate}, skipped)
        if result is not None:
            return result
    if step.optional and step.inputs:
        return _extend(graph, steps, index + 1, bound, {**skipped, step.label: _resolve(step.inputs[0], skipped)})
    return None


def _resolve(label: str, skipped: dict[str, str]) -> str:
    while label in skipped:
        label = skipped[label]
    return label


def _candidates(graph: Graph, step: Step, bound: dict[str, str], skipped: dict[str, str]) -> list[str]:
    labels = [_resolve(label, skipped) for label in step.inputs]
    if not labels or any(label not in bound for label in labels):
        return []
    wanted_inputs = sorted(bound[label] for label in labels)
    taken = set(bound.values()) - {bound.get(IN)}
    sources = {bound[label] for label in labels}
    result = []
    for source in sorted(sources):
        for consumer in {p.node for p in graph.consumers(source)}:
            if consumer in taken or consumer in result or graph.type(consumer) not in step.types:
                continue
            if sorted(_data_producers(graph, consumer)) == wanted_inputs and _constants_ok(graph, consumer, step):
                result.append(consumer)
    return sorted(result, key=graph.order_index)


def _data_producers(graph: Graph, node: str) -> list[str]:
    return [graph.producer(node, port).node for port in range(graph.num_inputs(node))
            if graph.is_data(graph.producer(node, port).node)]


def _constants_ok(graph: Graph, node: str, step: Step) -> bool:
    constant_inputs = graph.num_inputs(node) - len(_data_producers(graph, node))
    return constant_inputs >= step.constants if step.constants else True


def _strict(graph: Graph, pattern: Pattern, bound: dict[str, str]) -> bool:
    members = {node for label, node in bound.items() if label != IN}
    last = [bound[s.label] for s in pattern.steps if s.label in bound][-1]
    return all(c.node in members for node in members - {last} for c in graph.consumers(node))


def find_matches(graph: Graph, patterns: list[Pattern]) -> list[Match]:
    """All non-overlapping matches, patterns tried in registry order (the first that claims a node keeps it)."""
    claimed: set[str] = set()
    matches = []
    by_first_type: dict[str, list[Pattern]] = {}
    for pattern in patterns:
        for kind in pattern.steps[0].types:
            by_first_type.setdefault(kind, []).append(pattern)
    rank = {p.name: i for i, p in enumerate(patterns)}
    for node in graph.order:
        for pattern in sorted(by_first_type.get(graph.type(node), []), key=lambda p: rank[p.name]):
            match = match_at(graph, pattern, node)
            if match is not None and not claimed.intersection(match.members):
                claimed.update(match.members)
                matches.append(match)
                break
    return matches
