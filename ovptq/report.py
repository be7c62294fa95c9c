"""Per-layer error report: which quantized layers lose the accuracy.

For every Convolution / GroupConvolution / MatMul of the INT8 model, on a few calibration samples:
  own error          the layer alone quantized: its input quantizers and int8 weights applied to the FP32 model's
                     input of that layer, against the FP32 layer (what this layer adds by itself);
  accumulated error  the layer's output in the INT8 model against the FP32 model's (everything before it included).
  output gain        with `ablation`: how many dB the model outputs' SQNR against FP32 gains when only this layer is
                     put back in float in the INT8 model (its input quantizers bypassed, its FP32 weight restored);
                     one compilation per layer, so slower, but it ranks by effect on the outputs.
Both errors as SQNR = 10 log10(sum y^2 / sum (y - y_q)^2) in dB over all samples (higher is better), computed on
the layer's output before its bias. Layers are ranked by own SQNR, worst first: the first names are those to try in an
IgnoredScope. Reported are the layers with a quantizer right at an input (weights, or an activation FakeQuantize
feeding the op); an activation x activation MatMul quantized above a Reshape / Transpose is left out, and so is the
own error of layers whose input SmoothQuant rescaled inside its producer (NaN).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.dataset import Dataset, ModelInput, bind_requests
from ovptq.errors import ModelError
from ovptq.progress import progress

REPORTED_TYPES = ("Convolution", "GroupConvolution", "MatMul")


@dataclass(frozen=True)
class LayerError:
    layer: str
    type: str
    own_sqnr_db: float
    accumulated_sqnr_db: float
    output_gain_db: float | None = None


@dataclass
class ErrorReport:
    layers: list[LayerError]
    samples: int

    def ranked(self) -> list[LayerError]:
        """Worst first: by output gain when measured (largest first), else by own SQNR (smallest first)."""
        if all(e.output_gain_db is not None for e in self.layers):
            return sorted(self.layers, key=lambda e: -e.output_gain_db)
        return sorted(self.layers, key=lambda e: (np.isnan(e.own_sqnr_db), e.own_sqnr_db, e.accumulated_sqnr_db))

    def __str__(self) -> str:
        ablation = all(e.output_gain_db is not None for e in self.layers)
        order = "largest output gain" if ablation else "worst own error"
        lines = [f"Per-layer SQNR (dB, higher is better) on {self.samples} samples, {order} first:",
                 f"{'layer':<60} {'type':<17} {'own':>7} {'accum.':>7}" + (f" {'gain':>7}" if ablation else "")]
        for error in self.ranked():
            gain = f" {error.output_gain_db:7.2f}" if ablation else ""
            lines.append(f"{error.layer[-60:]:<60} {error.type:<17} {error.own_sqnr_db:7.1f} "
                         f"{error.accumulated_sqnr_db:7.1f}{gain}")
        worst = [error.layer for error in self.ranked()[:5]]
        lines.append(f"To try: ovptq.IgnoredScope(names={worst!r})")
        return "\n".join(lines)

    def to_json(self) -> str:
        def finite(value):
            return None if np.isnan(value) else value if np.isfinite(value) else "inf"
        layers = [{k: finite(v) if isinstance(v, float) else v for k, v in asdict(e).items()} for e in self.ranked()]
        return json.dumps({"samples": self.samples, "layers": layers}, indent=1)

    def plot(self, path: str | Path) -> Path:
        """Own and accumulated SQNR per layer in model order (needs matplotlib)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        figure, axis = plt.subplots(figsize=(max(6.0, 0.18 * len(self.layers) + 2), 4.2))
        x = np.arange(len(self.layers))
        axis.bar(x - 0.2, [e.own_sqnr_db for e in self.layers], 0.4, label="own (FP32 input)")
        axis.bar(x + 0.2, [e.accumulated_sqnr_db for e in self.layers], 0.4, label="accumulated (INT8 model)")
        axis.set_xticks(x, [e.layer[-28:] for e in self.layers], rotation=90, fontsize=6)
        axis.set_ylabel("SQNR (dB)")
        axis.set_title("Per-layer quantization error, model order")
        axis.legend()
        axis.grid(True, axis="y", alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)
        return Path(path)


