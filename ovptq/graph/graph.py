"""The model as a networkx graph: one node per op, one edge per (output port -> input port) connection.

Node keys are friendly names, which `unique_names` makes unique on ovptq's own copy of the model. Each node holds
its op type, the `ov.Node`, and whether it depends on model inputs ("data") or is part of a constant / ShapeOf
sub-graph, which placement never touches. Each edge holds its ports, shape and element type.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import networkx as nx
import numpy as np
import openvino as ov

# Ops whose output is data-dependent without any data input (state reads).
_SOURCES = {"Parameter", "ReadValue"}
# Ops whose output is a shape, not data: what follows them is shape arithmetic.
_SHAPE_OPS = {"ShapeOf"}
# Tensors quantizers may go on. f64 is left out: the CPU plugin has no FakeQuantize or int8 kernel for it (a
# quantized f64 tensor makes the model fail to compile).
FLOAT_TYPES = {ov.Type.f32, ov.Type.f16, ov.Type.bf16}


def numpy_dtype(element_type: ov.Type) -> np.dtype:
    """The numpy dtype that holds values of `element_type` (bf16, which numpy lacks, as float32)."""
    return np.dtype(np.float32) if element_type == ov.Type.bf16 else np.dtype(element_type.to_dtype())


@dataclass(frozen=True)
class Port:
    """One end of a connection: a node and a port index."""

    node: str
    port: int


class Graph:
    """A read-only view of an `ov.Model` as a networkx MultiDiGraph with a few queries."""

    def __init__(self, model: ov.Model):
        self.model = model
        self.nx = nx.MultiDiGraph()
        ops = model.get_ordered_ops()
        for op in ops:
            self.nx.add_node(op.get_friendly_name(), type=op.get_type_name(), op=op)
        for op in ops:
            for port, inp in enumerate(op.inputs()):
                source = inp.get_source_output()
                self.nx.add_edge(source.get_node().get_friendly_name(), op.get_friendly_name(),
                                 key=port, out_port=source.get_index(), in_port=port,
                                 shape=source.get_partial_shape(), dtype=source.get_element_type())
        self.order = [op.get_friendly_name() for op in ops]
        self._mark_data_dependent()

    def _mark_data_dependent(self) -> None:
        data = set()
        for name in self.order:  # topological order
            node = self.nx.nodes[name]
            if node["type"] in _SOURCES:
                data.add(name)
            elif node["type"] not in _SHAPE_OPS and any(src in data for src in self.nx.predecessors(name)):
                data.add(name)
        # Constant sub-graphs: no input or state read upstream, not even through ShapeOf.
        variable = set()
        for name in self.order:
            if self.nx.nodes[name]["type"] in _SOURCES or any(s in variable for s in self.nx.predecessors(name)):
                variable.add(name)
        for name in self.order:
            self.nx.nodes[name]["data"] = name in data
            self.nx.nodes[name]["constant"] = name not in variable

    # --- queries ---------------------------------------------------------------------------------------------
    def type(self, node: str) -> str:
        return self.nx.nodes[node]["type"]

    def op(self, node: str) -> ov.Node:
        return self.nx.nodes[node]["op"]

    def is_data(self, node: str) -> bool:
        """Depends on the values of model inputs (not only on constants or on input shapes)."""
        return self.nx.nodes[node]["data"]

    def is_constant(self, node: str) -> bool:
        """Computable from constants alone."""
        return self.nx.nodes[node]["constant"]

    def producer(self, node: str, port: int) -> Port:
        """The output feeding input `port` of `node`."""
        for src, _, attrs in self.nx.in_edges(node, data=True):
            if attrs["in_port"] == port:
                return Port(src, attrs["out_port"])
        raise KeyError(f"{node} has no input {port}")

    def input_edge(self, node: str, port: int) -> dict:
        for _, _, attrs in self.nx.in_edges(node, data=True):
            if attrs["in_port"] == port:
                return attrs
        raise KeyError(f"{node} has no input {port}")

    def consumers(self, node: str, port: int | None = None) -> list[Port]:
        """The inputs reading output `port` of `node` (all outputs when port is None), in a stable order."""
        found = [Port(dst, attrs["in_port"]) for _, dst, attrs in self.nx.out_edges(node, data=True)
                 if port is None or attrs["out_port"] == port]
        return sorted(found, key=lambda p: (self.order_index(p.node), p.port))

    def order_index(self, node: str) -> int:
        if not hasattr(self, "_index"):
            self._index = {name: i for i, name in enumerate(self.order)}
        return self._index[node]

    def num_inputs(self, node: str) -> int:
        return self.op(node).get_input_size()

    def output_shape(self, node: str, port: int = 0) -> ov.PartialShape:
        return self.op(node).get_output_partial_shape(port)

    def output_type(self, node: str, port: int = 0) -> ov.Type:
        return self.op(node).get_output_element_type(port)

    def is_float_output(self, node: str, port: int = 0) -> bool:
        return self.output_type(node, port) in FLOAT_TYPES

    def is_activation_input(self, node: str, port: int) -> bool:
        """True if input `port` carries float data that depends on the model inputs."""
        src = self.producer(node, port)
        return self.is_data(src.node) and self.is_float_output(src.node, src.port)

    def activation_inputs(self, node: str) -> list[int]:
        return [p for p in range(self.num_inputs(node)) if self.is_activation_input(node, p)]

    def parameters(self) -> list[str]:
        return [p.get_friendly_name() for p in self.model.get_parameters()]

    def results(self) -> list[str]:
        return [r.get_friendly_name() for r in self.model.get_results()]


def unique_names(model: ov.Model) -> dict[str, str]:
    """Give every op of `model` (ovptq's own copy) a unique friendly name; return {new name: old name}."""
    counts = Counter(op.get_friendly_name() for op in model.get_ordered_ops())
    taken = set(counts)
    renamed = {}
    seen: Counter = Counter()
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if counts[name] == 1:
            continue
        seen[name] += 1
        if seen[name] == 1:
            continue  # the first keeps its name
        candidate = f"{name}_{seen[name] - 1}"
        while candidate in taken:
            candidate += "_"
        taken.add(candidate)
        op.set_friendly_name(candidate)
        renamed[candidate] = name
    return renamed
