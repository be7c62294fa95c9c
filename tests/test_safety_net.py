"""The safety net: it finds and repairs a planted bad quantizer, and leaves a healthy model alone."""

import importlib
import json
from dataclasses import replace
from types import MappingProxyType

import builders
import numpy as np
import pytest

import ovptq
from ovptq import measure, pipeline, safety_net
from ovptq.ranges.formulas import symmetric_activation
from ovptq.rewrite import rewrite

quantize_module = importlib.import_module("ovptq.quantize")
DATA = builders.images(12, seed=2)
BEFORE_THE_NET = quantize_module.DEFAULT_STAGES[:-1]


def built(model):
    """The state after the rewrite, the safety net not run yet."""
    options = quantize_module._parse_options(None, "ANY", 300, True, None, None, None, None)
    state = pipeline.run(quantize_module.start(model, ovptq.Dataset(DATA), options), BEFORE_THE_NET)
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
    assert net.sqnr_before_db < safety_net.HEALTHY_DB
    assert [r.unit for r in net.repairs] == [bad]
    assert net.sqnr_after_db > net.sqnr_before_db + 10
    assert net.measurements <= safety_net.MAX_MEASUREMENTS
    others = {k: v for k, v in checked.activation_ranges.items() if k != bad}
    assert all(others[k] is state.activation_ranges[k] for k in others)
    if net.repairs[0].change == "float":
        assert bad not in {q.name for q in checked.plan.activations}
    else:
        assert checked.activation_ranges[bad] is not broken.activation_ranges[bad]
    record = json.loads(checked.result.get_rt_info(["ovptq", "safety_net"]).astype(str))
    assert record["repairs"][0]["quantizer"] == bad and record["sqnr_after_db"] > record["sqnr_before_db"]
    feeds = measure.bind(ovptq.Dataset(DATA), state.model, 8)
    reference = measure.run(state.core, state.model, feeds)
    assert measure.output_sqnr(reference, measure.run(state.core, checked.result, feeds)) > \
        measure.output_sqnr(reference, measure.run(state.core, broken.result, feeds)) + 10


def test_a_healthy_model_is_left_as_it_was():
    state = built(builders.residual_block())
    checked = safety_net.STAGE.run(state)
    assert checked.safety_net.repairs == () and checked.safety_net.measurements == 1
    assert checked.safety_net.sqnr_before_db >= safety_net.HEALTHY_DB
    assert checked.plan is state.plan and checked.activation_ranges is state.activation_ranges
    ours = [(op.get_type_name(), op.get_friendly_name()) for op in checked.result.get_ordered_ops()]
    assert ours == [(op.get_type_name(), op.get_friendly_name()) for op in state.result.get_ordered_ops()]


def test_localise_bisects_to_the_unit_that_gains_most_measuring_one_half_per_step():
    units = [safety_net.Unit(f"u{i}", (f"u{i}",)) for i in range(48)]
    calls = []

    def gain(part):
        calls.append(part)
        return 6.0 if units[29] in part else 0.1 * len(part) / 48

    found = safety_net.localise(units, gain, {})
    assert found == ([units[29]], 6.0)
    # groups of 8, then 8 -> 4 -> 2 -> 1 measuring one half each time, then the unit found (an inferred half)
    assert len(calls) == safety_net.GROUPS + 3 + 1 and calls[-1] == [units[29]]


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
    units = [safety_net.Unit(f"u{i}", (f"u{i}",)) for i in range(12)]
    together = safety_net.Unit("rules", ("u1", "u7"))

    def gain(part):  # u1 and u7 hurt only together: no group holds both, and each alone gains nothing
        return 5.0 if {"u1", "u7"} <= {n for u in part for n in u.activations} else 0.0

    assert safety_net.localise(units, gain, {}) is None
    assert safety_net.localise(units, gain, {}, [together]) == ([together], 5.0)


def test_the_cheap_fix_of_a_first_layer_is_the_global_input_range_and_full_8_bit_weights():
    state = built(builders.conv_relu())
    assert next(w for w in state.plan.weights if w.node == "conv1").half_range  # the overflow fix
    culprits = [safety_net.Unit("input/fq_output_0", ("input/fq_output_0",)),
                safety_net.Unit("conv1/weights", weights=("conv1",))]
    [fix] = safety_net.fixes(state, culprits)
    assert fix.description == "global min/max range and 8-bit weights"
    assert np.abs(state.weights["conv1"].integers).max() <= 64
    assert np.abs(fix.weights["conv1"].integers).max() == 127 and not fix.weights["conv1"].quantizer.half_range
    low, high = float(np.min(np.stack(DATA))), float(np.max(np.stack(DATA)))
    assert fix.ranges["input/fq_output_0"].low <= low and fix.ranges["input/fq_output_0"].high >= high
    repaired = safety_net._with_repairs(state, [], [fix])
    assert not next(w for w in repaired.plan.weights if w.node == "conv1").half_range
    assert "conv1" not in repaired.bias_correction.changed


def test_per_sample_errors_weigh_each_output_by_its_own_power():
    reference = [[np.full(4, 100.0), np.full(4, 100.0)], [np.array([1.0]), np.array([1.0])]]
    got = [[np.full(4, 101.0), np.full(4, 100.0)], [np.array([1.0]), np.array([0.5])]]
    # sample 0: the large output off by 1% (4 / 40000); sample 1: the small output off by half (0.25 / 1)
    np.testing.assert_allclose(measure.sample_errors(reference, got), [1e-4, 0.25])


def test_error_spread_over_many_quantizers_is_left_alone_rather_than_floated(monkeypatch):
    state = planted(built(builders.residual_block()), "relu2/fq_output_0")
    units = safety_net.units_of(state)
    bad = next(i for i, u in enumerate(units) if u.name == "relu2/fq_output_0")
    many = units[max(0, bad - 2):][:safety_net.MAX_FLOAT_UNITS + 1]   # the bad quantizer and 4 others
    assert len(many) == safety_net.MAX_FLOAT_UNITS + 1
    monkeypatch.setattr(safety_net, "localise", lambda units, gain, *rest: (many, gain(many)))
    monkeypatch.setattr(safety_net, "fixes", lambda state, culprits: [])
    checked = safety_net.STAGE.run(state)
    assert checked.safety_net.repairs == () and checked.plan is state.plan


def test_the_summary_says_whether_the_net_repaired_found_nothing_to_do_or_searched_in_vain():
    from ovptq.rewrite.record import safety_net_phrase
    repair = safety_net.Repair("conv/weights", "float", 3.0, 3.0)
    assert safety_net_phrase(safety_net.SafetyNet(8, 15.0, 18.0, (repair,), 5)) == \
        "output SQNR 18.0 dB after 1 safety-net repairs"
    assert safety_net_phrase(safety_net.SafetyNet(8, 25.0, 25.0)) == "output SQNR 25.0 dB, no repair needed"
    assert safety_net_phrase(safety_net.SafetyNet(8, 17.8, 17.8, (), 13)) == \
        "output SQNR 17.8 dB; the safety net measured 13 models and kept no repair (the log says why)"
