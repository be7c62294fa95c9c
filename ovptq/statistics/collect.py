"""Statistics: one pass of the calibration data through a copy of the model with in-graph reductions.

Every requested tensor gets ReduceMin and ReduceMax ops that keep the batch axis (and the channel axis for
per-channel requests), so each inference returns a few numbers per sample instead of the tensor. The copy is
compiled once on CPU with f32 inference precision and fed through an `ov.AsyncInferQueue`. Results are folded
into running aggregates in item order, so memory stays flat and the result does not depend on request timing.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.dataset import BATCH_MIN_RANK, Dataset, ModelInput, batch_size_of, bind_requests
from ovptq.errors import DatasetError, StatisticsError, UnsupportedModelError
from ovptq.inference import AsyncRunner
from ovptq.progress import progress

log = logging.getLogger("ovptq")

FOLD_EVERY = 64

# Mean outputs cost at most about this share of a statistics model's inference (7% on ResNet-50): a second
# compilation without them pays off only when it costs less than this share of the remaining inference.
MEANS_SHARE = 0.1

# Models whose constants take at most this many bytes get their two statistics models compiled at once, on two
# threads (the CPU plugin compiles on one): the second compilation then costs no time (MobileNetV2: 0.30 s to
# 0.17 s for both) for a second set of weights in memory while the first items run. ResNet-50 (102 MB) stays at
# 400 MB of peak memory this way (NNCF: 676 MB) and no longer pauses after the first items to compile.
CONCURRENT_COMPILE_BYTES = 256 << 20

# A model whose float activations add up to more than this per sample gets one inference stream (both cores on one
# inference) instead of two: each stream holds its own activations. On PP-OCRv4 det (435 MB of activations) one
# stream takes peak memory from 862 to 530 MB (NNCF: 723) for 15% more time; ResNet-50 (144 MB) keeps two, which
# are 10% faster there.
ONE_STREAM_ACTIVATION_BYTES = 256 << 20


@dataclass(frozen=True)
class TensorRequest:
    """Statistics wanted for output `port` of `producer`: per tensor, or per channel (along `axis`)."""

    producer: str
    port: int
    per_channel: bool = False
    quantile: float | None = None   # also the mean per-sample q and 1-q quantiles
    non_negative: bool = False      # known >= 0 (after ReLU, Sigmoid, ...): no ReduceMin, the minimum is 0
    axis: int = 1                   # the channel axis of per-channel statistics (-1: features of a MatMul input)
    rows: bool = False              # also keep every sample's minima and maxima ([samples, C])


@dataclass(frozen=True)
class MeanRequest:
    """The mean over samples of a linear reduction of output `port` of `producer`.

    kind "channel": mean over every axis but 1, shape [C]; "channel_abs": the same of |x|;
    "last": mean over every axis but the last, shape [K] (the input of a MatMul); "last_abs": the same of |x|;
    "taps": for the input of a convolution with the given geometry, the mean of the input values that each kernel
    tap sees over all output positions (zero padding included), shape [C, *kernel]. For any kernel V of that
    convolution, sum(V[o] * taps) is then exactly the mean of output channel o of conv(x, V).

    With `per_sample`, the result keeps one row per sample ([samples, ...]) instead of their mean.
    """

    producer: str
    port: int
    kind: str
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    dilations: tuple[int, ...] = ()
    pads_begin: tuple[int, ...] = ()
    pads_end: tuple[int, ...] = ()
    per_sample: bool = False


@dataclass
class TensorStatistics:
    """Aggregates over samples. Per-channel statistics are arrays of shape [C]; per-tensor ones are scalars."""

    global_min: np.ndarray
    global_max: np.ndarray
    mean_min: np.ndarray
    mean_max: np.ndarray
    mean_absmax: np.ndarray
    mean_quantile_low: np.ndarray | None = None
    mean_quantile_high: np.ndarray | None = None
    samples: int = 0
    rows: tuple[np.ndarray, np.ndarray] | None = None  # per-sample (minima, maxima), if requested

    @staticmethod
    def of_rows(mins: np.ndarray, maxs: np.ndarray) -> "TensorStatistics":
        """The per-tensor statistics of samples whose minima and maxima are given ([samples])."""
        mins, maxs = np.asarray(mins, np.float64), np.asarray(maxs, np.float64)
        return TensorStatistics(np.float32(mins.min()), np.float32(maxs.max()), np.float32(mins.mean()),
                                np.float32(maxs.mean()), np.float32(np.maximum(-mins, maxs).mean()),
                                samples=len(mins))


@dataclass
class _Aggregate:
    """Running aggregates of per-sample values of shape [N, ...]: memory does not grow with N. Updates are buffered
    and folded FOLD_EVERY at a time, so the Python work per inference stays small."""

    samples: int = 0
    gmin: np.ndarray | None = None
    gmax: np.ndarray | None = None
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    rows: list[np.ndarray] = field(default_factory=list)
    min_rows: list[np.ndarray] | None = None  # kept when the request wants its rows
    max_rows: list[np.ndarray] | None = None
    pending: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, name: str, per_sample: np.ndarray) -> None:
        total = per_sample.astype(np.float64).sum(axis=0)
        self.sums[name] = self.sums[name] + total if name in self.sums else total

    def update(self, mins: np.ndarray, maxs: np.ndarray) -> None:
        self.pending.append((mins, maxs))
        if len(self.pending) >= FOLD_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        mins = np.concatenate([m for m, _ in self.pending])
        maxs = np.concatenate([m for _, m in self.pending])
        self.pending.clear()
        self.gmin = mins.min(axis=0) if self.gmin is None else np.minimum(self.gmin, mins.min(axis=0))
        self.gmax = maxs.max(axis=0) if self.gmax is None else np.maximum(self.gmax, maxs.max(axis=0))
        self.add("min", mins)
        self.add("max", maxs)
        self.add("absmax", np.maximum(-mins, maxs))
        self.samples += mins.shape[0]
        if self.min_rows is not None:
            self.min_rows.append(mins.copy())
            self.max_rows.append(maxs.copy())

    def result(self, column: int | None = None) -> TensorStatistics:
        """The statistics (of one column, for stacked per-tensor groups)."""
        self.flush()

        def pick(value):
            return (value if column is None else value[..., column]).astype(np.float32)
        mean = {k: pick(v / self.samples) for k, v in self.sums.items()}
        rows = None if self.min_rows is None else (np.concatenate(self.min_rows), np.concatenate(self.max_rows))
        return TensorStatistics(pick(self.gmin), pick(self.gmax), mean["min"], mean["max"], mean["absmax"],
                                mean.get("qlow"), mean.get("qhigh"), self.samples, rows)


def _per_sample(values: np.ndarray, samples: int, reduce) -> np.ndarray:
    """One row per sample: as returned when the tensor keeps the batch axis, else reduced over axis 0 and repeated."""
    values = np.asarray(values, np.float32)
    if values.ndim >= 1 and values.shape[0] == samples:
        return values
    whole = reduce(values.reshape(-1, *values.shape[1:]) if values.ndim else values.reshape(1), axis=0)
    return np.repeat(np.asarray(whole)[None], samples, axis=0)


@dataclass
class _OutputGroup:
    """Requests whose per-sample minima (and maxima) come back in one output each.

    A stacked group holds per-tensor requests on tensors of one rank R >= 2 with the model's static batch size:
    their [N, 1, ...] reductions are concatenated in the graph into one [N, T, 1, ...] output (read as [N, T]),
    so the pass returns two arrays instead of 2T.
    """

    requests: list[TensorRequest]
    stacked: bool
    min_output: int = -1
    max_output: int = -1


class StatisticsModel:
    """The copy of the model with reduction outputs, and how to read them back."""

    def __init__(self, model: ov.Model, requests: list):
        """Outputs come in a fixed order: min/max groups, quantile tensors, then means, so a model built from the
        same TensorRequests plus MeanRequests reads its first outputs exactly like one built without the means."""
        clone = model.clone()
        by_name = {op.get_friendly_name(): op for op in clone.get_ordered_ops()}
        batch = _static_batch(clone)
        self.results: list = []
        self.groups: list[_OutputGroup] = []
        self.raw_outputs: dict[TensorRequest, int] = {}
        self.mean_outputs: dict[MeanRequest, tuple[int, slice]] = {}  # output, and its channels in that output
        stacked: dict[tuple[bool, int], _OutputGroup] = {}  # by (non_negative, rank)
        stacked_reductions: dict[tuple[bool, int, str], list] = {}
        raw = []
        for request in [r for r in requests if isinstance(r, TensorRequest)]:
            output = _float_output(by_name[request.producer].output(request.port), request)
            rank = output.get_partial_shape().rank.get_length()
            per_channel = request.per_channel and rank >= 2
            first = output.get_partial_shape()[0] if rank else None
            stackable = (batch is not None and not per_channel and rank >= 2 and first.is_static
                         and first.get_length() == batch)
            kinds = (("max", ops.reduce_max),) if request.non_negative else (("min", ops.reduce_min),
                                                                             ("max", ops.reduce_max))
            if stackable:
                key = (request.non_negative, rank)
                stacked.setdefault(key, _OutputGroup([], stacked=True)).requests.append(request)
                for kind, reduce in kinds:
                    stacked_reductions.setdefault((*key, kind), []).append(_reduce_to_column(output, rank, reduce))
            else:
                reduced = {kind: _reduce(output, rank, per_channel, reduce, request.axis) for kind, reduce in kinds}
                group = _OutputGroup([request], stacked=False)
                group.min_output = self._add(reduced["min"]) if "min" in reduced else -1
                group.max_output = self._add(reduced["max"])
                self.groups.append(group)
            if request.quantile is not None:
                raw.append((request, output))
        for (non_negative, rank), group in stacked.items():
            if not non_negative:
                group.min_output = self._add(ops.concat(stacked_reductions[(False, rank, "min")], 1).output(0))
            group.max_output = self._add(ops.concat(stacked_reductions[(non_negative, rank, "max")], 1).output(0))
            self.groups.append(group)
        for request, output in raw:
            self.raw_outputs[request] = self._add(output)
        stacked_means: dict[tuple, list[tuple[MeanRequest, ov.Output]]] = {}
        for request in [r for r in requests if isinstance(r, MeanRequest)]:
            output = _float_output(by_name[request.producer].output(request.port), request)
            mean = _mean_reduction(output, request)
            shape = mean.get_partial_shape()
            if batch is not None and shape.rank.get_length() >= 2 and shape.is_static and \
                    shape[0].get_length() == batch:
                # same trailing shape: concatenated along axis 1 into one output, as the stacked minima and maxima
                stacked_means.setdefault(tuple(shape.to_shape())[2:], []).append((request, mean))
            else:
                self.mean_outputs[request] = (self._add(mean), slice(None))
        for members in stacked_means.values():
            index = self._add(ops.concat([mean for _, mean in members], 1).output(0))
            start = 0
            for request, mean in members:
                width = mean.get_partial_shape()[1].get_length()
                self.mean_outputs[request] = (index, slice(start, start + width))
                start += width
        self.model = ov.Model(self.results, clone.get_sinks(), clone.get_parameters(), "ovptq_statistics")
        self.inputs = ModelInput.of(self.model)

    def _add(self, output: ov.Output) -> int:
        self.results.append(ops.result(output))
        return len(self.results) - 1


def _reduce_to_column(output: ov.Output, rank: int, reduce) -> ov.Output:
    """[N, 1, ...] (rank kept): one reduction over every axis but the batch, which the CPU plugin runs as one
    pass over the tensor. Columns of the same rank are concatenated along axis 1 without any reshape, which
    would cost a layout reorder per tensor (measured on ResNet-50: 7% over plain inference for the stacked
    columns, against 15% with two-stage reductions and an Unsqueeze)."""
    return reduce(output, np.arange(1, rank, dtype=np.int64), True).output(0)


def _reduce(output: ov.Output, rank: int, per_channel: bool, reduce, axis: int = 1) -> ov.Output:
    """Reduce to [N, C] (per channel along `axis`) or [N]: spatial axes first, then channels (the CPU plugin
    merges the two into one reduction when nothing else reads the first)."""
    if per_channel and axis % rank != 1:
        axes = np.array([a for a in range(1, rank) if a != axis % rank], np.int64)
        return reduce(output, axes, False).output(0)
    if rank >= 3:
        output = reduce(output, np.arange(2, rank, dtype=np.int64), False).output(0)
    if rank >= 2 and not per_channel:
        output = reduce(output, np.array([1], np.int64), False).output(0)
    return output


def _mean_reduction(output: ov.Output, request: MeanRequest) -> ov.Output:
    """Per-sample [N, ...] reduction of `output` for a MeanRequest (see its docstring)."""
    shape = output.get_partial_shape()
    rank = shape.rank.get_length()
    if request.kind in ("channel_abs", "last_abs"):
        output = ops.abs(output).output(0)
    if request.kind in ("channel", "channel_abs"):
        axes = np.arange(2, rank, dtype=np.int64)
        return ops.reduce_mean(output, axes, False).output(0) if axes.size else output
    if request.kind in ("last", "last_abs"):
        axes = np.arange(1, rank - 1, dtype=np.int64)
        return ops.reduce_mean(output, axes, False).output(0) if axes.size else output
    if request.kind == "taps":
        return _tap_means(output, request)
    raise ValueError(f"unknown mean kind {request.kind!r}")


def _tap_means(x: ov.Output, request: MeanRequest) -> ov.Output:
    """[N, C, *kernel]: for each tap, the mean over output positions of the (zero-padded) input it reads.

    Tap t of a convolution reads x_pad[t * dilation + p * stride] for output positions p. Averaging that over p is
    a convolution of x_pad with a box of ones of the output's size, dilated by the stride and strided by the
    dilation. The box is separable: one depthwise GroupConvolution per spatial axis, each with a 1-D box of that
    axis's output size (on PP-OCRv4 det, 3.5x cheaper than one box over all axes).
    """
    shape = x.get_partial_shape()
    rank = shape.rank.get_length()
    spatial = [shape[i].get_length() for i in range(2, rank)]
    channels = shape[1].get_length()
    if all(k == 1 for k in request.kernel) and all(s == 1 for s in request.strides) and not any(
            request.pads_begin) and not any(request.pads_end):
        mean = ops.reduce_mean(x, np.arange(2, rank, dtype=np.int64), True)
        return mean.output(0)
    outputs = [(size + b + e - d * (k - 1) - 1) // s + 1 for size, b, e, d, k, s in zip(
        spatial, request.pads_begin, request.pads_end, request.dilations, request.kernel, request.strides)]
    taps = x
    for axis, size in enumerate(outputs):
        def along(value, default):  # the convolution attribute: `value` on this axis, `default` on the others
            return [value if a == axis else default for a in range(len(outputs))]
        box = np.full([channels, 1, 1, *along(size, 1)], 1.0 / size, np.float32)
        taps = ops.group_convolution(taps, ops.constant(box), along(request.dilations[axis], 1),
                                     along(request.pads_begin[axis], 0), along(request.pads_end[axis], 0),
                                     along(request.strides[axis], 1)).output(0)
    ends = np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).max, *request.kernel], np.int64)
    begins = np.zeros(len(ends), np.int64)
    return ops.strided_slice(taps, begins, ends, np.ones(len(ends), np.int64), [], []).output(0)


def _float_output(output: ov.Output, request) -> ov.Output:
    if output.get_partial_shape().rank.is_dynamic:
        raise UnsupportedModelError(f"Output {request.port} of '{request.producer}' has a dynamic rank; ovptq needs "
                                    "tensors of known rank. Reshape the model to a static rank (model.reshape) "
                                    "before quantizing.")
    if output.get_element_type() != ov.Type.f32:
        return ops.convert(output, ov.Type.f32).output(0)
    return output


def _static_batch(model: ov.Model) -> int | None:
    """The batch size when every input of rank >= BATCH_MIN_RANK (those with a batch axis, as in `batch_size_of`)
    has the same static leading dimension, else None."""
    firsts = set()
    for parameter in model.get_parameters():
        shape = parameter.get_partial_shape()
        if shape.rank.is_dynamic:
            return None
        if shape.rank.get_length() >= BATCH_MIN_RANK:
            firsts.add(shape[0].get_length() if shape[0].is_static else None)
    return firsts.pop() if len(firsts) == 1 else None


def collect_statistics(model: ov.Model, requests: list, dataset: Dataset, subset_size: int,
                       inference_requests: int | None = None, show_progress: bool | None = None,
                       core: ov.Core | None = None, mean_items: int | None = None) -> tuple[dict, int]:
    """Run up to `subset_size` dataset items; return statistics per request and the number of samples seen.

    A TensorRequest gets TensorStatistics; a MeanRequest gets its mean array (float64). With `mean_items`, the
    MeanRequests are computed on the first `mean_items` items only: a second compiled model without them serves
    the rest. For a model of at most CONCURRENT_COMPILE_BYTES of constants, both are compiled at once at the
    start; for a larger one, the second is compiled after the first items, unless that would cost more than the
    means it saves, in which case the first model goes on and its means are ignored. Either way the results are
    the same.
    """
    core = core or ov.Core()
    full_model = StatisticsModel(model, requests)
    aggregates = [_Aggregate() for _ in full_model.groups]
    for group, aggregate in zip(full_model.groups, aggregates):
        if not group.stacked and group.requests[0].rows:
            aggregate.min_rows, aggregate.max_rows = [], []
    quantile_aggregates = {request: _Aggregate() for request in full_model.raw_outputs}
    mean_aggregates = {request: _Aggregate() for request in full_model.mean_outputs}
    length = dataset.get_length()
    expected = min(length, subset_size) if length is not None else subset_size
    bar = progress(total=expected, desc="Statistics", unit="item", enabled=show_progress)
    stream = dataset.items(limit=subset_size)
    limit = mean_items if full_model.mean_outputs and mean_items is not None and mean_items < subset_size else None

    def run(stats_model, compiled, limit, means):
        folding = {"aggregates": aggregates, "quantiles": quantile_aggregates, "means": means}
        return _run_phase(stats_model, compiled, stream, limit, folding, inference_requests, bar)

    def tensors_only() -> StatisticsModel:  # the lighter copy that serves the items after the first mean_items
        return StatisticsModel(model, [r for r in requests if isinstance(r, TensorRequest)])

    light_model, light = None, None
    config = compile_config(model)
    try:
        started = time.perf_counter()
        if limit is not None and _constant_bytes(model) <= CONCURRENT_COMPILE_BYTES:
            light_model = tensors_only()
            with ThreadPoolExecutor(1) as pool:
                light = pool.submit(_compile, core, light_model, config)
                compiled = _compile(core, full_model, config)
                light = light.result()
        else:
            compiled = _compile(core, full_model, config)
        compile_seconds = time.perf_counter() - started
        started = time.perf_counter()
        total_samples, items = run(full_model, compiled, limit, mean_aggregates)
        remaining = expected - items
        if limit is not None and items == limit and remaining > 0:
            per_item = (time.perf_counter() - started) / items
            if light is None and compile_seconds >= MEANS_SHARE * remaining * per_item:
                # A lighter model would save less than its compilation costs: keep this one and ignore its means,
                # so the results never depend on the timing.
                samples, count = run(full_model, compiled, None, {})
            else:
                del compiled  # one compiled model alive from here on
                if light is None:
                    light_model = tensors_only()
                    light = _compile(core, light_model, config)
                compiled, light = light, None
                samples, count = run(light_model, compiled, None, {})
            total_samples += samples
            items += count
        del compiled, light
    finally:
        bar.close()
    if items == 0:
        raise DatasetError("The calibration dataset is empty: it yielded no item. Pass a dataset with at least one "
                           "item (300 or more are recommended).")
    if length is None and items < subset_size or length is not None and length < subset_size:
        log.warning("The dataset has %d items, fewer than subset_size=%d: all of them were used.", items,
                    subset_size)
    results: dict = _results(full_model, aggregates, quantile_aggregates)
    for request, aggregate in mean_aggregates.items():
        results[request] = np.concatenate(aggregate.rows) if request.per_sample else \
            aggregate.sums["mean"] / aggregate.samples
    return results, total_samples


def _constant_bytes(model: ov.Model) -> int:
    return sum(op.get_byte_size() for op in model.get_ordered_ops() if op.get_type_name() == "Constant")


def activation_bytes(model: ov.Model) -> int:
    """Bytes of the float outputs of one sample's inference (static shapes; constant sub-graphs excluded)."""
    constant: set[str] = set()
    total = 0
    for op in model.get_ordered_ops():
        inputs = [op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size())]
        if op.get_type_name() == "Constant" or inputs and all(name in constant for name in inputs):
            constant.add(op.get_friendly_name())
            continue
        if op.get_type_name() == "Result":
            continue
        for output in op.outputs():
            shape = output.get_partial_shape()
            if shape.is_static and output.get_element_type().is_real():
                total += int(np.prod(shape.to_shape(), dtype=np.int64)) * output.get_element_type().size
    return total


