"""The runtime model the CPU plugin executes, read back layer by layer, and each layer's op in the IR.

In `compiled_model.get_runtime_model()` every node carries rt_info `layerType`, `runtimePrecision` (for a
Convolution / FullyConnected / MatMul / Deconvolution: the max precision of its data and weight inputs, so i8/u8
means an integer kernel), `primitiveType` (the kernel) and `originalLayersNames` (the IR ops fused into it).
"""

from __future__ import annotations

from dataclasses import dataclass

import openvino as ov

from ovptq.hardware import LINEAR_TYPES

# Runtime layer types of the IR's linear ops (a MatMul with constant weights runs as FullyConnected, a
# ConvolutionBackpropData as Deconvolution).
LINEAR_LAYER_TYPES = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")
INT8_PRECISIONS = ("i8", "u8")
# Suffixes the plugin's low-precision transformations add to an IR op's name when they move its dequantization
# (a quantized MatMul "fc" runs as FullyConnected "fc/DequantizationMultiply").
RENAMING_SUFFIXES = ("/DequantizationMultiply",)


@dataclass(frozen=True)
class RuntimeLayer:
    name: str
    layer_type: str
    precision: str
    kernel: str
    original_names: tuple[str, ...]
    ir_name: str = ""  # the Convolution / MatMul op of the IR that this layer executes, when there is one
    input_precisions: tuple[str, ...] = ()
    output_precision: str = ""

    @property
    def is_int8(self) -> bool:
        return self.precision.lower() in INT8_PRECISIONS


def runtime_layers(compiled: ov.CompiledModel, model: ov.Model) -> list[RuntimeLayer]:
    """Every layer of `compiled`'s runtime model, with the linear op of `model` it executes (by the IR names fused
    into it)."""
    linear_ops = {op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in LINEAR_TYPES}
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        names = tuple(n for n in _text(rt, "originalLayersNames").split(",") if n)
        layers.append(RuntimeLayer(
            op.get_friendly_name(), _text(rt, "layerType"), _text(rt, "runtimePrecision"), _text(rt, "primitiveType"),
            names, ir_op(names, linear_ops),
            tuple(i.get_element_type().get_type_name() for i in op.inputs()), _text(rt, "outputPrecisions")))
    return layers


def ir_op(original_names: tuple[str, ...], candidates: set[str]) -> str:
    """The op of `candidates` among the IR names fused into a runtime layer (renamed ones included), or ""."""
    for name in original_names:
        for suffix in ("", *RENAMING_SUFFIXES):
            if name.endswith(suffix) and name[:len(name) - len(suffix)] in candidates:
                return name[:len(name) - len(suffix)]
    return ""


def _text(rt_info, key: str) -> str:
    return rt_info[key].astype(str) if key in rt_info else ""
