"""Bias correction after quantization: fast (exact weight-error shift from the one statistics pass) and full
(a few block passes of the int8-weight model). See `correct.py` for the math."""

from __future__ import annotations

import logging

import networkx as nx
import numpy as np
import openvino as ov

from ovptq.bias_correction.correct import (FAST_THRESHOLD, FULL_THRESHOLD, Biases, Correction, accept,
                                           weight_error_shift)
from ovptq.bias_correction.layers import Layer, find_layers
from ovptq.dataset import Dataset
from ovptq.errors import StatisticsError
from ovptq.graph.graph import Graph
from ovptq.bias_correction.probe import BiasProbe
from ovptq.progress import progress
from ovptq.graph.values import is_non_negative
from ovptq.placement.plan import QuantizationPlan
from ovptq.statistics.collect import MeanRequest, TensorRequest

log = logging.getLogger("ovptq")

__all__ = ["Biases", "Correction", "Layer", "find_layers", "statistics_requests", "fast_correction", "full_correction",
           "full_subset_size"]


def _input_range_request(graph: Graph, layer: Layer, quantizer_requests: dict[str, TensorRequest],
                         plan: QuantizationPlan) -> TensorRequest:
    """The range statistics of the layer's input: its quantizer's when the quantizer sits on that very tensor."""
    for q in plan.activations:
        if q.producer == layer.data.node and q.port == layer.data.port:
            return quantizer_requests[q.name]
    return TensorRequest(layer.data.node, layer.data.port, non_negative=is_non_negative(graph, layer.data.node))


def statistics_requests(graph: Graph, layers: list[Layer], quantizer_requests: dict[str, TensorRequest] | None = None,
                        plan: QuantizationPlan | None = None, full: bool = False) -> list:
    """What the correction needs from the FP32 statistics pass: the input taps and the input's range, and for the
    full correction each layer's per-sample output means (on the first items, those the full passes rerun)."""
    requests = []
    for layer in layers:
        requests.append(layer.input_request(graph))
        requests.append(_input_range_request(graph, layer, quantizer_requests or {}, plan or QuantizationPlan()))
        if full:
            requests.append(layer.output_request())
    return list(dict.fromkeys(requests))


def input_magnitudes(graph: Graph, layers: list[Layer], stats: dict, quantizer_requests: dict[str, TensorRequest],
                     plan: QuantizationPlan) -> dict[str, float]:
    """Per layer, its input's mean per-sample max |x| (measured for the input's quantizer anyway)."""
    return {layer.node: float(np.max(stats[_input_range_request(graph, layer, quantizer_requests, plan)].mean_absmax))
            for layer in layers}


def _weight_l1(graph: Graph, layer: Layer, weight: np.ndarray) -> np.ndarray:
    """sum |W| over everything but the output channel, per output channel."""
    w = np.abs(weight)
    if layer.kind == "matmul":
        transpose_b = graph.op(layer.node).get_attributes()["transpose_b"]
        return w.sum(axis=1 if transpose_b else 0, dtype=np.float64)
    if layer.kind == "deconv":
        return w.sum(axis=tuple(a for a in range(w.ndim) if a != 1), dtype=np.float64)
    if graph.type(layer.node) == "GroupConvolution":
        return w.reshape(w.shape[0] * w.shape[1], -1).sum(axis=1, dtype=np.float64)
    return w.reshape(w.shape[0], -1).sum(axis=1, dtype=np.float64)


def fast_correction(graph: Graph, layers: list[Layer], weights: dict, stats: dict, biases: Biases,
                    magnitudes: dict[str, float], threshold: float | None = None,
                    input_scales: dict[str, np.ndarray] | None = None
                    ) -> tuple[list[Correction], dict[str, np.ndarray]]:
    """Correct each layer's bias by the exact mean error of its int8 weights on the calibration data.

    Returns the records and, per layer, the output scale of the acceptance rule: sum |W[o]| x the input's
    magnitude, the largest |y - b| the channel reaches on typical inputs. `input_scales` holds SmoothQuant's s
    of the MatMuls whose input became x / s (their measured input means are of x).
    """
    input_scales = input_scales or {}
    threshold = FAST_THRESHOLD if threshold is None else threshold
    records, scales = [], {}
    for layer in layers:
        weight, dequantized = weights[layer.node].values()
        scales[layer.node] = _weight_l1(graph, layer, weight) * magnitudes[layer.node]
        input_mean = stats[layer.input_request(graph)]
        if layer.node in input_scales:
            input_mean = input_mean / input_scales[layer.node]
        shift = weight_error_shift(graph, layer, weight, dequantized, input_mean)
        applied, record = accept(layer, shift, scales[layer.node], threshold, "fast", biases.has_bias(layer))
        biases.add(layer, applied)
        records.append(record)
    return records, scales


def full_subset_size(subset_size: int) -> int:
    """Items the full correction runs through the quantized model per pass (a fifth of the subset, as the peer)."""
    return max(1, int(0.2 * subset_size))


FULL_PASSES = 4  # passes of the quantized model; each corrects the heads of one block of topological stages


