"""Bad input gets a typed error that names the culprit and says what to do; the caller's model is never touched.

Together with the error tests of test_quantize.py (empty dataset, shape that does not fit, wrong number of inputs,
unknown keys, transform_fn failure, unknown preset / device / model_type, bad subset_size, bad ignored_scope type,
bad advanced_parameters type, missing model file, .xml without .bin, non-model arguments, non-Dataset data, unknown
ignored names) these cover the bad inputs users of the peer run into.
"""

import logging
import re

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import ovptq
from ovptq.errors import DatasetError, IgnoredScopeError, ModelError, ParameterError, UnsupportedModelError

IMAGE = builders.images(1)[0]


def quantize(data, model=None, **kwargs):
    return ovptq.quantize(model or builders.conv_relu(), ovptq.Dataset(data), **kwargs)


def serialized(model, tmp_path, name):
    ov.save_model(model, tmp_path / f"{name}.xml", compress_to_fp16=False)
    return (tmp_path / f"{name}.xml").read_bytes(), (tmp_path / f"{name}.bin").read_bytes()


@pytest.mark.parametrize("item, message", [
    (np.array([["a"]]), r"item 0: input 'input' expects f32 but got <U1"),
    (None, r"item 0: input 'input' expects f32 but got object"),
    (np.zeros((1, 3, 16), np.float32), r"expects shape \[1,3,16,16\] but got \[1, 3, 16\]"),
    (IMAGE * np.nan, r"item 0: input 'input' holds NaN or Inf"),
    (np.full_like(IMAGE, np.inf), r"item 0: input 'input' holds NaN or Inf"),
])
def test_bad_items_name_the_item_and_the_input(item, message):
    with pytest.raises(DatasetError, match=message):
        quantize([item])


def test_bad_item_later_in_the_dataset_names_its_index():
    with pytest.raises(DatasetError, match="item 3: input 'input' holds NaN"):
        quantize([IMAGE, IMAGE, IMAGE, IMAGE * np.nan])


def test_inputs_of_one_item_with_different_batches():
    a = builders.images(1, shape=(1, 3, 8, 8))[0]
    with pytest.raises(DatasetError, match=r"inputs disagree on the number of samples .*'a' 2, 'b' 1"):
        quantize([{"a": np.concatenate([a, a]), "b": a}], model=builders.two_inputs())


def test_integer_data_for_a_float_input_is_converted_and_a_constant_input_gives_finite_ranges():
    int8 = quantize([np.ones((1, 3, 16, 16), np.int32)])
    assert ovptq.inspect(int8).coverage == 1.0
    zeros = quantize([np.zeros_like(IMAGE)] * 3)
    for fq in (op for op in zeros.get_ordered_ops() if op.get_type_name() == "FakeQuantize"):
        for port in range(1, 5):
            assert np.all(np.isfinite(fq.input_value(port).get_node().get_data()))


def test_a_dataset_shorter_than_subset_size_warns_and_uses_what_exists(caplog):
    with caplog.at_level(logging.WARNING, logger="ovptq"):
        int8 = quantize([IMAGE, IMAGE], subset_size=10)
    assert "The dataset has 2 items, fewer than subset_size=10: all of them were used." in caplog.text
    assert int8.get_rt_info(["ovptq", "quantization", "samples_used"]).astype(str) == "2"


