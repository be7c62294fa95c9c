"""Proof of INT8: compile on CPU and read the runtime model the plugin really executes (`runtime.layers`).

A linear layer whose runtime precision is i8/u8 runs an integer kernel. A FakeQuantize that survives as its own
layer runs as a float element-wise op: the plugin could not fuse it into an int8 kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import openvino as ov

from ovptq.rewrite.record import stage_record
from ovptq.runtime.cpu import cpu_description, int8_sums_saturate
from ovptq.runtime.layers import LINEAR_LAYER_TYPES, RuntimeLayer, runtime_layers


@dataclass
class Int8Report:
    layers: list[RuntimeLayer] = field(default_factory=list)
    fake_quantize_ops: int = 0  # FakeQuantize ops in the IR (0: an unquantized model)
    kept_float: dict[str, str] = field(default_factory=dict)  # layer -> the stage that kept it float (rt_info)
    speed_check_precision: str = ""
    speed_check_cpu: str = ""         # the CPU the speed check's decisions were measured on ("": none in the model)
    given_back_whole: bool = False    # the speed check gave every layer back to float
    cpu: str = field(default_factory=cpu_description)  # the CPU this report was made on
    overflow_fix: str = ""            # the overflow fix the model was made with ("": not recorded)
    sums_saturate: bool = field(default_factory=int8_sums_saturate)  # this CPU's int8 kernels saturate 16-bit sums
    made_by_ovptq: bool = False       # the model carries ovptq's rt_info
    input_quantizers: frozenset[str] = frozenset()  # FakeQuantize ops of the IR that read a model input directly

    @property
    def measured_elsewhere(self) -> bool:
        """The speed check's decisions came from another kind of CPU than this one."""
        return bool(self.speed_check_cpu) and self.speed_check_cpu != self.cpu

    @property
    def speed_checked(self) -> set[str]:
        return {name for name, why in self.kept_float.items() if why == "speed check"}

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

    @property
    def precision_reorders(self) -> list[RuntimeLayer]:
        """Reorders that convert between precisions (not just layouts): each is a memory pass at a precision
        boundary, e.g. where an int8 region hands over to float."""
        return [layer for layer in self.layers if layer.layer_type == "Reorder" and layer.input_precisions
                and layer.output_precision and layer.input_precisions[0] != layer.output_precision]

    def verdict(self) -> str:
        if not self.linear:
            return "NO LINEAR LAYERS: the model has no Convolution / FullyConnected / MatMul layer to run in int8."
        if self.given_back_whole and not self.int8_linear:
            return (f"FLOAT: the speed check gave every layer back to float, because on the CPU that quantized "
                    f"({self.speed_check_cpu}) the INT8 model ran slower than the FP32 model at "
                    f"{self.speed_check_precision}. Quantize with target_device='ANY' to keep INT8.")
        if not self.fake_quantize_ops and not self.int8_linear:
            return "FLOAT: the model holds no FakeQuantize; quantize it first (ovptq quantize)."
        if not self.float_linear and not self.standalone_fake_quantize:
            return (f"INT8: all {len(self.linear)} Convolution / FullyConnected / MatMul layers run int8 kernels and "
                    "every FakeQuantize is fused.")
        if not self.float_linear:
            unfused = len(self.standalone_fake_quantize)
            return (f"INT8: all {len(self.linear)} Convolution / FullyConnected / MatMul layers run int8 kernels; "
                    f"{unfused} FakeQuantize run{'s' if unfused == 1 else ''} as {'a ' if unfused == 1 else ''}"
                    f"separate float layer{'' if unfused == 1 else 's'}.")
        return (f"PARTIAL INT8: {len(self.float_linear)} of {len(self.linear)} Convolution / FullyConnected / MatMul "
                f"layers run in float; {len(self.standalone_fake_quantize)} FakeQuantize run as separate float "
                "layers.")

    def hints(self) -> list[str]:
        hints = []
        on_inputs = [layer for layer in self.standalone_fake_quantize if self._reads_model_input(layer)]
        others = [layer for layer in self.standalone_fake_quantize if layer not in on_inputs]
        if on_inputs:
            hints.append(f"{len(on_inputs)} FakeQuantize on a model input run{'s' if len(on_inputs) == 1 else ''} as "
                         "its own layer: it turns the float input into the int8 grid, one element-wise pass over the "
                         "input per inference, before the first int8 layer.")
        if others:
            remedy = ("ignore the layer behind it (IgnoredScope) if that pass costs time" if self.made_by_ovptq
                      else "re-quantize with ovptq, or ignore the layer (IgnoredScope)")
            alone = "was left as its own layer" if len(others) == 1 else "were left as their own layers"
            hints.append(f"{len(others)} FakeQuantize {alone}, not fused into an int8 kernel: per-channel "
                         "activation ranges in front of a non-depthwise layer, a zero point on an activation x "
                         "activation MatMul or a deconvolution, or an op between it and the layer that the plugin "
                         "cannot pass through. "
                         f"Each is an extra float pass: {remedy}.")
        given_back = [layer for layer in self.float_linear if (layer.ir_name or layer.name) in self.speed_checked]
        restored = [layer for layer in self.float_linear
                    if self.kept_float.get(layer.ir_name or layer.name) == "accuracy control"]
        if restored:
            hints.append(f"{len(restored)} float layers were restored by accuracy control to meet max_drop "
                         "(rt_info ovptq/accuracy_control).")
        if given_back and not self.given_back_whole:
            hints.append(f"{len(given_back)} float layers were given back by the speed check: they ran slower in "
                         f"int8 than the FP32 model at {self.speed_check_precision} on the CPU that quantized "
                         f"({self.speed_check_cpu}; rt_info ovptq/speed_check). For other CPUs, quantize with "
                         "target_device='ANY'.")
        if self.measured_elsewhere:
            hints.append(f"The speed check's decisions were measured on {self.speed_check_cpu}; this CPU is "
                         f"{self.cpu}: they may not hold here. Quantize on this CPU with target_device='CPU', or "
                         "with target_device='ANY' for an IR that makes no CPU-specific decision.")
        if len(self.float_linear) > len(given_back) + len(restored) and self.fake_quantize_ops:
            hints.append("Layers in float with quantizers in the model: their inputs or weights are not quantized, "
                         "or quantized in a form the kernel does not take (see the list above).")
        if self.sums_saturate and self.int8_linear and self.overflow_fix and self.overflow_fix != "enable":
            hints.append(f"This CPU ({self.cpu}) has no VNNI or AMX: its int8 kernels add pairs of u8 x i8 "
                         "products in 16 bits, which saturate where weights use all 8 bits (this model: "
                         f"overflow_fix='{self.overflow_fix}'), so they may compute other values than the IR says. "
                         "For this CPU, quantize with target_device='CPU' (7-bit weights on every layer).")
        if self.int8_linear and len(self.precision_reorders) > max(4, len(self.linear) // 2):
            hints.append(f"{len(self.precision_reorders)} Reorders convert between precisions: many switches "
                         "between int8 and float regions cost memory passes.")
        return hints

    def _reads_model_input(self, layer: RuntimeLayer) -> bool:
        return bool(set(layer.original_names) & self.input_quantizers)

    def table(self) -> str:
        """Every runtime layer: name, type, precision, kernel."""
        rows = [f"{'layer':<48} {'type':<18} {'precision':<9} kernel"]
        for layer in self.layers:
            if layer.layer_type in ("Const", "Input", "Output"):
                continue
            rows.append(f"{layer.name[-48:]:<48} {layer.layer_type:<18} {layer.precision:<9} {layer.kernel}")
        return "\n".join(rows)

    def as_dict(self) -> dict:
        return {"verdict": self.verdict(), "hints": self.hints(), "coverage": self.coverage,
                "linear_layers": len(self.linear), "int8_linear_layers": len(self.int8_linear),
                "float_linear": [layer.name for layer in self.float_linear],
                "standalone_fake_quantize": [layer.name for layer in self.standalone_fake_quantize],
                "precision_reorders": len(self.precision_reorders),
                "layers": [{"name": layer.name, "type": layer.layer_type, "precision": layer.precision,
                            "kernel": layer.kernel} for layer in self.layers
                           if layer.layer_type not in ("Const", "Input", "Output")]}

    def int8_names(self) -> set[str]:
        """Names of the IR's Convolution / MatMul ops that run in int8."""
        return {layer.ir_name or layer.name for layer in self.int8_linear}

    def __str__(self) -> str:
        lines = [f"INT8 coverage: {len(self.int8_linear)}/{len(self.linear)} Convolution/FullyConnected/MatMul "
                 f"layers run int8 ({self.coverage:.0%}); {len(self.standalone_fake_quantize)} FakeQuantize run "
                 "as separate float layers."]
        for layer in self.float_linear:
            why = self.kept_float.get(layer.ir_name or layer.name, "")
            why = f", {why}" if why else ""
            lines.append(f"  float {layer.layer_type:<16} {layer.name} ({layer.kernel}{why})")
        for layer in self.standalone_fake_quantize:
            lines.append(f"  unfused FakeQuantize {layer.name}")
        return "\n".join(lines)


def inspect(model: ov.Model | str | Path, device: str = "CPU", core: ov.Core | None = None) -> Int8Report:
    """Compile `model` and report, per runtime layer, its type, precision and kernel."""
    core = core or ov.Core()
    if not isinstance(model, ov.Model):
        model = core.read_model(str(model))
    compiled = core.compile_model(model, device)
    speed, control = (stage_record(model, key) for key in ("speed_check", "accuracy_control"))
    kept_float = {**{name: "speed check" for name in speed.get("layers", ())},
                  **{name: "accuracy control" for name in control.get("restored", ())}}
    overflow_key = ["ovptq", "quantization", "advanced_parameters", "overflow_fix"]
    overflow_fix = model.get_rt_info(overflow_key).astype(str) if model.has_rt_info(overflow_key) else ""
    quantizers = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    on_inputs = frozenset(op.get_friendly_name() for op in quantizers
                          if op.input_value(0).get_node().get_type_name() == "Parameter")
    return Int8Report(runtime_layers(compiled, model), len(quantizers), kept_float, speed.get("fp32_precision", ""),
                      speed.get("cpu", ""), bool(speed.get("whole_model_in_float", False)), overflow_fix=overflow_fix,
                      made_by_ovptq=model.has_rt_info(["ovptq"]), input_quantizers=on_inputs)
