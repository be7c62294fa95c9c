"""Vocabulary tables read by Gather: int8 rows with one scale each, the lookup itself left as it was."""

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops

import ovptq
from ovptq.graph.graph import Graph
from ovptq.hardware import EMBEDDING_MIN_ROWS
from ovptq.placement.placer import plan_quantizers
from ovptq.placement.plan import QuantizationPlan, WeightQuantizer

WIDTH = 8


def embedding_model(rows: int = EMBEDDING_MIN_ROWS) -> tuple[ov.Model, np.ndarray]:
    """token ids -> Gather(table) -> MatMul; also a small constant Gather (shape arithmetic) that must stay."""
    table = np.random.default_rng(0).normal(size=(rows, WIDTH)).astype(np.float32)
    table[1] = 0.0  # an all-zero row
    ids = ops.parameter([1, -1], np.int64, name="input_ids")
    lookup = ops.gather(ops.constant(table, name="table"), ids, np.int64(0), name="lookup")
    picked = ops.gather(ops.constant(np.arange(6, dtype=np.float32).reshape(3, 2), name="small"),
                        np.int64(1), np.int64(0), name="constant_lookup")
    shifted = ops.add(lookup, ops.reduce_sum(picked, np.int64(0), False), name="shifted")
    return builders.model(builders.linear(shifted, 4, "fc"), ids), table


def token_items(count: int = 4, rows: int = EMBEDDING_MIN_ROWS) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"input_ids": rng.integers(0, rows, size=(1, 7)).astype(np.int64)} for _ in range(count)]


def test_plan_compresses_a_vocabulary_table_by_row():
    model, _ = embedding_model()
    plan = plan_quantizers(Graph(model.clone()), {})
    assert WeightQuantizer("lookup", 0, (0,), embedding=True) in plan.weights
    assert "lookup:0 axes [0] embedding" in str(plan)
    assert QuantizationPlan.from_json(plan.to_json()) == plan
    assert not any(w.node == "constant_lookup" for w in plan.weights)


def test_small_tables_and_ignored_lookups_stay_float():
    small, _ = embedding_model(rows=EMBEDDING_MIN_ROWS - 1)
    assert not any(w.embedding for w in plan_quantizers(Graph(small.clone()), {}).weights)
    model, _ = embedding_model()
    ignored = plan_quantizers(Graph(model.clone()), {"lookup": "IgnoredScope names"})
    assert not any(w.embedding for w in ignored.weights)


def test_table_rows_become_int8_times_their_scale(caplog):
    model, table = embedding_model()
    with caplog.at_level("INFO", logger="ovptq"):
        quantized = ovptq.quantize(model, ovptq.Dataset(token_items()))
    assert "1 layers with int8 weights" in caplog.text and "1 embedding tables in int8" in caplog.text
    lookup = next(op for op in quantized.get_ordered_ops() if op.get_friendly_name() == "lookup")
    scale_multiply = lookup.input_value(0).get_node()
    convert = scale_multiply.input_value(0).get_node()
    integers = convert.input_value(0).get_node().get_data()
    scale = scale_multiply.input_value(1).get_node().get_data()
    assert integers.dtype == np.int8 and integers.shape == table.shape and scale.shape == (len(table), 1)
    absmax = np.abs(table).max(axis=1, keepdims=True)
    nonzero = absmax[:, 0] > 0.01 * absmax.max()
    np.testing.assert_allclose(scale[nonzero], absmax[nonzero] / 127, rtol=1e-6)
    assert np.abs(integers[nonzero]).max(axis=1).min() == 127
    np.testing.assert_array_equal(integers[1], 0)  # the zero row stays exactly zero
    assert np.abs(integers * scale - table).max() <= scale.max() / 2 + 1e-7


def test_quantized_lookup_stays_close_to_fp32():
    model, _ = embedding_model()
    items = token_items()
    quantized = ovptq.quantize(model, ovptq.Dataset(items))
    for item in items:
        reference, = builders.infer(model, item)
        got, = builders.infer(quantized, item, emulated=True)
        assert np.abs(got - reference).max() < 0.05 * np.abs(reference).max()