@pytest.mark.parametrize("kwargs, message", [
    ({"fast_bias_correction": "no"}, "fast_bias_correction must be True or False, not 'no'"),
    ({"subset_size": "300"}, "subset_size='300' must be a positive integer"),
    ({"advanced_parameters": ovptq.AdvancedQuantizationParameters(show_progress="yes")},
     "show_progress must be True, False or None, not 'yes'"),
    ({"advanced_parameters": ovptq.AdvancedQuantizationParameters(quantile_outlier_prob=0.7)},
     r"quantile_outlier_prob=0.7 must be a number in \(0, 0.5\)"),
    ({"advanced_parameters": ovptq.AdvancedQuantizationParameters(weights_range_estimator="mean_minmax")},
     "makes no sense for weights"),
    ({"advanced_parameters": ovptq.AdvancedQuantizationParameters(activations_range_estimator="median")},
     "activations_range_estimator='median' is not valid; use one of 'minmax', 'mean_minmax', 'mean_quantile'"),
])
def test_bad_argument_values(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        quantize([IMAGE], **kwargs)


def test_a_dataset_that_is_not_iterable():
    with pytest.raises(ParameterError, match="data_source must be iterable"):
        ovptq.Dataset(42)


@pytest.mark.parametrize("scope, message", [
    (ovptq.IgnoredScope(types=["Softmax"]), "match no node of the model: types: 'Softmax'"),
    (ovptq.IgnoredScope(patterns=["zzz.*"]), "match no node of the model: patterns: 'zzz.*'"),
    (ovptq.IgnoredScope(subgraphs=[ovptq.Subgraph(inputs=["nope"], outputs=["conv2"])]),
     r"match no node of the model: subgraphs: Subgraph\(inputs=\['nope'\]"),
])
def test_ignored_scope_rules_that_match_nothing(scope, message):
    with pytest.raises(IgnoredScopeError, match=message):
        quantize([IMAGE], ignored_scope=scope)


def test_ignored_scope_rules_that_match_nothing_only_warn_without_validation(caplog):
    with caplog.at_level(logging.WARNING, logger="ovptq"):
        quantize([IMAGE], ignored_scope=ovptq.IgnoredScope(types=["Softmax"], validate=False))
    assert "IgnoredScope rule matches no node: types: 'Softmax'" in caplog.text


def test_ignoring_an_op_ovptq_does_not_quantize_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="ovptq"):
        quantize([IMAGE], ignored_scope=ovptq.IgnoredScope(names=["relu1"]))
    assert "Ignored node 'relu1' (Relu) is not an op ovptq quantizes" in caplog.text


def test_an_already_quantized_model_is_refused():
    int8 = quantize([IMAGE])
    with pytest.raises(UnsupportedModelError, match="already quantized: it holds 2 FakeQuantize ops"):
        quantize([IMAGE], model=int8)


def test_a_dynamic_rank_tensor_on_the_path_is_refused_with_what_to_do():
    x = ops.parameter(ov.PartialShape.dynamic(), np.float32, name="input")
    conv = ops.convolution(x, ops.constant(np.ones((4, 3, 1, 1), np.float32)), [1, 1], [0, 0], [0, 0], [1, 1],
                           name="conv")
    model = builders.model(ops.relu(conv, name="relu"), x)
    with pytest.raises(UnsupportedModelError, match="dynamic rank.*model.reshape"):
        quantize([IMAGE], model=model)


@pytest.mark.parametrize("write, name", [
    (lambda d: ((d / "bad.xml").write_text("<net><garbage"), (d / "bad.bin").write_bytes(b"123")), "bad.xml"),
    (lambda d: (d / "g.onnx").write_bytes(b"\x00\x01garbage"), "g.onnx"),
    (lambda d: (d / "m.txt").write_text("x"), "m.txt"),
])
def test_unreadable_model_files(tmp_path, write, name):
    write(tmp_path)
    with pytest.raises(ModelError, match=f"OpenVINO could not read '.*{name}'"):
        quantize([IMAGE], model=str(tmp_path / name))


