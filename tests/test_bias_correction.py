"""Bias correction: the fast shift equals a direct computation; existing and missing biases; thresholds; full mode."""

import json
from dataclasses import replace

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import ovptq
from ovptq.bias_correction.correct import weight_error_shift
from ovptq.bias_correction.layers import find_layers
from ovptq.dataset import Dataset
from ovptq.graph.graph import Graph
from ovptq.measuring.measure import as_quantized
from ovptq.placement.placer import plan_quantizers
from ovptq.ranges.weights import float_weight, quantize_weights
from ovptq.statistics.collect import collect_statistics
from ovptq.statistics.reductions import MeanReduction

SAMPLES = builders.images(6, shape=(1, 4, 9, 9), seed=3, low=0.0, high=2.0)


def corrections(model):
    return {c["layer"]: c for c in json.loads(model.get_rt_info(["ovptq", "bias_correction"]).astype(str))}


def output_mean(model, node, weight):
    """Mean per output channel of `node` (before its bias) with another weight, on SAMPLES, computed by OpenVINO."""
    clone = model.clone()
    op = next(o for o in clone.get_ordered_ops() if o.get_friendly_name() == node)
    op.input(1).replace_source_output(ops.constant(weight).output(0))
    probe = ov.Model([op.output(0)], clone.get_parameters())
    channel_axis = 1 if op.get_type_name() != "MatMul" else -1
    means = []
    for sample in SAMPLES:
        out = builders.infer(probe, sample)[0].astype(np.float64)
        means.append(out.mean(axis=tuple(a for a in range(out.ndim) if a != channel_axis % out.ndim)))
    return np.mean(means, axis=0)


def test_fast_shift_equals_a_direct_computation_for_conv_depthwise_and_matmul():
    model = builders.bias_correction_block()
    graph = Graph(model.clone())
    working = graph.model
    plan = plan_quantizers(graph, {})
    layers = find_layers(graph, plan)
    assert [layer.node for layer in layers] == ["conv", "depthwise", "fc"]
    stats, _ = collect_statistics(working, [layer.input_reduction(graph) for layer in layers], Dataset(SAMPLES), 300)
    weights = quantize_weights(graph, plan.weights, ovptq.RangeEstimator.MINMAX, 0.0)
    for layer in layers:
        weight, dequantized = float_weight(graph, weights[layer.node].quantizer), weights[layer.node].dequantized()
        shift = weight_error_shift(graph, layer, weight, dequantized, stats[layer.input_reduction(graph)])
        direct = output_mean(model, layer.node, weight) - output_mean(model, layer.node, dequantized)
        np.testing.assert_allclose(shift, direct, rtol=1e-4, atol=1e-6)
        assert np.abs(direct).max() > 1e-4  # the test would see a wrong shift


@pytest.mark.parametrize("kernel, strides, dilations, pads_begin, pads_end, size", [
    ((3, 3), (2, 2), (1, 1), (1, 1), (0, 0), (5, 5)),
    ((3, 5), (1, 2), (2, 1), (2, 0), (1, 2), (7, 9)),   # dilation, asymmetric pads, a stride that does not divide
    ((1, 1), (2, 2), (1, 1), (0, 0), (0, 0), (6, 6)),   # the subsampling 1x1 convolution of a ResNet shortcut
    ((3,), (2,), (1,), (1,), (1,), (8,)),               # 1-D
])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_tap_means_match_numpy_at_padded_borders(kernel, strides, dilations, pads_begin, pads_end, size, dynamic):
    x = ops.parameter([1, 2, *([-1] * len(size) if dynamic else size)], np.float32, name="input")
    model = builders.model(ops.relu(x, name="relu"), x)
    reduction = MeanReduction("relu", 0, "taps", kernel, strides, dilations, pads_begin, pads_end)
    sample = np.arange(2 * np.prod(size), dtype=np.float32).reshape(1, 2, *size)
    stats, _ = collect_statistics(model, [reduction], Dataset([sample]), 1)
    padded = np.pad(sample[0], [(0, 0), *zip(pads_begin, pads_end)])
    outputs = [(n + b + e - d * (k - 1) - 1) // s + 1
               for n, b, e, d, k, s in zip(size, pads_begin, pads_end, dilations, kernel, strides)]
    expected = np.zeros((2, *kernel))
    for tap in np.ndindex(*kernel):
        window = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                       for t, d, o, s in zip(tap, dilations, outputs, strides))
        for c in range(2):
            expected[(c, *tap)] = padded[c][window].mean()
    np.testing.assert_allclose(stats[reduction], expected, rtol=1e-5)


