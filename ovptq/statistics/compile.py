"""How the statistics model is compiled: f32 inference on the statistics device (CPU unless
AdvancedQuantizationParameters.statistics_device says otherwise), with one or two streams by the activations' size."""

from __future__ import annotations

import numpy as np
import openvino as ov

from ovptq.errors import ParameterError, StatisticsError
from ovptq.statistics.model import StatisticsModel

# A model whose float activations add up to more than this per sample gets one inference stream (both cores on one
# inference) instead of two: each stream holds its own activations (benchmarks/README.md).
ONE_STREAM_ACTIVATION_BYTES = 256 << 20
VIRTUAL_DEVICES = frozenset({"AUTO", "MULTI", "HETERO", "BATCH"})


def constant_bytes(model: ov.Model) -> int:
    return sum(op.get_byte_size() for op in model.get_ordered_ops() if op.get_type_name() == "Constant")


def activation_bytes(model: ov.Model) -> int:
    """Bytes of the float outputs of one sample's inference (static shapes; constant sub-graphs excluded)."""
    constant: set[str] = set()
    total = 0
    for op in model.get_ordered_ops():
        inputs = [op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size())]
        if op.get_type_name() == "Constant" or inputs and all(name in constant for name in inputs):
            constant.add(op.get_friendly_name())
            continue
        if op.get_type_name() == "Result":
            continue
        for output in op.outputs():
            shape = output.get_partial_shape()
            if shape.is_static and output.get_element_type().is_real():
                total += int(np.prod(shape.to_shape(), dtype=np.int64)) * output.get_element_type().size
    return total


def compile_config(model: ov.Model) -> dict[str, str]:
    """f32 inference; two streams, or one for a model with more than ONE_STREAM_ACTIVATION_BYTES of activations."""
    hint = "LATENCY" if activation_bytes(model) > ONE_STREAM_ACTIVATION_BYTES else "THROUGHPUT"
    return {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint}


def compile_statistics_model(core: ov.Core, stats_model: StatisticsModel, config: dict[str, str],
                             device: str = "CPU") -> ov.CompiledModel:
    """The statistics model compiled on `device` (AdvancedQuantizationParameters.statistics_device)."""
    try:
        return core.compile_model(stats_model.model, device, config)
    except RuntimeError as error:
        raise StatisticsError(f"The {device} plugin could not compile the statistics model: {error}") from error


def check_device(core: ov.Core, device: str) -> None:
    """A ParameterError unless `device` (or, for GPU.1 or HETERO:GPU,CPU, each device it names) is available."""
    names = [name for name in device.replace(":", ",").split(",") if name and name not in VIRTUAL_DEVICES]
    available = core.available_devices
    missing = [name for name in names if name not in available and name.split(".")[0] not in available]
    if missing:
        raise ParameterError(f"advanced_parameters.statistics_device={device!r}: {', '.join(missing)} is not "
                             f"available here; the available devices are {', '.join(available)}.")
