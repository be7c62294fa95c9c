"""`ovptq.quantize`: parse the options, then run the default list of stages on a copy of the model."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from pathlib import Path

import openvino as ov

from ovptq import pipeline, smooth_quant
from ovptq.bias_correction import fast, full
from ovptq.dataset import Dataset
from ovptq.errors import ModelError, ParameterError, UnsupportedModelError
from ovptq.graph.equalize import equalize
from ovptq.graph.graph import Graph, unique_names
from ovptq.graph.normalize import normalize
from ovptq.measuring import safety_net, speed_check
from ovptq.parameters import (AdvancedQuantizationParameters, ModelType, OverflowFix, QuantizationPreset,
                              TargetDevice)
from ovptq.placement import placer
from ovptq.ranges import activations, rounding, weights
from ovptq.rewrite import record, rewrite
from ovptq.runtime.cpu import cpu_description, int8_sums_saturate
from ovptq.scope import IgnoredScope
from ovptq.state import Options, Stage, State
from ovptq.statistics.compile import check_device
from ovptq.wording import counted

log = logging.getLogger("ovptq")
# The one-line summary of each call; `logging.getLogger("ovptq.summary").setLevel(logging.INFO)` shows it alone.
summary_log = logging.getLogger("ovptq.summary")
GENERIC_MODEL_NAME = re.compile(r"\w*_Frontend_IR|Model\d*|main_graph|torch_jit")

# The default pipeline, in order. Before the first stage that reads statistics, one pass measures what every
# enabled stage declares.
DEFAULT_STAGES: tuple[Stage, ...] = (
    placer.STAGE,         # graph -> placement plan (IgnoredScope, post-processing, transformer rules)
    smooth_quant.STAGE,   # on with model_type="transformer": activation outliers into MatMul weights, as edits
    activations.STAGE,    # FakeQuantize parameters of every activation quantizer
    weights.STAGE,        # int8 weights and their per-channel scales
    rounding.STAGE,       # with weight_rounding="error_feedback": int8 weights chosen by their layer's output error
    fast.STAGE,           # each bias moved by the exact mean error of its layer's int8 weights
    full.STAGE,           # with fast_bias_correction=False: block passes of the int8-weight model
    rewrite.STAGE,        # the one writer: every edit on a fresh clone of the model -> the INT8 model
    safety_net.STAGE,     # INT8 outputs against FP32; the quantizers that cause the error get a fix, or float
    speed_check.STAGE,    # target_device="CPU": INT8 against FP32 per layer on this CPU; slower layers to float
    rewrite.RECORD_STAGE,  # what every stage did, in the INT8 model's rt_info
)


def load_model(model: ov.Model | str | Path, core: ov.Core | None = None) -> ov.Model:
    """An `ov.Model` as is, or read from an .xml / .onnx path (anything `ov.Core.read_model` reads)."""
    if isinstance(model, ov.Model):
        return model
    if not isinstance(model, str | Path):
        raise ParameterError(f"model must be an openvino.Model or a path to an .xml/.onnx file, not "
                             f"{type(model).__name__}.")
    path = checked_model_path(model)
    try:
        return (core or ov.Core()).read_model(str(path))
    except RuntimeError as error:
        raise ModelError(f"OpenVINO could not read '{path}': {error}") from error


def checked_model_path(model: str | Path) -> Path:
    """`model` as a path to a model file OpenVINO can be asked to read, or a ModelError saying what is wrong."""
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"Model file '{path}' does not exist.")
    if path.suffix == ".bin":
        raise ModelError(f"'{path}' is the weights file of an IR: pass its .xml ('{path.with_suffix('.xml')}'), "
                         "which names the .bin beside it.")
    if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise ModelError(f"'{path}' has no weights file '{path.with_suffix('.bin').name}' beside it; an IR needs both "
                         ".xml and .bin.")
    return path


def _parse_options(preset, target_device, subset_size, fast_bias_correction, model_type, ignored_scope,
                   advanced_parameters, statistics_path) -> Options:
    model_type = None if model_type is None else ModelType.parse(model_type, "model_type")
    if preset is None:
        preset = QuantizationPreset.MIXED if model_type is ModelType.TRANSFORMER else QuantizationPreset.PERFORMANCE
    preset = QuantizationPreset.parse(preset, "preset")
    target_device = TargetDevice.parse(target_device, "target_device")
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size < 1:
        raise ParameterError(f"subset_size={subset_size!r} must be a positive integer (the number of dataset items "
                             "used for statistics).")
    if not isinstance(fast_bias_correction, bool):
        raise ParameterError(f"fast_bias_correction must be True or False, not {fast_bias_correction!r}.")
    if ignored_scope is not None and not isinstance(ignored_scope, IgnoredScope):
        raise ParameterError(f"ignored_scope must be an ovptq.IgnoredScope, not {type(ignored_scope).__name__}.")
    if advanced_parameters is None:
        advanced_parameters = AdvancedQuantizationParameters()
    if not isinstance(advanced_parameters, AdvancedQuantizationParameters):
        raise ParameterError("advanced_parameters must be an ovptq.AdvancedQuantizationParameters, not "
                             f"{type(advanced_parameters).__name__}.")
    if statistics_path is not None and not isinstance(statistics_path, (str, Path)):
        raise ParameterError(f"statistics_path must be a path (str or pathlib.Path) or None, not "
                             f"{type(statistics_path).__name__}.")
    advanced = advanced_parameters.normalized()
    if advanced_parameters.overflow_fix is None and target_device is TargetDevice.CPU and int8_sums_saturate():
        advanced = replace(advanced, overflow_fix=OverflowFix.ENABLE)
        log.info("Overflow fix on every layer (7-bit weights): target_device='CPU' and this CPU, %s, has no VNNI or "
                 "AMX, so its int8 kernels add pairs of u8 x i8 products in 16 bits, which saturate. The IR is made "
                 "for such CPUs; target_device='ANY' or advanced_parameters.overflow_fix chooses otherwise.",
                 cpu_description())
    return Options(preset, target_device, subset_size, fast_bias_correction, model_type, ignored_scope,
                   advanced, None if statistics_path is None else Path(statistics_path))


def quantize(model: ov.Model | str | Path, calibration_dataset: Dataset, *,
             preset: QuantizationPreset | str | None = None, target_device: TargetDevice | str = TargetDevice.ANY,
             subset_size: int = 300, fast_bias_correction: bool = True, model_type: ModelType | str | None = None,
             ignored_scope: IgnoredScope | None = None,
             advanced_parameters: AdvancedQuantizationParameters | None = None,
             statistics_path: str | Path | None = None) -> ov.Model:
    """Quantize `model` to INT8 with statistics from the first `subset_size` items of `calibration_dataset`.

    Returns a new `ov.Model`; the caller's model is not modified. Save it with `ov.save_model`.
    With `statistics_path`, the statistics are saved there on the first run and read back (without an inference
    pass) by later runs on the same model and data with other options; see `ovptq.statistics.cache`.
    """
    return quantized_state(model, calibration_dataset, preset=preset, target_device=target_device,
                           subset_size=subset_size, fast_bias_correction=fast_bias_correction, model_type=model_type,
                           ignored_scope=ignored_scope, advanced_parameters=advanced_parameters,
                           statistics_path=statistics_path).result


def quantized_state(model: ov.Model | str | Path, calibration_dataset: Dataset, *, preset=None,
                    target_device=TargetDevice.ANY, subset_size: int = 300, fast_bias_correction: bool = True,
                    model_type=None, ignored_scope=None, advanced_parameters=None, statistics_path=None) -> State:
    """What `quantize` does, returning the pipeline's final state (the INT8 model is its `result`), for a caller
    that goes on changing the plan (accuracy control)."""
    started = time.perf_counter()
    options = _parse_options(preset, target_device, subset_size, fast_bias_correction, model_type, ignored_scope,
                             advanced_parameters, statistics_path)
    if not isinstance(calibration_dataset, Dataset):
        raise ParameterError(f"calibration_dataset must be an ovptq.Dataset, not "
                             f"{type(calibration_dataset).__name__}; wrap the data: ovptq.Dataset(data, transform_fn).")
    core = ov.Core()
    first = start(load_model(model, core), calibration_dataset, options, core)
    log.debug("Stage %s: %.3f s", "start", time.perf_counter() - started)
    state = pipeline.run(first, DEFAULT_STAGES)
    if not state.finished:
        summary_log.info(record.summary(state, time.perf_counter() - started, model_label(model, state.source)))
    return state


def model_label(model: ov.Model | str | Path, loaded: ov.Model) -> str:
    """How the summary names the model: its file name when it came from a file, else its name unless that is one a
    frontend gives every model ('onnx_Frontend_IR', 'Model0')."""
    if isinstance(model, str | Path):
        return f"'{Path(model).name}'"
    name = loaded.get_friendly_name()
    return "the model" if not name or GENERIC_MODEL_NAME.fullmatch(name) else f"'{name}'"


def start(model: ov.Model, dataset: Dataset, options: Options, core: ov.Core | None = None) -> State:
    """The state the pipeline starts from: ovptq's own copy of `model`, normalised (see `ovptq.graph.normalize`),
    with unique op names, as a graph."""
    _refuse_quantized(model)
    core = core or ov.Core()
    if options.advanced.statistics_device != "CPU":
        check_device(core, options.advanced.statistics_device)
    working = model.clone()
    if options.advanced.normalize_graph:
        normalize(working)
    renamed = unique_names(working)
    if options.advanced.cross_layer_equalization:
        equalized = equalize(working)
        if equalized:
            log.info("Cross-layer equalisation: %s evened out.", counted(len(equalized), "convolution pair"))
    return State(options, core, model, working, Graph(working), dataset, renamed)


def _refuse_quantized(model: ov.Model) -> None:
    """A model that already holds FakeQuantize ops is refused: quantizing it again would stack quantizers."""
    quantizers = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    if quantizers:
        raise UnsupportedModelError(
            f"The model is already quantized: it holds {len(quantizers)} FakeQuantize ops (e.g. '{quantizers[0]}'). "
            "Quantize the FP32 model instead.")
