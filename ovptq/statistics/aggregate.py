"""Folding per-sample reduction values into running aggregates, in item order, so memory stays flat."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ovptq.errors import StatisticsError
from ovptq.statistics.model import OutputGroup, StatisticsModel
from ovptq.statistics.reductions import OutputValues, RangeReduction, TensorStatistics

FOLD_EVERY = 64


@dataclass
class Aggregate:
    """Running aggregates of per-sample values of shape [N, ...]: memory does not grow with N. Updates are buffered
    and folded FOLD_EVERY at a time, so the Python work per inference stays small."""

    samples: int = 0
    gmin: np.ndarray | None = None
    gmax: np.ndarray | None = None
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    rows: list[np.ndarray] = field(default_factory=list)
    min_rows: list[np.ndarray] | None = None  # kept when the reduction wants its rows
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


class Aggregates:
    """The running aggregates of every reduction of one statistics plan."""

    def __init__(self, stats_model: StatisticsModel):
        self.ranges = [Aggregate() for _ in stats_model.groups]
        for group, aggregate in zip(stats_model.groups, self.ranges):
            if not group.stacked and group.reductions[0].rows:
                aggregate.min_rows, aggregate.max_rows = [], []
        self.quantiles = {reduction: Aggregate() for reduction in stats_model.raw_outputs}
        self.means = {reduction: Aggregate() for reduction in stats_model.mean_outputs}
        self.outputs: dict[OutputValues, list[list[np.ndarray]]] = {
            reduction: [[] for _ in indices] for reduction, indices in stats_model.output_values.items()}

    def fold(self, stats_model: StatisticsModel, outputs: list[np.ndarray], samples: int, means: bool) -> None:
        """Fold one inference's outputs of `stats_model` (its means too when `means`)."""
        for reduction, aggregate in (self.means.items() if means else ()):
            index, channels = stats_model.mean_outputs[reduction]
            values = _per_sample(outputs[index][:, channels] if channels != slice(None) else outputs[index],
                                 samples, np.mean)
            if not np.all(np.isfinite(values)):
                raise StatisticsError(f"Output {reduction.port} of '{reduction.producer}' holds NaN or Inf on the "
                                      "calibration data. Check the data or keep this node in float with "
                                      "IgnoredScope.")
            if reduction.per_sample:
                aggregate.rows.append(values.astype(np.float64))
            else:
                aggregate.add("mean", values)
            aggregate.samples += samples
        for reduction, values in self.outputs.items():
            if reduction in stats_model.output_values and len(values[0]) < reduction.feeds:
                for kept, index in zip(values, stats_model.output_values[reduction]):
                    kept.append(outputs[index])
        for group, aggregate in zip(stats_model.groups, self.ranges):
            maxs = _per_sample(outputs[group.max_output], samples, np.max)
            mins = _per_sample(outputs[group.min_output], samples, np.min) if group.min_output >= 0 else \
                np.zeros_like(maxs)
            if group.stacked:
                mins, maxs = mins.reshape(samples, -1), maxs.reshape(samples, -1)
            _check_finite(group, mins, maxs)
            aggregate.update(mins, maxs)
        for reduction, aggregate in self.quantiles.items():
            low, high = _sample_quantiles(outputs[stats_model.raw_outputs[reduction]], samples, reduction)
            aggregate.add("qlow", low)
            aggregate.add("qhigh", high)
            aggregate.samples += samples

    def results(self, stats_model: StatisticsModel) -> dict:
        """Reduction -> TensorStatistics (range reductions) or float64 array (mean reductions)."""
        results: dict = {}
        for group, aggregate in zip(stats_model.groups, self.ranges):
            for column, reduction in enumerate(group.reductions):
                results[reduction] = aggregate.result(column if group.stacked else None)
        for reduction, aggregate in self.quantiles.items():
            results[reduction] = replace(
                results[reduction], mean_quantile_low=(aggregate.sums["qlow"] / aggregate.samples).astype(np.float32),
                mean_quantile_high=(aggregate.sums["qhigh"] / aggregate.samples).astype(np.float32))
        for reduction, aggregate in self.means.items():
            results[reduction] = np.concatenate(aggregate.rows) if reduction.per_sample else \
                aggregate.sums["mean"] / aggregate.samples
        results.update(self.outputs)
        return results


def _per_sample(values: np.ndarray, samples: int, reduce) -> np.ndarray:
    """One row per sample: as returned when the tensor keeps the batch axis, else reduced over axis 0 and repeated."""
    values = np.asarray(values, np.float32)
    if values.ndim >= 1 and values.shape[0] == samples:
        return values
    whole = reduce(values.reshape(-1, *values.shape[1:]) if values.ndim else values.reshape(1), axis=0)
    return np.repeat(np.asarray(whole)[None], samples, axis=0)


def _sample_quantiles(raw: np.ndarray, samples: int, reduction: RangeReduction) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample q and 1-q quantiles (per channel: over each channel's values)."""
    raw = np.asarray(raw, np.float32)
    if raw.ndim == 0 or raw.shape[0] != samples:
        raw = np.repeat(raw.reshape(1, -1), samples, axis=0)
    if reduction.per_channel and raw.ndim >= 2:
        flat = raw.reshape(raw.shape[0], raw.shape[1], -1)
    else:
        flat = raw.reshape(raw.shape[0], -1)
    q = reduction.quantile
    return np.quantile(flat, q, axis=-1), np.quantile(flat, 1 - q, axis=-1)


def _check_finite(group: OutputGroup, mins: np.ndarray, maxs: np.ndarray) -> None:
    finite = np.isfinite(mins) & np.isfinite(maxs)
    if finite.all():
        return
    if group.stacked:
        reduction = group.reductions[int(np.argwhere(~finite.reshape(finite.shape[0], -1).all(axis=0))[0, 0])]
    else:
        reduction = group.reductions[0]
    raise StatisticsError(f"Output {reduction.port} of '{reduction.producer}' holds NaN or Inf on the calibration "
                          "data. Check the data (wrong normalisation, extreme values) or keep this node in float "
                          "with IgnoredScope.")