def layer_errors(fp32_model: ov.Model, int8_model: ov.Model, dataset: Dataset, samples: int = 8,
                 core: ov.Core | None = None, ablation: bool = False) -> ErrorReport:
    """The report of `int8_model` (made from `fp32_model` by ovptq) on the first `samples` items of `dataset`."""
    core = core or ov.Core()
    fp32 = fp32_model.clone()
    fp32_ops = {op.get_friendly_name(): op for op in fp32.get_ordered_ops()}
    int8_clone = int8_model.clone()
    layers = [op for op in int8_clone.get_ordered_ops()
              if op.get_type_name() in REPORTED_TYPES and op.get_friendly_name() in fp32_ops and _quantized(op)]
    if not layers:
        raise ModelError("The INT8 model has no quantized Convolution / MatMul that the FP32 model also has (by "
                         "name): pass the FP32 model the INT8 one was made from.")
    folded = _folded_smoothing(int8_clone)
    shadows, originals = [], []
    for op in layers:
        original = fp32_ops[op.get_friendly_name()]
        originals.append(original.output(0))
        shadows.append(_shadow(original, op).output(0))
    own_model = ov.Model([ops.result(o) for o in originals + shadows], fp32.get_parameters(), "ovptq_own_error")
    accumulated_model = ov.Model([ops.result(op.output(0)) for op in layers], int8_clone.get_parameters(),
                                 "ovptq_accumulated_error")
    items = _items(dataset, ModelInput.of(fp32), samples)
    own = _run(core, own_model, items)
    accumulated = _run(core, accumulated_model, items)
    count = len(layers)
    smoothed = folded | {op.get_friendly_name() for op in layers if any(
        op.input_value(p).get_node().get_type_name() == "FakeQuantize" and op.input_value(p).get_node().input_value(0)
        .get_node().get_friendly_name().endswith("/smooth_quant") for p in range(op.get_input_size()))}
    gains = _output_gains(core, fp32_model, int8_model, [op.get_friendly_name() for op in layers], smoothed,
                          items) if ablation else {}
    results = []
    for index, op in enumerate(layers):
        reference = own[index]
        own_db = float("nan") if op.get_friendly_name() in folded else sqnr_db(reference, own[count + index])
        results.append(LayerError(op.get_friendly_name(), op.get_type_name(), own_db,
                                  sqnr_db(reference, accumulated[index]), gains.get(op.get_friendly_name())))
    return ErrorReport(results, len(items))


def _output_gains(core: ov.Core, fp32_model: ov.Model, int8_model: ov.Model, names: list[str], smoothed: set[str],
                  items: list[dict]) -> dict[str, float]:
    """Per layer: output SQNR of the INT8 model with that layer in float, minus the INT8 model's own. A layer whose
    input SmoothQuant rescaled keeps its int8 weight (its FP32 weight is in the other coordinates)."""
    fp32 = fp32_model.clone()
    reference = _run(core, fp32, items)
    baseline = _output_sqnr(reference, _run(core, int8_model, items))
    fp32_weights = {op.get_friendly_name(): op.input_value(1) for op in fp32.get_ordered_ops()
                    if op.get_friendly_name() in names and op.get_friendly_name() not in smoothed}
    gains = {}
    for name in progress(names, "Ablation", unit="layer"):
        model = int8_model.clone()
        layer = next(op for op in model.get_ordered_ops() if op.get_friendly_name() == name)
        for port in range(layer.get_input_size()):
            source = layer.input_value(port).get_node()
            if source.get_type_name() == "FakeQuantize":
                layer.input(port).replace_source_output(source.input_value(0))
            elif _is_int8_weight(source) and name in fp32_weights:
                layer.input(port).replace_source_output(fp32_weights[name])
        gains[name] = _output_sqnr(reference, _run(core, model, items)) - baseline
    return gains


