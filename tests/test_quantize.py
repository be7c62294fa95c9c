"""The public API end to end: quantize, options, errors, and the INT8 proof on the CPU plugin."""

import json
import logging

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import ovptq
from ovptq.errors import DatasetError, IgnoredScopeError, ModelError, ParameterError


def serialized(model, tmp_path, name):
    path = tmp_path / f"{name}.xml"
    ov.save_model(model, path, compress_to_fp16=False)
    return path.read_bytes() + path.with_suffix(".bin").read_bytes()


def quantize(model, count=8, shape=(1, 3, 16, 16), **kwargs):
    return ovptq.quantize(model, ovptq.Dataset(builders.images(count, shape=shape)), **kwargs)


def test_conv_runs_int8_in_the_runtime_model():
    report = ovptq.inspect(quantize(builders.residual_block()))
    assert len(report.linear) == 4
    assert report.coverage == 1.0
    assert {layer.precision.lower() for layer in report.int8_linear} <= {"u8", "i8"}
    assert not report.standalone_fake_quantize


def test_float_model_reports_no_int8():
    report = ovptq.inspect(builders.residual_block())
    assert report.coverage == 0.0 and "0/4" in str(report)


def test_int8_output_stays_close_to_float():
    model = builders.residual_block()
    data = builders.images(1, seed=5)[0]
    reference = builders.infer(model, data)[0]
    int8 = builders.infer(quantize(model, count=16), data)[0]
    relative_rms_error = np.sqrt(np.mean((int8 - reference) ** 2)) / np.std(reference)
    assert relative_rms_error < 0.05


def test_weights_are_stored_as_int8_with_a_per_channel_scale():
    q = quantize(builders.conv_relu())
    int8 = [op for op in q.get_ordered_ops() if op.get_type_name() == "Constant"
            and op.get_output_element_type(0) == ov.Type.i8]
    assert len(int8) == 2
    scale = next(op for op in q.get_ordered_ops() if op.get_friendly_name() == "conv2/fq_weights_1/scale")
    assert list(scale.get_output_shape(0)) == [8, 1, 1, 1]
    assert sum(op.get_type_name() == "FakeQuantize" for op in q.get_ordered_ops()) == 2
    first = next(op for op in int8 if op.get_friendly_name().startswith("conv1"))
    assert np.abs(first.get_data()).max() <= 64  # overflow fix on the first layer: 7-bit weights


def test_caller_model_is_never_modified(tmp_path):
    model = builders.residual_block()
    before = serialized(model, tmp_path, "before")
    quantize(model)
    assert serialized(model, tmp_path, "after") == before


def test_saved_ir_round_trips_and_records_parameters(tmp_path):
    q = quantize(builders.depthwise_block(), count=5, preset="mixed")
    ov.save_model(q, tmp_path / "int8.xml")
    loaded = ov.Core().read_model(tmp_path / "int8.xml")
    assert loaded.get_rt_info(["ovptq", "quantization", "preset"]).astype(str) == "mixed"
    assert loaded.get_rt_info(["ovptq", "quantization", "samples_used"]).astype(str) == "5"
    assert loaded.get_rt_info(["ovptq", "version"]).astype(str) == ovptq.__version__
    data = builders.images(1, seed=9)[0]
    np.testing.assert_allclose(builders.infer(loaded, data)[0], builders.infer(q, data)[0], rtol=1e-5, atol=1e-5)
    assert ovptq.inspect(tmp_path / "int8.xml").coverage == 1.0


def test_model_from_a_path(tmp_path):
    ov.save_model(builders.conv_relu(), tmp_path / "fp32.xml", compress_to_fp16=False)
    assert ovptq.inspect(quantize(str(tmp_path / "fp32.xml"))).coverage == 1.0


def test_f16_compressed_ir_is_quantized_through_its_decompression(tmp_path):
    ov.save_model(builders.conv_relu(), tmp_path / "fp16.xml")  # compress_to_fp16 by default
    assert ovptq.inspect(quantize(tmp_path / "fp16.xml")).coverage == 1.0


def test_samples_counted_per_sample_not_per_item():
    data = [np.concatenate(builders.images(4, shape=(1, 3, 8, 8), seed=s)) for s in range(3)]
    q = ovptq.quantize(builders.dynamic_batch(), ovptq.Dataset(data), subset_size=2)
    assert q.get_rt_info(["ovptq", "quantization", "samples_used"]).astype(str) == "8"


@pytest.mark.parametrize("item", ["tuple", "dict", "dict_by_friendly_name"])
def test_multi_input_items_as_tuple_or_dict(item):
    a, b = builders.images(2, shape=(1, 3, 8, 8))
    data = {"tuple": (a, b), "dict": {"a": a, "b": b}, "dict_by_friendly_name": {"a": a, "b": b}}[item]
    q = ovptq.quantize(builders.two_inputs(), ovptq.Dataset([data] * 3))
    assert ovptq.inspect(q).coverage == 1.0