def compile_config(model: ov.Model) -> dict[str, str]:
    """f32 inference; two streams, or one for a model with more than ONE_STREAM_ACTIVATION_BYTES of activations."""
    hint = "LATENCY" if activation_bytes(model) > ONE_STREAM_ACTIVATION_BYTES else "THROUGHPUT"
    return {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint}


def _compile(core: ov.Core, stats_model: StatisticsModel, config: dict[str, str]) -> ov.CompiledModel:
    try:
        return core.compile_model(stats_model.model, "CPU", config)
    except RuntimeError as error:
        raise StatisticsError(f"The CPU plugin could not compile the statistics model: {error}") from error


def _run_phase(stats_model: StatisticsModel, compiled: ov.CompiledModel, stream, limit: int | None,
               folding: dict, inference_requests: int | None, bar) -> tuple[int, int]:
    """Feed up to `limit` items of `stream` (all, if None); fold each result in item order. Returns
    (samples, items)."""
    runner = AsyncRunner(compiled, inference_requests,
                         lambda request: [request.get_output_tensor(i).data.copy()
                                          for i in range(len(stats_model.results))])
    pending: list[tuple[int, int, int]] = []  # (sequence, item index, samples) in feeding order

    def fold_ready(block: bool = False) -> None:
        while pending and (block or runner.ready(pending[0][0])):
            sequence, item_index, samples = pending.pop(0)
            try:
                outputs = runner.pop(sequence)
            except RuntimeError as error:
                raise StatisticsError(f"Inference failed on dataset item {item_index}: {error}") from error
            _fold(stats_model, folding["aggregates"], folding["quantiles"], folding["means"], outputs, samples)

    sequence, total_samples, items = 0, 0, 0
    try:
        while limit is None or items < limit:
            try:
                index, item = next(stream)
            except StopIteration:
                break
            for feed in bind_requests(item, stats_model.inputs, index):
                try:
                    runner.start(feed, sequence)
                except RuntimeError as error:
                    raise DatasetError(f"Dataset item {index} could not be fed to the model: {error}") from error
                samples = batch_size_of(feed)
                pending.append((sequence, index, samples))
                total_samples += samples
                sequence += 1
            items += 1
            bar.update(1)
            fold_ready()
        runner.finish()
        fold_ready(block=True)
    finally:
        runner.finish()
    return total_samples, items


