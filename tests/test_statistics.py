"""Statistics pass: in-graph reductions, per-sample aggregation, independence from batching."""

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from ovptq.dataset import Dataset
from ovptq.errors import DatasetError, StatisticsError
from ovptq.statistics.collect import collect_statistics
from ovptq.statistics.reductions import MeanReduction, RangeReduction

RELU = RangeReduction("relu1", 0)
RELU_PER_CHANNEL = RangeReduction("relu1", 0, per_channel=True)
INPUT_QUANTILE = RangeReduction("input", 0, quantile=0.01)
REDUCTIONS = [RELU, RELU_PER_CHANNEL, INPUT_QUANTILE]


def relu_values(model, samples):
    """The relu1 output for each sample, computed directly."""
    probe = ov.Model([model.get_ordered_ops()[[op.get_friendly_name() for op in model.get_ordered_ops()]
                                              .index("relu1")].output(0)], model.get_parameters())
    return [builders.infer(probe, s)[0] for s in samples]


def test_statistics_match_a_direct_computation():
    model = builders.dynamic_batch()
    samples = builders.images(6, shape=(1, 3, 8, 8))
    stats, count = collect_statistics(model, REDUCTIONS, Dataset(samples), subset_size=300)
    assert count == 6
    values = relu_values(model, samples)
    relu = stats[RELU]
    assert relu.global_max == pytest.approx(max(v.max() for v in values), rel=1e-6)
    assert relu.mean_max == pytest.approx(np.mean([v.max() for v in values]), rel=1e-5)
    assert relu.mean_min == pytest.approx(np.mean([v.min() for v in values]), abs=1e-6)
    per_channel = stats[RELU_PER_CHANNEL]
    np.testing.assert_allclose(per_channel.global_max, np.max([v.max(axis=(0, 2, 3)) for v in values], axis=0),
                               rtol=1e-6)
    quantile = stats[INPUT_QUANTILE]
    assert quantile.mean_quantile_high == pytest.approx(np.mean([np.quantile(s, 0.99) for s in samples]), rel=1e-5)


@pytest.mark.parametrize("builder", ["dynamic_batch", "static_batch"])
def test_batch_of_n_gives_the_same_statistics_as_n_batches_of_one(builder):
    model = builders.dynamic_batch()
    if builder == "static_batch":
        model.reshape([1, 3, 8, 8])  # a fixed batch of 1: items of 4 samples are split
    samples = builders.images(8, shape=(1, 3, 8, 8))
    batched = [np.concatenate(samples[i:i + 4]) for i in (0, 4)]
    one, count_one = collect_statistics(model, REDUCTIONS, Dataset(samples), subset_size=300)
    four, count_four = collect_statistics(model, REDUCTIONS, Dataset(batched), subset_size=300)
    assert count_one == count_four == 8
    for reduction in REDUCTIONS:
        a, b = one[reduction], four[reduction]
        for field in ("global_min", "global_max", "mean_min", "mean_max", "mean_absmax"):
            np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("length", [5, 1])
def test_a_vector_input_is_one_sample_not_one_sample_per_element(length):
    """A rank-1 input has no batch axis: each item is one sample, whose minimum and maximum span the whole vector
    (averaging per-element extremes shrank ranges to the mean of the data, even for a static length)."""
    x = ops.parameter([length], np.float32, name="input")
    gate = ops.convert(ops.greater(x, np.float32(0.5)), ov.Type.f32, name="gate")
    y = ops.multiply(x, gate, name="y")
    model = builders.model([y], x)
    reductions = [RangeReduction("input", 0), RangeReduction("gate", 0, non_negative=True)]
    rng = np.random.default_rng(0)
    items = [rng.uniform(-2, 2, length).astype(np.float32) for _ in range(4)]
    stats, count = collect_statistics(model, reductions, Dataset(items), subset_size=300)
    assert count == 4
    assert stats[reductions[0]].mean_min == pytest.approx(np.mean([v.min() for v in items]), rel=1e-6)
    assert stats[reductions[0]].mean_max == pytest.approx(np.mean([v.max() for v in items]), rel=1e-6)
    assert stats[reductions[1]].mean_max == pytest.approx(np.mean([float((v > 0.5).any()) for v in items]))


