"""Proof of INT8: compile on CPU and read the runtime model the plugin really executes.

In `compiled_model.get_runtime_model()` every node carries rt_info `layerType`, `runtimePrecision` (for a
Convolution / FullyConnected / MatMul / Deconvolution: the max precision of its data and weight inputs, so i8/u8
means an integer kernel) and `originalLayersNames` (the IR ops fused into it). A FakeQuantize that survives as its
own layer runs as a float element-wise op: the plugin could not fuse it into an int8 kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import openvino as ov

LINEAR_LAYER_TYPES = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")
# The IR op types behind those runtime layers: how a runtime layer is named after the model's own op.
IR_LINEAR_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
                   "MatMul")
INT8_PRECISIONS = ("i8", "u8")


@dataclass(frozen=True)
class RuntimeLayer:
    name: str
    layer_type: str
    precision: str
    kernel: str
    original_names: tuple[str, ...]
    ir_name: str = ""  # the Convolution / MatMul op of the IR that this layer executes, when there is one

    @property
    def is_int8(self) -> bool:
        return self.precision.lower() in INT8_PRECISIONS


@dataclass
class Int8Report:
    layers: list[RuntimeLayer] = field(default_factory=list)

    @property
    def linear(self) -> list[RuntimeLayer]:
        return [layer for layer in self.layers if layer.layer_type in LINEAR_LAYER_TYPES]

    @property
    def int8_linear(self) -> list[RuntimeLayer]:
        return [layer for layer in self.linear if layer.is_int8]

    @property
    def float_linear(self) -> list[RuntimeLayer]:
        return [layer for layer in self.linear if not layer.is_int8]

    @property
    def standalone_fake_quantize(self) -> list[RuntimeLayer]:
        return [layer for layer in self.layers if layer.layer_type == "FakeQuantize"]

    @property
    def coverage(self) -> float:
        """Share of Convolution / FullyConnected / MatMul layers running an int8 kernel."""
        return len(self.int8_linear) / len(self.linear) if self.linear else 0.0

    def int8_names(self) -> set[str]:
        """Names of the IR's Convolution / MatMul ops that run in int8."""
        return {layer.ir_name or layer.name for layer in self.int8_linear}

    def __str__(self) -> str:
        lines = [f"INT8 coverage: {len(self.int8_linear)}/{len(self.linear)} Convolution/FullyConnected/MatMul "
                 f"layers run int8 ({self.coverage:.0%}); {len(self.standalone_fake_quantize)} FakeQuantize run "
                 "as separate float layers."]
        for layer in self.float_linear:
            lines.append(f"  float {layer.layer_type:<16} {layer.name} ({layer.kernel})")
        for layer in self.standalone_fake_quantize:
            lines.append(f"  unfused FakeQuantize {layer.name}")
        return "\n".join(lines)


def _text(rt_info, key: str) -> str:
    return rt_info[key].astype(str) if key in rt_info else ""


def inspect(model: ov.Model | str | Path, device: str = "CPU", core: ov.Core | None = None) -> Int8Report:
    """Compile `model` and report, per runtime layer, its type, precision and kernel."""
    core = core or ov.Core()
    if not isinstance(model, ov.Model):
        model = core.read_model(str(model))
    linear_ops = {op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in IR_LINEAR_TYPES}
    compiled = core.compile_model(model, device)
    report = Int8Report()
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        names = tuple(n for n in _text(rt, "originalLayersNames").split(",") if n)
        ir_name = next((n for n in names if n in linear_ops), "")
        report.layers.append(RuntimeLayer(op.get_friendly_name(), _text(rt, "layerType"),
                                          _text(rt, "runtimePrecision"), _text(rt, "primitiveType"), names, ir_name))
    return report
