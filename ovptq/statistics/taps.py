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
    spatial = [shape[i].get_length() for i in range(2, rank)]
    channels = shape[1].get_length()
    if all(k == 1 for k in reduction.kernel) and all(s == 1 for s in reduction.strides) and not any(
            reduction.pads_begin) and not any(reduction.pads_end):
        return ops.reduce_mean(x, np.arange(2, rank, dtype=np.int64), True).output(0)
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
