"""The rewrite: the one writer of the INT8 model, applying edits given as data to a fresh clone."""

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from ovptq.graph.graph import Graph, Port, unique_names
from ovptq.parameters import RangeEstimator
from ovptq.placement.plan import ActivationQuantizer, WeightQuantizer
from ovptq.ranges.formulas import FQParams
from ovptq.ranges.weights import quantize_weights
from ovptq.rewrite.edits import BiasValue, ConstantInput, Scaling
from ovptq.rewrite.rewrite import ModelEdits, apply


def serialized(model, tmp_path, name):
    path = tmp_path / f"{name}.xml"
    ov.save_model(model, path, compress_to_fp16=False)
    return path.read_bytes() + path.with_suffix(".bin").read_bytes()


def by_name(model):
    return {op.get_friendly_name(): op for op in model.get_ordered_ops()}


def test_no_edits_give_bit_identical_outputs_and_the_input_model_is_never_written(tmp_path):
    model = builders.residual_block()
    before = serialized(model, tmp_path, "before")
    rewritten = apply(model, ModelEdits())
    data = builders.images(1)[0]
    np.testing.assert_array_equal(builders.infer(rewritten, data)[0], builders.infer(model, data)[0])
    apply(model, ModelEdits(constants=(ConstantInput("conv1", 1, np.zeros((8, 3, 3, 3), np.float32), "zero"),)))
    assert serialized(model, tmp_path, "after") == before


def test_weights_become_int8_times_a_per_channel_scale_shared_by_ops_that_read_one_weight():
    x = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    weight = ops.constant(builders._rng(2).standard_normal((4, 3, 3, 3)).astype(np.float32), name="shared")
    a = ops.convolution(x, weight, [1, 1], [1, 1], [1, 1], [1, 1], name="a")
    b = ops.convolution(x, weight, [1, 1], [1, 1], [1, 1], [1, 1], name="b")
    model = builders.model([a, b], x)
    graph = Graph(model)
    quantizers = (WeightQuantizer("a", 1, (0,)), WeightQuantizer("b", 1, (0,)))
    weights = quantize_weights(graph, quantizers, RangeEstimator.MINMAX, 0.0)
    rewritten = by_name(apply(model, ModelEdits(weights=tuple(weights.values()))))
    dequantize = rewritten["a"].input_value(1).get_node()
    assert dequantize.get_friendly_name() == "a/fq_weights_1" and dequantize.get_type_name() == "Multiply"
    assert rewritten["b"].input_value(1).get_node() is dequantize            # one int8 weight for both
    int8 = rewritten["a/fq_weights_1/int8"].get_data()
    scale = rewritten["a/fq_weights_1/scale"].get_data()
    assert int8.dtype == np.int8 and np.abs(int8).max() == 127 and scale.shape == (4, 1, 1, 1)
    np.testing.assert_allclose(int8 * scale, weight.get_data(), atol=scale.max() / 2 + 1e-7)


def test_a_fake_quantize_goes_on_the_tensor_its_consumers_read_after_a_scaling():
    model = builders.conv_relu()
    scaling = Scaling("relu1", 0, np.full((1, 8, 1, 1), 0.5, np.float32), ("conv2",), "relu1/scaled",
                      "relu1/scaled/factor")
    quantizer = ActivationQuantizer("relu1/fq_output_0", "relu1", 0, (Port("conv2", 0),), True)
    params = FQParams(np.float32(0.0), np.float32(2.0), 256)
    rewritten = by_name(apply(model, ModelEdits(scalings=(scaling,), activations=((quantizer, params),))))
    fq = rewritten["conv2"].input_value(0).get_node()
    assert fq.get_friendly_name() == "relu1/fq_output_0" and fq.get_type_name() == "FakeQuantize"
    assert fq.input_value(0).get_node().get_friendly_name() == "relu1/scaled"
    assert rewritten["relu1/fq_output_0/low"].get_data() == 0.0
    assert rewritten["relu1/fq_output_0/high"].get_data() == 2.0


def test_a_corrected_bias_is_broadcast_to_its_constant_and_a_missing_one_becomes_an_add():
    model = builders.bias_correction_block(bias=False)
    values = np.arange(6, dtype=np.float64)
    quantizer = ActivationQuantizer("relu1/fq", "relu1", 0, (Port("depthwise", 0),), True)
    edits = ModelEdits(activations=((quantizer, FQParams(np.float32(0), np.float32(1), 256)),),
                       biases=(BiasValue("conv", values, 1), BiasValue("depthwise", values, 1)))
    rewritten = by_name(apply(model, edits))
    assert rewritten["conv/bias"].input_value(0).get_node().get_friendly_name() == "conv"
    np.testing.assert_array_equal(rewritten["conv/bias_value"].get_data(), values.reshape(1, 6, 1, 1))
    assert rewritten["relu1"].input_value(0).get_node().get_friendly_name() == "conv/bias"
    assert {t.get_node().get_friendly_name() for t in rewritten["depthwise/bias"].output(0).get_target_inputs()} \
        == {"relu2"}



def test_a_bias_held_by_a_subtract_gets_the_negated_values_in_its_constant_shape():
    x = ops.parameter([1, 4, 3], np.float32, name="input")
    y = ops.matmul(x, ops.constant(np.ones((3, 5), np.float32)), False, False, name="fc")
    model = builders.model(ops.subtract(y, ops.constant(np.zeros((1, 1, 5), np.float32)), name="fc/bias"), x)
    bias = BiasValue("fc", np.arange(5.0), 2, "fc/bias", 1, -1.0)
    corrected = by_name(apply(model, ModelEdits(biases=(bias,))))["fc/bias"].input_value(1).get_node()
    assert corrected.get_friendly_name() == "fc/bias/corrected"
    np.testing.assert_array_equal(corrected.get_data(), -np.arange(5.0, dtype=np.float32).reshape(1, 1, 5))


def test_rt_info_is_written_under_ovptq():
    rewritten = apply(builders.conv_relu(), ModelEdits(rt_info={"version": "1", "quantization/preset": "mixed"}))
    assert rewritten.get_rt_info(["ovptq", "quantization", "preset"]).astype(str) == "mixed"


def test_consumers_that_read_different_tensors_cannot_share_a_quantizer():
    model = builders.residual_block()
    unique_names(model)
    quantizer = ActivationQuantizer("bad", "relu1", 0, (Port("conv2", 0), Port("relu3", 0)), False)
    with pytest.raises(AssertionError, match="read different tensors"):
        apply(model, ModelEdits(activations=((quantizer, FQParams(np.float32(0), np.float32(1), 256)),)))
