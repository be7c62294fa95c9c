"""The pipeline: stages over one immutable state, one statistics pass for the union of what they declare."""

from dataclasses import replace

import builders
import pytest

import ovptq
from ovptq import pipeline
from ovptq.placement import placer
from ovptq.quantize import DEFAULT_STAGES, _parse_options, start
from ovptq.state import Stage
from ovptq.statistics.reductions import MeanReduction, OutputValues, RangeReduction

SAMPLES = builders.images(6, shape=(1, 4, 9, 9), seed=3, low=0.0, high=2.0)


def state_of(model, fast_bias_correction=True, model_type=None, statistics_path=None):
    options = _parse_options(None, "ANY", 300, fast_bias_correction, model_type, None, None, statistics_path)
    return placer.STAGE.run(start(model, ovptq.Dataset(SAMPLES), options))


def test_the_statistics_plan_is_the_union_of_the_stages_declarations_and_prints():
    state = state_of(builders.bias_correction_block(), fast_bias_correction=False)
    plan = pipeline.statistics_plan(DEFAULT_STAGES, state)
    taps = MeanReduction("input", 0, "taps", (3, 3), (2, 2), (1, 1), (1, 1), (1, 1))
    assert plan.declared_by[taps] == ("fast bias correction",)
    assert plan.declared_by[MeanReduction("fc/bias", 0, "last", per_sample=True)] == ("full bias correction",)
    input_range = RangeReduction("input", 0)
    assert plan.declared_by[input_range] == ("activation ranges", "fast bias correction")  # declared twice, once
    assert len(set(plan.reductions)) == len(plan.reductions)
    assert plan.declared_by[OutputValues(16)] == ("safety net",)  # the FP32 outputs of the first feeds
    text = str(plan)
    assert text.startswith("StatisticsPlan: 4 range and 6 mean reductions, the model outputs on 16 feeds")
    assert "model outputs on the first 16 feeds" in text
    assert text.splitlines()[1].split() == ["range", "per-tensor", "input:0", "<-", "activation", "ranges,", "fast",
                                            "bias", "correction"]


def test_a_statistics_file_measures_what_every_option_would_read():
    state = state_of(builders.pre_norm_block())
    default = pipeline.statistics_plan(DEFAULT_STAGES, state)
    superset = pipeline.statistics_plan(DEFAULT_STAGES, replace(state, options=state.options.everything_on()))
    extra = set(superset.reductions) - set(default.reductions)
    assert {r.producer for r in extra if isinstance(r, RangeReduction) and r.rows} >= {"ln/beta", "gelu"}  # SmoothQuant
    assert any(isinstance(r, MeanReduction) and r.per_sample for r in extra)                    # full correction
    assert set(default.reductions) <= set(superset.reductions)


def test_one_statistics_pass_serves_every_stage_and_no_stage_changes_the_state_it_reads(monkeypatch):
    passes = []
    collect = pipeline.collect_statistics

    def counted(model, reductions, *args, **kwargs):
        passes.append(list(reductions))
        return collect(model, reductions, *args, **kwargs)

    monkeypatch.setattr(pipeline, "collect_statistics", counted)
    extra = RangeReduction("relu1", 0, per_channel=True)
    seen = {}
    probe = Stage("probe", lambda state: seen.setdefault("state", state), reductions=lambda state: [extra])
    stages = (*DEFAULT_STAGES[1:-1], probe, DEFAULT_STAGES[-1])  # placement ran in state_of
    first = state_of(builders.bias_correction_block())
    final = pipeline.run(first, stages)
    assert len(passes) == 1 and extra in passes[0]
    assert seen["state"].statistics[extra].global_max.shape == (6,)   # the probe stage read its own reduction
    assert first.statistics is None and first.result is None            # earlier states stay as they were
    assert final.result is not None and final.plan is first.plan


def test_a_stage_turned_off_by_the_options_neither_runs_nor_declares():
    state = state_of(builders.bias_correction_block())
    plan = pipeline.statistics_plan(DEFAULT_STAGES, state)
    assert not any(r.per_sample for r in plan.reductions if isinstance(r, MeanReduction))  # no full correction
    final = pipeline.run(state, DEFAULT_STAGES)
    assert all(record.method == "fast" for record in final.bias_correction.records)


def test_the_plan_is_immutable():
    plan = state_of(builders.conv_relu()).plan
    with pytest.raises(AttributeError):
        plan.activations.append(None)
    with pytest.raises(TypeError):
        plan.ignored["conv1"] = "no"


