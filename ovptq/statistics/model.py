"""The statistics model: a copy of the model whose outputs are the plan's reductions, done in the graph.

Every range reduction gets ReduceMin and ReduceMax ops that keep the batch axis (and the channel axis when per
channel), so each inference returns a few numbers per sample instead of the tensor. Per-tensor extremes of tensors
of one rank are concatenated into one output, and so are means of one trailing shape, so a pass returns a few
arrays instead of one per tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.dataset import BATCH_MIN_RANK, ModelInput
from ovptq.errors import UnsupportedModelError
from ovptq.statistics.reductions import MeanReduction, OutputValues, RangeReduction
from ovptq.statistics.taps import tap_means


@dataclass
class OutputGroup:
    """Range reductions whose per-sample minima (and maxima) come back in one output each.

    A stacked group holds per-tensor reductions on tensors of one rank R >= 2 with the model's static batch size:
    their [N, 1, ...] reductions are concatenated in the graph into one [N, T, 1, ...] output (read as [N, T]).
    """

    reductions: list[RangeReduction]
    stacked: bool
    min_output: int = -1
    max_output: int = -1


class StatisticsModel:
    """The copy of the model with reduction outputs, and where each reduction's values come back."""

    def __init__(self, model: ov.Model, reductions: list):
        """Outputs come in a fixed order: min/max groups, quantile tensors, means, then the model's own outputs, so a
        model built from the same range reductions plus others reads its first outputs exactly like one built
        without them."""
        clone = model.clone()
        by_name = {op.get_friendly_name(): op for op in clone.get_ordered_ops()}
        batch = static_batch(clone)
        self.results: list = []
        self.groups: list[OutputGroup] = []
        self.raw_outputs: dict[RangeReduction, int] = {}
        self.mean_outputs: dict[MeanReduction, tuple[int, slice]] = {}  # output, and its channels in that output
        stacked: dict[tuple[bool, int], OutputGroup] = {}  # by (non_negative, rank)
        stacked_reductions: dict[tuple[bool, int, str], list] = {}
        raw = []
        for reduction in [r for r in reductions if isinstance(r, RangeReduction)]:
            output = _float_output(by_name[reduction.producer].output(reduction.port), reduction)
            rank = output.get_partial_shape().rank.get_length()
            per_channel = reduction.per_channel and rank >= 2
            first = output.get_partial_shape()[0] if rank else None
            stackable = (batch is not None and not per_channel and rank >= 2 and first.is_static
                         and first.get_length() == batch)
            kinds = (("max", ops.reduce_max),) if reduction.non_negative else (("min", ops.reduce_min),
                                                                               ("max", ops.reduce_max))
            if stackable:
                key = (reduction.non_negative, rank)
                stacked.setdefault(key, OutputGroup([], stacked=True)).reductions.append(reduction)
                for kind, reduce in kinds:
                    stacked_reductions.setdefault((*key, kind), []).append(_reduce_to_column(output, rank, reduce))
            else:
                reduced = {kind: _reduce(output, rank, per_channel, reduce, reduction.axis) for kind, reduce in kinds}
                group = OutputGroup([reduction], stacked=False)
                group.min_output = self._add(reduced["min"]) if "min" in reduced else -1
                group.max_output = self._add(reduced["max"])
                self.groups.append(group)
            if reduction.quantile is not None:
                raw.append((reduction, output))
        for (non_negative, rank), group in stacked.items():
            if not non_negative:
                group.min_output = self._add(ops.concat(stacked_reductions[(False, rank, "min")], 1).output(0))
            group.max_output = self._add(ops.concat(stacked_reductions[(non_negative, rank, "max")], 1).output(0))
            self.groups.append(group)
        for reduction, output in raw:
            self.raw_outputs[reduction] = self._add(output)
        stacked_means: dict[tuple, list[tuple[MeanReduction, ov.Output]]] = {}
        for reduction in [r for r in reductions if isinstance(r, MeanReduction)]:
            output = _float_output(by_name[reduction.producer].output(reduction.port), reduction)
            mean = _mean_reduction(output, reduction)
            shape = mean.get_partial_shape()
            if batch is not None and shape.rank.get_length() >= 2 and shape.is_static and \
                    shape[0].get_length() == batch:
                # same trailing shape: concatenated along axis 1 into one output, as the stacked minima and maxima
                stacked_means.setdefault(tuple(shape.to_shape())[2:], []).append((reduction, mean))
            else:
                self.mean_outputs[reduction] = (self._add(mean), slice(None))
        for members in stacked_means.values():
            index = self._add(ops.concat([mean for _, mean in members], 1).output(0))
            start = 0
            for reduction, mean in members:
                width = mean.get_partial_shape()[1].get_length()
                self.mean_outputs[reduction] = (index, slice(start, start + width))
                start += width
        self.output_values: dict[OutputValues, tuple[int, ...]] = {}  # outputs of the model's own outputs
        for reduction in dict.fromkeys(r for r in reductions if isinstance(r, OutputValues)):
            self.output_values[reduction] = tuple(self._add(result.input_value(0)) for result in clone.get_results())
        self.model = ov.Model(self.results, clone.get_sinks(), clone.get_parameters(), "ovptq_statistics")
        self.inputs = ModelInput.of(self.model)

    def _add(self, output: ov.Output) -> int:
        self.results.append(ops.result(output))
        return len(self.results) - 1


def _reduce_to_column(output: ov.Output, rank: int, reduce) -> ov.Output:
    """[N, 1, ...] (rank kept): one reduction over every axis but the batch, which the CPU plugin runs as one
    pass over the tensor. Columns of one rank are concatenated along axis 1 with no reshape, which would cost a
    layout reorder per tensor."""
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


def _mean_reduction(output: ov.Output, reduction: MeanReduction) -> ov.Output:
    """Per-sample [N, ...] reduction of `output` (see MeanReduction)."""
    shape = output.get_partial_shape()
    rank = shape.rank.get_length()
    if reduction.kind in ("channel_abs", "last_abs"):
        output = ops.abs(output).output(0)
    if reduction.kind in ("channel", "channel_abs"):
        axes = np.arange(2, rank, dtype=np.int64)
        return ops.reduce_mean(output, axes, False).output(0) if axes.size else output
    if reduction.kind in ("last", "last_abs"):
        axes = np.arange(1, rank - 1, dtype=np.int64)
        return ops.reduce_mean(output, axes, False).output(0) if axes.size else output
    if reduction.kind == "taps":
        return tap_means(output, reduction)
    raise ValueError(f"unknown mean kind {reduction.kind!r}")


def _float_output(output: ov.Output, reduction) -> ov.Output:
    if output.get_partial_shape().rank.is_dynamic:
        raise UnsupportedModelError(f"Output {reduction.port} of '{reduction.producer}' has a dynamic rank; ovptq "
                                    "needs tensors of known rank. Reshape the model to a static rank "
                                    "(model.reshape) before quantizing.")
    if output.get_element_type() != ov.Type.f32:
        return ops.convert(output, ov.Type.f32).output(0)
    return output


def static_batch(model: ov.Model) -> int | None:
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
