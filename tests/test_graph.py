"""The graph layer: nodes and edges, data vs constant sub-graphs, weights, names."""

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.graph.graph import Graph, Port, unique_names
from ovptq.graph.weights import find_weight, is_depthwise, weight_value


def test_one_node_per_op_and_one_edge_per_connection():
    model = builders.conv_relu()
    graph = Graph(model)
    assert graph.nx.number_of_nodes() == len(model.get_ordered_ops())
    assert graph.nx.number_of_edges() == sum(op.get_input_size() for op in model.get_ordered_ops())
    edge = graph.input_edge("conv1", 0)
    assert edge["shape"] == ov.PartialShape([1, 3, 16, 16]) and edge["dtype"] == ov.Type.f32
    assert graph.producer("relu1", 0) == Port("conv1/bias", 0)
    assert graph.consumers("relu1") == [Port("conv2", 0)]


def test_x_times_x_keeps_two_edges():
    x = ops.parameter([1, 4], np.float32, name="x")
    graph = Graph(builders.model(ops.multiply(x, x, name="square"), x))
    assert graph.consumers("x") == [Port("square", 0), Port("square", 1)]


def test_constant_and_shapeof_subgraphs_are_not_data():
    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    shape = ops.shape_of(x, name="shape")
    flat = ops.reshape(x, ops.concat([ops.gather(shape, ops.constant([0]), ops.constant(0), name="batch"),
                                      ops.constant(np.array([-1], np.int64))], 0, name="target"), False,
                       name="flatten")
    graph = Graph(builders.model(flat, x))
    assert graph.is_data("x") and graph.is_data("flatten")
    assert not graph.is_data("shape") and not graph.is_data("batch") and not graph.is_data("target")
    assert not graph.is_constant("target")  # depends on the input's shape
    assert not graph.is_activation_input("flatten", 1)


def _conv_with_weight_path(make_path):
    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = ops.convolution(x, make_path(w), [1, 1], [1, 1], [1, 1], [1, 1], name="conv")
    return Graph(builders.model(y, x)), w


def test_weight_through_f16_decompression():
    graph, w = _conv_with_weight_path(lambda w: ops.convert(ops.constant(w.astype(np.float16)), ov.Type.f32))
    weight = find_weight(graph, "conv")
    assert weight.port == 1 and weight.channel_axes == (0,)
    np.testing.assert_array_equal(weight_value(graph, weight), w.astype(np.float16).astype(np.float32))


def test_weight_through_reshape():
    graph, w = _conv_with_weight_path(
        lambda w: ops.reshape(ops.constant(w.reshape(4, 27)), ops.constant(np.array([4, 3, 3, 3])), False))
    np.testing.assert_array_equal(weight_value(graph, find_weight(graph, "conv")), w)


def test_weight_through_an_existing_fake_quantize():
    def path(w):
        return ops.fake_quantize(ops.constant(w), np.float32(-1), np.float32(1), np.float32(-1), np.float32(1), 255)
    graph, w = _conv_with_weight_path(path)
    value = weight_value(graph, find_weight(graph, "conv"))
    expected = np.round((np.clip(w, -1, 1) + 1) / 2 * 254) / 254 * 2 - 1
    np.testing.assert_allclose(value, expected, atol=1e-6)


def test_matmul_of_two_activations_has_no_weight():
    graph = Graph(builders.matmul_block())
    assert find_weight(graph, "scores") is None
    assert find_weight(graph, "fc1").channel_axes == (1,)


def test_depthwise_is_recognised():
    graph = Graph(builders.depthwise_block())
    assert is_depthwise(graph, "depthwise")
    assert not is_depthwise(graph, "conv1")
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    grouped = builders.conv(x, 4, "grouped", groups=2)
    assert not is_depthwise(Graph(builders.model(grouped, x)), "grouped")


def test_unique_names_renames_duplicates_only():
    x = ops.parameter([1, 4], np.float32, name="x")
    a = ops.relu(x, name="same")
    b = ops.relu(a, name="same")
    model = builders.model(ops.relu(b, name="other"), x)
    renamed = unique_names(model)
    names = [op.get_friendly_name() for op in model.get_ordered_ops()]
    assert len(set(names)) == len(names)
    assert renamed == {"same_1": "same"}


def test_non_negative_outputs_are_recognised_through_precision_preserving_ops():
    from ovptq.graph.values import is_non_negative
    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    relu = ops.relu(x, name="relu")
    pooled = ops.max_pool(relu, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2], name="pool").output(0)
    relu6 = ops.clamp(x, 0.0, 6.0, name="relu6")
    signed = ops.clamp(x, -1.0, 1.0, name="signed")
    cat = ops.concat([relu, relu6], 1, name="cat")
    mixed = ops.concat([relu, signed], 1, name="mixed")
    graph = Graph(builders.model([pooled, cat, mixed], x))
    assert all(is_non_negative(graph, n) for n in ("relu", "pool", "relu6", "cat"))
    assert not any(is_non_negative(graph, n) for n in ("x", "signed", "mixed"))
