"""What is known about a tensor's values before any inference: here, whether it can be negative."""

from __future__ import annotations

from ovptq.graph.graph import Graph

# Ops whose output is >= 0 whatever their input.
NON_NEGATIVE_OPS = frozenset({"Relu", "Sigmoid", "HSigmoid", "HardSigmoid", "Softmax", "Exp",
                              "Abs", "SoftPlus", "Sqrt", "ReduceL2"})
# Ops whose output values are drawn from (or averaged over) their first input's values.
SIGN_PRESERVING_OPS = frozenset({"MaxPool", "AvgPool", "AdaptiveMaxPool", "AdaptiveAvgPool", "ReduceMax",
                                 "ReduceMean", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Split",
                                 "VariadicSplit", "StridedSlice", "Slice", "Gather", "DepthToSpace", "SpaceToDepth",
                                 "Tile", "Broadcast", "ShuffleChannels"})


def is_non_negative(graph: Graph, node: str) -> bool:
    """True if every output value of `node` is >= 0 for any input (ReLU, Clamp(min >= 0), Sigmoid, ... and
    precision-preserving ops or Concats of such tensors)."""
    seen: dict[str, bool] = {}

    def check(name: str) -> bool:
        if name not in seen:
            seen[name] = False  # cycles cannot happen in a DAG; this guards re-entry
            kind = graph.type(name)
            if kind in NON_NEGATIVE_OPS:
                result = True
            elif kind == "Clamp":
                result = graph.op(name).get_attributes()["min"] >= 0
            elif kind in SIGN_PRESERVING_OPS:
                result = check(graph.producer(name, 0).node)
            elif kind == "Concat":
                result = all(check(graph.producer(name, p).node) for p in range(graph.num_inputs(name)))
            else:
                result = False
            seen[name] = result
        return seen[name]

    return check(node)