def test_transform_fn_is_applied():
    raw = [{"image": img[0].transpose(1, 2, 0)} for img in builders.images(3)]
    dataset = ovptq.Dataset(raw, lambda item: item["image"].transpose(2, 0, 1)[None])
    assert ovptq.inspect(ovptq.quantize(builders.conv_relu(), dataset)).coverage == 1.0


def test_enums_accept_their_string_values_and_each_option_takes_effect():
    advanced = ovptq.AdvancedQuantizationParameters(overflow_fix="disable", activations_range_estimator="minmax")
    data = builders.images(8, low=-0.25, high=1.0)
    q = ovptq.quantize(builders.residual_block(), ovptq.Dataset(data), preset="MIXED", target_device="cpu",
                       model_type="transformer", advanced_parameters=advanced)
    recorded = {key: q.get_rt_info(["ovptq", "quantization", *key.split("/")]).astype(str) for key in (
        "preset", "target_device", "model_type", "advanced_parameters/overflow_fix",
        "advanced_parameters/activations_range_estimator")}
    assert recorded == {"preset": "mixed", "target_device": "CPU", "model_type": "transformer",
                        "advanced_parameters/overflow_fix": "disable",
                        "advanced_parameters/activations_range_estimator": "minmax"}
    ops_by_name = {op.get_friendly_name(): op for op in q.get_ordered_ops()}
    assert np.abs(ops_by_name["conv1/fq_weights_1/int8"].get_data()).max() == 127  # no 7-bit first layer
    float_rules = json.loads(q.get_rt_info(["ovptq", "transformer_rules"]).astype(str))
    assert float_rules["add"] == "model_type=transformer keeps Add float"          # the residual Add: float inputs
    assert all(ops_by_name["add"].input_value(port).get_node().get_type_name() != "FakeQuantize" for port in (0, 1))
    fq = ops_by_name["conv1"].input_value(0).get_node()
    low, high = (float(fq.input_value(port).get_node().get_data()) for port in (1, 2))
    data = np.stack(data)
    assert low <= data.min() and high >= data.max()                     # minmax: the extremes of all samples
    assert high - low < 1.01 * (data.max() - data.min())                 # mixed: asymmetric, not [-ih, ih]


def test_ignored_scope_keeps_named_layers_float():
    scope = ovptq.IgnoredScope(names=["conv2"], types=["MaxPool"], validate=False)
    report = ovptq.inspect(quantize(builders.residual_block(), ignored_scope=scope))
    assert "conv2" not in report.int8_names() and {"conv1", "conv3", "conv4"} <= report.int8_names()


def test_ignored_scope_patterns_and_subgraphs():
    scope = ovptq.IgnoredScope(patterns=["conv[34]"])
    assert ovptq.inspect(quantize(builders.residual_block(), ignored_scope=scope)).int8_names() == {"conv1", "conv2"}
    scope = ovptq.IgnoredScope(subgraphs=[ovptq.Subgraph(inputs=["conv2"], outputs=["add"])])
    assert ovptq.inspect(quantize(builders.residual_block(), ignored_scope=scope)).int8_names() == {"conv1", "conv4"}


def test_unknown_ignored_names_are_all_listed():
    scope = ovptq.IgnoredScope(names=["conv2", "no_such_conv"], patterns=["nothing.*"], types=["LSTMSequence"])
    with pytest.raises(IgnoredScopeError) as error:
        quantize(builders.residual_block(), ignored_scope=scope)
    message = str(error.value)
    assert "'no_such_conv'" in message and "'nothing.*'" in message and "'LSTMSequence'" in message
    assert "'conv2'" not in message


def test_ignoring_a_weight_constant_warns(caplog):
    scope = ovptq.IgnoredScope(names=["conv2/weight"])
    with caplog.at_level(logging.WARNING, logger="ovptq"):
        quantize(builders.residual_block(), ignored_scope=scope)
    assert "conv2/weight" in caplog.text and "not an op ovptq quantizes" in caplog.text


def test_model_without_quantizable_ops_is_returned_unchanged_with_a_warning(caplog, tmp_path):
    model = builders.no_quantizable_op()
    with caplog.at_level(logging.WARNING, logger="ovptq"):
        q = ovptq.quantize(model, ovptq.Dataset(builders.images(2, shape=(1, 3, 8, 8))))
    assert "no op ovptq can quantize" in caplog.text
    assert serialized(q, tmp_path, "q") == serialized(model, tmp_path, "m")


def test_a_model_returned_unchanged_keeps_the_callers_op_names():
    x = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    twice = ops.relu(ops.relu(x, name="same"), name="same")  # two ops of one name: ovptq's copy renames one
    model = builders.model(ops.sigmoid(twice, name="sigmoid"), x)
    q = ovptq.quantize(model, ovptq.Dataset(builders.images(2, shape=(1, 3, 8, 8))))
    assert [op.get_friendly_name() for op in q.get_ordered_ops()] == \
        [op.get_friendly_name() for op in model.get_ordered_ops()]
    assert q is not model