def quantize(model, **kwargs):
    return ovptq.quantize(model, ovptq.Dataset(SAMPLES), **kwargs)


def bias_constant(model, add_name):
    add = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == add_name)
    return add.input(1).get_source_output().get_node().get_data()


def test_biases_get_corrected_and_recorded():
    q = quantize(builders.bias_correction_block())
    records = corrections(q)
    assert set(records) == {"conv", "depthwise", "fc"}
    assert all(r["method"] == "fast" and r["applied_channels"] > 0 and r["reason"] == "applied"
               for r in records.values())
    assert np.abs(bias_constant(q, "conv/bias") - builders.BIAS).max() > 0


@pytest.mark.parametrize("fast", [True, False])
def test_dynamic_spatial_sizes_get_the_bias_correction_of_static_ones(fast):
    """A model read from ONNX often keeps [?, C, ?, ?] inputs; its convolutions are corrected all the same."""
    dynamic = builders.bias_correction_block()
    dynamic.reshape({"input": [1, 4, -1, -1]})
    static, dynamic = quantize(builders.bias_correction_block(), fast_bias_correction=fast), quantize(
        dynamic, fast_bias_correction=fast)
    decisions = [{layer: (c["method"], c["applied_channels"]) for layer, c in corrections(q).items()}
                 for q in (dynamic, static)]
    assert decisions[0] == decisions[1] and set(decisions[0]) == {"conv", "depthwise", "fc"}
    assert not fast or all(applied == 6 for _, applied in list(decisions[0].values())[:2])
    for add in ("conv/bias", "depthwise/bias", "fc/bias"):
        np.testing.assert_allclose(bias_constant(dynamic, add), bias_constant(static, add), rtol=1e-5, atol=1e-6)


def test_a_deconvolution_with_a_dynamic_batch_is_corrected_as_with_a_static_one():
    images = builders.images(6, shape=(1, 3, 8, 8), seed=3, low=0.0, high=2.0)
    dynamic = builders.deconvolution_block()
    dynamic.reshape({"input": [-1, 3, 8, 8]})
    records = [corrections(ovptq.quantize(m, ovptq.Dataset(images)))
               for m in (builders.deconvolution_block(), dynamic)]
    assert records[0]["deconv"]["applied_channels"] > 0
    assert records[1]["deconv"] == records[0]["deconv"]


@pytest.mark.parametrize("fast", [True, False])
def test_layer_without_bias_gets_one_when_its_shift_matters(fast):
    q = quantize(builders.bias_correction_block(bias=False), fast_bias_correction=fast)
    records = corrections(q)
    assert all(r["created_bias"] for r in records.values())
    assert {"conv/bias", "depthwise/bias", "fc/bias"} <= {op.get_friendly_name() for op in q.get_ordered_ops()}
    assert ovptq.inspect(q).coverage == 1.0


def test_untrusted_shift_is_skipped_with_a_reason():
    advanced = ovptq.AdvancedQuantizationParameters(bias_correction_threshold=1e-9)
    model = builders.bias_correction_block()
    q = quantize(model, advanced_parameters=advanced)
    record = corrections(q)["conv"]
    assert record["applied_channels"] == 0 and record["skipped_channels"] == 6
    assert "shift above 1e-09 x output scale" in record["reason"]
    assert np.all(bias_constant(q, "conv/bias") == builders.BIAS)


