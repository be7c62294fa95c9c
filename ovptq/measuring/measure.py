"""Measuring an INT8 model against its FP32 model on a few samples: SQNR, shadow layers, ablation.

    SQNR = 10 log10(sum y^2 / sum (y - y_q)^2) in dB over all samples (higher is better).

A shadow layer is a quantized layer recomputed on the FP32 model's input of that layer (its own error, without
what the layers before it add). Ablation puts one layer back in float in the INT8 model and measures what the
outputs gain. The per-layer report, and any stage that checks a quantized model by measurement, build on these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.dataset import Dataset, ModelInput, bind_requests
from ovptq.errors import StatisticsError
from ovptq.graph.equalize import equalize
from ovptq.graph.normalize import normalize
from ovptq.inference import infer_from_initial_state
from ovptq.progress import progress
from ovptq.rewrite.record import stage_record

log = logging.getLogger("ovptq")


def sqnr_db(reference: Iterable[np.ndarray], quantized: Iterable[np.ndarray]) -> float:
    """10 log10(sum y^2 / sum (y - y_q)^2) over all samples; inf when identical."""
    reference, quantized = list(reference), list(quantized)
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    noise = sum(float(np.sum((r.astype(np.float64) - q) ** 2)) for r, q in zip(reference, quantized))
    return float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)


def output_sqnr(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    """SQNR over every float output and sample together (`run` results of two models)."""
    pairs = [(r, g) for ref, out in zip(reference, got) for r, g in zip(ref, out) if r.dtype.kind == "f"]
    return sqnr_db([r for r, _ in pairs], [g for _, g in pairs])


def worst_output_sqnr(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> float:
    """The lowest SQNR of any one float output over the samples (`run` results of two models): a model's small
    output (a probability) counts as much as a large one (its recurrent state)."""
    per_output = [sqnr_db(ref, out) for ref, out in zip(reference, got) if ref and ref[0].dtype.kind == "f"]
    return min(per_output, default=float("inf"))


def sample_errors(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> np.ndarray:
    """Per sample, the squared error of every float output, each output's error divided by its mean power per
    sample, summed over outputs."""
    errors = np.zeros(len(reference[0]) if reference else 0)
    for ref, out in zip(reference, got):
        if not ref or ref[0].dtype.kind != "f":
            continue
        power = max(np.mean([float(np.sum(r.astype(np.float64) ** 2)) for r in ref]), 1e-30)
        errors += [float(np.sum((r.astype(np.float64) - g) ** 2)) / power for r, g in zip(ref, out)]
    return errors


def bind(dataset: Dataset, model: ov.Model, samples: int, stage: str = "") -> list[dict]:
    """The first `samples` infer-request feeds of `dataset` for `model` (`stage` names the reader in errors)."""
    inputs = ModelInput.of(model)
    feeds = []
    for index, item in dataset.items(stage=stage):
        for feed in bind_requests(item, inputs, index):
            feeds.append(feed)
            if len(feeds) == samples:
                return feeds
    return feeds


# The CPU plugin's switch for its low-precision transformations (an internal property): off, an INT8 model runs
# its FakeQuantize ops in f32 and every layer in float, so it computes what the IR means (what int8 kernels with
# 32-bit accumulation compute, as on CPUs with VNNI or AMX), not what this CPU's kernels make of it (without VNNI,
# pairs of u8 x i8 products saturate at 16 bits).
EMULATED = {"LP_TRANSFORMS_MODE": False}


def run(core: ov.Core, model: ov.Model, feeds: list[dict], emulated: bool = False) -> list[list[np.ndarray]]:
    """Per output of `model`, its values on every feed (f32 inference on CPU); with `emulated`, its quantizers in
    float arithmetic (`EMULATED`; the kernels of this CPU where the plugin does not take the switch)."""
    return run_compiled(compile_f32(core, model, emulated), feeds)


def compile_f32(core: ov.Core, model: ov.Model, emulated: bool = False) -> ov.CompiledModel:
    """`model` compiled on CPU at f32 inference precision, its quantizers emulated in float with `emulated`."""
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    try:
        try:
            compiled = core.compile_model(model, "CPU", {**config, **EMULATED} if emulated else config)
        except RuntimeError as error:
            if not emulated or "LP_TRANSFORMS_MODE" not in str(error):
                raise
            log.warning("This OpenVINO CPU plugin does not take LP_TRANSFORMS_MODE: the measuring stages run this "
                        "CPU's int8 kernels, so their decisions may hold for this kind of CPU only.")
            compiled = core.compile_model(model, "CPU", config)
    except RuntimeError as error:
        raise StatisticsError(f"The CPU plugin could not compile the measuring model '{model.get_friendly_name()}': "
                              f"{error}") from error
    return compiled


def run_compiled(compiled: ov.CompiledModel, feeds: list[dict]) -> list[list[np.ndarray]]:
    """Per output of a compiled model, its values on every feed (each from the model's initial state)."""
    infer_request = compiled.create_infer_request()
    outputs: list[list[np.ndarray]] = [[] for _ in compiled.outputs]
    for feed in feeds:
        infer_from_initial_state(infer_request, feed)
        for index in range(len(compiled.outputs)):
            outputs[index].append(infer_request.get_output_tensor(index).data.copy())
    return outputs


def is_int8_weight(node: ov.Node) -> bool:
    """Constant(i8) -> Convert -> Multiply(scale), as ovptq stores weights."""
    if node.get_type_name() != "Multiply":
        return False
    convert = node.input_value(0).get_node()
    return convert.get_type_name() == "Convert" and convert.input_value(0).get_node().get_type_name() == "Constant"


def is_quantized(op: ov.Node) -> bool:
    """An op with an activation FakeQuantize or an int8 weight right at one of its inputs."""
    return any(op.input_value(i).get_node().get_type_name() == "FakeQuantize"
               or is_int8_weight(op.input_value(i).get_node()) for i in range(op.get_input_size()))


def as_quantized(fp32_model: ov.Model, int8_model: ov.Model) -> ov.Model:
    """A copy of `fp32_model` in the graph form ovptq quantized: normalised and equalised when the INT8 model's
    record says it was (op names, weight layouts and weight values then match the INT8 model's)."""
    clone = fp32_model.clone()
    if _recorded_on(int8_model, "normalize_graph"):
        normalize(clone)
    if _recorded_on(int8_model, "cross_layer_equalization"):
        equalize(clone)
    return clone


def _recorded_on(int8_model: ov.Model, option: str) -> bool:
    key = ["ovptq", "quantization", "advanced_parameters", option]
    return int8_model.has_rt_info(key) and int8_model.get_rt_info(key).astype(str) == "True"


def smoothing_of(int8_model: ov.Model) -> dict[str, str]:
    """SmoothQuant's record in an ovptq INT8 model: quantizer -> the op that took 1/s, or "Multiply"."""
    return stage_record(int8_model, "smooth_quant")


def rescaled(int8_model: ov.Model) -> tuple[set[str], set[str], set[str]]:
    """What SmoothQuant rescaled: (layers whose input it rescaled inside the input's producer, layers whose input
    it rescaled with a Multiply in front of their quantizer, ops that took 1/s and so output y / s)."""
    where = smoothing_of(int8_model)
    found: dict[str, set[str]] = {"folded": set(), "Multiply": set()}
    for op in int8_model.get_ordered_ops():  # a quantizer's FakeQuantize is named after it
        if op.get_type_name() == "FakeQuantize" and op.get_friendly_name() in where:
            kind = "Multiply" if where[op.get_friendly_name()] == "Multiply" else "folded"
            found[kind] |= {target.get_node().get_friendly_name() for target in op.output(0).get_target_inputs()}
    return found["folded"], found["Multiply"], set(where.values()) - {"Multiply"}


def outputs_of(model: ov.Model, names: list[str]) -> ov.Model:
    """A copy of `model` whose outputs are output 0 of each op of `names`, in that order."""
    clone = model.clone()
    by_name = _by_name(clone)
    return ov.Model([ops.result(by_name[name].output(0)) for name in names], clone.get_sinks(),
                    clone.get_parameters(), "ovptq_layer_outputs")


def shadow_model(fp32_model: ov.Model, int8_model: ov.Model, names: list[str]) -> ov.Model:
    """A model of the FP32 model's outputs of the layers `names`, then each layer again with its INT8 model's
    quantizers on the same FP32 inputs (a FakeQuantize on activations, the int8 weight): 2 x len(names) outputs."""
    reference, donor, int8 = fp32_model.clone(), fp32_model.clone(), int8_model.clone()
    reference_ops, donor_ops, int8_ops = (_by_name(m) for m in (reference, donor, int8))
    where = smoothing_of(int8)
    originals, shadows = [], []
    for name in names:
        original, shadow, quantized = reference_ops[name], donor_ops[name], int8_ops[name]
        for port in range(original.get_input_size()):
            source = quantized.input_value(port).get_node()
            value = original.input_value(port)
            if source.get_type_name() == "FakeQuantize":
                if where.get(source.get_friendly_name()) == "Multiply":  # x / s in front of the quantizer
                    value = ops.multiply(value, source.input_value(0).get_node().input_value(1)).output(0)
                value = ops.fake_quantize(value, *(source.input_value(i) for i in range(1, 5)),
                                          source.get_attributes()["levels"]).output(0)
            elif is_int8_weight(source):
                value = quantized.input_value(port)
            shadow.input(port).replace_source_output(value)
        originals.append(original.output(0))
        shadows.append(shadow.output(0))
    return ov.Model([ops.result(o) for o in originals + shadows], reference.get_sinks(), reference.get_parameters(),
                    "ovptq_shadow")


def output_gains(core: ov.Core, fp32_model: ov.Model, int8_model: ov.Model, names: list[str], keep_weights: set[str],
                 feeds: list[dict], show_progress: bool | None = None) -> dict[str, float]:
    """Per layer: output SQNR of the INT8 model with that layer in float (its input quantizers bypassed, its FP32
    weight back), minus the INT8 model's own. Layers of `keep_weights` keep their int8 weight (one whose input
    SmoothQuant rescaled, or that took 1/s: its FP32 weight is in other coordinates)."""
    def in_float(ops_by_name: dict[str, ov.Node], fp32_ops: dict[str, ov.Node], name: str) -> None:
        layer = ops_by_name[name]
        for port in range(layer.get_input_size()):
            source = layer.input_value(port).get_node()
            if source.get_type_name() == "FakeQuantize" or is_int8_weight(source) and name not in keep_weights:
                _to_float(layer.input(port), fp32_ops)
    return _ablation(core, fp32_model, int8_model, names, in_float, feeds, "layer", show_progress)


def quantizer_gains(core: ov.Core, fp32_model: ov.Model, int8_model: ov.Model, keep_weights: set[str],
                    feeds: list[dict], show_progress: bool | None = None) -> dict[str, tuple[str, float]]:
    """Per quantizer of the INT8 model, every FakeQuantize (on any op's input: Add, Multiply, Concat, both inputs of
    a MatMul) and every int8 weight: (what it feeds, output SQNR gained with it alone back in float). An int8 weight
    of `keep_weights` layers is not measured (see output_gains)."""
    fp32_names = {op.get_friendly_name() for op in fp32_model.get_ordered_ops()}
    quantizers = {}
    for op in int8_model.get_ordered_ops():
        targets = [t for t in op.output(0).get_target_inputs()] if op.get_output_size() else []
        if op.get_type_name() == "FakeQuantize" or is_int8_weight(op) and all(
                t.get_node().get_friendly_name() in fp32_names and t.get_node().get_friendly_name() not in keep_weights
                for t in targets):
            readers = sorted({t.get_node().get_type_name() for t in targets})
            kind = "activation" if op.get_type_name() == "FakeQuantize" else "weight"
            quantizers[op.get_friendly_name()] = f"{kind} -> {'/'.join(readers)}"

    def in_float(ops_by_name: dict[str, ov.Node], fp32_ops: dict[str, ov.Node], name: str) -> None:
        for target in list(ops_by_name[name].output(0).get_target_inputs()):
            _to_float(target, fp32_ops)
    gains = _ablation(core, fp32_model, int8_model, list(quantizers), in_float, feeds, "quantizer", show_progress)
    return {name: (quantizers[name], gain) for name, gain in gains.items()}


def _to_float(target: ov.Input, fp32_ops: dict[str, ov.Node]) -> None:
    """`target` reads what it reads in the FP32 model: its FakeQuantize's input, or the layer's FP32 weight instead
    of the int8 one."""
    source = target.get_source_output().get_node()
    if source.get_type_name() == "FakeQuantize":
        target.replace_source_output(source.input_value(0))
    else:
        target.replace_source_output(fp32_ops[target.get_node().get_friendly_name()].input_value(target.get_index()))


def _ablation(core: ov.Core, fp32_model: ov.Model, int8_model: ov.Model, names: list[str],
              in_float: Callable[[dict[str, ov.Node], dict[str, ov.Node], str], None], feeds: list[dict], unit: str,
              show_progress: bool | None) -> dict[str, float]:
    """Per name: output SQNR of a clone of the INT8 model where `in_float(its ops, FP32 ops, name)` put something
    back in float, minus the INT8 model's own; one compilation each."""
    fp32_ops = _by_name(fp32_model.clone())
    reference = run(core, fp32_model, feeds)
    baseline = output_sqnr(reference, run(core, int8_model, feeds))
    gains = {}
    for name in progress(names, "Ablation", unit=unit, enabled=show_progress):
        model = int8_model.clone()
        in_float(_by_name(model), fp32_ops, name)
        gains[name] = output_sqnr(reference, run(core, model, feeds)) - baseline
    return gains


def _by_name(model: ov.Model) -> dict[str, ov.Node]:
    return {op.get_friendly_name(): op for op in model.get_ordered_ops()}