def full_correction(fp32_model: ov.Model, graph: Graph, layers: list[Layer], scales: dict[str, np.ndarray],
                    biases: Biases, weights: dict, stats: dict, dataset: Dataset, subset_size: int,
                    threshold: float | None = None,
                    inference_requests: int | None = None, show_progress: bool | None = None,
                    core: ov.Core | None = None, fast_records: list[Correction] = (),
                    passes: int = FULL_PASSES,
                    output_scales: dict[str, np.ndarray] | None = None) -> list[Correction]:
    """Move bias by (FP32 mean - quantized mean) of the layer output, block by block in topological order.

    The FP32 means are the per-sample output means the statistics pass measured on the first `subset_size` items
    (`stats[layer.output_request()]`); the quantized means come from the same items through `fp32_model` with the
    int8 weights of `weights` (op -> CompressedWeight). The stages are cut into `passes` blocks; a pass measures
    one block with every block before it already corrected (Gauss-Seidel), everything after the block pruned. In
    a block, the heads (layers with no other layer of the block upstream) take the measured shift, which also
    compensates what the blocks before left in their input; the other layers keep their fast correction, since
    their measured shift still holds errors the heads are removing in the same pass (applying both overshoots:
    MobileNetV2 collapsed to 0.55 top-1 agreement with 8 passes). `output_scales` holds SmoothQuant's s of the
    layers that took 1/s into their weight and bias: their outputs are y / s, their measured FP32 means are of y.
    """
    threshold = FULL_THRESHOLD if threshold is None else threshold
    fast_records = {record.layer: record for record in fast_records}
    output_scales = output_scales or {}
    fp32_means = {layer.node: stats[layer.output_request()] / output_scales.get(layer.node, 1.0) for layer in layers}
    probe = BiasProbe(fp32_model, layers, biases.holder_names(), core, weights)
    items = probe.bind(dataset, subset_size)
    samples = len(next(iter(fp32_means.values())))
    if len(items) != samples:
        raise StatisticsError(f"The dataset gave {len(items)} samples on its second reading of its first "
                              f"{subset_size} items, {samples} on the first: the full bias correction needs a "
                              "dataset that yields the same items each time it is iterated.")
    totals = {layer.node: np.zeros(layer.output_channels) for layer in layers}
    records: dict[str, Correction] = {}
    had_bias = {layer.node for layer in layers if biases.has_bias(layer)}
    values = {layer.node: biases.values[layer.node].copy() for layer in layers}
    blocks = stage_blocks(topological_stages(graph, layers), passes)
    bar = progress(total=len(blocks), desc="Bias correction", unit="pass", enabled=show_progress)
    for block in blocks:
        in_block = {layer.node for layer in block}
        heads = [layer for layer in block if not in_block & nx.ancestors(graph.nx, layer.node)]
        measured = [layer for layer in heads if _positions(graph, layer) > 1]
        means = probe.means(items, values, measured, inference_requests) if measured else {}
        for layer in block:
            if layer.node not in means:
                records[layer.node] = _kept_fast(fast_records, layer, _positions(graph, layer) == 1, len(items))
                continue
            differences = fp32_means[layer.node] - means[layer.node]  # paired: same samples
            shift = differences.mean(axis=0)
            error = differences.std(axis=0, ddof=1) / np.sqrt(len(differences)) if len(differences) > 1 else None
            applied, records[layer.node] = accept(layer, shift, scales[layer.node], threshold, "full",
                                                  layer.node in had_bias, error)
            values[layer.node] = values[layer.node] + applied
            totals[layer.node] += applied
        bar.update(1)
    bar.close()
    for layer in layers:
        biases.add(layer, totals[layer.node])
        records[layer.node].created_bias = layer.node not in had_bias and biases.has_bias(layer)
    return [records[layer.node] for layer in layers]


def _kept_fast(fast_records: dict[str, Correction], layer: Layer, one_position: bool, samples: int) -> Correction:
    record = fast_records.get(layer.node) or Correction(layer.node, "fast", 0.0, 0.0, 0, 0, False, "")
    if one_position:
        record.reason += (" (full correction not applied: one output position per sample, "
                          f"{samples} samples are too few to estimate a mean shift)")
    else:
        record.reason += " (full correction not applied: a layer upstream in its pass was corrected)"
    return record


def _positions(graph: Graph, layer: Layer) -> int:
    """Output positions per sample and channel (spatial size, or sequence length for a MatMul)."""
    shape = graph.op(layer.node).get_output_partial_shape(0)
    dims = [shape[i] for i in range(1, shape.rank.get_length()) if i != layer.channel_axis % shape.rank.get_length()]
    return int(np.prod([d.get_length() if d.is_static else 2 for d in dims])) if dims else 1


def stage_blocks(stages: list[list[Layer]], count: int) -> list[list[Layer]]:
    """`stages` cut into at most `count` blocks of consecutive stages with about the same number of layers."""
    total = sum(len(stage) for stage in stages)
    blocks: list[list[Layer]] = []
    for stage in stages:
        done = sum(len(block) for block in blocks)
        if not blocks or len(blocks) < count and done >= total * len(blocks) / count:
            blocks.append([])
        blocks[-1].extend(stage)
    return blocks


def topological_stages(graph: Graph, layers: list[Layer]) -> list[list[Layer]]:
    """Layers grouped by depth: a layer's stage comes after the stages of every layer upstream of it."""
    by_node = {layer.node: layer for layer in layers}
    depth: dict[str, int] = {}
    for node in graph.order:
        upstream = max((depth[p] for p in graph.nx.predecessors(node) if p in depth), default=0)
        depth[node] = upstream + (1 if node in by_node else 0)
    count = max((depth[n] for n in by_node), default=0)
    return [[by_node[n] for n in graph.order if n in by_node and depth[n] == d] for d in range(1, count + 1)]