def _fold(stats_model: StatisticsModel, aggregates: list[_Aggregate], quantile_aggregates: dict,
          mean_aggregates: dict, outputs: list[np.ndarray], samples: int) -> None:
    for request, aggregate in mean_aggregates.items():
        index, channels = stats_model.mean_outputs[request]
        values = _per_sample(outputs[index][:, channels] if channels != slice(None) else outputs[index], samples,
                             np.mean)
        if not np.all(np.isfinite(values)):
            raise StatisticsError(f"Output {request.port} of '{request.producer}' holds NaN or Inf on the "
                                  "calibration data. Check the data or keep this node in float with IgnoredScope.")
        if request.per_sample:
            aggregate.rows.append(values.astype(np.float64))
        else:
            aggregate.add("mean", values)
        aggregate.samples += samples
    for group, aggregate in zip(stats_model.groups, aggregates):
        maxs = _per_sample(outputs[group.max_output], samples, np.max)
        mins = _per_sample(outputs[group.min_output], samples, np.min) if group.min_output >= 0 else \
            np.zeros_like(maxs)
        if group.stacked:
            mins, maxs = mins.reshape(samples, -1), maxs.reshape(samples, -1)
        _check_finite(group, mins, maxs)
        aggregate.update(mins, maxs)
    for request, aggregate in quantile_aggregates.items():
        low, high = _sample_quantiles(outputs[stats_model.raw_outputs[request]], samples, request)
        aggregate.add("qlow", low)
        aggregate.add("qhigh", high)
        aggregate.samples += samples