def test_stacked_reductions_of_several_ranks_match_a_direct_computation():
    """A static batch stacks per-tensor reductions by rank (and sign) into a few outputs; each column must still
    be its own tensor's per-sample minimum and maximum."""
    x = ops.parameter([2, 3, 4, 4], np.float32, name="input")
    relu = ops.relu(x, name="relu1")
    flat = ops.reshape(x, np.array([2, 48], np.int64), False, name="flat")
    scaled = ops.multiply(flat, np.float32(-3.0), name="scaled")
    model = builders.model([relu, scaled], x)
    reductions = [RangeReduction("input", 0), RangeReduction("relu1", 0, non_negative=True),
                RangeReduction("flat", 0), RangeReduction("scaled", 0)]
    items = builders.images(3, shape=(2, 3, 4, 4))
    stats, count = collect_statistics(model, reductions, Dataset(items), subset_size=300)
    assert count == 6
    samples = np.concatenate(items).reshape(6, -1)
    direct = {"input": samples, "relu1": np.maximum(samples, 0), "flat": samples, "scaled": -3.0 * samples}
    for reduction in reductions:
        values = direct[reduction.producer]
        got = stats[reduction]
        assert got.global_min == pytest.approx(values.min(), rel=1e-6)
        assert got.global_max == pytest.approx(values.max(), rel=1e-6)
        assert got.mean_min == pytest.approx(values.min(axis=1).mean(), rel=1e-5, abs=1e-7)
        assert got.mean_max == pytest.approx(values.max(axis=1).mean(), rel=1e-5)


def test_subset_size_limits_the_items_and_the_number_of_infer_requests_does_not_matter():
    model = builders.dynamic_batch()
    samples = builders.images(10, shape=(1, 3, 8, 8))
    stats, count = collect_statistics(model, [RELU], Dataset(samples), subset_size=4)
    assert count == 4
    serial, _ = collect_statistics(model, [RELU], Dataset(samples[:4]), subset_size=4, inference_requests=1)
    assert stats[RELU].mean_max == serial[RELU].mean_max  # bit-identical whatever the number of infer requests


def test_generator_dataset_is_consumed_once():
    model = builders.dynamic_batch()
    samples = builders.images(3, shape=(1, 3, 8, 8))
    _, count = collect_statistics(model, [RELU], Dataset(s for s in samples), subset_size=300)
    assert count == 3


def test_empty_dataset_is_a_clear_error():
    with pytest.raises(DatasetError, match="empty"):
        collect_statistics(builders.dynamic_batch(), [RELU], Dataset([]), subset_size=300)


def test_wrong_shape_names_the_input_and_both_shapes():
    bad = [np.zeros((1, 3, 9, 9), np.float32)]
    with pytest.raises(DatasetError, match=r"item 0: input 'input' expects shape \[\?,3,8,8\] but got \[1, 3, 9, 9\]"):
        collect_statistics(builders.dynamic_batch(), [RELU], Dataset(bad), subset_size=300)


def test_nan_in_the_data_is_reported_with_the_item_and_input():
    samples = builders.images(2, shape=(1, 3, 8, 8))
    samples[1][0, 0, 0, 0] = np.nan
    with pytest.raises(DatasetError, match="item 1: input 'input' holds NaN or Inf"):
        collect_statistics(builders.dynamic_batch(), [RELU], Dataset(samples), subset_size=300)


def test_inf_inside_the_model_is_reported_with_the_node():
    x = ops.parameter([1, 4], np.float32, name="input")
    model = builders.model(ops.relu(ops.divide(ops.constant(np.float32(1)), x, name="inverse"), name="relu1"), x)
    with pytest.raises(StatisticsError, match="'relu1' holds NaN or Inf"):
        collect_statistics(model, [RELU], Dataset([np.array([[1, 0, 2, 3]], np.float32)]), subset_size=300)


def test_statistics_model_leaves_the_model_untouched():
    model = builders.dynamic_batch()
    before = len(model.get_ordered_ops())
    collect_statistics(model, REDUCTIONS, Dataset(builders.images(1, shape=(1, 3, 8, 8))), subset_size=1)
    assert len(model.get_ordered_ops()) == before and len(model.outputs) == 1


def test_rank_one_tensor_statistics():
    x = ops.parameter([4], np.float32, name="input")
    model = builders.model(ops.relu(x, name="relu1"), x)
    stats, count = collect_statistics(model, [RELU], Dataset([np.array([1, -2, 3, 0.5], np.float32)]), 300)
    assert stats[RELU].global_max == 3.0 and stats[RELU].global_min == 0.0


def test_known_non_negative_tensor_needs_no_minimum_and_gives_the_same_maximum():
    model = builders.dynamic_batch()
    samples = builders.images(4, shape=(1, 3, 8, 8))
    shortcut = RangeReduction("relu1", 0, non_negative=True)
    stats, _ = collect_statistics(model, [RELU, shortcut], Dataset(samples), subset_size=300)
    assert stats[shortcut].mean_max == stats[RELU].mean_max
    assert stats[shortcut].global_min == 0.0 and stats[shortcut].mean_absmax == stats[RELU].mean_absmax


