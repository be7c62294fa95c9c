"""The speed check (target_device="CPU"): per-layer costs from a profile, which layers count as slower, what goes
back to float with them, the margin a change must clear in every timing, and the stage on hand-built models whose
layer times are planted (real runtime layers, chosen times), so that the decisions do not depend on the CPU the
tests run on; its decisions are kept in a speed record and replayed without timing."""

import json
import logging
from dataclasses import replace

import builders
import numpy as np
import openvino.opset13 as ops
import pytest

import ovptq
from ovptq.measuring import speed_check
from ovptq.measuring.trial import Measurement, PlanChange, Trials
from ovptq.placement import placer
from ovptq.quantize import _parse_options, start
from ovptq.runtime.cpu import cpu_description
from ovptq.runtime.layers import RuntimeLayer
from ovptq.runtime.profile import LayerTime, Profile, Profiler


def layer(name, kind, ms, precision="f32", ir_name="", inputs=(), original=()):
    return LayerTime(RuntimeLayer(name, kind, precision, "kernel", original or (name,), ir_name), ms, inputs)


def test_a_layer_costs_its_own_time_plus_the_reorders_that_feed_it_or_read_it():
    profile = Profile([layer("in/reorder", "Reorder", 0.01, inputs=("input",)),
                       layer("conv", "Convolution", 0.1, "u8", "conv", inputs=("in/reorder",)),
                       layer("out/reorder", "Reorder", 0.02, inputs=("conv",)),
                       layer("elsewhere", "Reorder", 0.5, inputs=("input",)),
                       layer("relu", "Eltwise", 0.3, inputs=("conv",))])
    assert speed_check.layer_costs(profile) == {"conv": pytest.approx(0.13)}


def test_a_slower_layer_exceeds_its_float_cost_by_the_margin_and_by_two_microseconds():
    fp32 = Profile([layer("a", "Convolution", 1.0, ir_name="a"), layer("b", "Convolution", 1.0, ir_name="b"),
                    layer("c", "Convolution", 0.001, ir_name="c"), layer("d", "Convolution", 1.0, ir_name="d")])
    int8 = Profile([layer("a", "Convolution", 1.2, "i8", "a"),      # 20% and 0.2 ms slower
                    layer("b", "Convolution", 1.09, "u8", "b"),     # within the 10% margin
                    layer("c", "Convolution", 0.0025, "u8", "c"),   # 2.5x, but 1.5 us
                    layer("d", "Convolution", 3.0, "f32", "d")])    # slower, but runs float
    assert speed_check.slower_layers(fp32, int8) == [speed_check.SlowLayer("a", 1.2, 1.0)]


def test_costly_quantizers_are_those_inside_an_eltwise_layer_slower_than_its_float_counterpart():
    fp32 = Profile([layer("chain", "Subgraph", 0.1, original=("mul", "add"))])
    int8 = Profile([layer("chain", "Subgraph", 0.5, original=("mul", "mul/fq", "add", "add/fq")),
                    layer("cheap", "Subgraph", 0.001, original=("x/fq",))])
    assert speed_check.costly_quantizers(fp32, int8, {"mul/fq", "add/fq", "x/fq"}) == (["mul/fq", "add/fq"],
                                                                                        pytest.approx(0.4))


def placed(model):
    options = _parse_options(None, "ANY", 300, True, None, None, None, None)
    return placer.STAGE.run(start(model, ovptq.Dataset(builders.images(4)), options))


def test_a_layer_goes_back_with_the_quantizers_that_lead_to_no_other_int8_layer():
    state = placed(builders.residual_block())
    # conv4 reads relu3, the residual add reads conv3 and relu1; relu1 also feeds conv2
    assert speed_check.quantizers_of(state, {"conv4"}) == PlanChange({"relu3/fq_output_0", "conv3/bias/fq_output_0"},
                                                                     {"conv4"})
    assert speed_check.quantizers_of(state, {"conv2"}) == PlanChange(set(), {"conv2"})
    assert speed_check.quantizers_of(state, {"conv1", "conv2", "conv3", "conv4"}).floated == {
        q.name for q in state.plan.activations}


def test_a_change_is_clearly_faster_only_past_the_margin_in_every_timing():
    assert speed_check.clearly_faster([0.90, 0.91, 0.89], [1.0, 1.0, 0.99], 0.05)
    assert not speed_check.clearly_faster([0.90, 0.99, 0.89], [1.0, 1.0, 0.99], 0.05)  # one timing within noise
    assert not speed_check.clearly_faster([0.97, 0.97, 0.97], [1.0, 1.0, 1.0], 0.05)


