"""What an INT8 model records about how it was made (rt_info under ovptq/...), and the closing log paragraph."""

from __future__ import annotations

import json

import openvino as ov

from ovptq.version import __version__
from ovptq.outcomes import SafetyNet, SpeedCheck
from ovptq.state import State
from ovptq.wording import counted, health


def rt_info(state: State) -> dict[str, object]:
    """The options, the samples used, and what each stage of the pipeline records of its results."""
    options, plan = state.options, state.plan
    values: dict[str, object] = {
        "version": __version__, "quantization/preset": options.preset,
        "quantization/target_device": options.target_device, "quantization/subset_size": options.subset_size,
        "quantization/samples_used": state.samples, "quantization/fast_bias_correction": options.fast_bias_correction,
        "quantization/model_type": options.model_type or "None",
        "quantization/activation_quantizers": len(plan.activations),
        "quantization/weight_quantizers": len(plan.weights)}
    if options.ignored_scope is not None:
        values["quantization/ignored_scope"] = repr(options.ignored_scope)
    for key, value in options.advanced.as_dict().items():
        values[f"quantization/advanced_parameters/{key}"] = value
    for stage in state.stages:
        values.update(stage.record(state))
    return values


def stage_record(model: ov.Model, key: str) -> dict:
    """A stage's JSON record in an INT8 model's rt_info (ovptq/<key>), or {} when it has none."""
    return json.loads(model.get_rt_info(["ovptq", key]).astype(str)) if model.has_rt_info(["ovptq", key]) else {}


def summary(state: State, seconds: float, name: str) -> str:
    """The paragraph logged at the end of quantize; `name` is how it names the model (e.g. "'det.onnx'")."""
    plan, correction = state.plan, state.bias_correction
    tables = sum(w.embedding for w in plan.weights)
    parts = [f"Quantized {name} in {seconds:.1f} s from {state.samples} calibration "
             f"samples: {len(plan.weights) - tables} layers with int8 weights, {len(plan.activations)} activation "
             "quantizers"]
    if tables:
        parts.append(f"{tables} embedding tables in int8")
    if plan.ignored:
        parts.append(f"{len(plan.ignored)} nodes kept float by IgnoredScope or post-processing")
    if plan.float_rules:
        parts.append(f"{len(plan.float_rules)} kept float by the transformer rules")
    if correction is not None and correction.records:
        parts.append(f"bias corrected on {correction.corrected()} of {len(correction.records)} layers")
    if state.smoothing is not None and state.smoothing.where:
        parts.append(f"SmoothQuant on {len(state.smoothing.where)} tensors")
    if state.safety_net is not None:
        parts.append(safety_net_phrase(state.safety_net, state.options.advanced.measuring.healthy_db))
    if state.speed_check is not None:
        parts.append(speed_check_phrase(state.speed_check))
    return "; ".join(p for p in parts if p) + ". ovptq.inspect(model) shows which layers the CPU runs in int8."


def safety_net_phrase(net: SafetyNet, healthy_db: float) -> str:
    """The summary's words for the safety net: repaired, healthy at the first measurement, or searched in vain."""
    sqnr = f"output SQNR {net.sqnr_after_db:.1f} dB, {health(net.sqnr_after_db, healthy_db)}"
    if net.rounding_kept:
        repairs = f" and {counted(len(net.repairs), 'safety-net repair')}" if net.repairs else ""
        return f"weights rounded with error feedback{repairs}: {sqnr}"
    if net.repairs:
        return f"{counted(len(net.repairs), 'safety-net repair')}: {sqnr}"
    if net.measurements <= 1:
        return f"{sqnr}: no repair needed"
    return f"{sqnr}; the safety net measured {net.measurements} models and kept no repair ({net.ended})"


def speed_check_phrase(speed: SpeedCheck) -> str:
    """The summary's words for the speed check: nothing to say, layers given back, or the whole model in float."""
    where = f"on this CPU ({speed.cpu})" + (", decisions replayed from its speed record" if speed.replayed else "")
    if speed.whole:
        return (f"NO INT8 LAYER: the speed check gave every layer back to float, because {where} the INT8 model ran "
                f"slower than the FP32 model at {speed.precision}; target_device='ANY' (the default) keeps INT8")
    if speed.given_back or speed.quantizers:
        return (f"the speed check gave {len(speed.given_back)} layers and {len(speed.quantizers)} quantizers back to "
                f"float {where}")
    return ""
