"""The safety net: it finds and repairs a planted bad quantizer, leaves a healthy model alone at the cost of one
compilation, and its search ends as soon as the measurements say it will not pay."""

import importlib
import json
import logging
from dataclasses import replace
from types import MappingProxyType

import builders
import numpy as np
import pytest

import ovptq
from ovptq import pipeline
from ovptq.measuring import measure, safety_net, trial
from ovptq.parameters import MeasuringParameters
from ovptq.ranges.formulas import symmetric_activation
from ovptq.rewrite import rewrite

quantize_module = importlib.import_module("ovptq.quantize")
DATA = builders.images(12, seed=2)
BEFORE_THE_NET = quantize_module.DEFAULT_STAGES[:quantize_module.DEFAULT_STAGES.index(safety_net.STAGE)]
THRESHOLDS = MeasuringParameters()


def built(model):
    """The state after the rewrite, the safety net not run yet (what it asks of the statistics pass measured)."""
    options = quantize_module._parse_options(None, "ANY", 300, True, None, None, None, None)
    declared_only = replace(safety_net.STAGE, run=lambda state: state)
    state = pipeline.run(quantize_module.start(model, ovptq.Dataset(DATA), options), BEFORE_THE_NET + (declared_only,))
    return replace(state, stages=quantize_module.DEFAULT_STAGES)  # the net's record goes in the rt_info


def planted(state, name, shrink=40.0):
    """The state with quantizer `name`'s range cut to 1/shrink: most of its tensor clips."""
    params = state.activation_ranges[name]
    bad = symmetric_activation(params.low, params.high / shrink)
    ranges = MappingProxyType({**state.activation_ranges, name: bad})
    state = replace(state, activation_ranges=ranges)
    return replace(state, result=rewrite.apply(state.model, rewrite.edits_of(state)))


def test_a_planted_bad_quantizer_is_found_and_repaired_and_nothing_else_changes():
    state = built(builders.residual_block())
    bad = "relu2/fq_output_0"
    assert bad in state.activation_ranges
    broken = planted(state, bad)
    checked = safety_net.STAGE.run(broken)
    net = checked.safety_net
    assert net.sqnr_before_db < THRESHOLDS.healthy_db
    [unit] = [u for u in safety_net.units_of(state) if bad in u.activations]  # relu2 with its reader conv3
    assert unit.name == "conv3" and unit.weights == ("conv3",) and [r.unit for r in net.repairs] == ["conv3"]
    assert net.sqnr_after_db > net.sqnr_before_db + 10
    assert net.measurements <= THRESHOLDS.max_measurements and net.ended == "healthy"
    others = {k: v for k, v in checked.activation_ranges.items() if k != bad}
    assert all(others[k] is state.activation_ranges[k] for k in others)
    if net.repairs[0].change == "float":
        assert bad not in {q.name for q in checked.plan.activations}
    else:
        assert checked.activation_ranges[bad] is not broken.activation_ranges[bad]
    record = json.loads(rewrite.RECORD_STAGE.run(checked).result.get_rt_info(["ovptq", "safety_net"]).astype(str))
    assert record["repairs"][0]["quantizer"] == "conv3" and record["sqnr_after_db"] > record["sqnr_before_db"]
    feeds = measure.bind(ovptq.Dataset(DATA), state.model, 8)
    reference = measure.run(state.core, state.model, feeds)
    assert measure.output_sqnr(reference, measure.run(state.core, checked.result, feeds)) > \
        measure.output_sqnr(reference, measure.run(state.core, broken.result, feeds)) + 10


def counting_compilations(monkeypatch):
    """A list that grows by the model's name at every compilation the trial service makes."""
    compiled = []
    compile_f32 = measure.compile_f32

    def counted(core, model, emulated=False):
        compiled.append(model.get_friendly_name())
        return compile_f32(core, model, emulated)
    monkeypatch.setattr(measure, "compile_f32", counted)
    return compiled


