"""Graph normalisation: a decomposed and a fused graph of one network get the same quantization."""

import builders
import numpy as np
import pytest

import ovptq
from ovptq.graph.normalize import normalize

DATA = builders.images(8, seed=5, low=-4.0, high=4.0)


def placement(int8):
    """Per linear layer in model order: its type, what feeds its input and its weight; and how many FakeQuantize
    ops there are."""
    layers = [(op.get_type_name(), op.input_value(0).get_node().get_type_name(),
               op.input_value(1).get_node().get_type_name())
              for op in int8.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    return layers, sum(op.get_type_name() == "FakeQuantize" for op in int8.get_ordered_ops())


def test_the_decomposed_form_normalises_to_the_fused_ops():
    model = builders.hswish_block(decomposed=True)
    normalize(model)
    types = [op.get_type_name() for op in model.get_ordered_ops()]
    assert types.count("HSwish") == 1 and types.count("HSigmoid") == 1
    assert not {"Maximum", "Minimum", "Divide", "BatchNormInference"} & set(types)


def test_both_graph_forms_get_the_same_placement_and_run_the_same_int8_layers():
    fused = ovptq.quantize(builders.hswish_block(decomposed=False), ovptq.Dataset(DATA))
    decomposed = ovptq.quantize(builders.hswish_block(decomposed=True), ovptq.Dataset(DATA))
    assert placement(decomposed) == placement(fused)
    assert placement(fused)[0][-1] == ("Convolution", "FakeQuantize", "Multiply")
    reports = [ovptq.inspect(m) for m in (fused, decomposed)]
    assert reports[0].int8_names() == reports[1].int8_names() == {"conv1", "depthwise", "gate_conv", "conv2"}
    assert len(reports[1].standalone_fake_quantize) == len(reports[0].standalone_fake_quantize) == 0


def test_the_read_model_form_and_a_saved_converted_ir_give_the_same_int8_outputs(tmp_path):
    import openvino as ov
    from openvino._offline_transformations import apply_moc_transformations

    decomposed = builders.hswish_block(decomposed=True)
    converted = decomposed.clone()
    apply_moc_transformations(converted, cf=False)  # what ov.convert_model / ovc give
    ov.save_model(converted, tmp_path / "converted.xml", compress_to_fp16=False)
    ir = ov.Core().read_model(tmp_path / "converted.xml")
    int8 = [ovptq.quantize(m, ovptq.Dataset(DATA)) for m in (decomposed, ir)]
    assert placement(int8[0]) == placement(int8[1])
    outputs = [builders.infer(m, DATA[1])[0] for m in int8]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-4 * np.abs(outputs[0]).max())


def test_without_normalisation_quantizers_go_inside_the_decomposed_activation():
    off = ovptq.AdvancedQuantizationParameters(normalize_graph=False)
    int8 = ovptq.quantize(builders.hswish_block(decomposed=True), ovptq.Dataset(DATA), advanced_parameters=off)
    assert placement(int8) != placement(ovptq.quantize(builders.hswish_block(decomposed=True), ovptq.Dataset(DATA)))


def test_an_ignored_name_of_a_fused_op_ignores_the_op_it_was_fused_into():
    model = builders.hswish_block(decomposed=True)
    scope = ovptq.IgnoredScope(names=["conv1"])
    int8 = ovptq.quantize(model, ovptq.Dataset(DATA), ignored_scope=scope)
    assert placement(int8)[0][0] == ("Convolution", "Parameter", "Constant")  # float input and weight
    with pytest.raises(ovptq.errors.IgnoredScopeError, match="no_such_op"):
        ovptq.quantize(model, ovptq.Dataset(DATA), ignored_scope=ovptq.IgnoredScope(names=["no_such_op"]))


def test_the_caller_model_keeps_its_decomposed_form():
    model = builders.hswish_block(decomposed=True)
    before = [(op.get_type_name(), op.get_friendly_name()) for op in model.get_ordered_ops()]
    ovptq.quantize(model, ovptq.Dataset(DATA))
    assert [(op.get_type_name(), op.get_friendly_name()) for op in model.get_ordered_ops()] == before


def test_f16_weights_keep_their_compression_through_normalisation(tmp_path):
    """An IR saved with f16 weights (the ovc default): the passes fold each decompression into an f32 constant, a
    second copy at twice the size; the weights get their f16 constant and Convert back, and the INT8 weights equal
    those made from the same values in f32."""
    import openvino as ov
    ov.save_model(builders.hswish_block(decomposed=False), tmp_path / "fp16.xml")
    compressed = ov.Core().read_model(tmp_path / "fp16.xml")
    working = compressed.clone()
    normalize(working)
    weights = [op.input_value(1).get_node() for op in working.get_ordered_ops()
               if op.get_type_name() in ("Convolution", "GroupConvolution")]
    assert weights and all(w.get_type_name() == "Convert" and w.get_input_element_type(0) == ov.Type.f16
                           for w in weights)
    decompressed = compressed.clone()
    for op in decompressed.get_ordered_ops():  # the same values as plain f32 constants
        if op.get_type_name() == "Convert" and op.get_input_element_type(0) == ov.Type.f16:
            f32 = ov.opset13.constant(op.input_value(0).get_node().get_data().astype(np.float32))
            op.output(0).replace(f32.output(0))
    int8 = [ovptq.quantize(m, ovptq.Dataset(DATA)) for m in (compressed, decompressed)]
    assert builders.ir_bytes(int8[0])[1] == builders.ir_bytes(int8[1])[1]


def test_embedding_tables_keep_their_compression_too(tmp_path):
    """The Gather tables of a decoder saved with f16 weights. (Its MatMul weights, [in, out], are transposed by the
    passes: new values, kept as the passes made them.)"""
    import openvino as ov
    ov.save_model(builders.kv_cache_decoder(), tmp_path / "decoder.xml")  # f16 weights
    working = ov.Core().read_model(tmp_path / "decoder.xml").clone()
    normalize(working)
    tables = [op.input_value(0).get_node() for op in working.get_ordered_ops()
              if op.get_friendly_name().endswith("_lookup")]
    assert len(tables) == 2
    assert all(t.get_type_name() == "Convert" and t.get_input_element_type(0) == ov.Type.f16 for t in tables)