def _results(stats_model: StatisticsModel, aggregates: list[_Aggregate],
             quantile_aggregates: dict) -> dict[TensorRequest, TensorStatistics]:
    results = {}
    for group, aggregate in zip(stats_model.groups, aggregates):
        for column, request in enumerate(group.requests):
            results[request] = aggregate.result(column if group.stacked else None)
    for request, aggregate in quantile_aggregates.items():
        results[request].mean_quantile_low = (aggregate.sums["qlow"] / aggregate.samples).astype(np.float32)
        results[request].mean_quantile_high = (aggregate.sums["qhigh"] / aggregate.samples).astype(np.float32)
    return results


def _sample_quantiles(raw: np.ndarray, samples: int, request: TensorRequest) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample q and 1-q quantiles (per channel: over each channel's values)."""
    raw = np.asarray(raw, np.float32)
    if raw.ndim == 0 or raw.shape[0] != samples:
        raw = np.repeat(raw.reshape(1, -1), samples, axis=0)
    if request.per_channel and raw.ndim >= 2:
        flat = raw.reshape(raw.shape[0], raw.shape[1], -1)
    else:
        flat = raw.reshape(raw.shape[0], -1)
    q = request.quantile
    return np.quantile(flat, q, axis=-1), np.quantile(flat, 1 - q, axis=-1)


def _check_finite(group: _OutputGroup, mins: np.ndarray, maxs: np.ndarray) -> None:
    finite = np.isfinite(mins) & np.isfinite(maxs)
    if finite.all():
        return
    if group.stacked:
        request = group.requests[int(np.argwhere(~finite.reshape(finite.shape[0], -1).all(axis=0))[0, 0])]
    else:
        request = group.requests[0]
    raise StatisticsError(f"Output {request.port} of '{request.producer}' holds NaN or Inf on the calibration data. "
                          "Check the data (wrong normalisation, extreme values) or keep this node in float with "
                          "IgnoredScope.")
