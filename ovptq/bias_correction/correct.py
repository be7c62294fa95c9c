"""Bias correction: make the mean of every quantized layer's output channels match FP32. The math of both
corrections and the records they share (`Correction` per layer, `BiasCorrection` for the pipeline state).

Fast (default). For a linear layer y = W (*) x + b and its int8 weights W_q, the error of the output mean is exactly
    shift[o] = E[(W - W_q) (*) x][o] = sum over (c, tap) of (W - W_q)[o, c, tap] * taps[c, tap]
where taps[c, tap] is the mean of the input values kernel tap `tap` reads over all output positions, zero padding
included (`MeanReduction` kind "taps"; for a MatMul, the per-feature input mean). The taps come from the single
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

Activation quantizers stay out of both corrections, by measurement (benchmarks/README.md): the rounding and
clipping error of an activation quantizer is not a constant shift of the next layer's output, so a bias cannot
carry it.

Acceptance, per output channel: a shift is applied when |shift| <= threshold * the channel's output magnitude,
sum |W[o]| * the input's mean per-sample max |x| (the input range is measured for its quantizer anyway), so zero
biases are handled like any other. A layer without a bias gets one when some channel's accepted shift exceeds
`NEW_BIAS_MIN` of that magnitude.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType

import numpy as np

from ovptq.bias_correction.layers import Layer
from ovptq.graph.graph import Graph
from ovptq.hardware import DECONV, GROUP_CONV, MATMUL
from ovptq.rewrite.edits import BiasValue

FAST_THRESHOLD = 0.25
FULL_THRESHOLD = 0.25
NEW_BIAS_MIN = 1e-5  # of the output magnitude: below it the shift is in the noise of float32 arithmetic


@dataclass(frozen=True)
class Correction:
    """What bias correction did to one layer."""

    layer: str
    method: str                 # "fast" or "full"
    max_shift: float            # largest |shift| over channels
    max_relative_shift: float   # largest |shift| / the output's magnitude
    applied_channels: int
    skipped_channels: int
    created_bias: bool
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


ROWS_PER_BLOCK = 1024  # output channels of a MatMul's weight error computed at once


def weight_error_shift(graph: Graph, layer: Layer, weight: np.ndarray, dequantized: np.ndarray,
                       input_mean: np.ndarray) -> np.ndarray:
    """Exact mean error of each output channel caused by the weight quantization (see the module docstring).

    W - W_q is exact in float32: where W_q = 0 it is W, and elsewhere inside the quantizer's range
    |W - W_q| <= step / 2 <= |W_q| / 2 puts W within a factor 2 of W_q (Sterbenz); only the products are summed in
    float64."""
    if layer.layout is MATMUL:
        transpose_b = graph.op(layer.node).get_attributes()["transpose_b"]
        return _matmul_error_shift(weight, dequantized, input_mean, transpose_b)
    delta = np.subtract(weight, dequantized, dtype=np.float32).astype(np.float64)
    if layer.layout is DECONV:
        op = graph.op(layer.node)
        spatial_in = np.prod([d.get_length() for d in list(op.get_input_partial_shape(0))[2:]])
        spatial_out = np.prod([d.get_length() for d in list(op.get_output_partial_shape(0))[2:]])
        # With no padding every (input position, tap) lands inside the output: each tap sees every input value.
        per_channel = delta.sum(axis=tuple(range(2, delta.ndim)))            # [C_in, C_out]
        return (input_mean @ per_channel) * spatial_in / spatial_out
    if layer.layout is GROUP_CONV:
        groups, per_group_out, per_group_in = delta.shape[:3]
        taps = input_mean.reshape(groups, per_group_in, -1)
        return np.einsum("gock,gck->go", delta.reshape(groups, per_group_out, per_group_in, -1), taps).reshape(-1)
    return np.tensordot(delta, input_mean, axes=(tuple(range(1, delta.ndim)), tuple(range(input_mean.ndim))))


def _matmul_error_shift(weight: np.ndarray, dequantized: np.ndarray, input_mean: np.ndarray,
                        transpose_b: bool) -> np.ndarray:
    """(W - W_q) mean(x) for a MatMul's weight ([..., N, K] with transpose_b, else [..., K, N]), in blocks of output
    channels: an LLM's output layer (32000 x 2048) would otherwise hold its difference in float64 whole (0.5 GB)."""
    channels = weight.shape[-2 if transpose_b else -1]
    shift = np.empty((*weight.shape[:-2], channels), np.float64)
    for start in range(0, channels, ROWS_PER_BLOCK):
        block = slice(start, start + ROWS_PER_BLOCK)
        rows = (..., block, slice(None)) if transpose_b else (..., block)
        delta = np.subtract(weight[rows], dequantized[rows], dtype=np.float32).astype(np.float64)
        shift[..., block] = delta @ input_mean if transpose_b else input_mean @ delta
    return shift


def accept(layer: Layer, shift: np.ndarray, magnitude: np.ndarray, threshold: float, method: str,
           has_bias: bool, standard_error: np.ndarray | None = None) -> tuple[np.ndarray, Correction]:
    """The shift to apply (zero where not trusted) and the record of the decision.

    With `standard_error` (a measured shift), a channel whose shift is within two standard errors of zero is noise
    and is left alone.
    """
    relative = np.abs(shift) / np.maximum(magnitude, 1e-12)
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


def output_magnitude(weight: np.ndarray, channel_axes: tuple[int, ...], input_magnitude: float) -> np.ndarray:
    """Per output channel, the magnitude of the acceptance rule: sum |W[o]| (over everything but the output channel)
    x the input's mean per-sample max |x|, the largest |y - b| the channel reaches on typical inputs."""
    reduce_axes = tuple(a for a in range(weight.ndim) if a not in channel_axes)
    return np.abs(weight).sum(axis=reduce_axes, dtype=np.float64).reshape(-1) * input_magnitude


@dataclass(frozen=True)
class BiasCorrection:
    """Where bias correction stands: each layer's bias (float64, per output channel), which layers' biases it
    changed, what it did to each, and each layer's output magnitude (the acceptance rule's measure)."""

    layers: tuple[Layer, ...]
    values: Mapping[str, np.ndarray]
    changed: frozenset[str]
    records: tuple[Correction, ...]
    magnitudes: Mapping[str, np.ndarray]

    def __post_init__(self):
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))
        object.__setattr__(self, "magnitudes", MappingProxyType(dict(self.magnitudes)))

    def edits(self) -> list[BiasValue]:
        """The new bias of every layer a correction changed, for the rewrite."""
        return [BiasValue(layer.node, self.values[layer.node], layer.channel_axis, layer.bias, layer.bias_port,
                          layer.bias_sign) for layer in self.layers if layer.node in self.changed]

    def with_shifts(self, shifts: Mapping[str, np.ndarray]) -> "BiasCorrection":
        """bias += shift per layer; a layer whose shift is all zero keeps its bias as it is."""
        moved = {node: shift for node, shift in shifts.items() if np.any(shift)}
        values = {node: value + moved[node] if node in moved else value for node, value in self.values.items()}
        return replace(self, values=values, changed=self.changed | set(moved))

    def corrected(self) -> int:
        """How many layers had at least one output channel corrected."""
        return sum(record.applied_channels > 0 for record in self.records)

    def has_bias(self, layer: Layer) -> bool:
        """The layer has a bias op in the model: its own, or the Add a correction gives it."""
        return layer.bias is not None or layer.node in self.changed