def two_convolutions():
    """input -> fast -> relu -> slow -> output"""
    x = ops.parameter([1, 3, 16, 16], np.float32, name="input")
    relu = ops.relu(builders.conv(x, 16, "fast"), name="relu")
    return builders.model(builders.conv(relu, 16, "slow", seed=1), x)


def planted(times):
    """A Profiler whose layer times are `times[ir_name][int8]` (0 for every other layer)."""
    class Planted(Profiler):
        def measure(self, runs=1, seconds=0.0):
            profile = super().measure(1, 0.0)
            return replace(profile, layers=[
                replace(t, milliseconds=times.get(t.layer.ir_name, {}).get(t.int8_linear, 0.0))
                for t in profile.layers])
    return Planted


@pytest.fixture(autouse=True)
def fresh_records(monkeypatch, tmp_path):
    """Every test starts with an empty folder of speed records."""
    monkeypatch.setenv("OVPTQ_CACHE_DIR", str(tmp_path))


def for_this_cpu(model, items=8):
    return ovptq.quantize(model, ovptq.Dataset(builders.images(items)), target_device="CPU")


def quantize_with(monkeypatch, times):
    monkeypatch.setattr(speed_check, "Profiler", planted(times))
    int8 = for_this_cpu(two_convolutions())
    record = json.loads(int8.get_rt_info(["ovptq", "speed_check"]).astype(str))
    return ovptq.inspect(int8).int8_names(), record


def test_the_check_gives_back_a_planted_slow_layer_and_keeps_a_fast_one(monkeypatch):
    int8_names, record = quantize_with(monkeypatch, {"fast": {True: 0.2, False: 1.0},
                                                     "slow": {True: 1.0, False: 0.2}})
    assert int8_names == {"fast"}
    assert record["layers"] == ["slow"] and record["quantizers"] == ["relu/fq_output_0"]


def test_a_model_slower_in_int8_as_a_whole_goes_back_to_float(monkeypatch, caplog):
    # no layer is 10% slower, yet together they are: the check gives back every layer that is not faster
    caplog.set_level(logging.INFO, "ovptq")
    int8_names, record = quantize_with(monkeypatch, {"fast": {True: 1.05, False: 1.0},
                                                     "slow": {True: 1.05, False: 1.0}})
    assert int8_names == set() and sorted(record["layers"]) == ["fast", "slow"]
    assert record["whole_model_in_float"] and record["cpu"] == cpu_description()
    summary = next(r.message for r in caplog.records if r.message.startswith("Quantized"))
    assert "NO INT8 LAYER" in summary and "target_device='ANY'" in summary


def test_the_decisions_are_replayed_from_the_speed_record_without_timing(monkeypatch, caplog):
    model = two_convolutions()  # one model: a rebuilt one would carry other automatic names
    monkeypatch.setattr(speed_check, "Profiler", planted({"fast": {True: 0.2, False: 1.0},
                                                          "slow": {True: 1.0, False: 0.2}}))
    first = for_this_cpu(model)
    assert ovptq.inspect(first).int8_names() == {"fast"}

    class Untimed(Profiler):
        def measure(self, runs=1, seconds=0.0):
            raise AssertionError("a replayed decision times nothing")
    monkeypatch.setattr(speed_check, "Profiler", Untimed)
    caplog.set_level(logging.INFO, "ovptq")
    again = for_this_cpu(model)
    assert builders.ir_bytes(again) == builders.ir_bytes(first)
    assert any("replayed from the speed record" in r.message for r in caplog.records)


def test_a_record_for_other_data_is_not_replayed(monkeypatch):
    model = two_convolutions()
    monkeypatch.setattr(speed_check, "Profiler", planted({"fast": {True: 0.2, False: 1.0},
                                                          "slow": {True: 1.0, False: 0.2}}))
    for_this_cpu(model)
    monkeypatch.setattr(speed_check, "Profiler", planted({"fast": {True: 1.0, False: 0.2},
                                                          "slow": {True: 0.2, False: 1.0}}))
    int8 = ovptq.quantize(model, ovptq.Dataset(builders.images(8, seed=3)), target_device="CPU")
    assert ovptq.inspect(int8).int8_names() == {"slow"}   # other data: measured again