@pytest.mark.parametrize("concurrent_bytes, means_share", [
    (1 << 30, 0.0),   # small model: both statistics models compiled at once, the lighter one takes over
    (-1, 0.0),        # large model, compiling again costs more than the means: the first model goes on
    (-1, 1e9),        # large model: a lighter model compiled after the first items
])
def test_means_on_the_first_items_only(monkeypatch, concurrent_bytes, means_share):
    from ovptq.statistics import collect
    monkeypatch.setattr(collect, "MEANS_SHARE", means_share)
    monkeypatch.setattr(collect, "CONCURRENT_COMPILE_BYTES", concurrent_bytes)
    compiled = []
    compile_model = collect.compile_statistics_model
    monkeypatch.setattr(collect, "compile_statistics_model", lambda core, m, config, device:
                        compiled.append(len(m.model.outputs)) or compile_model(core, m, config, device))
    model = builders.dynamic_batch()
    samples = builders.images(6, shape=(1, 3, 8, 8))
    mean = MeanReduction("input", 0, "channel")
    stats, count = collect_statistics(model, [RELU, mean], Dataset(samples), subset_size=300, mean_items=2)
    assert count == 6
    np.testing.assert_allclose(stats[mean], np.mean([s.mean(axis=(0, 2, 3)) for s in samples[:2]], axis=0),
                               rtol=1e-5)  # the plugin's f32 ReduceMean sums in another order than numpy
    assert len(compiled) == (1 if concurrent_bytes < 0 and means_share == 0.0 else 2)
    everything, _ = collect_statistics(model, [RELU], Dataset(samples), subset_size=300)
    assert stats[RELU].mean_max == everything[RELU].mean_max  # min/max still see every item


def test_per_sample_means_keep_one_row_per_sample_of_the_first_items():
    model = builders.dynamic_batch()
    samples = builders.images(6, shape=(1, 3, 8, 8))
    rows = MeanReduction("relu1", 0, "channel", per_sample=True)
    batched = [np.concatenate(samples[i:i + 2]) for i in range(0, 6, 2)]  # items of 2 samples: rows per sample
    stats, _ = collect_statistics(model, [RELU, rows], Dataset(batched), subset_size=300, mean_items=2)
    expected = [v.mean(axis=(0, 2, 3)) for v in relu_values(model, samples[:4])]
    assert stats[rows].shape == (4, len(expected[0]))
    np.testing.assert_allclose(stats[rows], expected, rtol=1e-5)


def test_per_channel_rows_along_the_last_axis():
    x = ops.parameter([-1, -1, 4], np.float32, name="x")
    model = ov.Model([ops.result(ops.relu(x, name="relu"))], [x])
    samples = [np.random.default_rng(i).standard_normal((1, 3 + i, 4)).astype(np.float32) for i in range(5)]
    reduction = RangeReduction("x", 0, per_channel=True, axis=-1, rows=True)
    stats, _ = collect_statistics(model, [reduction], Dataset(samples), subset_size=300)
    mins, maxs = stats[reduction].rows
    np.testing.assert_allclose(mins, [s[0].min(axis=0) for s in samples])
    np.testing.assert_allclose(maxs, [s[0].max(axis=0) for s in samples])
    np.testing.assert_allclose(stats[reduction].global_max, np.max([s[0].max(axis=0) for s in samples], axis=0))


def test_one_inference_stream_for_a_model_with_large_activations():
    from ovptq.statistics.compile import ONE_STREAM_ACTIVATION_BYTES, activation_bytes, compile_config

    def relu_model(shape, weight_bytes=0):
        x = ops.parameter(shape, np.float32, name="input")
        y = ops.relu(x, name="relu")
        if weight_bytes:  # f16 weights decompressed by Convert: a constant sub-graph, not an activation
            weight = ops.convert(ops.constant(np.zeros(weight_bytes // 2, np.float16)), ov.Type.f32)
            y = ops.add(y, ops.reduce_sum(weight, np.int64(0), False))
        return builders.model(y, x)

    small = relu_model([1, 8, 64, 64], weight_bytes=2 * ONE_STREAM_ACTIVATION_BYTES)
    assert activation_bytes(small) == 3 * 8 * 64 * 64 * 4  # the input, relu and add; not the f16 weights
    assert compile_config(small)["PERFORMANCE_HINT"] == "THROUGHPUT"
    large = relu_model([1, 64, 1024, 1024])  # 256 MB per tensor
    assert activation_bytes(large) > ONE_STREAM_ACTIVATION_BYTES
    assert compile_config(large) == {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    assert compile_config(relu_model([-1, 64, 1024, 1024]))["PERFORMANCE_HINT"] == "THROUGHPUT"  # dynamic: unknown


def test_an_item_the_model_fails_on_is_named():
    x = ops.parameter([-1], np.float32, name="input")
    rows = ops.reshape(x, np.array([2, -1], np.int64), False, name="rows")
    model = builders.model([ops.relu(rows, name="relu1")], x)
    items = [np.ones(4, np.float32), np.ones(3, np.float32), np.ones(6, np.float32)]  # item 1 has no two rows
    with pytest.raises(StatisticsError, match="Inference failed on dataset item 1"):
        collect_statistics(model, [RELU], Dataset(items), subset_size=300)
