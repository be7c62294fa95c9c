"""The per-layer error report against a direct numpy computation, and the `ovptq report` command."""

import json

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import ovptq
from ovptq.measuring.measure import as_quantized, sqnr_db
from ovptq.report import layer_errors

DATA = builders.images(6, seed=2)


def node(model, name):
    return next(op for op in model.get_ordered_ops() if op.get_friendly_name() == name)


def outputs(model, name):
    probe = ov.Model([ops.result(node(model, name).output(0))], model.get_parameters())
    return [builders.infer(probe, x)[0].astype(np.float64) for x in DATA[:4]]


def fake_quantize(x, low, high, levels):
    """FakeQuantize with equal input and output ranges, in numpy."""
    clipped = np.clip(x, low, high)
    return np.round((clipped - low) / (high - low) * (levels - 1)) / (levels - 1) * (high - low) + low


def test_own_and_accumulated_sqnr_match_a_direct_computation():
    """With cross-layer equalisation on, so that the report's FP32 reference is the equalised network too."""
    model = builders.conv_relu()
    int8 = ovptq.quantize(model, ovptq.Dataset(DATA),
                          advanced_parameters=ovptq.AdvancedQuantizationParameters(cross_layer_equalization=True))
    report = {e.layer: e for e in layer_errors(model, int8, ovptq.Dataset(DATA), samples=4).layers}
    assert set(report) == {"conv1", "conv2"}
    # conv2 alone: its input quantizer (numpy) and int8 weights on the FP32 relu1 output, vs the FP32 conv2
    fq = node(int8, "relu1/fq_output_0")
    low, high = (float(fq.input_value(i).get_node().get_data()) for i in (1, 2))
    weights = node(int8, "conv2").input_value(1)
    probe = ov.Model([ops.result(weights)], [])
    dequantized = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})({})[0]
    x = ops.parameter([1, 8, 16, 16], np.float32)
    conv = ov.Model([ops.convolution(x, ops.constant(dequantized), [1, 1], [1, 1], [1, 1], [1, 1])], [x])
    equalized = as_quantized(model, int8)  # the FP32 network with the INT8 model's equalised weights
    shadow = [builders.infer(conv, fake_quantize(r, low, high, 256).astype(np.float32))[0]
              for r in outputs(equalized, "relu1")]
    expected = sqnr_db(outputs(model, "conv2"), shadow)
    assert report["conv2"].own_sqnr_db == pytest.approx(expected, abs=0.05)
    # accumulated: the INT8 model's conv2 output against the FP32 one
    assert report["conv2"].accumulated_sqnr_db == pytest.approx(
        sqnr_db(outputs(model, "conv2"), outputs(int8, "conv2")), abs=0.05)
    # the first layer sees the FP32 input either way
    assert report["conv1"].own_sqnr_db == pytest.approx(report["conv1"].accumulated_sqnr_db, abs=0.05)


def test_sqnr_definition():
    assert sqnr_db([np.array([3.0, 4.0])], [np.array([3.0, 4.5])]) == pytest.approx(10 * np.log10(25 / 0.25))
    assert sqnr_db([np.ones(3)], [np.ones(3)]) == float("inf")


def test_report_command_writes_json_and_plot(tmp_path):
    from test_cli import ovptq_command
    model = builders.residual_block()
    ov.save_model(model, tmp_path / "fp32.xml", compress_to_fp16=False)
    ov.save_model(ovptq.quantize(model, ovptq.Dataset(DATA)), tmp_path / "int8.xml")
    np.save(tmp_path / "data.npy", np.concatenate(DATA))
    done = ovptq_command("report", tmp_path / "fp32.xml", tmp_path / "int8.xml", "--data", tmp_path / "data.npy",
                         "--samples", "4", "--json", tmp_path / "r.json", "--plot", tmp_path / "r.png")
    assert done.returncode == 0, done.stderr
    assert "To try: ovptq.IgnoredScope(names=[" in done.stdout
    layers = json.loads((tmp_path / "r.json").read_text())["layers"]
    assert [layer["layer"] for layer in layers][:1] == [done.stdout.splitlines()[2].split()[0]]
    assert {layer["layer"] for layer in layers} == {"conv1", "conv2", "conv3", "conv4"}
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_ablation_gain_equals_quantizing_without_that_layer():
    model = builders.conv_relu()
    plain = ovptq.AdvancedQuantizationParameters(disable_bias_correction=True)
    int8 = ovptq.quantize(model, ovptq.Dataset(DATA), advanced_parameters=plain)
    report = layer_errors(model, int8, ovptq.Dataset(DATA), samples=4, ablation=True)
    without_conv2 = ovptq.quantize(model, ovptq.Dataset(DATA), advanced_parameters=plain,
                                   ignored_scope=ovptq.IgnoredScope(names=["conv2"]))

    def output_sqnr(candidate):
        return sqnr_db([builders.infer(model, x)[0] for x in DATA[:4]], [builders.infer(candidate, x)[0]
                                                                         for x in DATA[:4]])
    gain = {e.layer: e.output_gain_db for e in report.layers}["conv2"]
    assert gain == pytest.approx(output_sqnr(without_conv2) - output_sqnr(int8), abs=0.05)
    assert report.ranked()[0].output_gain_db == max(e.output_gain_db for e in report.layers)