def test_a_healthy_model_costs_one_compilation_and_is_left_as_it_was(monkeypatch):
    state = built(builders.residual_block())
    compiled = counting_compilations(monkeypatch)
    checked = safety_net.STAGE.run(state)
    assert checked.safety_net.repairs == () and checked.safety_net.measurements == 1
    assert compiled == [state.result.get_friendly_name()]  # the FP32 outputs came from the statistics pass
    assert checked.safety_net.sqnr_before_db >= THRESHOLDS.healthy_db
    assert checked.plan is state.plan and checked.activation_ranges is state.activation_ranges
    assert checked.result is state.result


def test_the_fp32_reference_of_the_statistics_pass_equals_an_fp32_inference():
    state = built(builders.residual_block())
    feeds = measure.bind(ovptq.Dataset(DATA), state.model, 8)
    recorded = trial.recorded_outputs(state, len(feeds))
    inferred = measure.run(state.core, state.model, feeds)
    assert recorded is not None and len(recorded[0]) == 8
    for ours, theirs in zip(recorded, inferred):
        np.testing.assert_allclose(np.stack(ours), np.stack(theirs), rtol=1e-5, atol=1e-6)


def test_localise_bisects_the_best_group_measuring_one_half_per_step():
    units = [safety_net.Unit(f"u{i}", (f"u{i}",)) for i in range(48)]
    batches = []

    def gains(candidates):
        batches.append(candidates)
        return [6.0 if units[29] in part else 0.1 * len(part) / 48 for part in candidates]

    found = safety_net.localise(units, [], gains, THRESHOLDS)
    assert found == ([units[29]], 6.0)
    # 4 groups of 12 in one batch, then 12 -> 6 -> 3 -> 2 -> 1 measuring the first half each time; the unit found
    # was an inferred half, so it is measured at the end
    assert [len(b) for b in batches] == [THRESHOLDS.groups, 1, 1, 1, 1, 1] and batches[-1] == [[units[29]]]


def test_a_transformer_rules_unit_that_gains_enough_is_taken_before_any_group_is_measured():
    units = [safety_net.Unit(f"u{i}", (f"u{i}",)) for i in range(12)]
    rules = safety_net.Unit("rules", ("u1", "u7"))
    batches = []

    def gains(candidates):
        batches.append(candidates)
        return [5.0 if rules in part else 0.0 for part in candidates]

    assert safety_net.localise(units, [rules], gains, THRESHOLDS) == ([rules], 5.0) and batches == [[[rules]]]


def test_nothing_is_localised_when_no_candidate_gains_enough():
    units = [safety_net.Unit(f"u{i}", (f"u{i}",)) for i in range(12)]
    assert safety_net.localise(units, [], lambda candidates: [0.5] * len(candidates), THRESHOLDS) is None


def test_the_net_is_a_stage_of_the_default_call_and_can_be_switched_off():
    model = builders.residual_block()
    on = ovptq.quantize(model, ovptq.Dataset(DATA))
    assert json.loads(on.get_rt_info(["ovptq", "safety_net"]).astype(str))["repairs"] == []
    off = ovptq.quantize(model, ovptq.Dataset(DATA),
                         advanced_parameters=ovptq.AdvancedQuantizationParameters(safety_net=False))
    assert not off.has_rt_info(["ovptq", "safety_net"])
    np.testing.assert_array_equal(builders.infer(on, DATA[0])[0], builders.infer(off, DATA[0])[0])


def test_the_check_reads_the_worst_output_not_the_pooled_error():
    state_output = [np.full(128, 10.0)]
    probability = [np.array([0.9])]
    reference = [state_output, probability]
    got = [[np.full(128, 10.0)], [np.array([0.45])]]    # the state exact, the probability halved
    assert measure.output_sqnr(reference, got) > 20     # pooled, the error hides in the large state
    assert measure.worst_output_sqnr(reference, got) == pytest.approx(10 * np.log10(0.81 / 0.45 ** 2))


