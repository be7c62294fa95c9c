"""Full bias correction: from the fast one, a few block passes of the int8-weight model (see `correct.py`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import networkx as nx
import numpy as np
import openvino as ov

from ovptq.bias_correction.correct import FULL_THRESHOLD, BiasCorrection, Correction, accept
from ovptq.bias_correction.layers import Layer, find_layers
from ovptq.bias_correction.probe import BiasProbe
from ovptq.dataset import Dataset, batch_size_of
from ovptq.errors import StatisticsError
from ovptq.graph.graph import Graph
from ovptq.progress import progress
from ovptq.rewrite import rewrite
from ovptq.rewrite.edits import ConstantInput
from ovptq.state import Stage, State
from ovptq.statistics.collect import mean_items

log = logging.getLogger("ovptq")

FULL_PASSES = 4  # passes of the quantized model; each corrects the heads of one block of topological stages


def full_correction(int8_weights_model: ov.Model, graph: Graph, start: BiasCorrection, statistics: Mapping,
                    dataset: Dataset, items: int, threshold: float | None = None,
                    inference_requests: int | None = None, show_progress: bool | None = None,
                    core: ov.Core | None = None, passes: int = FULL_PASSES,
                    output_factors: Mapping[str, np.ndarray] | None = None) -> BiasCorrection:
    """Move biases by (FP32 mean - quantized mean) of the layer output, block by block in topological order.

    The FP32 means are the per-sample output means the statistics pass measured on the first `items` items; the
    quantized means come from the same items through `int8_weights_model`, the FP32 model with its weights
    replaced by their dequantized int8 values (so the weight error propagates without int8 kernels). The
    stages are cut into `passes` blocks; a pass measures one block with every block before it already corrected
    (Gauss-Seidel), everything after the block pruned. In a block, the heads (layers with no other layer of the
    block upstream) take the measured shift, which also compensates what the blocks before left in their input;
    the other layers keep their fast correction, since their measured shift still holds errors the heads are
    removing in the same pass (applying both overshoots). `output_factors` holds SmoothQuant's s of the layers
    that took 1/s into their weight and bias: their outputs are y / s, their measured FP32 means are of y.
    """
    layers = list(start.layers)
    threshold = FULL_THRESHOLD if threshold is None else threshold
    fast_records = {record.layer: record for record in start.records}
    output_factors = output_factors or {}
    fp32_means = {layer.node: statistics[layer.output_reduction()] / output_factors.get(layer.node, 1.0)
                  for layer in layers}
    probe = BiasProbe(int8_weights_model, layers, core)
    feeds = probe.bind(dataset, items)
    samples = len(next(iter(fp32_means.values())))
    fed = sum(batch_size_of(feed) for feed in feeds)
    if fed != samples:
        raise StatisticsError(f"The dataset gave {fed} samples on its second reading of its first {items} items, "
                              f"{samples} on the first: the full bias correction needs a dataset that yields the "
                              "same items each time it is iterated.")
    totals = {layer.node: np.zeros(layer.output_channels) for layer in layers}
    records: dict[str, Correction] = {}
    had_bias = {layer.node for layer in layers if start.has_bias(layer)}
    values = {layer.node: start.values[layer.node].copy() for layer in layers}
    blocks = stage_blocks(topological_stages(graph, layers), passes)
    bar = progress(total=len(blocks), desc="Bias correction", unit="pass", enabled=show_progress)
    for block in blocks:
        in_block = {layer.node for layer in block}
        heads = [layer for layer in block if not in_block & nx.ancestors(graph.nx, layer.node)]
        measured = [layer for layer in heads if _positions(graph, layer) > 1]
        means = probe.means(feeds, values, measured, inference_requests) if measured else {}
        for layer in block:
            if layer.node not in means:
                records[layer.node] = _kept_fast(fast_records, layer, _positions(graph, layer) == 1, samples)
                continue
            differences = fp32_means[layer.node] - means[layer.node]  # paired: same samples
            shift = differences.mean(axis=0)
            error = differences.std(axis=0, ddof=1) / np.sqrt(len(differences)) if len(differences) > 1 else None
            applied, records[layer.node] = accept(layer, shift, start.magnitudes[layer.node], threshold, "full",
                                                  layer.node in had_bias, error)
            values[layer.node] = values[layer.node] + applied
            totals[layer.node] += applied
        bar.update(1)
    bar.close()
    result = start.with_shifts(totals)
    return replace(result, records=tuple(  # a bias Add either correction gave the layer counts as created
        replace(records[layer.node], created_bias=layer.bias is None and result.has_bias(layer)) for layer in layers))


def _kept_fast(fast_records: dict[str, Correction], layer: Layer, one_position: bool, samples: int) -> Correction:
    record = fast_records.get(layer.node) or Correction(layer.node, "fast", 0.0, 0.0, 0, 0, False, "")
    if one_position:
        note = (" (full correction not applied: one output position per sample, "
                f"{samples} samples are too few to estimate a mean shift)")
    else:
        note = " (full correction not applied: a layer upstream in its pass was corrected)"
    return replace(record, reason=record.reason + note)


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


def _reductions(state: State) -> list:
    return [layer.output_reduction() for layer in find_layers(state.graph, state.plan)]


def _rereads(state: State) -> int:
    return mean_items(state.options.subset_size) if find_layers(state.graph, state.plan) else 0


def int8_weights_model(state: State) -> ov.Model:
    """The FP32 model with SmoothQuant's edits and every planned weight replaced by its dequantized int8 values, as
    plain f32 constants. (In their Constant(i8) -> Convert -> Multiply form, without activation FakeQuantize, the
    CPU plugin computed wrong values, differently on each compile.)"""
    edits = rewrite.ModelEdits.of_smoothing(state.smoothing)
    dequantized = tuple(ConstantInput(node, weight.quantizer.port, weight.dequantized(),
                                      f"{node}/dequantized_{weight.quantizer.port}")
                        for node, weight in state.weights.items())
    return rewrite.apply(state.model, replace(edits, constants=edits.constants + dequantized))


def _run(state: State) -> State:
    if state.bias_correction is None:
        return state
    options, smoothing = state.options, state.smoothing
    correction = full_correction(
        int8_weights_model(state), state.graph, state.bias_correction, state.statistics,
        state.replay or state.dataset, mean_items(options.subset_size), options.advanced.bias_correction_threshold,
        options.advanced.inference_requests, options.advanced.show_progress, state.core, FULL_PASSES,
        smoothing.output_factors if smoothing else None)
    log.info("Bias correction (full): %d of %d layers corrected.", correction.corrected(), len(correction.records))
    return replace(state, bias_correction=correction)


STAGE = Stage("full bias correction", _run, reductions=_reductions, rereads=_rereads,
              enabled=lambda options: options.bias_correction and not options.fast_bias_correction)