def test_plot_leaves_the_matplotlib_backend_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("svg")
    model = builders.conv_relu()
    report = layer_errors(model, ovptq.quantize(model, ovptq.Dataset(DATA)), ovptq.Dataset(DATA), samples=2)
    report.plot(tmp_path / "r.png")
    assert matplotlib.get_backend() == "svg" and (tmp_path / "r.png").stat().st_size > 10_000


def test_smooth_quant_is_found_from_the_rt_info_not_from_op_names():
    model = builders.pre_norm_block()
    samples = builders.outlier_sequences(8)
    int8 = ovptq.quantize(model, ovptq.Dataset(samples), model_type="transformer")
    for op in int8.get_ordered_ops():  # names are the user's to change; the rt_info record stays
        if op.get_friendly_name().endswith("/smooth_quant"):
            op.set_friendly_name(op.get_friendly_name().replace("/smooth_quant", "/renamed"))
    report = {e.layer: e for e in layer_errors(model, int8, ovptq.Dataset(samples), samples=4).layers}
    assert np.isnan(report["ffn1"].own_sqnr_db) and np.isnan(report["proj2"].own_sqnr_db)  # 1/s inside producers
    assert np.isnan(report["proj1"].accumulated_sqnr_db)  # it took proj2's 1/s: it outputs y / s
    # ffn2 reads x / s from a Multiply: its shadow applies it too, so its own error is small
    assert report["ffn2"].own_sqnr_db > 25 and report["ffn2"].accumulated_sqnr_db > 20


def test_ablation_ranks_every_quantizer_including_those_of_an_add():
    model = builders.residual_block()
    plain = ovptq.AdvancedQuantizationParameters(disable_bias_correction=True, safety_net=False)
    int8 = ovptq.quantize(model, ovptq.Dataset(DATA), advanced_parameters=plain)
    report = layer_errors(model, int8, ovptq.Dataset(DATA), samples=4, ablation=True)
    gains = {q.quantizer: q for q in report.quantizers}
    fq_names = {op.get_friendly_name() for op in int8.get_ordered_ops() if op.get_type_name() == "FakeQuantize"}
    assert fq_names <= set(gains) and {"conv1/fq_weights_1", "conv4/fq_weights_1"} <= set(gains)
    on_add = [q for q in report.quantizers if "Add" in q.feeds and q.feeds.startswith("activation")]
    assert on_add  # a quantizer no layer owns is ranked too
    bypassed = int8.clone()
    fq = node(bypassed, on_add[0].quantizer)
    for target in list(fq.output(0).get_target_inputs()):
        target.replace_source_output(fq.input_value(0))

    def output_sqnr(candidate):
        return sqnr_db([builders.infer(model, x)[0] for x in DATA[:4]], [builders.infer(candidate, x)[0]
                                                                         for x in DATA[:4]])
    assert on_add[0].output_gain_db == pytest.approx(output_sqnr(bypassed) - output_sqnr(int8), abs=0.05)
    assert [q.output_gain_db for q in report.quantizers] == sorted((q.output_gain_db for q in report.quantizers),
                                                                   reverse=True)
    assert "Every quantizer" in str(report) and json.loads(report.to_json())["quantizers"]