def test_empty_dataset():
    with pytest.raises(DatasetError, match="empty"):
        ovptq.quantize(builders.conv_relu(), ovptq.Dataset([]))


def test_item_that_does_not_fit_names_the_input_and_shape():
    with pytest.raises(DatasetError, match=r"input 'input' expects shape \[1,3,16,16\] but got \[3, 16, 16\]"):
        ovptq.quantize(builders.conv_relu(), ovptq.Dataset([np.zeros((3, 16, 16), np.float32)]))


def test_wrong_number_of_inputs_and_unknown_keys():
    a = builders.images(1, shape=(1, 3, 8, 8))[0]
    with pytest.raises(DatasetError, match="single array but the model has 2 inputs"):
        ovptq.quantize(builders.two_inputs(), ovptq.Dataset([a]))
    with pytest.raises(DatasetError, match=r"keys \['c'\] that are not model inputs"):
        ovptq.quantize(builders.two_inputs(), ovptq.Dataset([{"a": a, "c": a}]))


def test_transform_fn_failure_names_the_item_and_keeps_the_cause():
    def transform(item):
        if item == 2:
            raise KeyError("label")
        return builders.images(1)[0]
    with pytest.raises(DatasetError, match="item 2") as error:
        ovptq.quantize(builders.conv_relu(), ovptq.Dataset(range(5), transform))
    assert isinstance(error.value.__cause__, KeyError)


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "fast"}, "preset='fast' is not valid; use one of 'performance', 'mixed'"),
    ({"target_device": "TPU"}, "target_device='TPU' is not valid"),
    ({"model_type": "cnn"}, "model_type='cnn' is not valid; use one of 'transformer'"),
    ({"subset_size": 0}, "subset_size=0 must be a positive integer"),
    ({"subset_size": 2.5}, "subset_size=2.5 must be a positive integer"),
    ({"ignored_scope": ["conv1"]}, "ignored_scope must be an ovptq.IgnoredScope"),
    ({"advanced_parameters": {"overflow_fix": "enable"}}, "advanced_parameters must be"),
])
def test_bad_arguments_are_typed_errors(kwargs, message):
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace("[", r"\[")):
        quantize(builders.conv_relu(), **kwargs)


def test_bad_model_arguments(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        quantize(tmp_path / "missing.xml")
    ov.save_model(builders.conv_relu(), tmp_path / "m.xml")
    (tmp_path / "m.bin").unlink()
    with pytest.raises(ModelError, match="no weights file 'm.bin'"):
        quantize(tmp_path / "m.xml")
    with pytest.raises(ParameterError, match="model must be an openvino.Model"):
        quantize(42)
    with pytest.raises(ParameterError, match="must be an ovptq.Dataset"):
        ovptq.quantize(builders.conv_relu(), builders.images(2))


def test_ignored_scope_field_must_be_a_list():
    with pytest.raises(ParameterError, match=r"names=\['conv1'\]"):
        ovptq.IgnoredScope(names="conv1")


def test_deconvolution_runs_int8_with_symmetric_inputs_and_output_channel_axis_1():
    q = quantize(builders.deconvolution_block(), shape=(1, 3, 8, 8))
    report = ovptq.inspect(q)
    assert "deconv" in report.int8_names() and report.coverage == 1.0
    scale = next(op for op in q.get_ordered_ops() if op.get_friendly_name() == "deconv/fq_weights_1/scale")
    assert list(scale.get_output_shape(0)) == [1, 4, 1, 1]


def test_the_summary_names_the_model_by_its_file_or_its_own_name_and_can_be_shown_alone(tmp_path, caplog):
    """The one-line summary goes to the 'ovptq.summary' logger: at INFO on that logger alone it is the only line.
    It names a model read from a file by the file, and a model with a frontend's generic name as 'the model'."""
    path = tmp_path / "det.xml"
    ov.save_model(builders.conv_relu(), path, compress_to_fp16=False)
    data = ovptq.Dataset(builders.images(4))
    logging.getLogger("ovptq").setLevel(logging.WARNING)
    try:
        with caplog.at_level(logging.INFO, logger="ovptq.summary"):
            ovptq.quantize(path, data)
            generic = builders.conv_relu()
            generic.set_friendly_name("onnx_Frontend_IR")
            ovptq.quantize(generic, data)
            named = builders.conv_relu()
            named.set_friendly_name("my_detector")
            ovptq.quantize(named, data)
    finally:
        logging.getLogger("ovptq").setLevel(logging.NOTSET)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert [r.name for r in caplog.records if r.levelno == logging.INFO] == ["ovptq.summary"] * 3
    assert infos[0].startswith("Quantized 'det.xml' in ") and infos[1].startswith("Quantized the model in ")
    assert infos[2].startswith("Quantized 'my_detector' in ")
