"""Bias correction: make the mean of every quantized layer's output channels match FP32.

Fast (default). For a linear layer y = W (*) x + b and its int8 weights W_q, the error of the output mean is exactly
    shift[o] = E[(W - W_q) (*) x][o] = sum over (c, tap) of (W - W_q)[o, c, tap] * taps[c, tap]
where taps[c, tap] is the mean of the input values kernel tap `tap` reads over all output positions, zero padding
included (`MeanRequest` kind "taps"; for a MatMul, the per-feature input mean). The taps come from the single
statistics pass, so the correction costs no inference and no per-layer compilation, depthwise and transposed
convolutions included. b <- b + shift.

Full (`fast_bias_correction=False`). Starting from the fast correction, the model with int8 weights runs on the
first items of the dataset (a fifth of the subset) in a few passes (`FULL_PASSES`), each covering one block of
consecutive topological stages with the blocks before it already corrected. The head layers of a block move
their bias by FP32 mean - quantized mean, paired over the same samples, so they also compensate the errors the
layers before them leave in their input. The FP32 means come from the statistics pass (per-sample rows on those
first items), so only the quantized side is rerun. A shift within two standard errors of zero is noise and is
not applied; layers with one output position per sample (a classifier head) keep their fast correction, since a
few dozen samples cannot estimate their mean shift. Only per-channel means come back from a pass, so memory does
not grow with the number of samples.

Activation quantizers stay out of both corrections, by measurement: matching the output means of the model with
its activation quantizers (stage by stage, int8 kernels) dropped MobileNetV2's top-1 agreement with FP32 from 0.91
(weights only) to 0.80, although it made every layer's mean closer to FP32 on held-out data. The rounding and
clipping error of an activation quantizer is not a constant shift of the next layer's output, so a bias cannot
carry it.

Acceptance, per output channel: a shift is applied when |shift| <= threshold * the channel's output scale,
sum |W[o]| * the input's mean per-sample max |x| (the input range is measured for its quantizer anyway), so zero
biases are handled like any other. A layer without a bias gets one when some channel's accepted shift exceeds
`NEW_BIAS_MIN` of that scale.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.bias_correction.layers import Layer, bias_value
from ovptq.graph.graph import Graph, numpy_dtype

log = logging.getLogger("ovptq")

FAST_THRESHOLD = 0.25
FULL_THRESHOLD = 0.25
NEW_BIAS_MIN = 1e-5  # of the output scale: below it the shift is in the noise of float32 arithmetic


@dataclass
class Correction:
    """What bias correction did to one layer."""

    layer: str
    method: str                 # "fast" or "full"
    max_shift: float            # largest |shift| over channels
    max_relative_shift: float   # largest |shift| / the output's scale
    applied_channels: int
    skipped_channels: int
    created_bias: bool
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def weight_error_shift(graph: Graph, layer: Layer, weight: np.ndarray, dequantized: np.ndarray,
                       input_mean: np.ndarray) -> np.ndarray:
    """Exact mean error of each output channel caused by the weight quantization (see the module docstring).

    W - W_q is exact in float32: where W_q = 0 it is W, and elsewhere inside the quantizer's range
    |W - W_q| <= step / 2 <= |W_q| / 2 puts W within a factor 2 of W_q (Sterbenz); only the products are summed in
    float64."""
    delta = np.subtract(weight, dequantized, dtype=np.float32).astype(np.float64)
    if layer.kind == "matmul":
        transpose_b = graph.op(layer.node).get_attributes()["transpose_b"]
        return delta @ input_mean if transpose_b else input_mean @ delta
    if layer.kind == "deconv":
        op = graph.op(layer.node)
        spatial_in = np.prod(list(op.get_input_shape(0))[2:])
        spatial_out = np.prod(list(op.get_output_shape(0))[2:])
        # With no padding every (input position, tap) lands inside the output: each tap sees every input value.
        per_channel = delta.sum(axis=tuple(range(2, delta.ndim)))            # [C_in, C_out]
        return (input_mean @ per_channel) * spatial_in / spatial_out
    if graph.type(layer.node) == "GroupConvolution":
        groups, per_group_out, per_group_in = delta.shape[:3]
        taps = input_mean.reshape(groups, per_group_in, -1)
        return np.einsum("gock,gck->go", delta.reshape(groups, per_group_out, per_group_in, -1), taps).reshape(-1)
    return np.tensordot(delta, input_mean, axes=(tuple(range(1, delta.ndim)), tuple(range(input_mean.ndim))))


def accept(layer: Layer, shift: np.ndarray, scale: np.ndarray, threshold: float, method: str,
           has_bias: bool, standard_error: np.ndarray | None = None) -> tuple[np.ndarray, Correction]:
    """The shift to apply (zero where not trusted) and the record of the decision.

    With `standard_error` (a measured shift), a channel whose shift is within two standard errors of zero is noise
    and is left alone.
    """
    relative = np.abs(shift) / np.maximum(scale, 1e-12)
    trusted = relative <= threshold
    significant = np.ones_like(trusted) if standard_error is None else np.abs(shift) >= 2 * standard_error
    applied = np.where(trusted & significant, shift, 0.0)
    relative_applied = float(np.max(np.where(trusted & significant, relative, 0.0))) if shift.size else 0.0
    creates = not has_bias and relative_applied >= NEW_BIAS_MIN
    if not has_bias and not creates:
        applied = np.zeros_like(shift)
        reason = f"no bias, and the largest shift is {relative_applied:.1e} of the output scale: negligible"
    else:
        reasons = []
        if not trusted.all():
            reasons.append(f"{int((~trusted).sum())} channels skipped: shift above {threshold} x output scale "
                           f"(up to {float(relative.max()):.2f} x)")
        if not significant.all():
            reasons.append(f"{int((trusted & ~significant).sum())} channels skipped: shift within 2 standard "
                           "errors of zero")
        reason = "; ".join(reasons) or "applied"
    record = Correction(layer.node, method, float(np.max(np.abs(shift))) if shift.size else 0.0,
                        float(relative.max()) if shift.size else 0.0, int(np.count_nonzero(applied)),
                        int((~(trusted & significant)).sum()), creates, reason)
    return applied, record


class Biases:
    """The current bias of each corrected layer, and the ops that hold it in the model.

    Values are tracked here, not read back from the model, so the model only ever gets written.
    """

    def __init__(self, graph: Graph, layers: list[Layer]):
        self.graph = graph
        self.values = {layer.node: bias_value(graph, layer).astype(np.float64) for layer in layers}
        self.original = {node: value.copy() for node, value in self.values.items()}
        self.holders = {layer.node: (graph.op(layer.bias), layer.bias_port, layer.bias_sign)
                        for layer in layers if layer.bias is not None}

    def has_bias(self, layer: Layer) -> bool:
        return layer.node in self.holders

    def add(self, layer: Layer, shift: np.ndarray) -> None:
        """bias += shift (per output channel); a layer without a bias gets a new Add."""
        if not np.any(shift):
            return
        self.values[layer.node] = self.values[layer.node] + shift
        op = self.graph.op(layer.node)
        element_type = op.get_output_element_type(0)
        if layer.node not in self.holders:
            output = op.output(0)
            targets = list(output.get_target_inputs())
            shape = [1] * op.get_output_partial_shape(0).rank.get_length()
            shape[layer.channel_axis] = layer.output_channels
            constant = ops.constant(self.values[layer.node].reshape(shape).astype(numpy_dtype(element_type)),
                                    name=f"{layer.node}/bias_value")
            bias = ops.add(output, constant, name=f"{layer.node}/bias")
            for target in targets:
                target.replace_source_output(bias.output(0))
            self.holders[layer.node] = (bias, 1, 1.0)
            return
        holder, port, sign = self.holders[layer.node]
        old = holder.input(port).get_source_output()
        old_shape = list(old.get_partial_shape().to_shape())
        rank = op.get_output_partial_shape(0).rank.get_length()
        shape = [1] * len(old_shape)
        axis = layer.channel_axis - (rank - len(old_shape))
        if 0 <= axis < len(old_shape):
            shape[axis] = layer.output_channels
        value = np.broadcast_to((self.values[layer.node] * sign).reshape(shape), np.broadcast_shapes(shape, old_shape))
        constant = ops.constant(np.ascontiguousarray(value).astype(numpy_dtype(element_type)),
                                name=f"{holder.get_friendly_name()}/corrected")
        holder.input(port).replace_source_output(constant.output(0))

    def holder_names(self) -> dict[str, str]:
        """Layer -> name of the Add holding its bias."""
        return {node: holder[0].get_friendly_name() for node, holder in self.holders.items()}