def test_disable_bias_correction_leaves_biases_alone():
    advanced = ovptq.AdvancedQuantizationParameters(disable_bias_correction=True)
    model = builders.bias_correction_block()
    q = quantize(model, advanced_parameters=advanced)
    assert corrections(q) == {}
    assert np.all(bias_constant(q, "conv/bias") == builders.BIAS)
    assert np.all(bias_constant(q, "depthwise/bias") == builders.BIAS)
    equalized = quantize(model, advanced_parameters=replace(advanced, cross_layer_equalization=True))
    assert corrections(equalized) == {}
    assert np.all(bias_constant(equalized, "conv/bias") == bias_constant(as_quantized(model, equalized), "conv/bias"))
    assert not np.all(bias_constant(equalized, "conv/bias") == builders.BIAS)


def channel_means_with_int8_weights_only(model, node):
    """Per-channel mean of `node`'s output on SAMPLES, with the activation FakeQuantizes bypassed."""
    clone = model.clone()
    for op in clone.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            for target in list(op.output(0).get_target_inputs()):
                target.replace_source_output(op.input(0).get_source_output())
    op = next(o for o in clone.get_ordered_ops() if o.get_friendly_name() == node)
    probe = ov.Model([op.output(0)], clone.get_parameters())
    return np.mean([builders.infer(probe, s)[0].astype(np.float64).mean(axis=(0, 2, 3)) for s in SAMPLES], axis=0)


def test_fast_makes_the_first_layer_exact_and_full_also_compensates_upstream_errors():
    model = builders.bias_correction_block()
    fast, full = quantize(model), quantize(model, fast_bias_correction=False)
    records = corrections(full)
    reference = channel_means_with_int8_weights_only(model, "conv/bias")
    scale = np.abs(reference).max()
    # The first layer sees the FP32 input: the fast shift alone is exact, and full keeps it so.
    for quantized in (fast, full):
        assert np.abs(channel_means_with_int8_weights_only(quantized, "conv/bias") - reference).max() < 1e-5 * scale
    # The depthwise layer also gets the error its input carries from the int8 conv: only full removes it, in the
    # channels where the shift stands out of the noise of 6 samples.
    reference = channel_means_with_int8_weights_only(model, "depthwise/bias")
    fast_error = np.abs(channel_means_with_int8_weights_only(fast, "depthwise/bias") - reference)
    full_error = np.abs(channel_means_with_int8_weights_only(full, "depthwise/bias") - reference)
    assert full_error.max() < fast_error.max()
    assert np.sum(full_error < 1e-6) == records["depthwise"]["applied_channels"] > 0
    assert records["conv"]["method"] == records["depthwise"]["method"] == "full"
    assert records["fc"]["method"] == "fast" and "one output position per sample" in records["fc"]["reason"]


def test_full_correction_reads_a_generator_dataset_once():
    q = ovptq.quantize(builders.bias_correction_block(), ovptq.Dataset(s for s in SAMPLES),
                       fast_bias_correction=False)
    assert corrections(q)["depthwise"]["method"] == "full"


def test_stage_blocks_are_consecutive_and_balanced():
    from ovptq.bias_correction.full import stage_blocks
    stages = [["a"], ["b", "c"], ["d"], ["e"], ["f", "g", "h"], ["i"]]
    blocks = stage_blocks(stages, 3)
    assert blocks == [["a", "b", "c"], ["d", "e", "f", "g", "h"], ["i"]]
    assert sum(blocks, []) == sum(stages, [])
    assert stage_blocks(stages, 10) == stages          # never more blocks than stages
    assert stage_blocks(stages, 1) == [sum(stages, [])]


def test_one_pass_corrects_only_the_heads_and_keeps_fast_below_them(monkeypatch):
    from ovptq.bias_correction import full
    model = builders.bias_correction_block()
    fast = corrections(quantize(model))
    monkeypatch.setattr(full, "FULL_PASSES", 1)
    records = corrections(quantize(model, fast_bias_correction=False))
    assert records["conv"]["method"] == "full"
    assert records["depthwise"] == {**fast["depthwise"], "reason": fast["depthwise"]["reason"] +
                                    " (full correction not applied: a layer upstream in its pass was corrected)"}


