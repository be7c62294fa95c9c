"""Cross-layer equalisation: which chains it takes, the exact factors, and that the network is unchanged."""

import builders
import numpy as np
import openvino.opset13 as ops
import pytest

import ovptq
from ovptq.graph.equalize import chains, equalize, factors, input_ranges, output_ranges, weight

DATA = builders.images(8, seed=3)


def separable(activation: str | None = "prelu", readers: int = 1, pointwise: bool = True):
    """input -> conv1 -> +bias -> activation -> depthwise -> +bias [-> pointwise]"""
    x = ops.parameter([1, 3, 16, 16], np.float32, name="input")
    y = builders.conv(x, 8, "conv1")
    if activation == "prelu":
        y = ops.prelu(y, ops.constant(np.full([8], 0.1, np.float32)), name="act")
    elif activation == "relu":
        y = ops.relu(y, name="act")
    elif activation == "relu6":
        y = ops.clamp(y, 0.0, 6.0, name="act")
    d = builders.conv(y, 8, "depthwise", groups=8, seed=1)
    out = builders.conv(d, 4, "pointwise", kernel=1, seed=2) if pointwise else d
    outputs = [out] + ([ops.relu(y, name="second_reader")] if readers == 2 else [])
    return builders.model(outputs, x)


def chain_names(model):
    return [(c.first.get_friendly_name(), c.second.get_friendly_name()) for c in chains(model)]


def test_takes_conv_chains_through_bias_relu_and_prelu():
    for activation in ("prelu", "relu", None):
        assert chain_names(separable(activation)) == [("conv1", "depthwise"), ("depthwise", "pointwise")]


def test_leaves_chains_through_clamp_shared_tensors_and_grouped_readers():
    assert chain_names(separable("relu6")) == [("depthwise", "pointwise")]
    assert chain_names(separable("relu", readers=2)) == [("depthwise", "pointwise")]
    x = ops.parameter([1, 4, 8, 8], np.float32, name="input")
    grouped = builders.conv(builders.conv(x, 8, "conv1"), 8, "grouped", groups=2, seed=1)
    assert chain_names(builders.model(grouped, x)) == []


def test_the_network_computes_the_same_function():
    model = separable()
    before = [builders.infer(model, item)[0] for item in DATA]
    assert len(equalize(model)) == 2
    after = [builders.infer(model, item)[0] for item in DATA]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)


def test_both_weights_reach_the_geometric_mean_range():
    model = separable("relu", pointwise=False)
    first, second = chains(model)[0].first, chains(model)[0].second
    r1, r2 = output_ranges(first, weight(first)), input_ranges(weight(second), depthwise=True)
    s = factors(r1, r2)
    equalize(model)
    new_r1, new_r2 = output_ranges(first, weight(first)), input_ranges(weight(second), depthwise=True)
    unclipped = np.isclose(s, np.sqrt(r1 / r2), rtol=1e-6)
    assert unclipped.sum() >= 6
    np.testing.assert_allclose(new_r1[unclipped], np.sqrt(r1 * r2)[unclipped], rtol=1e-5)
    np.testing.assert_allclose(new_r2[unclipped], np.sqrt(r1 * r2)[unclipped], rtol=1e-5)
    np.testing.assert_allclose(new_r1 / new_r2, (r1 / s) / (r2 * s), rtol=1e-5)


def test_factors_keep_dead_channels_and_clip_to_a_hundredfold_range():
    s = factors(np.array([0.0, 1.0, 4.0, 1e6, 1.0]), np.array([1.0, 0.0, 1.0, 1.0, 1e-6]))
    assert s[0] == s[1] == pytest.approx(1.0)
    assert s[2] == pytest.approx(2.0)
    assert s.max() == pytest.approx(100 * np.quantile(np.array([1.0, 1.0, 2.0, 1e3, 1e3]), 0.1))


def test_quantize_equalises_when_asked_records_it_and_leaves_the_caller_model_alone():
    model = separable()
    conv1 = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == "conv1")
    weights_before = weight(conv1).copy()
    on = ovptq.quantize(model, ovptq.Dataset(DATA),
                        advanced_parameters=ovptq.AdvancedQuantizationParameters(cross_layer_equalization=True))
    np.testing.assert_array_equal(weight(conv1), weights_before)
    key = ["ovptq", "quantization", "advanced_parameters", "cross_layer_equalization"]
    assert on.get_rt_info(key).astype(str) == "True"
    default = ovptq.quantize(model, ovptq.Dataset(DATA))
    assert default.get_rt_info(key).astype(str) == "False"
    assert builders.ir_bytes(on)[1] != builders.ir_bytes(default)[1]


def test_the_option_must_be_a_bool():
    with pytest.raises(ovptq.errors.ParameterError, match="cross_layer_equalization must be True or False"):
        ovptq.quantize(separable(), ovptq.Dataset(DATA),
                       advanced_parameters=ovptq.AdvancedQuantizationParameters(cross_layer_equalization="yes"))
