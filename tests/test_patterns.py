"""Fused-unit patterns: each matches the subgraph it is written like, and only that."""

import builders
import numpy as np
import openvino.opset13 as ops
import pytest

from ovptq.graph.graph import Graph
from ovptq.patterns.matcher import IN, find_matches, match_at
from ovptq.patterns.registry import PATTERNS

BY_NAME = {p.name: p for p in PATTERNS}


def _x(shape=(1, 8, 4, 4)):
    return ops.parameter(list(shape), np.float32, name="x")


def _c(value):
    return ops.constant(np.float32(value))


def matches_of(output, x):
    graph = Graph(builders.model(output, x))
    return graph, {m.pattern: m for m in find_matches(graph, PATTERNS)}


def test_swish():
    x = _x()
    out = ops.multiply(x, ops.sigmoid(x, name="sig"), name="mul")
    _, found = matches_of(out, x)
    assert found["swish"].nodes == {IN: "x", "sigmoid": "sig", "mul": "mul"}


def test_hswish_decomposed_and_hardsigmoid_gate():
    x = _x()
    clamp = ops.clamp(ops.add(x, _c(3.0), name="plus3"), 0.0, 6.0, name="relu6")
    out = ops.multiply(ops.multiply(x, clamp, name="mul"), _c(1 / 6), name="div6")
    _, found = matches_of(out, x)
    assert set(found["hswish"].members) == {"plus3", "relu6", "mul", "div6"}
    x = _x()
    gate = ops.hard_sigmoid(x, _c(0.2), _c(0.5), name="hsig")
    _, found = matches_of(ops.multiply(x, gate, name="mul"), x)
    assert set(found["hswish_gate"].members) == {"hsig", "mul"}


def test_softmax_and_layer_norm_decompositions():
    x = _x((1, 4, 16))
    axes = ops.constant(np.array([-1], np.int64))
    shifted = ops.subtract(x, ops.reduce_max(x, axes, True, name="max"), name="sub")
    exp = ops.exp(shifted, name="exp")
    out = ops.divide(exp, ops.reduce_sum(exp, axes, True, name="sum"), name="div")
    _, found = matches_of(out, x)
    assert set(found["softmax"].members) == {"max", "sub", "exp", "sum", "div"}

    x = _x((1, 4, 16))
    centered = ops.subtract(x, ops.reduce_mean(x, axes, True, name="mean"), name="center")
    variance = ops.reduce_mean(ops.power(centered, _c(2.0), name="square"), axes, True, name="var")
    std = ops.sqrt(ops.add(variance, _c(1e-5), name="eps"), name="std")
    normed = ops.divide(centered, std, name="norm")
    out = ops.add(ops.multiply(normed, _c(1.5), name="gamma"), _c(0.1), name="beta")
    _, found = matches_of(out, x)
    assert set(found["layer_norm"].members) == {"mean", "center", "square", "var", "eps", "std", "norm", "gamma",
                                                "beta"}


@pytest.mark.parametrize("bias", [True, False])
def test_linear_unit_with_and_without_bias(bias):
    x = _x((1, 3, 8, 8))
    out = ops.relu(builders.conv(x, 4, "conv", bias=bias), name="relu")
    _, found = matches_of(out, x)
    expected = {"conv", "conv/bias", "relu"} if bias else {"conv", "relu"}
    assert set(found["linear_bias_activation"].members) == expected


def test_se_block_members():
    graph = Graph(builders.se_block())
    found = {m.pattern: m for m in find_matches(graph, PATTERNS)}
    assert {"se/mean", "se/fc1", "se/relu", "se/fc2", "se/sigmoid", "se/mul"} <= set(found["se_block"].members)


def test_match_is_strict_an_inner_node_with_an_outside_consumer_breaks_it():
    x = _x()
    sig = ops.sigmoid(x, name="sig")
    out = ops.multiply(x, sig, name="mul")
    graph = Graph(builders.model([out, ops.relu(sig, name="leak")], x))
    assert match_at(graph, BY_NAME["swish"], "sig") is None


def test_every_pattern_is_documented_and_named_once():
    names = [p.name for p in PATTERNS]
    assert len(names) == len(set(names))
    assert all(p.doc for p in PATTERNS)
