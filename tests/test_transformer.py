"""Transformer models end to end: dynamic batch and sequence, integer inputs, INT8 MatMuls, closeness to FP32."""

import builders
import numpy as np
import pytest

import ovptq


def items(count: int = 12, hidden: int = 16, seed: int = 0):
    """Calibration items of different sequence lengths, with a padded tail masked out in some of them."""
    rng = np.random.default_rng(seed)
    result = []
    for i in range(count):
        tokens = 4 + i % 9
        mask = np.ones((1, tokens), np.int64)
        mask[0, tokens - i % 3:] = 0
        result.append({"embeddings": rng.standard_normal((1, tokens, hidden)).astype(np.float32),
                       "attention_mask": mask})
    return result


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


@pytest.mark.parametrize("model_type", [None, "transformer"])
def test_dynamic_shapes_and_integer_inputs_quantize_and_run_int8(model_type):
    model = builders.attention_block()
    calibration = items()
    int8 = ovptq.quantize(model, ovptq.Dataset(calibration), model_type=model_type)
    report = ovptq.inspect(int8)
    # the dense layers run int8; Q x K^T (its quantizers symmetric) runs int8 too where the CPU's kernels take it
    assert {"query", "key", "value", "out", "ffn1", "ffn2"} <= report.int8_names() <= \
        {"query", "key", "value", "out", "ffn1", "ffn2", "scale"}
    for fq in (op for op in int8.get_ordered_ops() if op.get_type_name() == "FakeQuantize"):
        assert fq.input_value(0).get_element_type().is_real()   # nothing quantized on the int64 mask path
    for item in items(4, seed=1):
        assert cosine(builders.infer(int8, item, emulated=True)[0], builders.infer(model, item)[0]) > 0.995


def test_heads_merge_transpose_runs_float_and_the_output_dense_int8():
    int8 = ovptq.quantize(builders.attention_block(), ovptq.Dataset(items()))
    report = ovptq.inspect(int8)
    merge = next(layer for layer in report.layers
                 if layer.layer_type == "Transpose" and "merge" in layer.original_names)
    assert not merge.is_int8          # the CPU's u8 Transpose of a MatMul output is slow: quantized after it instead
    assert next(layer for layer in report.linear if "out/bias" in layer.original_names).is_int8