def test_smooth_quant_leaves_the_measured_statistics_as_they_were():
    from ovptq.ranges.activations import quantizer_reductions
    from ovptq.statistics.collect import collect_statistics
    model = builders.pre_norm_block()
    samples = builders.outlier_sequences(8)
    options = _parse_options(None, "ANY", 300, True, "transformer", None, None, None)
    final = pipeline.run(start(model, ovptq.Dataset(samples), options), DEFAULT_STAGES)
    residual = quantizer_reductions(final.plan, None, 0.0, final.graph)["residual/fq_output_0"]
    fresh, _ = collect_statistics(final.model, [residual], ovptq.Dataset(samples), 300)
    assert final.smoothing.where["residual/fq_output_0"] == "Multiply"
    assert final.statistics[residual].mean_absmax == fresh[residual].mean_absmax     # x, as measured
    assert final.range_statistics()[residual].mean_absmax < fresh[residual].mean_absmax / 2  # x / s
    with pytest.raises(TypeError):
        final.statistics[residual] = None
    with pytest.raises(AttributeError):
        final.statistics[residual].global_max = 0
    smoothed = final.weights["proj1"]  # reads x / s: its int8 weight is of s W, from SmoothQuant's constant
    assert smoothed.source == ("proj1/smooth_quant/input_1", 0)
    rescaled = final.smoothing.constants[("proj1", 1)].value
    assert abs(smoothed.dequantized() - rescaled).max() <= smoothed.scale.max() / 2 + 1e-6


def test_the_record_holds_the_options_and_what_each_stage_did():
    import json
    from ovptq.rewrite import record
    final = pipeline.run(state_of(builders.bias_correction_block()), DEFAULT_STAGES)
    values = record.rt_info(final)
    assert {key for key in values if not key.startswith("quantization/advanced_parameters/")} == {
        "version", "quantization/preset", "quantization/target_device", "quantization/subset_size",
        "quantization/samples_used", "quantization/fast_bias_correction", "quantization/model_type",
        "quantization/activation_quantizers", "quantization/weight_quantizers", "transformer_rules",
        "smooth_quant", "bias_correction", "safety_net"}  # no speed check: target_device ANY
    assert values["quantization/samples_used"] == 6 and values["smooth_quant"] == "{}"
    assert json.loads(values["safety_net"])["samples"] == 6
    assert [c["layer"] for c in json.loads(values["bias_correction"])] == ["conv", "depthwise", "fc"]
    assert final.result.get_rt_info(["ovptq", "bias_correction"]).astype(str) == values["bias_correction"]


def fingerprint(value) -> object:
    """What a state or any part of it holds, as comparable data: models as their serialized IR (rt_info included),
    arrays as bytes; the core, the dataset and the stage functions are left out."""
    import dataclasses
    from collections.abc import Mapping

    import numpy as np
    import openvino as ov
    if isinstance(value, ov.Model):
        return builders.ir_bytes(value)
    if isinstance(value, np.ndarray | np.generic):
        return (value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, ovptq.Dataset | ov.Core | Stage) or callable(value):
        return type(value).__name__
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, tuple(fingerprint(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, Mapping):
        return tuple(sorted((repr(k), fingerprint(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        items = [fingerprint(v) for v in value]
        return tuple(sorted(items, key=repr) if isinstance(value, set | frozenset) else items)
    if hasattr(value, "nx"):  # the graph: its nodes and edges
        return (tuple(sorted(value.nx.nodes)), tuple(sorted(value.nx.edges(keys=True))
                                                     if value.nx.is_multigraph() else sorted(value.nx.edges)))
    return repr(value)


def test_no_stage_changes_the_model_or_the_state_it_was_given(monkeypatch, tmp_path):
    """Every stage of the default list, the measuring ones making changes: the safety net repairs a planted bad
    range, the speed check (target_device="CPU", planted layer times) gives a layer back."""
    from dataclasses import replace as copy
    from types import MappingProxyType

    from ovptq.measuring import safety_net, speed_check
    from ovptq.ranges.formulas import symmetric_activation
    from ovptq.rewrite import rewrite
    from test_speed_check import planted, two_convolutions
    monkeypatch.setenv("OVPTQ_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(speed_check, "Profiler", planted({"fast": {True: 0.2, False: 1.0},
                                                          "slow": {True: 1.0, False: 0.2}}))
    caller = two_convolutions()
    callers_ir = builders.ir_bytes(caller)
    options = _parse_options(None, "CPU", 300, True, None, None, None, None)
    state = start(caller, ovptq.Dataset(builders.images(12)), options)
    state = copy(state, stages=DEFAULT_STAGES)
    enabled = [stage for stage in DEFAULT_STAGES if stage.enabled(options)]
    for position, stage in enumerate(enabled):
        if stage is safety_net.STAGE:  # a range cut to 1/40: most of its tensor clips, the net must repair it
            bad = symmetric_activation(state.activation_ranges["relu/fq_output_0"].low,
                                       state.activation_ranges["relu/fq_output_0"].high / 40)
            state = copy(state, activation_ranges=MappingProxyType({**state.activation_ranges,
                                                                     "relu/fq_output_0": bad}))
            state = copy(state, result=rewrite.apply(state.model, rewrite.edits_of(state)))
        if stage.reads_statistics and state.statistics is None:
            state = pipeline.statistics_pass(state, enabled[position:], DEFAULT_STAGES)
        before = fingerprint(state)
        following = stage.run(state)
        assert fingerprint(state) == before, f"the {stage.name} stage changed the state it was given"
        state = following
    assert state.safety_net.repairs and state.speed_check.given_back   # both changed the plan
    assert builders.ir_bytes(caller) == callers_ir
