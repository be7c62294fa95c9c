"""Weight rounding with error feedback (`weight_rounding="error_feedback"`): which integer each int8 weight takes,
chosen so that the layer's output error on its calibration inputs is small, not each weight's own error.

For a layer y = W x (x: the input vector one output sees, a convolution's patch of C x kh x kw values), weights
W + dW give the output error E|dW x|^2 = tr(dW H dW^T) with H = E[x x^T], the input's second moments. Rounding the
columns of W one at a time, and moving each column's rounding error e_j onto the columns not yet rounded,
    W[:, k] -= e_j U[j, k] / U[j, j]   for k > j,   with H^-1 = U^T U (U upper triangular),
makes each step the least-error one given the steps before (Optimal Brain Quantization, as GPTQ does it). H gets
`DAMPING` x its mean diagonal added, so that directions the data never visits do not take large moves. The
per-channel scales stay those of the weight stage; the integers stay within the same limit (127, or 64 with the
overflow fix).

H comes from one inference of the FP32 model on the first `ROUNDING_SAMPLES` calibration items, with the layers'
inputs as outputs; a convolution's patches are read at `MAX_POSITIONS` evenly spaced output positions per item.
Plain convolutions and MatMuls with a 2-D constant weight are rounded this way; depthwise and grouped
convolutions keep nearest rounding (on PP-OCRv4 rec their error-feedback weights lowered word accuracy by 0.04,
emulated, where every other layer type gained or held).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.dataset import Dataset, ModelInput, bind_requests
from ovptq.errors import DatasetError, StatisticsError
from ovptq.graph.graph import Graph
from ovptq.inference import infer_from_initial_state
from ovptq.outcomes import QuantizedWeight
from ovptq.parameters import WeightRounding
from ovptq.ranges.weights import float_weight
from ovptq.state import Stage, State

log = logging.getLogger("ovptq")

ROUNDING_SAMPLES = 16     # calibration items H is measured on
MAX_POSITIONS = 4096      # convolution output positions read per item (evenly spaced)
DAMPING = 0.01            # share of H's mean diagonal added to its diagonal
# Layers whose weight rows are longer keep nearest rounding: H grows with the square and its inverse with the cube
# of the row length (CREPE's 128 x 64 taps: 20 s), and 16 items hold too few input vectors to estimate it.
MAX_COLUMNS = 2304        # a 3x3 convolution of 256 channels
MIN_VECTORS_PER_COLUMN = 2  # H needs at least this many input vectors per weight column


@dataclass(frozen=True)
class RoundedLayer:
    """A layer's weight in rows x columns form: `rows(weight)` gives [O, D] and `weight_of(rows)` undoes it;
    `patches(x)` turns one input tensor into columns [D, P] of the vectors each output reads."""

    node: str
    kind: str
    weight_shape: tuple[int, ...]
    transpose_b: bool = False
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    dilations: tuple[int, int] = (1, 1)
    pads_begin: tuple[int, int] = (0, 0)
    pads_end: tuple[int, int] = (0, 0)

    @property
    def columns(self) -> int:
        """D: the length of one weight row (the input vector one output reads)."""
        if self.kind == "Convolution":
            return int(np.prod(self.weight_shape[1:]))
        return self.weight_shape[1] if self.transpose_b else self.weight_shape[0]

    def rows(self, weight: np.ndarray) -> np.ndarray:
        if self.kind == "Convolution":
            return weight.reshape(weight.shape[0], -1)
        return weight if self.transpose_b else weight.T

    def weight_of(self, rows: np.ndarray) -> np.ndarray:
        if self.kind == "Convolution":
            return rows.reshape(self.weight_shape)
        return rows if self.transpose_b else rows.T

    def patches(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "MatMul":
            return x.reshape(-1, x.shape[-1]).T
        return conv_patches(x, self.kernel, self.strides, self.dilations, self.pads_begin, self.pads_end)


def conv_patches(x: np.ndarray, kernel, strides, dilations, pads_begin, pads_end,
                 max_positions: int = MAX_POSITIONS) -> np.ndarray:
    """The input patches of a 2-D convolution, [C*kh*kw, P] (channel major, then kernel row, then column), at up to
    `max_positions` output positions evenly spaced over the batch and the output plane (zero padding included)."""
    padded = np.pad(x, ((0, 0), (0, 0), (pads_begin[0], pads_end[0]), (pads_begin[1], pads_end[1])))
    batch, channels, height, width = padded.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    out_h, out_w = (height - (kh - 1) * dh - 1) // sh + 1, (width - (kw - 1) * dw - 1) // sw + 1
    count = batch * out_h * out_w
    picked = np.unique(np.linspace(0, count - 1, min(count, max_positions)).round().astype(np.int64))
    n, rest = np.divmod(picked, out_h * out_w)
    oy, ox = np.divmod(rest, out_w)
    ky, kx = np.meshgrid(np.arange(kh) * dh, np.arange(kw) * dw, indexing="ij")
    rows = oy[None, None, :] * sh + ky[..., None]          # [kh, kw, P]
    cols = ox[None, None, :] * sw + kx[..., None]
    values = padded[n[None, None, :], :, rows, cols]        # [kh, kw, P, C]
    return np.ascontiguousarray(values.transpose(3, 0, 1, 2).reshape(channels * kh * kw, -1))


def round_with_error_feedback(rows: np.ndarray, scale: np.ndarray, second_moments: np.ndarray, limit: int,
                              damping: float = DAMPING, block: int = 128) -> np.ndarray:
    """Integers [O, D] for weight rows [O, D] with per-row `scale` ([O, 1]) and input second moments H ([D, D]):
    columns rounded in order, each one's error fed back onto the later columns through H^-1 (module docstring).
    The feedback onto columns past the current `block` is applied once per block, as one product. With H diagonal
    this is nearest rounding."""
    weight = rows.astype(np.float64).copy()
    scale = np.asarray(scale, np.float64).reshape(-1)
    moments = np.array(second_moments, np.float64)
    dead = np.diag(moments) <= 0
    moments[dead, dead] = 1.0
    weight[:, dead] = 0.0
    moments[np.diag_indices_from(moments)] += damping * float(np.mean(np.diag(moments)))
    upper = np.linalg.cholesky(np.linalg.inv(moments)).T
    columns = weight.shape[1]
    integers = np.empty(weight.shape, np.float64)
    for start in range(0, columns, block):
        end = min(start + block, columns)
        errors = np.empty((weight.shape[0], end - start))
        for j in range(start, end):
            integers[:, j] = np.clip(np.round(weight[:, j] / scale), -limit, limit)
            errors[:, j - start] = (weight[:, j] - integers[:, j] * scale) / upper[j, j]
            weight[:, j + 1:end] -= np.outer(errors[:, j - start], upper[j, j + 1:end])
        weight[:, end:] -= errors @ upper[start:end, end:]
    return integers


def output_error(rows: np.ndarray, integers: np.ndarray, scale: np.ndarray, second_moments: np.ndarray) -> float:
    """tr(dW H dW^T): the mean squared output error of int8 rows against float ones, summed over outputs."""
    delta = rows.astype(np.float64) - integers * np.asarray(scale, np.float64).reshape(-1, 1)
    return float(np.sum((delta @ second_moments) * delta))


def rounded_layers(graph: Graph, weights: Mapping[str, QuantizedWeight]) -> list[RoundedLayer]:
    """The layers error feedback applies to, in graph order: 2-D Convolutions and MatMuls (constant 2-D weight on
    input 1, no transpose_a) whose int8 weight no other op shares and whose rows are at most MAX_COLUMNS long."""
    readers = Counter(w.source for w in weights.values())
    layers = []
    for node in graph.order:
        quantized = weights.get(node)
        if quantized is None or quantized.quantizer.port != 1 or quantized.quantizer.embedding \
                or readers[quantized.source] > 1:
            continue
        op, kind = graph.op(node), graph.type(node)
        shape = tuple(quantized.integers.shape)
        if kind == "Convolution" and len(shape) == 4 and op.get_input_partial_shape(0).rank.get_length() == 4:
            attrs = op.get_attributes()
            layers.append(RoundedLayer(node, kind, shape, kernel=shape[2:], strides=tuple(attrs["strides"]),
                                       dilations=tuple(attrs["dilations"]), pads_begin=tuple(attrs["pads_begin"]),
                                       pads_end=tuple(attrs["pads_end"])))
        elif kind == "MatMul" and len(shape) == 2 and not op.get_attributes()["transpose_a"]:
            layers.append(RoundedLayer(node, kind, shape, transpose_b=bool(op.get_attributes()["transpose_b"])))
    return [layer for layer in layers if layer.columns <= MAX_COLUMNS]


def input_second_moments(model: ov.Model, layers: list[RoundedLayer], dataset: Dataset, samples: int,
                         core: ov.Core) -> dict[str, np.ndarray]:
    """H = E[x x^T] of each layer's input vectors, over the first `samples` items (summed in item order, so the
    result is the same in every run)."""
    clone = model.clone()
    by_name = {op.get_friendly_name(): op for op in clone.get_ordered_ops()}
    probe = ov.Model([ops.result(by_name[layer.node].input_value(0)) for layer in layers], clone.get_sinks(),
                     clone.get_parameters(), "ovptq_rounding_inputs")
    try:
        compiled = core.compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except RuntimeError as error:
        raise StatisticsError(f"The CPU plugin could not compile the model that reads the inputs of "
                              f"{len(layers)} layers for weight rounding: {error}. Use weight_rounding='nearest'.") \
            from error
    request, inputs = compiled.create_infer_request(), ModelInput.of(probe)
    sums = {layer.node: None for layer in layers}
    counts = dict.fromkeys(sums, 0)
    for index, item in dataset.items(limit=samples, stage="weight rounding"):
        for feed in bind_requests(item, inputs, index):
            infer_from_initial_state(request, feed)
            for position, layer in enumerate(layers):
                patches = layer.patches(np.asarray(request.get_output_tensor(position).data, np.float32))
                moment = (patches @ patches.T).astype(np.float64)
                sums[layer.node] = moment if sums[layer.node] is None else sums[layer.node] + moment
                counts[layer.node] += patches.shape[1]
    if not any(counts.values()):
        raise DatasetError("The calibration dataset is empty: weight rounding has no item to run.")
    return {node: total / counts[node] for node, total in sums.items()
            if counts[node] >= MIN_VECTORS_PER_COLUMN * total.shape[0]}


def with_error_feedback(state: State) -> State:
    """The state with its int8 weights rounded with error feedback, layer by layer (a layer keeps its nearest
    rounding where that gives the smaller output error), and the per-layer record in `rounding`."""
    layers = rounded_layers(state.graph, state.weights)
    if not layers:
        return state
    moments = input_second_moments(state.model, layers, state.replay or state.dataset, ROUNDING_SAMPLES, state.core)
    replaced = state.smoothing.constants if state.smoothing is not None else None
    weights, records = dict(state.weights), []
    for layer in (layer for layer in layers if layer.node in moments):
        quantized = state.weights[layer.node]
        rows = layer.rows(float_weight(state.graph, quantized.quantizer, replaced))
        scale = layer.rows(np.broadcast_to(quantized.scale, layer.weight_shape))[:, :1]
        limit = 64 if quantized.quantizer.half_range else 127
        integers = round_with_error_feedback(rows, scale, moments[layer.node], limit)
        before = output_error(rows, layer.rows(quantized.integers.astype(np.float64)), scale, moments[layer.node])
        after = output_error(rows, integers, scale, moments[layer.node])
        if after < before:
            weights[layer.node] = replace(quantized, integers=layer.weight_of(integers).astype(np.int8))
        records.append({"layer": layer.node, "error_before": before, "error_after": min(after, before)})
    log.info("Weight rounding (error feedback): %d of %d layers re-rounded; their output error %.3g -> %.3g.",
             rerounded(records), len(records), sum(r["error_before"] for r in records),
             sum(r["error_after"] for r in records))
    return replace(state, weights=MappingProxyType(weights), rounding=tuple(records))


def rerounded(records) -> int:
    """How many layers of a rounding record took error-feedback weights (a lower output error than nearest)."""
    return sum(r["error_after"] < r["error_before"] for r in records)


def _record(state: State) -> dict[str, str]:
    """Per layer, its output error tr(dW H dW^T) with nearest rounding and with the weights kept."""
    if not state.rounding:
        return {}
    return {"weight_rounding": json.dumps([{**r, "error_before": float(f"{r['error_before']:.4g}"),
                                            "error_after": float(f"{r['error_after']:.4g}")}
                                           for r in state.rounding])}


def _enabled(options) -> bool:
    return options.advanced.weight_rounding is WeightRounding.ERROR_FEEDBACK


STAGE = Stage("weight rounding", with_error_feedback, enabled=_enabled, rereads=lambda state: ROUNDING_SAMPLES,
              record=_record)