def test_a_change_that_does_not_speed_the_model_up_is_not_kept(monkeypatch):
    # "slow" is slower alone, but the model without it is not faster: "fast" pays its reorders (planted here as
    # a float "fast" that costs 2 ms once "slow" runs float)
    def times(profiler_model):
        slow_int8 = any(op.get_friendly_name() == "slow/fq_weights_1" for op in profiler_model.get_ops())
        return {"fast": {True: 0.2 if slow_int8 else 2.0, False: 1.0}, "slow": {True: 1.0, False: 0.2}}

    class Planted(Profiler):
        def measure(self, runs=1, seconds=0.0):
            profile = super().measure(1, 0.0)
            planted_times = times(self.model)
            return replace(profile, layers=[
                replace(t, milliseconds=planted_times.get(t.layer.ir_name, {}).get(t.int8_linear, 0.0))
                for t in profile.layers])

    monkeypatch.setattr(speed_check, "Profiler", Planted)
    int8 = for_this_cpu(two_convolutions())
    record = json.loads(int8.get_rt_info(["ovptq", "speed_check"]).astype(str))
    assert ovptq.inspect(int8).int8_names() == {"fast", "slow"}
    assert record["layers"] == [] and record["kept_after_timing"] == ["slow"]


@pytest.mark.parametrize("kwargs", [{}, {"target_device": "ANY"}, {"target_device": "GPU"},
                                    {"target_device": "CPU",
                                     "advanced_parameters": ovptq.AdvancedQuantizationParameters(speed_check=False)}])
def test_the_check_runs_only_for_the_cpu_that_quantizes(kwargs, monkeypatch):
    monkeypatch.setattr(speed_check, "Profiler", planted({"fast": {True: 0.2, False: 1.0},
                                                          "slow": {True: 1.0, False: 0.2}}))
    int8 = ovptq.quantize(two_convolutions(), ovptq.Dataset(builders.images(4)), **kwargs)
    assert not int8.has_rt_info(["ovptq", "speed_check"]) and int8.has_rt_info(["ovptq", "safety_net"])
    assert ovptq.inspect(int8).int8_names() == {"fast", "slow"}


def test_a_model_too_fast_to_time_is_left_as_it_is():
    int8 = for_this_cpu(two_convolutions(), 4)
    record = json.loads(int8.get_rt_info(["ovptq", "speed_check"]).astype(str))
    assert record["layers"] == [] and ovptq.inspect(int8).int8_names() == {"fast", "slow"}


def test_inspect_says_which_float_layers_the_speed_check_gave_back(monkeypatch):
    monkeypatch.setattr(speed_check, "Profiler", planted({"fast": {True: 0.2, False: 1.0},
                                                          "slow": {True: 1.0, False: 0.2}}))
    int8 = for_this_cpu(two_convolutions())
    report = ovptq.inspect(int8)
    assert report.speed_checked == {"slow"} and not report.measured_elsewhere
    assert "speed check" in str(report) and any("given back by the speed check" in h for h in report.hints())
    assert not any("Layers in float with quantizers" in h for h in report.hints())
    record = json.loads(int8.get_rt_info(["ovptq", "speed_check"]).astype(str))
    int8.set_rt_info(json.dumps({**record, "cpu": "Another CPU (AVX512-VNNI)"}), ["ovptq", "speed_check"])
    elsewhere = ovptq.inspect(int8)
    assert elsewhere.measured_elsewhere
    assert any("measured on Another CPU (AVX512-VNNI)" in h and "this CPU is" in h for h in elsewhere.hints())


def test_a_faster_change_that_lowers_the_output_sqnr_is_not_kept(monkeypatch):
    # the planted "slow" layer would make the model faster in float, but its float version is planted 10 dB worse
    def score(trials, compiled):
        slow_int8 = any("slow" in op.get_rt_info()["originalLayersNames"].astype(str).split(",")
                        and op.get_rt_info()["runtimePrecision"].astype(str) in ("u8", "i8")
                        for op in compiled.get_runtime_model().get_ops())
        return Measurement(20.0 if slow_int8 else 10.0, 0.0, np.zeros(1))
    monkeypatch.setattr(Trials, "score", score)
    int8_names, record = quantize_with(monkeypatch, {"fast": {True: 0.2, False: 1.0},
                                                     "slow": {True: 1.0, False: 0.2}})
    assert int8_names == {"fast", "slow"}
    assert record["layers"] == [] and record["kept_after_timing"] == ["slow"]
