"""Tap means: what the exact weight-error shift of a convolution needs to know about its input (bias correction)."""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.statistics.reductions import MeanReduction


def tap_means(x: ov.Output, reduction: MeanReduction) -> ov.Output:
    """[N, C, *kernel]: for each tap, the mean over output positions of the (zero-padded) input it reads.

    Tap t of a convolution reads x_pad[t * dilation + p * stride] for output positions p. Averaging that over p is
    a convolution of x_pad with a box of ones of the output's size, dilated by the stride and strided by the
    dilation. The box is separable: one depthwise GroupConvolution per spatial axis, each with a 1-D box of that
    axis's output size (cheaper than one box over all axes: benchmarks/README.md).
    """
    shape = x.get_partial_shape()
    rank = shape.rank.get_length()
    if all(k == 1 for k in reduction.kernel) and all(s == 1 for s in reduction.strides) and not any(
            reduction.pads_begin) and not any(reduction.pads_end):
        return ops.reduce_mean(x, np.arange(2, rank, dtype=np.int64), True).output(0)
    if any(shape[i].is_dynamic for i in range(1, rank)):
        return _sliced_tap_means(x, reduction)
    spatial = [shape[i].get_length() for i in range(2, rank)]
    channels = shape[1].get_length()
    outputs = [(size + b + e - d * (k - 1) - 1) // s + 1 for size, b, e, d, k, s in zip(
        spatial, reduction.pads_begin, reduction.pads_end, reduction.dilations, reduction.kernel,
        reduction.strides)]
    taps = x
    for axis, size in enumerate(outputs):
        def along(value, default):  # the convolution attribute: `value` on this axis, `default` on the others
            return [value if a == axis else default for a in range(len(outputs))]
        box = np.full([channels, 1, 1, *along(size, 1)], 1.0 / size, np.float32)
        taps = ops.group_convolution(taps, ops.constant(box), along(reduction.dilations[axis], 1),
                                     along(reduction.pads_begin[axis], 0), along(reduction.pads_end[axis], 0),
                                     along(reduction.strides[axis], 1)).output(0)
    ends = np.array([np.iinfo(np.int64).max, np.iinfo(np.int64).max, *reduction.kernel], np.int64)
    begins = np.zeros(len(ends), np.int64)
    return ops.strided_slice(taps, begins, ends, np.ones(len(ends), np.int64), [], []).output(0)


def _sliced_tap_means(x: ov.Output, reduction: MeanReduction) -> ov.Output:
    """`tap_means` for inputs whose spatial sizes are known only at inference (dynamic shapes).

    The positions that tap t reads form a rectangular grid, so their mean is taken one axis at a time: on each
    axis, tap t's slice x_pad[t * dilation :: stride] of `outputs` elements (computed from the tensor's own
    shape), averaged, and the kernel's taps concatenated in its place.
    """
    taps = ops.pad(x, np.array([0, 0, *reduction.pads_begin], np.int64), np.array([0, 0, *reduction.pads_end],
                                                                                   np.int64), "constant").output(0)
    for axis, (kernel, stride, dilation) in enumerate(zip(reduction.kernel, reduction.strides, reduction.dilations),
                                                      start=2):
        size = ops.gather(ops.shape_of(taps, ov.Type.i64), np.array([axis], np.int64), np.int64(0))
        # the last output position's offset: (outputs - 1) * stride = (size - d * (k - 1) - 1) // s * s
        reach = ops.subtract(size, np.array([dilation * (kernel - 1) + 1], np.int64))
        last = ops.multiply(ops.divide(reach, np.array([stride], np.int64)), np.array([stride], np.int64))
        means = []
        for tap in range(kernel):
            start = np.array([tap * dilation], np.int64)
            stop = ops.add(last, np.array([tap * dilation + 1], np.int64))
            window = ops.slice(taps, start, stop, np.array([stride], np.int64), np.array([axis], np.int64))
            means.append(ops.reduce_mean(window, np.array([axis], np.int64), True))
        taps = ops.concat(means, axis).output(0) if kernel > 1 else means[0].output(0)
    return taps
