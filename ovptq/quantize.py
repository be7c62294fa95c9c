"""`ovptq.quantize`: the pipeline of design.md, stage by stage, on a copy of the caller's model."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import openvino as ov

from ovptq import __version__, bias_correction, smooth_quant
from ovptq.calibrate import activation_params, statistics_requests
from ovptq.dataset import Dataset
from ovptq.errors import ModelError, ParameterError, UnsupportedModelError
from ovptq.graph.graph import Graph, unique_names
from ovptq.parameters import (AdvancedQuantizationParameters, ModelType, OverflowFix, QuantizationPreset,
                              RangeEstimator,
                              TargetDevice)
from ovptq.placement.placer import PlacementOptions, plan_quantizers
from ovptq.placement.plan import QuantizationPlan
from ovptq.rewrite.rewrite import compress_weights, insert_activation_quantizers, write_rt_info
from ovptq.scope import IgnoredScope, postprocessing_nodes, resolve_ignored
from ovptq.statistics.collect import collect_statistics

log = logging.getLogger("ovptq")


def load_model(model: ov.Model | str | Path, core: ov.Core | None = None) -> ov.Model:
    """An `ov.Model` as is, or read from an .xml / .onnx path (anything `ov.Core.read_model` reads)."""
    if isinstance(model, ov.Model):
        return model
    if not isinstance(model, str | Path):
        raise ParameterError(f"model must be an openvino.Model or a path to an .xml/.onnx file, not "
                             f"{type(model).__name__}.")
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"Model file '{path}' does not exist.")
    if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise ModelError(f"'{path}' has no weights file '{path.with_suffix('.bin').name}' beside it; an IR needs both "
                         ".xml and .bin.")
    try:
        return (core or ov.Core()).read_model(str(path))
    except RuntimeError as error:
        raise ModelError(f"OpenVINO could not read '{path}': {error}") from error


def _parse_options(preset, target_device, subset_size, fast_bias_correction, model_type, ignored_scope,
                   advanced_parameters):
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
    return preset, target_device, model_type, advanced_parameters.normalized()


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
    started = time.perf_counter()
    preset, target_device, model_type, advanced = _parse_options(
        preset, target_device, subset_size, fast_bias_correction, model_type, ignored_scope, advanced_parameters)
    if statistics_path is not None and not isinstance(statistics_path, (str, Path)):
        raise ParameterError(f"statistics_path must be a path (str or pathlib.Path) or None, not "
                             f"{type(statistics_path).__name__}.")
    if not isinstance(calibration_dataset, Dataset):
        raise ParameterError(f"calibration_dataset must be an ovptq.Dataset, not "
                             f"{type(calibration_dataset).__name__}; wrap the data: ovptq.Dataset(data, transform_fn).")
    core = ov.Core()
    original = load_model(model, core)
    working = original.clone()
    _refuse_quantized(working)
    renamed = unique_names(working)
    graph = Graph(working)

    ignored = {**postprocessing_nodes(graph), **resolve_ignored(graph, ignored_scope, renamed)}
    options = PlacementOptions(symmetric_activations=preset is QuantizationPreset.PERFORMANCE,
                               quantize_outputs=advanced.quantize_outputs, overflow_fix=advanced.overflow_fix,
                               transformer=model_type is ModelType.TRANSFORMER)
    plan = plan_quantizers(graph, ignored, options)
    if not plan:
        log.warning("The model has no op ovptq can quantize (Convolution, MatMul, ...); it is returned unchanged.")
        return working
    log.info("Placement: %d activation and %d weight quantizers.", len(plan.activations), len(plan.weights))

    layers = [] if advanced.disable_bias_correction else bias_correction.find_layers(graph, plan)
    correction_dataset = calibration_dataset
    if layers and not fast_bias_correction and not calibration_dataset.reiterable():
        count = bias_correction.full_subset_size(subset_size)
        log.info("Full bias correction reads its %d items again: keeping them in memory.", count)
        recording, kept = calibration_dataset.recording(count)
        calibration_dataset, correction_dataset = recording, calibration_dataset.replay(kept)

    smoothing = _smoothing_groups(graph, plan, model_type, advanced)
    requests = statistics_requests(plan, advanced.activations_range_estimator, advanced.quantile_outlier_prob, graph)
    all_requests = list(dict.fromkeys([*requests.values(), *bias_correction.statistics_requests(
        graph, layers, requests, plan, full=not fast_bias_correction), *(g.request() for g in smoothing)]))
    if statistics_path is None:
        statistics, samples = collect_statistics(working, all_requests, calibration_dataset, subset_size,
                                                 advanced.inference_requests, advanced.show_progress, core,
                                                 mean_items=bias_correction.full_subset_size(subset_size))
    else:
        # a file serves later runs with other options: also measure what full correction and SmoothQuant need
        superset = list(dict.fromkeys([*all_requests, *bias_correction.statistics_requests(
            graph, bias_correction.find_layers(graph, plan), requests, plan, full=True),
            *(g.request() for g in smooth_quant.smoothing_groups(graph, plan))]))
        statistics, samples = _cached_statistics(statistics_path, original, working, all_requests, superset,
                                                 calibration_dataset, subset_size, advanced, core)
    input_scales, output_scales, smoothed = {}, {}, {}
    for group in smoothing:
        s = smooth_quant.scales(graph, group, statistics[group.request()], advanced.smooth_quant_alphas.matmul)
        statistics[requests[group.quantizer]] = smooth_quant.smoothed_statistics(statistics[group.request()], s)
        smoothed[group.quantizer] = smooth_quant.apply(graph, plan, group, s)
        input_scales.update({layer: s for layer in group.layers})
        output_scales[smoothed[group.quantizer]] = s  # a layer that took 1/s now outputs y / s
    if smoothing:
        working.validate_nodes_and_infer_types()
        graph = Graph(working)
        log.info("SmoothQuant: %d tensors, 1/s folded into the producer for %d.", len(smoothing),
                 sum(where != "Multiply" for where in smoothed.values()))
    by_name = {name: statistics[request] for name, request in requests.items()}
    params = activation_params(plan, by_name, advanced.activations_range_estimator)

    fp32_model = working.clone() if layers and not fast_bias_correction else None
    weights = compress_weights(graph, plan, advanced.weights_range_estimator, advanced.quantile_outlier_prob)
    insert_activation_quantizers(graph, plan, params)
    magnitudes = bias_correction.input_magnitudes(graph, layers, statistics, requests, plan)
    corrections = _correct_biases(fp32_model, graph, layers, weights, statistics, magnitudes, correction_dataset,
                                  subset_size, advanced, core, input_scales, output_scales)
    working.validate_nodes_and_infer_types()
    _record(working, plan, samples, preset, target_device, subset_size, fast_bias_correction, model_type,
            ignored_scope, advanced, corrections, smoothed)
    log.info(_summary(working, plan, samples, corrections, smoothed, time.perf_counter() - started))
    return working


def _summary(model: ov.Model, plan: QuantizationPlan, samples: int, corrections, smoothed, seconds: float) -> str:
    """The paragraph logged at the end of quantize."""
    corrected = sum(c.applied_channels > 0 for c in corrections)
    tables = sum(w.embedding for w in plan.weights)
    parts = [f"Quantized '{model.get_friendly_name()}' in {seconds:.1f} s from {samples} calibration samples: "
             f"{len(plan.weights) - tables} layers with int8 weights, {len(plan.activations)} activation quantizers"]
    if tables:
        parts.append(f"{tables} embedding tables in int8")
    if plan.ignored:
        parts.append(f"{len(plan.ignored)} nodes kept float by IgnoredScope or post-processing")
    if plan.float_rules:
        parts.append(f"{len(plan.float_rules)} kept float by the transformer rules")
    if corrections:
        parts.append(f"bias corrected on {corrected} of {len(corrections)} layers")
    if smoothed:
        parts.append(f"SmoothQuant on {len(smoothed)} tensors")
    return "; ".join(parts) + ". ovptq.inspect(model) shows which layers the CPU runs in int8."


def _cached_statistics(path, original: ov.Model, working: ov.Model, requests: list, superset: list,
                       dataset: Dataset, subset_size: int, advanced, core) -> tuple[dict, int]:
    """Read the statistics from `path` if it exists (checking model and data), else collect and write them."""
    from ovptq.statistics import cache
    model_key = cache.model_fingerprint(original)
    if Path(path).exists():
        statistics, samples = cache.load(path, model_key, cache.data_fingerprint(dataset, subset_size), subset_size,
                                         requests)
        log.info("Statistics read from %s (%d samples): no inference pass.", path, samples)
        return statistics, samples
    hashed, hasher = cache.hashing(dataset, subset_size)
    statistics, samples = collect_statistics(working, superset, hashed, subset_size, advanced.inference_requests,
                                             advanced.show_progress, core,
                                             mean_items=bias_correction.full_subset_size(subset_size))
    cache.save(path, model_key, hasher.hexdigest(), subset_size, samples, statistics)
    log.info("Statistics written to %s.", path)
    return {request: statistics[request] for request in requests}, samples


def _refuse_quantized(model: ov.Model) -> None:
    """A model that already holds FakeQuantize ops is refused: quantizing it again would stack quantizers."""
    quantizers = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    if quantizers:
        raise UnsupportedModelError(
            f"The model is already quantized: it holds {len(quantizers)} FakeQuantize ops (e.g. '{quantizers[0]}'). "
            "Quantize the FP32 model instead.")


def _smoothing_groups(graph: Graph, plan: QuantizationPlan, model_type, advanced) -> list:
    """SmoothQuant's tensors: on by default with model_type="transformer"; needs min/max range estimation."""
    enabled = advanced.smooth_quant if advanced.smooth_quant is not None else model_type is ModelType.TRANSFORMER
    if not enabled or advanced.smooth_quant_alphas.matmul < 0:
        return []
    if advanced.activations_range_estimator is RangeEstimator.MEAN_QUANTILE:
        log.warning("SmoothQuant skipped: the quantile range estimator cannot be derived for the smoothed tensors; "
                    "use minmax or mean_minmax to combine them.")
        return []
    return smooth_quant.smoothing_groups(graph, plan)


