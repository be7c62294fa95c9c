"""The trial service: a plan change gives a new state (the given one untouched), its model is built by the rewrite,
and measurements are the same whether changes are measured one at a time or two at once."""

import importlib
from dataclasses import replace

import builders
import numpy as np

import ovptq
from ovptq import pipeline
from ovptq.measuring import safety_net, trial
from ovptq.measuring.trial import PlanChange, Trials
from ovptq.ranges.formulas import symmetric_activation

quantize_module = importlib.import_module("ovptq.quantize")
DATA = builders.images(20, seed=4)


def state_of(model):
    """The state after the rewrite, with what the safety net asks of the statistics pass."""
    options = quantize_module._parse_options(None, "ANY", 300, True, None, None, None, None)
    stages = quantize_module.DEFAULT_STAGES
    declared_only = replace(safety_net.STAGE, run=lambda state: state)
    return pipeline.run(quantize_module.start(model, ovptq.Dataset(DATA), options),
                        stages[:stages.index(safety_net.STAGE)] + (declared_only,))


def test_a_change_gives_a_new_state_and_leaves_the_given_one_as_it_was():
    state = state_of(builders.residual_block())
    bad = symmetric_activation(np.float32(-0.1), np.float32(0.1))
    change = PlanChange({"relu1/fq_output_0"}, {"conv4"}, {"relu2/fq_output_0": bad},
                        {"conv1": replace(state.weights["conv1"], scale=state.weights["conv1"].scale * 2)})
    plan, ranges, weights = state.plan, dict(state.activation_ranges), dict(state.weights)
    new = trial.changed(state, change)
    assert state.plan is plan and dict(state.activation_ranges) == ranges and dict(state.weights) == weights
    assert "relu1/fq_output_0" not in {q.name for q in new.plan.activations}
    assert "conv4" not in {w.node for w in new.plan.weights} and "conv4" not in new.weights
    assert new.activation_ranges["relu2/fq_output_0"] is bad
    assert new.weights["conv1"].scale[0] == 2 * state.weights["conv1"].scale[0]
    # a layer back in float, or with new int8 weights, keeps its FP32 bias: its correction is undone
    assert {"conv1", "conv4"}.isdisjoint(new.bias_correction.changed) and "conv2" in new.bias_correction.changed
    assert new.result is None and trial.built(new).result is not state.result


def test_a_change_is_told_apart_by_its_names_and_by_the_values_of_its_new_parameters():
    low, high = np.float32(-1), np.float32(1)
    one = PlanChange(ranges={"q": symmetric_activation(low, high)})
    same = PlanChange(ranges={"q": symmetric_activation(low, high)})
    other = PlanChange(ranges={"q": symmetric_activation(low, np.float32(2))})
    assert one.key() == same.key() != other.key()
    assert (PlanChange({"a"}) | PlanChange({"b"}, {"w"})) == PlanChange({"a", "b"}, {"w"})
    assert not PlanChange() and PlanChange({"a"})


def test_measurements_are_the_same_one_at_a_time_or_two_at_once():
    state = state_of(builders.residual_block())
    changes = [safety_net.in_float([unit]) for unit in safety_net.units_of(state)]
    together = Trials.on_calibration(state, 8, "a test", held_out=8)
    alone = Trials.on_calibration(state, 8, "a test", held_out=8)
    alone._workers = 1
    measured = together.measure_all(changes)
    for change, expected in zip(changes, measured):
        got = alone.measure(change)
        assert (got.sqnr_db, got.held_out_db) == (expected.sqnr_db, expected.held_out_db)
        np.testing.assert_array_equal(got.errors, expected.errors)
    assert together.compiled == len(changes)
    together.measure_all(changes)
    assert together.compiled == len(changes)   # measured once


def test_the_unchanged_model_runs_its_held_out_feeds_only_when_asked():
    state = state_of(builders.residual_block())
    trials = Trials.on_calibration(state, 8, "a test", held_out=8)
    first = trials.measure()
    assert np.isnan(first.held_out_db) and len(trials.feeds) == 16
    complete = trials.complete(PlanChange())
    assert np.isfinite(complete.held_out_db) and complete.sqnr_db == first.sqnr_db and trials.compiled == 1