def dynamic_batch_linear():
    """x [?, 4, 16] -> linear -> relu -> linear: MatMuls with a dynamic batch."""
    x = ops.parameter(ov.PartialShape([-1, 4, 16]), np.float32, name="input")
    hidden = ops.relu(builders.linear(x, 16, "fc1"), name="relu")
    return builders.model(builders.linear(hidden, 8, "fc2", seed=1), x)


@pytest.mark.parametrize("batch", ["static", "dynamic"])
def test_full_correction_counts_samples_not_infer_requests(batch):
    if batch == "static":
        model = builders.conv_relu()
        model.reshape([2, 3, 16, 16])  # a static batch of 2: each item is one infer request of two samples
        data = [np.concatenate(builders.images(2, seed=seed)) for seed in range(4)]
    else:
        model = dynamic_batch_linear()
        data = [np.concatenate(builders.images(2, shape=(1, 4, 16), seed=seed)) for seed in range(4)]
    q = ovptq.quantize(model, ovptq.Dataset(data), fast_bias_correction=False)
    assert {r["method"] for r in corrections(q).values()} == {"full"}


def test_full_correction_keeps_the_state_of_a_stateful_model():
    import openvino.opset6 as ops6
    x = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    info = ov.op.util.VariableInfo()
    info.data_shape, info.data_type, info.variable_id = ov.PartialShape([1, 3, 8, 8]), ov.Type.f32, "state"
    variable = ov.op.util.Variable(info)
    added = ops.add(x, ops6.read_value(ops.constant(np.zeros((1, 3, 8, 8), np.float32)), variable), name="added")
    y = builders.conv(ops.relu(builders.conv(added, 4, "conv1"), name="relu1"), 4, "conv2", seed=1)
    model = ov.Model([ops.result(y)], [ops6.assign(added, variable)], [x], "stateful")
    q = ovptq.quantize(model, ovptq.Dataset(builders.images(6, shape=(1, 3, 8, 8))), fast_bias_correction=False)
    assert len(q.get_sinks()) == 1 and corrections(q)["conv1"]["method"] == "full"


def test_a_probe_the_plugin_cannot_compile_is_a_typed_error_naming_the_layers():
    from ovptq.bias_correction.probe import BiasProbe
    from ovptq.errors import StatisticsError

    class RefusingCore:
        def compile_model(self, *args):
            raise RuntimeError("no kernel")

    model = builders.bias_correction_block()
    graph = Graph(model.clone())
    layers = find_layers(graph, plan_quantizers(graph, {}))
    probe = BiasProbe(graph.model, layers, RefusingCore())
    items = probe.bind(Dataset(SAMPLES), 2)
    with pytest.raises(StatisticsError, match="could not compile the full bias correction's model of 3 layers "
                                              r"\(from 'conv'\): no kernel"):
        probe.means(items, {layer.node: np.zeros(layer.output_channels) for layer in layers})


def test_a_large_matmul_weight_error_is_summed_in_blocks_of_output_channels():
    from ovptq.bias_correction.correct import ROWS_PER_BLOCK, _matmul_error_shift
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((2 * ROWS_PER_BLOCK + 17, 48)).astype(np.float32)
    dequantized = (np.round(weight * 20) / 20).astype(np.float32)
    mean = rng.standard_normal(48)
    exact = (weight.astype(np.float64) - dequantized) @ mean
    np.testing.assert_allclose(_matmul_error_shift(weight, dequantized, mean, transpose_b=True), exact, rtol=1e-12)
    np.testing.assert_allclose(_matmul_error_shift(weight.T.copy(), dequantized.T.copy(), mean, transpose_b=False),
                               exact, rtol=1e-12)
