"""What a stage asks of the statistics pass (reductions of one tensor, done in the graph) and what comes back.

A stage declares reductions; the statistics plan is their union in declaration order, and one inference pass
serves all of them. A `RangeReduction` gives `TensorStatistics`; a `MeanReduction` gives a float64 array; an
`OutputValues` gives the model's outputs on the first feeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RangeReduction:
    """Per-sample extremes of output `port` of `producer`: per tensor, or per channel (along `axis`)."""

    producer: str
    port: int
    per_channel: bool = False
    quantile: float | None = None   # also the mean per-sample q and 1-q quantiles
    non_negative: bool = False      # known >= 0 (after ReLU, Sigmoid, ...): no ReduceMin, the minimum is 0
    axis: int = 1                   # the channel axis of per-channel statistics (-1: features of a MatMul input)
    rows: bool = False              # also keep every sample's minima and maxima ([samples, C])


@dataclass(frozen=True)
class MeanReduction:
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


@dataclass(frozen=True)
class OutputValues:
    """The model's own outputs, as they are, on the first `feeds` infer-request feeds: the FP32 reference that the
    measuring stages compare INT8 models with, at no inference of its own. Its value is, per model output, the list
    of its arrays on those feeds (fewer when the pass saw fewer)."""

    feeds: int


Reduction = RangeReduction | MeanReduction | OutputValues


@dataclass(frozen=True)
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
    rows: tuple[np.ndarray, np.ndarray] | None = None  # per-sample (minima, maxima), if asked for

    @staticmethod
    def of_rows(mins: np.ndarray, maxs: np.ndarray) -> "TensorStatistics":
        """The per-tensor statistics of samples whose minima and maxima are given ([samples])."""
        mins, maxs = np.asarray(mins, np.float64), np.asarray(maxs, np.float64)
        return TensorStatistics(np.float32(mins.min()), np.float32(maxs.max()), np.float32(mins.mean()),
                                np.float32(maxs.mean()), np.float32(np.maximum(-mins, maxs).mean()),
                                samples=len(mins))


@dataclass(frozen=True)
class StatisticsPlan:
    """The reductions of one statistics pass, in declaration order, each with the stages that declared it."""

    reductions: tuple[Reduction, ...] = ()
    declared_by: dict[Reduction, tuple[str, ...]] = field(default_factory=dict, hash=False, compare=False)

    @staticmethod
    def union(declarations: list[tuple[str, list[Reduction]]]) -> "StatisticsPlan":
        """The union of (stage name, reductions) declarations; the first declaration fixes a reduction's place."""
        by: dict[Reduction, tuple[str, ...]] = {}
        for stage, reductions in declarations:
            for reduction in reductions:
                if stage not in by.get(reduction, ()):
                    by[reduction] = (*by.get(reduction, ()), stage)
        return StatisticsPlan(tuple(by), by)

    def __bool__(self) -> bool:
        return bool(self.reductions)

    def __len__(self) -> int:
        return len(self.reductions)

    def __str__(self) -> str:
        ranges = sum(isinstance(r, RangeReduction) for r in self.reductions)
        means = sum(isinstance(r, MeanReduction) for r in self.reductions)
        outputs = [r.feeds for r in self.reductions if isinstance(r, OutputValues)]
        lines = [f"StatisticsPlan: {ranges} range and {means} mean reductions"
                 + (f", the model outputs on {max(outputs)} feeds" if outputs else "")]
        for reduction in self.reductions:
            stages = ", ".join(self.declared_by.get(reduction, ()))
            lines.append(f"  {_describe(reduction):<60} <- {stages}")
        return "\n".join(lines)


def _describe(reduction: Reduction) -> str:
    if isinstance(reduction, OutputValues):
        return f"model outputs on the first {reduction.feeds} feeds"
    where = f"{reduction.producer}:{reduction.port}"
    if isinstance(reduction, MeanReduction):
        return f"mean {reduction.kind}{' per sample' if reduction.per_sample else ''} {where}"
    notes = [("per-channel" if reduction.per_channel else "per-tensor"),
             *(["quantile"] if reduction.quantile is not None else []),
             *(["non-negative"] if reduction.non_negative else []), *(["rows"] if reduction.rows else [])]
    return f"range {' '.join(notes)} {where}"
