"""Weight rounding with error feedback: the column-by-column math, the patches a convolution's H is built from, and
the option end to end."""

import json

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import builders
import ovptq
import ovptq.report
from ovptq.errors import ParameterError
from ovptq.ranges import rounding
from ovptq.ranges.rounding import (RoundedLayer, conv_patches, input_second_moments, output_error,
                                   round_with_error_feedback)


def test_feedback_moves_the_first_columns_error_onto_the_second():
    # H = [[1, .5], [.5, 1]]: H^-1 = U^T U with U[0, 1] / U[0, 0] = -1/2. Column 0: 0.36 / 0.1 rounds to 4, error
    # -0.04; column 1 becomes 0.06 - 0.04 * 1/2 = 0.04, which rounds to 0 (nearest rounding gives 1).
    rows, scale, moments = np.array([[0.36, 0.06]]), np.array([[0.1]]), np.array([[1.0, 0.5], [0.5, 1.0]])
    integers = round_with_error_feedback(rows, scale, moments, limit=127, damping=0.0)
    assert integers.tolist() == [[4.0, 0.0]]
    # output errors: nearest dW = (-0.04, -0.04): 0.0048; feedback dW = (-0.04, 0.06): 0.0028
    assert output_error(rows, np.array([[4.0, 1.0]]), scale, moments) == pytest.approx(0.0048)
    assert output_error(rows, integers, scale, moments) == pytest.approx(0.0028)


def test_uncorrelated_inputs_give_nearest_rounding():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((6, 20))
    scale = np.abs(rows).max(axis=1, keepdims=True) / 127
    moments = np.diag(rng.uniform(0.5, 2.0, 20))
    integers = round_with_error_feedback(rows, scale, moments, limit=127)
    assert np.array_equal(integers, np.clip(np.round(rows / scale), -127, 127))


def test_correlated_inputs_get_a_smaller_output_error_within_the_limit():
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((2000, 4)) @ rng.standard_normal((4, 48))  # rank-4 inputs in 48 dimensions
    moments = inputs.T @ inputs / len(inputs)
    rows = rng.standard_normal((16, 48))
    scale = np.abs(rows).max(axis=1, keepdims=True) / 63.5  # 7-bit weights: |integers| <= 64
    nearest = np.clip(np.round(rows / scale), -64, 64)
    integers = round_with_error_feedback(rows, scale, moments, limit=64)
    assert np.abs(integers).max() <= 64
    assert output_error(rows, integers, scale, moments) < 0.2 * output_error(rows, nearest, scale, moments)


@pytest.mark.parametrize("strides, dilations, pads", [((1, 1), (1, 1), (1, 1)), ((2, 2), (1, 1), (1, 0)),
                                                      ((1, 2), (2, 2), (2, 1))])
def test_patches_times_the_weight_rows_are_the_convolution(strides, dilations, pads):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    weight = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    data = ops.parameter(x.shape, np.float32)
    conv = ops.convolution(data, ops.constant(weight), list(strides), [pads[0]] * 2, [pads[1]] * 2, list(dilations))
    expected = builders.infer(ov.Model([conv], [data]), [x])[0]  # [N, O, oh, ow]
    patches = conv_patches(x, (3, 3), strides, dilations, (pads[0],) * 2, (pads[1],) * 2, max_positions=10**6)
    produced = weight.reshape(5, -1) @ patches  # [O, N * oh * ow], batch-major positions
    assert np.allclose(produced, expected.transpose(1, 0, 2, 3).reshape(5, -1), atol=1e-4)


def test_patches_are_read_at_evenly_spaced_positions_when_there_are_many():
    x = np.arange(1 * 1 * 10 * 10, dtype=np.float32).reshape(1, 1, 10, 10)
    patches = conv_patches(x, (1, 1), (1, 1), (1, 1), (0, 0), (0, 0), max_positions=4)
    assert patches.tolist() == [[0.0, 33.0, 66.0, 99.0]]


def test_second_moments_are_those_of_each_layers_input_vectors():
    model, items = builders.matmul_block(), None
    data_shape = tuple(model.input(0).get_shape())
    items = [np.random.default_rng(i).standard_normal(data_shape).astype(np.float32) for i in range(12)]
    matmul = next(op for op in model.get_ordered_ops() if op.get_type_name() == "MatMul")
    layer = RoundedLayer(matmul.get_friendly_name(), "MatMul", tuple(matmul.get_input_shape(1)),
                         transpose_b=matmul.get_attributes()["transpose_b"])
    moments = input_second_moments(model, [layer], ovptq.Dataset(items), 10, ov.Core())
    probe = ov.Model([ops.result(matmul.input_value(0))], model.get_parameters())
    rows = np.concatenate([builders.infer(probe, [item])[0].reshape(-1, 16) for item in items[:10]])
    assert np.allclose(moments[layer.node], rows.T.astype(np.float64) @ rows / len(rows), rtol=1e-5, atol=1e-6)
    # 3 items give 12 input vectors for 16 weight columns: too few to estimate H, the layer keeps nearest rounding
    assert input_second_moments(model, [layer], ovptq.Dataset(items), 3, ov.Core()) == {}