def test_the_transformer_rules_quantizers_are_one_candidate_tried_whole():
    state = built(builders.residual_block())
    [unit] = safety_net.rule_units(state)
    # the rules keep the residual Add float: its quantizers go, except relu1's, which conv2 still reads
    assert unit.activations == ("conv3/bias/fq_output_0",) and unit.weights == ()
    assert state.plan.rule_float_activations == ("conv3/bias/fq_output_0",)  # recorded by the placement
    units = [safety_net.Unit(f"u{i}", (f"u{i}",)) for i in range(12)]
    together = safety_net.Unit("rules", ("u1", "u7"))

    def gains(candidates):  # u1 and u7 hurt only together: no group holds both, and each alone gains nothing
        return [5.0 if {"u1", "u7"} <= {n for u in part for n in u.activations} else 0.0 for part in candidates]

    assert safety_net.localise(units, [], gains, THRESHOLDS) is None
    assert safety_net.localise(units, [together], gains, THRESHOLDS) == ([together], 5.0)


def test_the_cheap_fix_of_a_first_layer_is_the_global_input_range_and_for_this_cpu_full_8_bit_weights():
    state = built(builders.conv_relu())
    assert next(w for w in state.plan.weights if w.node == "conv1").half_range  # the overflow fix
    culprits = [safety_net.Unit("input/fq_output_0", ("input/fq_output_0",)),
                safety_net.Unit("conv1/weights", weights=("conv1",))]
    # emulated trials (target_device ANY) cannot see the saturation the overflow fix prevents: no 8-bit weights
    [portable] = safety_net.fixes(state, culprits)
    assert portable.description == "global min/max range" and not portable.weights
    state = replace(state, options=replace(state.options, target_device=ovptq.TargetDevice.CPU))
    [fix] = safety_net.fixes(state, culprits)
    assert fix.description == "global min/max range and 8-bit weights"
    assert np.abs(state.weights["conv1"].integers).max() <= 64
    assert np.abs(fix.weights["conv1"].integers).max() == 127 and not fix.weights["conv1"].quantizer.half_range
    low, high = float(np.min(np.stack(DATA))), float(np.max(np.stack(DATA)))
    assert fix.ranges["input/fq_output_0"].low <= low and fix.ranges["input/fq_output_0"].high >= high
    repaired = trial.changed(state, fix.change())
    assert not next(w for w in repaired.plan.weights if w.node == "conv1").half_range
    assert "conv1" not in repaired.bias_correction.changed


def test_per_sample_errors_weigh_each_output_by_its_own_power():
    reference = [[np.full(4, 100.0), np.full(4, 100.0)], [np.array([1.0]), np.array([1.0])]]
    got = [[np.full(4, 101.0), np.full(4, 100.0)], [np.array([1.0]), np.array([0.5])]]
    # sample 0: the large output off by 1% (4 / 40000); sample 1: the small output off by half (0.25 / 1)
    np.testing.assert_allclose(measure.sample_errors(reference, got), [1e-4, 0.25])


def test_error_spread_over_many_quantizers_is_left_alone_rather_than_floated(monkeypatch, caplog):
    """...and the log line names three of them and how many more; DEBUG has the whole list."""
    state = planted(built(builders.residual_block()), "relu2/fq_output_0")
    state = replace(state, options=replace(state.options, advanced=replace(
        state.options.advanced, measuring=MeasuringParameters(max_float_units=1))))
    units = safety_net.units_of(state)
    many = [u for u in units if "relu2/fq_output_0" in u.activations] + units[:4]   # the bad quantizer's and others
    monkeypatch.setattr(safety_net, "localise", lambda units, whole, gains, *rest: (many, gains([many])[0]))
    monkeypatch.setattr(safety_net, "fixes", lambda state, culprits: [])
    with caplog.at_level(logging.DEBUG, logger="ovptq"):
        checked = safety_net.STAGE.run(state)
    assert checked.safety_net.repairs == () and checked.plan is state.plan
    assert checked.safety_net.ended == "error spread thin"
    spread = next(r.getMessage() for r in caplog.records if "spread over" in r.getMessage())
    names = [u.name for u in many]
    assert f"spread over 5 quantizers ({' + '.join(names[:3])} and 2 more," in spread
    assert any(r.levelno == logging.DEBUG and r.getMessage().endswith(" + ".join(names)) for r in caplog.records)


def test_lists_are_capped_and_nouns_counted():
    from ovptq.wording import counted, listed
    assert listed(["a", "b", "c"]) == "a, b, c" and listed(list("abcdef"), " + ") == "a + b + c and 3 more"
    assert counted(1, "repair") == "1 repair" and counted(0, "repair") == "0 repairs"
    assert counted(2, "quantizer of a chain", "quantizers of a chain") == "2 quantizers of a chain"