def _correct_biases(fp32_model, graph, layers, weights, statistics, magnitudes, dataset, subset_size, advanced,
                    core, input_scales, output_scales):
    """Fast correction, then, when `fp32_model` is given (fast_bias_correction=False), the full one."""
    if not layers:
        return []
    fast = fp32_model is None
    biases = bias_correction.Biases(graph, layers)
    records, scales = bias_correction.fast_correction(graph, layers, weights, statistics, biases, magnitudes,
                                                      advanced.bias_correction_threshold, input_scales)
    if not fast:
        records = bias_correction.full_correction(
            fp32_model, graph, layers, scales, biases, weights, statistics, dataset,
            bias_correction.full_subset_size(subset_size),
            advanced.bias_correction_threshold, inference_requests=advanced.inference_requests,
            show_progress=advanced.show_progress, core=core, fast_records=records,
            passes=bias_correction.FULL_PASSES, output_scales=output_scales)
    applied = sum(r.applied_channels > 0 for r in records)
    log.info("Bias correction (%s): %d of %d layers corrected.", "fast" if fast else "full", applied, len(records))
    return records


def _record(model: ov.Model, plan: QuantizationPlan, samples: int, preset, target_device, subset_size,
            fast_bias_correction, model_type, ignored_scope, advanced, corrections, smoothed) -> None:
    values = {"version": __version__, "quantization/preset": preset, "quantization/target_device": target_device,
              "quantization/subset_size": subset_size, "quantization/samples_used": samples,
              "quantization/fast_bias_correction": fast_bias_correction,
              "quantization/model_type": model_type or "None",
              "quantization/activation_quantizers": len(plan.activations),
              "quantization/weight_quantizers": len(plan.weights)}
    if ignored_scope is not None:
        values["quantization/ignored_scope"] = repr(ignored_scope)
    for key, value in advanced.as_dict().items():
        values[f"quantization/advanced_parameters/{key}"] = value
    values["bias_correction"] = json.dumps([c.as_dict() for c in corrections])
    values["smooth_quant"] = json.dumps(smoothed)  # quantizer -> the op that took 1/s, or "Multiply"
    values["transformer_rules"] = json.dumps(plan.float_rules)
    write_rt_info(model, values)
