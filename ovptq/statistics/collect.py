"""The statistics pass: the calibration data through the statistics model, once, on the CPU.

The model is compiled with f32 inference precision and fed through a few asynchronous infer requests; results
are folded in item order, so memory stays flat and nothing depends on the timing. Mean reductions are needed on
the first items only (`mean_items`): a lighter model without them serves the rest.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import openvino as ov

from ovptq.dataset import Dataset, batch_size_of, bind_requests
from ovptq.errors import DatasetError, StatisticsError
from ovptq.inference import AsyncRunner
from ovptq.progress import progress
from ovptq.statistics.aggregate import Aggregates
from ovptq.statistics.compile import compile_config, compile_statistics_model, constant_bytes
from ovptq.statistics.model import StatisticsModel
from ovptq.statistics.reductions import RangeReduction

log = logging.getLogger("ovptq")

# Mean outputs cost at most about this share of a statistics model's inference (benchmarks/README.md): a second
# compilation without them pays off only when it costs less than this share of the remaining inference.
MEANS_SHARE = 0.1

# Models whose constants take at most this many bytes get their two statistics models compiled at once, on two
# threads (the CPU plugin compiles on one): the second compilation then costs no time, for a second set of
# weights in memory while the first items run.
CONCURRENT_COMPILE_BYTES = 256 << 20


def mean_items(subset_size: int) -> int:
    """The first items that mean reductions are taken on: a fifth of the subset, the items full bias correction
    runs through the quantized model again (as the peer's)."""
    return max(1, int(0.2 * subset_size))


def collect_statistics(model: ov.Model, reductions: list, dataset: Dataset, subset_size: int,
                       inference_requests: int | None = None, show_progress: bool | None = None,
                       core: ov.Core | None = None, mean_items: int | None = None,
                       device: str = "CPU") -> tuple[dict, int]:
    """Run up to `subset_size` dataset items; return the value of each reduction and the number of samples seen.

    With `mean_items`, the mean reductions are computed on the first `mean_items` items only: a second compiled
    model without them serves the rest. For a model of at most CONCURRENT_COMPILE_BYTES of constants, both are
    compiled at once at the start; for a larger one, the second is compiled after the first items, unless that
    would cost more than the means it saves, in which case the first model goes on and its means are ignored.
    Either way the results are the same.
    """
    core = core or ov.Core()
    full_model = StatisticsModel(model, reductions)
    aggregates = Aggregates(full_model)
    length = dataset.get_length()
    expected = min(length, subset_size) if length is not None else subset_size
    bar = progress(total=expected, desc="Statistics", unit="item", enabled=show_progress)
    stream = dataset.items(limit=subset_size, stage="the statistics pass")
    limit = mean_items if full_model.mean_outputs and mean_items is not None and mean_items < subset_size else None

    def run(stats_model, compiled, limit, means):
        return _run_phase(stats_model, compiled, stream, limit, aggregates, means, inference_requests, bar)

    def ranges_only() -> StatisticsModel:  # the lighter copy that serves the items after the first mean_items
        return StatisticsModel(model, [r for r in reductions if isinstance(r, RangeReduction)])

    light_model, light = None, None
    config = compile_config(model)
    try:
        started = time.perf_counter()
        if limit is not None and constant_bytes(model) <= CONCURRENT_COMPILE_BYTES:
            light_model = ranges_only()
            with ThreadPoolExecutor(1) as pool:
                light = pool.submit(compile_statistics_model, core, light_model, config, device)
                compiled = compile_statistics_model(core, full_model, config, device)
                light = light.result()
        else:
            compiled = compile_statistics_model(core, full_model, config, device)
        compile_seconds = time.perf_counter() - started
        started = time.perf_counter()
        total_samples, items = run(full_model, compiled, limit, True)
        remaining = expected - items
        if limit is not None and items == limit and remaining > 0:
            per_item = (time.perf_counter() - started) / items
            if light is None and compile_seconds >= MEANS_SHARE * remaining * per_item:
                # A lighter model would save less than its compilation costs: keep this one and ignore its means,
                # so the results never depend on the timing.
                samples, count = run(full_model, compiled, None, False)
            else:
                del compiled  # one compiled model alive from here on
                if light is None:
                    light_model = ranges_only()
                    light = compile_statistics_model(core, light_model, config, device)
                compiled, light = light, None
                samples, count = run(light_model, compiled, None, False)
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
    return aggregates.results(full_model), total_samples


def _run_phase(stats_model: StatisticsModel, compiled: ov.CompiledModel, stream, limit: int | None,
               aggregates: Aggregates, means: bool, inference_requests: int | None, bar) -> tuple[int, int]:
    """Feed up to `limit` items of `stream` (all, if None); fold each result in item order. Returns
    (samples, items)."""
    runner = AsyncRunner(compiled, inference_requests,
                         lambda infer_request: [infer_request.get_output_tensor(i).data.copy()
                                                for i in range(len(stats_model.results))])
    pending: list[tuple[int, int, int]] = []  # (sequence, item index, samples) in feeding order

    def fold_ready(block: bool = False) -> None:
        while pending and (block or runner.ready(pending[0][0])):
            sequence, item_index, samples = pending.pop(0)
            try:
                outputs = runner.pop(sequence)
            except RuntimeError as error:
                raise StatisticsError(f"Inference failed on dataset item {item_index}: {error}") from error
            aggregates.fold(stats_model, outputs, samples, means)

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
