"""A copy of a model whose layer biases can be set and whose per-channel output means can be read.

Each layer's output gets an explicit bias Add (the original bias Add is bypassed) and a ReduceMean to [N, C].
`means` writes the bias values as constants and compiles a model whose outputs are the requested layers' means,
so everything after them is pruned.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.bias_correction.layers import Layer
from ovptq.dataset import Dataset, ModelInput, bind_requests
from ovptq.errors import DatasetError, StatisticsError
from ovptq.inference import AsyncRunner


class BiasProbe:
    def __init__(self, model: ov.Model, layers: list[Layer], core: ov.Core | None = None):
        """Each layer's bias op (`layer.bias`) is bypassed by the probe's own bias Add."""
        self.clone = model.clone()
        by_name = {op.get_friendly_name(): op for op in self.clone.get_ordered_ops()}
        self.core = core or ov.Core()
        self.data_inputs = ModelInput.of(self.clone)
        self.layers = layers
        self.bias_adds: dict[str, ov.Node] = {}
        self.means_of: dict[str, ov.Output] = {}
        for layer in layers:
            op = by_name[layer.node]
            rank = op.get_output_partial_shape(0).rank.get_length()
            output = op.output(0)
            holder = by_name.get(layer.bias) if layer.bias is not None else None
            targets = list((holder or op).output(0).get_target_inputs())
            biased = ops.add(output, ops.constant(np.zeros(self._shape(layer, rank), np.float32)))
            for target in targets:
                target.replace_source_output(biased.output(0))
            axes = np.array([a for a in range(1, rank) if a != layer.channel_axis % rank], np.int64)
            self.bias_adds[layer.node] = biased
            self.means_of[layer.node] = (ops.reduce_mean(biased, axes, False) if axes.size else biased).output(0)

    @staticmethod
    def _shape(layer: Layer, rank: int) -> list[int]:
        shape = [1] * rank
        shape[layer.channel_axis] = layer.output_channels
        return shape

    def bind(self, dataset: Dataset, count: int) -> list[dict[int, np.ndarray]]:
        """The first `count` items as model inputs, kept in memory for the stages."""
        bound = []
        for index, item in dataset.items(limit=count, stage="full bias correction"):
            bound.extend(bind_requests(item, self.data_inputs, index))
        if not bound:
            raise DatasetError("The calibration dataset is empty: full bias correction has no item to run.")
        return bound

    def means(self, items: list[dict[int, np.ndarray]], biases: dict[str, np.ndarray],
              layers: list[Layer] | None = None, inference_requests: int | None = None) -> dict[str, np.ndarray]:
        """Per-sample, per-channel output means ([samples, C]) of `layers` (default: all) with these biases."""
        layers = self.layers if layers is None else layers
        for layer in self.layers:
            add = self.bias_adds[layer.node]
            rank = add.get_output_partial_shape(0).rank.get_length()
            value = np.asarray(biases[layer.node], np.float32).reshape(self._shape(layer, rank))
            add.input(1).replace_source_output(ops.constant(value).output(0))
        model = ov.Model([ops.result(self.means_of[layer.node]) for layer in layers], self.clone.get_sinks(),
                         self.clone.get_parameters(), "ovptq_bias_probe")
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"}
        try:
            compiled = self.core.compile_model(model, "CPU", config)
        except RuntimeError as error:
            raise StatisticsError(f"The CPU plugin could not compile the full bias correction's model of "
                                  f"{len(layers)} layers (from '{layers[0].node}'): {error}. Use the fast bias "
                                  "correction (fast_bias_correction=True) instead.") from error
        runner = AsyncRunner(compiled, inference_requests, lambda request: [
            request.get_output_tensor(i).data.astype(np.float64).reshape(-1, layers[i].output_channels)
            for i in range(len(layers))])
        try:
            for index, item in enumerate(items):
                runner.start(item, index)
        finally:
            runner.finish()
        per_item = [runner.pop(index) for index in range(len(items))]
        return {layer.node: np.concatenate([values[i] for values in per_item]) for i, layer in enumerate(layers)}
