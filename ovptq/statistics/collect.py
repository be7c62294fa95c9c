"""Statistics: one pass of the calibration data through a copy of the model with in-graph reductions.

Every requested tensor gets ReduceMin and ReduceMax ops that keep the batch axis (and the channel axis for
per-channel requests), so each inference returns a few numbers per sample instead of the tensor. The copy is
compiled once on CPU with f32 inference precision and fed through an `ov.AsyncInferQueue`. Results are folded
into running aggregates in item order, so memory stays flat and the result does not depend on request timing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.dataset import Dataset, ModelInput, batch_size_of, bind_inputs
from ovptq.errors import DatasetError, StatisticsError, UnsupportedModelError
from ovptq.progress import progress

log = logging.getLogger("ovptq")


@dataclass(frozen=True)
class TensorRequest:
    """Statistics wanted for output `port` of `producer`: per tensor, or per channel (axis 1)."""

    producer: str
    port: int
    per_channel: bool = False
    quantile: float | None = None   # also the mean per-sample q and 1-q quantiles


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


@dataclass
class _Aggregate:
    request: TensorRequest
    samples: int = 0
    gmin: np.ndarray | None = None
    gmax: np.ndarray | None = None
    sums: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, per_sample: np.ndarray) -> None:
        total = per_sample.astype(np.float64).sum(axis=0)
        self.sums[name] = self.sums[name] + total if name in self.sums else total

    def update(self, mins: np.ndarray, maxs: np.ndarray) -> None:
        self.gmin = mins.min(axis=0) if self.gmin is None else np.minimum(self.gmin, mins.min(axis=0))
        self.gmax = maxs.max(axis=0) if self.gmax is None else np.maximum(self.gmax, maxs.max(axis=0))
        self.add("min", mins)
        self.add("max", maxs)
        self.add("absmax", np.maximum(-mins, maxs))
        self.samples += mins.shape[0]

    def result(self) -> TensorStatistics:
        mean = {k: (v / self.samples).astype(np.float32) for k, v in self.sums.items()}
        return TensorStatistics(self.gmin.astype(np.float32), self.gmax.astype(np.float32), mean["min"],
                                mean["max"], mean["absmax"], mean.get("qlow"), mean.get("qhigh"), self.samples)


def _per_sample(values: np.ndarray, samples: int, reduce) -> np.ndarray:
    """One row per sample: as returned when the tensor keeps the batch axis, else reduced over axis 0 and repeated."""
    values = np.asarray(values, np.float32)
    if values.ndim >= 1 and values.shape[0] == samples:
        return values
    whole = reduce(values.reshape(-1, *values.shape[1:]) if values.ndim else values.reshape(1), axis=0)
    return np.repeat(np.asarray(whole)[None], samples, axis=0)


class StatisticsModel:
    """The copy of the model with reduction outputs, and how to read them back."""

    def __init__(self, model: ov.Model, requests: list[TensorRequest]):
        clone = model.clone()
        by_name = {op.get_friendly_name(): op for op in clone.get_ordered_ops()}
        results, self.outputs = [], []
        for request in requests:
            output = by_name[request.producer].output(request.port)
            rank = output.get_partial_shape().rank
            if rank.is_dynamic:
                raise UnsupportedModelError(f"Output {request.port} of '{request.producer}' has a dynamic rank; "
                                            "ovptq needs tensors of known rank. Reshape the model to a static "
                                            "rank (model.reshape) before quantizing.")
            if output.get_element_type() != ov.Type.f32:
                output = ops.convert(output, ov.Type.f32).output(0)
            keep = (0, 1) if request.per_channel and rank.get_length() >= 2 else (0,)
            axes = [a for a in range(rank.get_length()) if a not in keep]
            for kind, reduce in (("min", ops.reduce_min), ("max", ops.reduce_max)):
                reduced = reduce(output, np.array(axes, np.int64), False).output(0) if axes else output
                results.append(ops.result(reduced))
                self.outputs.append((request, kind))
            if request.quantile is not None:
                results.append(ops.result(output))
                self.outputs.append((request, "raw"))
        self.model = ov.Model(results, clone.get_sinks(), clone.get_parameters(), "ovptq_statistics")
        self.inputs = ModelInput.of(self.model)


def collect_statistics(model: ov.Model, requests: list[TensorRequest], dataset: Dataset, subset_size: int,
                       inference_requests: int | None = None, show_progress: bool | None = None,
                       core: ov.Core | None = None) -> tuple[dict[TensorRequest, TensorStatistics], int]:
    """Run up to `subset_size` dataset items; return statistics per request and the number of samples seen."""
    stats_model = StatisticsModel(model, requests)
    core = core or ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"}
    try:
        compiled = core.compile_model(stats_model.model, "CPU", config)
    except RuntimeError as error:
        raise StatisticsError(f"The CPU plugin could not compile the statistics model: {error}") from error
    jobs = inference_requests or compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    aggregates = {request: _Aggregate(request) for request in requests}
    quantiles = {request for request in requests if request.quantile is not None}

    lock = threading.Lock()
    done: dict[int, tuple[int, int, list[np.ndarray] | BaseException]] = {}
    next_to_fold = 0

    def on_done(request: ov.InferRequest, userdata) -> None:
        sequence, item_index, samples = userdata
        try:
            outputs = [request.get_output_tensor(i).data.copy() for i in range(len(stats_model.outputs))]
        except BaseException as error:  # reported in the main thread
            outputs = error
        with lock:
            done[sequence] = (item_index, samples, outputs)

    def fold_ready() -> None:
        nonlocal next_to_fold
        while True:
            with lock:
                if next_to_fold not in done:
                    return
                item_index, samples, outputs = done.pop(next_to_fold)
            if isinstance(outputs, BaseException):
                raise StatisticsError(f"Inference failed on dataset item {item_index}: {outputs}") from outputs
            _fold(stats_model, aggregates, quantiles, outputs, samples)
            next_to_fold += 1

    queue = ov.AsyncInferQueue(compiled, jobs)
    queue.set_callback(on_done)
    sequence, total_samples, items = 0, 0, 0
    length = dataset.get_length()
    bar = progress(total=min(length, subset_size) if length is not None else subset_size,
                   desc="Statistics", unit="item", enabled=show_progress)
    try:
        for index, item in dataset.items(limit=subset_size):
            for inputs in bind_inputs(item, stats_model.inputs, index):
                feed = {i: inputs[m.name] for i, m in enumerate(stats_model.inputs)}
                try:
                    queue.start_async(feed, userdata=(sequence, index, batch_size_of(inputs)))
                except RuntimeError as error:
                    raise DatasetError(f"Dataset item {index} could not be fed to the model: {error}") from error
                total_samples += batch_size_of(inputs)
                sequence += 1
            items += 1
            bar.update(1)
            fold_ready()
        queue.wait_all()
        fold_ready()
    finally:
        queue.wait_all()
        bar.close()
    if items == 0:
        raise DatasetError("The calibration dataset is empty: it yielded no item. Pass a dataset with at least one "
                           "item (300 or more are recommended).")
    if length is None and items < subset_size or length is not None and length < subset_size:
        log.warning("The dataset has %d items, fewer than subset_size=%d: all of them were used.", items,
                    subset_size)
    return {request: aggregate.result() for request, aggregate in aggregates.items()}, total_samples


def _fold(stats_model: StatisticsModel, aggregates: dict[TensorRequest, _Aggregate],
          quantiles: set[TensorRequest], outputs: list[np.ndarray], samples: int) -> None:
    values: dict[tuple[TensorRequest, str], np.ndarray] = {}
    for (request, kind), output in zip(stats_model.outputs, outputs):
        values[(request, kind)] = output
    for request, aggregate in aggregates.items():
        mins = _per_sample(values[(request, "min")], samples, np.min)
        maxs = _per_sample(values[(request, "max")], samples, np.max)
        _check_finite(request, mins, maxs)
        aggregate.update(mins, maxs)
        if request in quantiles:
            low, high = _sample_quantiles(values[(request, "raw")], samples, request)
            aggregate.add("qlow", low)
            aggregate.add("qhigh", high)


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


def _check_finite(request: TensorRequest, mins: np.ndarray, maxs: np.ndarray) -> None:
    if not (np.all(np.isfinite(mins)) and np.all(np.isfinite(maxs))):
        raise StatisticsError(f"Output {request.port} of '{request.producer}' holds NaN or Inf on the calibration "
                              "data. Check the data (NaN/Inf in the inputs, wrong normalisation) or ignore this node "
                              "with IgnoredScope.")
