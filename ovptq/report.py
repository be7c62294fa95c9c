"""Per-layer error report: which quantized layers lose the accuracy (measured with `ovptq.measuring.measure`).

For every quantized linear layer (Convolution, MatMul, ...) of the INT8 model, on a few calibration samples:
  own error          the layer alone quantized: its input quantizers and int8 weights applied to the FP32 model's
                     input of that layer, against the FP32 layer (what this layer adds by itself);
  accumulated error  the layer's output in the INT8 model against the FP32 model's (everything before it included).
  output gain        with `ablation`: how many dB the model outputs' SQNR against FP32 gains when only this layer is
                     put back in float in the INT8 model (its input quantizers bypassed, its FP32 weight restored);
                     one compilation per layer, so slower, but it ranks by effect on the outputs.
  rounding gain      when the INT8 model was made with weight_rounding="error_feedback": how many dB the layer's
                     output error from its weights, tr(dW H dW^T) on FP32 inputs, fell from nearest rounding to the
                     weights kept (10 log10 before / after, from rt_info ovptq/weight_rounding; 0 where nearest stayed).
With `ablation`, every quantizer is also ranked on its own, layer or not: each FakeQuantize (on the inputs of Add,
Multiply, Concat, both inputs of a MatMul, ...) and each int8 weight, by the output SQNR gained with it alone in float.
Both errors as SQNR in dB over all samples (higher is better), computed on the layer's output before its bias, on
this CPU's int8 kernels: on a CPU whose kernels saturate (x86 without VNNI or AMX) the report says so, since its
errors then include that saturation.
Layers are ranked by own SQNR, worst first: the first names are those to try in an IgnoredScope. Reported are the
layers with a quantizer right at an input (weights, or an activation FakeQuantize feeding the op); an activation x
activation MatMul quantized above a Reshape / Transpose is left out. Where SmoothQuant changed coordinates the
comparison with FP32 does not hold and the error is NaN: the own error of a layer whose input was rescaled inside
its producer, and both errors of a layer that took 1/s into its weights (it outputs y / s).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import openvino as ov

from ovptq.measuring import measure
from ovptq.dataset import Dataset
from ovptq.errors import ModelError
from ovptq.hardware import LINEAR_TYPES
from ovptq.rewrite.record import stage_record
from ovptq.runtime.cpu import cpu_description, int8_sums_saturate


@dataclass(frozen=True)
class LayerError:
    layer: str
    type: str
    own_sqnr_db: float
    accumulated_sqnr_db: float
    output_gain_db: float | None = None
    rounding_gain_db: float | None = None


@dataclass(frozen=True)
class QuantizerGain:
    quantizer: str
    feeds: str            # "activation -> Add", "weight -> Convolution", ...
    output_gain_db: float


@dataclass
class ErrorReport:
    layers: list[LayerError]
    samples: int
    quantizers: list[QuantizerGain] = field(default_factory=list)  # with ablation: every quantizer, best gain first
    saturating_cpu: str = ""   # the CPU the errors were measured on, when its int8 kernels saturate ("": they do not)

    def ranked(self) -> list[LayerError]:
        """Worst first: by output gain when measured (largest first), else by own SQNR (smallest first)."""
        if all(e.output_gain_db is not None for e in self.layers):
            return sorted(self.layers, key=lambda e: -e.output_gain_db)
        return sorted(self.layers, key=lambda e: (np.isnan(e.own_sqnr_db), e.own_sqnr_db, e.accumulated_sqnr_db))

    def __str__(self) -> str:
        ablation = all(e.output_gain_db is not None for e in self.layers)
        rounded = any(e.rounding_gain_db is not None for e in self.layers)
        order = "largest output gain" if ablation else "worst own error"
        lines = [f"Per-layer SQNR (dB, higher is better) on {self.samples} samples, {order} first:",
                 f"{'layer':<60} {'type':<17} {'own':>7} {'accum.':>7}" + (f" {'gain':>7}" if ablation else "")
                 + (f" {'round':>7}" if rounded else "")]
        for error in self.ranked():
            gain = f" {error.output_gain_db:7.2f}" if ablation else ""
            if rounded:
                gain += f" {error.rounding_gain_db:7.2f}" if error.rounding_gain_db is not None else f" {'-':>7}"
            lines.append(f"{error.layer[-60:]:<60} {error.type:<17} {error.own_sqnr_db:7.1f} "
                         f"{error.accumulated_sqnr_db:7.1f}{gain}")
        if rounded:
            lines.append("round: dB the layer's weight error fell by error-feedback rounding against nearest rounding "
                         "(-: nearest rounding, layer not weighed)")
        worst = [error.layer for error in self.ranked()[:5]]
        lines.append(f"To try: ovptq.IgnoredScope(names={worst!r})")
        if self.saturating_cpu:
            lines.append(f"Measured on this CPU's int8 kernels ({self.saturating_cpu}: no VNNI or AMX), whose 16-bit "
                         "sums of u8 x i8 pairs saturate where weights use all 8 bits: the errors include that.")
        if self.quantizers:
            lines += ["", "Every quantizer, output SQNR gained with it alone in float (dB), largest first:",
                      f"{'quantizer':<60} {'feeds':<30} {'gain':>7}"]
            lines += [f"{q.quantizer[-60:]:<60} {q.feeds[:30]:<30} {q.output_gain_db:7.2f}" for q in self.quantizers]
        return "\n".join(lines)

    def to_json(self) -> str:
        def finite(value):
            return None if np.isnan(value) else value if np.isfinite(value) else "inf"
        layers = [{k: finite(v) if isinstance(v, float) else v for k, v in asdict(e).items()} for e in self.ranked()]
        return json.dumps({"samples": self.samples, "saturating_cpu": self.saturating_cpu, "layers": layers,
                           "quantizers": [asdict(q) for q in self.quantizers]}, indent=1)

    def plot(self, path: str | Path) -> Path:
        """Own and accumulated SQNR per layer in model order (needs matplotlib; leaves its backend alone)."""
        from matplotlib.figure import Figure
        figure = Figure(figsize=(max(6.0, 0.18 * len(self.layers) + 2), 4.2))
        axis = figure.subplots()
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
        return Path(path)


def layer_errors(fp32_model: ov.Model, int8_model: ov.Model, dataset: Dataset, samples: int = 8,
                 core: ov.Core | None = None, ablation: bool = False) -> ErrorReport:
    """The report of `int8_model` (made from `fp32_model` by ovptq) on the first `samples` items of `dataset`."""
    core = core or ov.Core()
    fp32_model = measure.as_quantized(fp32_model, int8_model)
    fp32_names = {op.get_friendly_name() for op in fp32_model.get_ordered_ops()}
    layers = [op for op in int8_model.get_ordered_ops() if op.get_type_name() in LINEAR_TYPES
              and op.get_friendly_name() in fp32_names and measure.is_quantized(op)]
    if not layers:
        raise ModelError("The INT8 model has no quantized Convolution / MatMul that the FP32 model also has (by "
                         "name): pass the FP32 model the INT8 one was made from.")
    names = [op.get_friendly_name() for op in layers]
    folded, multiplied, took_factor = measure.rescaled(int8_model)
    feeds = measure.bind(dataset, fp32_model, samples)
    own = measure.run(core, measure.shadow_model(fp32_model, int8_model, names), feeds)
    accumulated = measure.run(core, measure.outputs_of(int8_model, names), feeds)
    keep_weights = folded | multiplied | took_factor  # their FP32 weights are in other coordinates
    gains = measure.output_gains(core, fp32_model, int8_model, names, keep_weights, feeds) if ablation else {}
    quantizers = []
    if ablation:
        every = measure.quantizer_gains(core, fp32_model, int8_model, keep_weights, feeds)
        quantizers = sorted((QuantizerGain(name, feeds_, gain) for name, (feeds_, gain) in every.items()),
                            key=lambda q: -q.output_gain_db)
    rounding = rounding_gains(int8_model)
    results = []
    for index, op in enumerate(layers):
        name = op.get_friendly_name()
        own_db = float("nan") if name in folded | took_factor else measure.sqnr_db(own[index],
                                                                                   own[len(names) + index])
        accumulated_db = float("nan") if name in took_factor else measure.sqnr_db(own[index], accumulated[index])
        results.append(LayerError(name, op.get_type_name(), own_db, accumulated_db, gains.get(name),
                                  rounding.get(name)))
    return ErrorReport(results, len(feeds), quantizers, cpu_description() if int8_sums_saturate() else "")


def rounding_gains(int8_model: ov.Model) -> dict[str, float]:
    """layer -> 10 log10(error with nearest rounding / error with the weights kept), from the weight-rounding
    stage's record; empty when the stage did not run."""
    gains = {}
    for entry in stage_record(int8_model, "weight_rounding") or []:
        before, after = entry["error_before"], entry["error_after"]
        gains[entry["layer"]] = 0.0 if after >= before else float(10 * np.log10(before / max(after, 1e-300)))
    return gains