def _output_sqnr(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    """SQNR over every float output and sample together."""
    pairs = [(r, g) for ref, out in zip(reference, got) for r, g in zip(ref, out) if r.dtype.kind == "f"]
    return sqnr_db([r for r, _ in pairs], [g for _, g in pairs])


def sqnr_db(reference: list[np.ndarray], quantized: list[np.ndarray]) -> float:
    """10 log10(sum y^2 / sum (y - y_q)^2) over all samples; inf when identical."""
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    noise = sum(float(np.sum((r.astype(np.float64) - q) ** 2)) for r, q in zip(reference, quantized))
    return float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)


def _folded_smoothing(model: ov.Model) -> set[str]:
    """Layers whose input SmoothQuant rescaled inside its producer: their FP32 input is not in the INT8 layer's
    coordinates, so their own error cannot be measured this way (reported as NaN)."""
    if not model.has_rt_info(["ovptq", "smooth_quant"]):
        return set()
    folded = {q for q, where in json.loads(model.get_rt_info(["ovptq", "smooth_quant"]).astype(str)).items()
              if where != "Multiply"}
    return {target.get_node().get_friendly_name() for op in model.get_ordered_ops()
            if op.get_friendly_name() in folded for target in op.output(0).get_target_inputs()}


def _is_int8_weight(node: ov.Node) -> bool:
    """Constant(i8) -> Convert -> Multiply(scale), as ovptq stores weights."""
    if node.get_type_name() != "Multiply":
        return False
    convert = node.input_value(0).get_node()
    return convert.get_type_name() == "Convert" and convert.input_value(0).get_node().get_type_name() == "Constant"


def _quantized(op: ov.Node) -> bool:
    return any(op.input_value(i).get_node().get_type_name() == "FakeQuantize"
               or _is_int8_weight(op.input_value(i).get_node()) for i in range(op.get_input_size()))


def _shadow(original: ov.Node, quantized: ov.Node) -> ov.Node:
    """`quantized`'s op rebuilt on `original`'s inputs: each input goes through the INT8 model's quantizer of that
    input (a FakeQuantize on activations, the dequantized int8 constant for weights)."""
    inputs = []
    for port in range(original.get_input_size()):
        source = quantized.input_value(port).get_node()
        fp32_input = original.input_value(port)
        if source.get_type_name() == "FakeQuantize":
            smoothing = source.input_value(0).get_node()
            if smoothing.get_friendly_name().endswith("/smooth_quant"):  # x / s in front of the quantizer
                fp32_input = ops.multiply(fp32_input, smoothing.input_value(1)).output(0)
            inputs.append(ops.fake_quantize(fp32_input, *(source.input_value(i) for i in range(1, 5)),
                                            source.get_attributes()["levels"]).output(0))
        elif _is_int8_weight(source):
            inputs.append(quantized.input_value(port))
        else:
            inputs.append(fp32_input)
    attributes = original.get_attributes()
    kind = original.get_type_name()
    if kind == "MatMul":
        return ops.matmul(*inputs, attributes["transpose_a"], attributes["transpose_b"])
    factory = ops.convolution if kind == "Convolution" else ops.group_convolution
    return factory(*inputs, attributes["strides"], attributes["pads_begin"], attributes["pads_end"],
                   attributes["dilations"], attributes["auto_pad"])


def _items(dataset: Dataset, inputs: list[ModelInput], samples: int) -> list[dict]:
    items = []
    for index, item in dataset.items():
        for request in bind_requests(item, inputs, index):
            items.append(request)
            if len(items) == samples:
                return items
    return items


def _run(core: ov.Core, model: ov.Model, items: list[dict]) -> list[list[np.ndarray]]:
    """Per output, the list of its values on every item."""
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    outputs: list[list[np.ndarray]] = [[] for _ in compiled.outputs]
    for item in items:
        request.infer(item)
        for index in range(len(compiled.outputs)):
            outputs[index].append(request.get_output_tensor(index).data.copy())
    return outputs