def test_a_truncated_weights_file(tmp_path):
    ov.save_model(builders.conv_relu(), tmp_path / "t.xml", compress_to_fp16=False)
    data = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(data[:len(data) // 2])
    with pytest.raises(ModelError, match="could not read"):
        quantize([IMAGE], model=str(tmp_path / "t.xml"))


def test_keyboard_interrupt_during_statistics_leaves_the_model_as_it_was(tmp_path):
    model = builders.conv_relu()
    before = serialized(model, tmp_path, "before")

    def interrupted(index):
        if index == 2:
            raise KeyboardInterrupt
        return IMAGE
    with pytest.raises(KeyboardInterrupt):
        ovptq.quantize(model, ovptq.Dataset(range(5), interrupted))
    assert serialized(model, tmp_path, "after") == before


def attention_items(count=10):
    rng = np.random.default_rng(3)
    return [{"embeddings": rng.standard_normal((1, 4 + i % 5, 16)).astype(np.float32),
             "attention_mask": np.ones((1, 4 + i % 5), np.int64)} for i in range(count)]


@pytest.mark.parametrize("build, data, kwargs", [
    (builders.conv_relu, lambda: builders.images(12, seed=4), {}),
    (builders.conv_relu, lambda: builders.images(12, seed=4), {"fast_bias_correction": False}),
    (builders.attention_block, attention_items, {"model_type": "transformer"}),
])
def test_same_inputs_give_a_bit_identical_ir_whatever_the_parallelism(tmp_path, build, data, kwargs):
    import re
    model = build()  # one model: a rebuilt one would carry other automatic names

    def saved(requests, name):
        advanced = ovptq.AdvancedQuantizationParameters(inference_requests=requests)
        int8 = ovptq.quantize(model, ovptq.Dataset(data()), advanced_parameters=advanced, **kwargs)
        xml, weights = serialized(int8, tmp_path, name)
        return re.sub(rb"<inference_requests value=\"[^\"]*\" />", b"", xml), weights

    assert saved(1, "one") == saved(4, "four") == saved(1, "again")


def test_f64_tensors_stay_float_so_the_model_still_compiles():
    x = ops.parameter([1, 3, 4], np.float64, name="x")
    exp = ops.exp(x, name="exp")
    total = ops.reduce_sum(exp, np.array([2], np.int64), True, name="sum")
    model = builders.model(ops.multiply(ops.log(total, name="log"), total, name="scaled"), x)
    data = [np.random.default_rng(i).standard_normal((1, 3, 4)) for i in range(3)]
    int8 = ovptq.quantize(model, ovptq.Dataset(data))
    assert not any(op.get_type_name() == "FakeQuantize" for op in int8.get_ordered_ops())
    np.testing.assert_allclose(builders.infer(int8, data[0])[0], builders.infer(model, data[0])[0])


@pytest.mark.parametrize("kwargs, stage", [({}, "the statistics pass"),
                                           ({"fast_bias_correction": False}, "full bias correction")])
def test_a_failing_data_source_keeps_its_exception_with_a_note_naming_the_item_and_the_stage(kwargs, stage):
    images = builders.images(6, shape=(1, 4, 9, 9))

    class Camera:  # reiterable; fails on item 4 of every pass after the first, or of the first
        passes = 0

        def __iter__(self):
            Camera.passes += 1
            for index, image in enumerate(images):
                if index == 4 and (stage == "the statistics pass" or Camera.passes > 1):
                    raise ConnectionError("camera unplugged")
                yield image
    with pytest.raises(ConnectionError, match="camera unplugged") as error:
        ovptq.quantize(builders.bias_correction_block(), ovptq.Dataset(Camera()), **kwargs)
    notes = getattr(error.value, "__notes__", [])
    assert any("reading item 4" in note and stage in note for note in notes), notes


def test_a_source_whose_len_cannot_tell_is_read_to_its_end():
    """A tf.data.Dataset of unknown cardinality has __len__ but raises TypeError from it."""
    images = builders.images(5)

    class Stream:
        def __iter__(self):
            return iter(images)

        def __len__(self):
            raise TypeError("The dataset length is unknown.")
    assert ovptq.Dataset(Stream()).get_length() is None
    from_stream = ovptq.quantize(builders.conv_relu(), ovptq.Dataset(Stream()))
    from_list = ovptq.quantize(builders.conv_relu(), ovptq.Dataset(images))
    ranges = [[[op.input_value(i).get_node().get_data().tolist() for i in (1, 2, 3, 4)] for op in m.get_ordered_ops()
               if op.get_type_name() == "FakeQuantize"] for m in (from_stream, from_list)]
    assert ranges[0] and ranges[0] == ranges[1]


def test_the_statistics_device_is_cpu_by_default_and_can_be_named():
    items = builders.images(4)
    named = ovptq.quantize(builders.conv_relu(), ovptq.Dataset(items),
                           advanced_parameters=ovptq.AdvancedQuantizationParameters(statistics_device="CPU"))
    default = ovptq.quantize(builders.conv_relu(), ovptq.Dataset(items))
    fq = [[op.input_value(i).get_node().get_data().tolist() for i in (1, 2)] for m in (named, default)
          for op in m.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    assert fq[:len(fq) // 2] == fq[len(fq) // 2:]
    assert named.get_rt_info(["ovptq", "quantization", "advanced_parameters", "statistics_device"]).astype(str) == "CPU"


@pytest.mark.parametrize("device, message", [
    ("NPU", "'NPU': NPU is not available here; the available devices are CPU"),
    ("HETERO:GPU.1,CPU", "GPU.1 is not available here"),
    ("", "must be an OpenVINO device name"), (3, "must be an OpenVINO device name")])
def test_a_statistics_device_that_is_not_available_names_the_available_ones(device, message):
    if isinstance(device, str) and device and device.split(":")[-1].split(",")[0].split(".")[0] in \
            ov.Core().available_devices:
        pytest.skip(f"{device} is available on this machine")
    with pytest.raises(ParameterError, match=re.escape(message)):
        ovptq.quantize(builders.conv_relu(), ovptq.Dataset(builders.images(4)),
                       advanced_parameters=ovptq.AdvancedQuantizationParameters(statistics_device=device))