def test_the_search_ends_when_it_has_measured_as_many_models_as_it_may():
    state = planted(built(builders.residual_block()), "relu2/fq_output_0")
    thresholds = MeasuringParameters(max_measurements=3)
    state = replace(state, options=replace(state.options, advanced=replace(state.options.advanced,
                                                                           measuring=thresholds)))
    checked = safety_net.STAGE.run(state)
    net = checked.safety_net
    assert net.repairs == () and net.ended == "measured 3 models"
    assert net.measurements <= 3 + 2   # the search's 3, and the error-feedback candidate's two models after it
    assert checked.plan is state.plan


def test_the_summary_says_whether_the_net_repaired_found_nothing_to_do_or_searched_in_vain():
    from ovptq.outcomes import Repair, SafetyNet
    from ovptq.rewrite.record import safety_net_phrase
    repair = Repair("conv/weights", "float", 3.0, 3.0)
    assert safety_net_phrase(SafetyNet(8, 15.0, 18.0, (repair,), 5), 18.0) == \
        "1 safety-net repair: output SQNR 18.0 dB, healthy (>= 18 dB)"
    assert safety_net_phrase(SafetyNet(8, 15.0, 19.0, (repair, repair), 5), 18.0) == \
        "2 safety-net repairs: output SQNR 19.0 dB, healthy (>= 18 dB)"
    assert safety_net_phrase(SafetyNet(8, 25.0, 25.0), 18.0) == \
        "output SQNR 25.0 dB, healthy (>= 18 dB): no repair needed"
    assert safety_net_phrase(SafetyNet(8, 17.8, 17.8, (), 13, ended="error spread thin"), 18.0) == \
        "output SQNR 17.8 dB, below the healthy 18 dB; the safety net measured 13 models and kept no repair (error " \
        "spread thin)"
    rounded = SafetyNet(8, 13.8, 17.1, (), 10, ended="error spread thin",
                        rounding="error feedback kept: +3.3 dB on 16 samples")
    assert safety_net_phrase(rounded, 16.0) == \
        "weights rounded with error feedback: output SQNR 17.1 dB, healthy (>= 16 dB)"
    assert safety_net_phrase(replace(rounded, repairs=(repair,)), 18.0) == \
        "weights rounded with error feedback and 1 safety-net repair: output SQNR 17.1 dB, below the healthy 18 dB"


def test_a_model_far_from_fp32_gets_a_warning_that_says_what_to_check(caplog):
    """Ending below warn_db (here set above what this model reaches) warns once and says what to try; at the
    default warn_db the same model gets no warning."""
    state = built(builders.residual_block())
    with caplog.at_level(logging.INFO, logger="ovptq"):
        safety_net.STAGE.run(state)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "far from FP32" in r.getMessage()]
    assert any(r.getMessage().endswith("dB, healthy (>= 18 dB).") for r in caplog.records)
    caplog.clear()
    strict = replace(state.options.advanced.measuring, warn_db=60.0)
    options = replace(state.options, advanced=replace(state.options.advanced, measuring=strict))
    with caplog.at_level(logging.WARNING, logger="ovptq"):
        safety_net.STAGE.run(replace(state, options=options))
    warnings = [r for r in caplog.records if "far from FP32" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "(below 60 dB)" in warnings[0].getMessage() and "the same preprocessing" in warnings[0].getMessage()
    assert "quantize_with_accuracy_control" in warnings[0].getMessage()


def test_a_best_group_whose_gain_does_not_hold_ends_the_search_before_bisecting_it():
    units = [safety_net.Unit(f"u{i}", (f"u{i}",)) for i in range(16)]
    batches = []

    def gains(candidates):
        batches.append(candidates)
        return [3.0 if units[5] in part else 0.0 for part in candidates]

    with pytest.raises(safety_net._Ended, match="not confirmed on held-out samples"):
        safety_net.localise(units, [], gains, THRESHOLDS, lambda part: "gain not confirmed on held-out samples")
    assert [len(b) for b in batches] == [THRESHOLDS.groups]   # the groups, and no bisection