def smooth_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """Images whose neighbouring pixels are correlated (box-blurred noise): a convolution's input patches then have
    strongly correlated entries, as on real images."""
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(count):
        noise = rng.standard_normal((1, 3, 20, 20))
        blurred = sum(noise[:, :, i:i + 16, j:j + 16] for i in range(5) for j in range(5)) / 5
        result.append(blurred.astype(np.float32))
    return result


def quantized(rounding: str) -> ov.Model:
    parameters = ovptq.AdvancedQuantizationParameters(weight_rounding=rounding, safety_net=False)
    return ovptq.quantize(builders.conv_relu(), ovptq.Dataset(smooth_images(24)), advanced_parameters=parameters)


def test_error_feedback_lowers_each_layers_output_error_and_keeps_int8_convolutions():
    nearest, feedback = quantized("nearest"), quantized("error_feedback")
    assert not nearest.has_rt_info(["ovptq", "weight_rounding"])
    records = json.loads(feedback.get_rt_info(["ovptq", "weight_rounding"]).astype(str))
    assert [r["layer"] for r in records] == ["conv1", "conv2"]
    assert all(r["error_after"] < r["error_before"] for r in records)
    assert builders.ir_bytes(feedback)[1] != builders.ir_bytes(nearest)[1]  # other int8 weights
    assert len(ovptq.inspect(feedback).int8_linear) == 2
    assert builders.ir_bytes(quantized("error_feedback")) == builders.ir_bytes(feedback)  # the same IR again


def test_the_report_gives_each_layers_rounding_gain_from_the_record():
    feedback = quantized("error_feedback")
    records = {r["layer"]: r for r in json.loads(feedback.get_rt_info(["ovptq", "weight_rounding"]).astype(str))}
    report = ovptq.report.layer_errors(builders.conv_relu(), feedback, ovptq.Dataset(smooth_images(4)), samples=4)
    gains = {e.layer: e.rounding_gain_db for e in report.layers}
    for layer, record in records.items():
        assert gains[layer] == pytest.approx(10 * np.log10(record["error_before"] / record["error_after"]))
    assert "round" in str(report).splitlines()[1] and "error-feedback rounding" in str(report)
    plain = ovptq.report.layer_errors(builders.conv_relu(), quantized("nearest"), ovptq.Dataset(smooth_images(4)),
                                      samples=4)
    assert all(e.rounding_gain_db is None for e in plain.layers) and "round" not in str(plain).splitlines()[1]


def test_error_feedback_brings_the_model_closer_to_fp32():
    fp32, items = builders.conv_relu(), smooth_images(8, seed=5)
    reference = [builders.infer(fp32, [item])[0] for item in items]

    def error(model_):
        return sum(float(np.sum((builders.infer(model_, [item], emulated=True)[0] - ref) ** 2))
                   for item, ref in zip(items, reference))

    assert error(quantized("error_feedback")) < error(quantized("nearest"))


def test_layers_with_rows_longer_than_the_bound_keep_nearest_rounding(monkeypatch):
    monkeypatch.setattr(rounding, "MAX_COLUMNS", 30)  # conv1 reads 3 x 3 x 3 = 27 values, conv2 8 x 3 x 3 = 72
    records = json.loads(quantized("error_feedback").get_rt_info(["ovptq", "weight_rounding"]).astype(str))
    assert [r["layer"] for r in records] == ["conv1"]


def test_an_unknown_rounding_is_refused_with_the_valid_ones():
    with pytest.raises(ParameterError, match="weight_rounding='gptq' is not valid; use one of 'auto', "
                                             "'nearest', 'error_feedback'"):
        ovptq.AdvancedQuantizationParameters(weight_rounding="gptq").normalized()


def quantized_with_net(rounding: str, **thresholds) -> ov.Model:
    """conv_relu quantized with a safety net that always ends unhealthy and never floats a layer."""
    measuring = ovptq.MeasuringParameters(healthy_db=100.0, max_float_units=0, **thresholds)
    parameters = ovptq.AdvancedQuantizationParameters(weight_rounding=rounding, measuring=measuring)
    return ovptq.quantize(builders.conv_relu(), ovptq.Dataset(smooth_images(24)), advanced_parameters=parameters)


def test_the_safety_net_keeps_error_feedback_when_it_measures_better():
    auto = quantized_with_net("auto", min_gain_db=0.2)   # it gains 0.5 dB on this small network
    net = json.loads(auto.get_rt_info(["ovptq", "safety_net"]).astype(str))
    assert net["rounding"].startswith("error feedback kept") and net["repairs"] == []
    assert auto.has_rt_info(["ovptq", "weight_rounding"])  # the per-layer record, as ovptq report reads it
    # the same int8 weights and biases as asking for error feedback
    assert builders.ir_bytes(auto)[1] == builders.ir_bytes(quantized_with_net("error_feedback", min_gain_db=0.2))[1]


def test_error_feedback_the_net_does_not_measure_better_is_left_out():
    auto = quantized_with_net("auto", min_gain_db=60.0)
    net = json.loads(auto.get_rt_info(["ovptq", "safety_net"]).astype(str))
    assert net["rounding"].startswith("error feedback not kept")
    assert not auto.has_rt_info(["ovptq", "weight_rounding"])
    assert builders.ir_bytes(auto)[1] == builders.ir_bytes(quantized_with_net("nearest", min_gain_db=60.0))[1]
    nearest = json.loads(quantized_with_net("nearest").get_rt_info(["ovptq", "safety_net"]).astype(str))
    assert "rounding" not in nearest
