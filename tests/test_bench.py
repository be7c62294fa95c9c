"""The speed report's arithmetic and wording, and the per-layer profile (no benchmark_app run: those are in
test_benchmark_app.py, with --slow)."""

import builders
import openvino as ov
import pytest

import ovptq
from ovptq.runtime import bench
from ovptq.runtime.profile import profile


def test_ratios_are_taken_within_each_round_then_their_median():
    results = {"fp32": bench.Measurement([100.0, 50.0, 100.0, 80.0]),
               "int8": bench.Measurement([150.0, 100.0, 120.0, 80.0])}
    found = bench.ratio(results, "int8", "fp32")
    # per round 1.5, 2.0, 1.2, 1.0: a slow round (the second) hurts both entries, not the ratio
    assert (found.median, found.low, found.high, found.rounds) == (pytest.approx(1.35), 1.0, 2.0, 4)
    assert str(found) == "1.35x (1.00-2.00)"


def test_the_report_names_the_fp32_precision_and_gives_per_round_ratios():
    default = bench.default_precision()
    references = bench.fp32_entries("model.xml")
    assert references[0].name == f"FP32 @ default ({default})" and references[0].arguments() == []
    if bench.supports_bf16():
        assert references[1].precision == ("f32" if default == "bf16" else "bf16")
        assert references[1].arguments() == ["-infer_precision", references[1].precision]
    results = {r.name: bench.Measurement([100.0, 100.0]) for r in references}
    results["int8.xml"] = bench.Measurement([150.0, 200.0])
    report = bench.format_report(results, [r.name for r in references])
    assert f"FP32 IR at the plugin's default inference precision: {default}" in report
    assert "1.75x (1.50-2.00)" in report and "2 alternating rounds" in report


def test_entries_take_turns_from_round_to_round(monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "run_once", lambda xml, hint, seconds, extra: calls.append(xml) or
                        {"throughput_fps": 1.0, "latency_median_ms": 1.0, "latency_max_ms": 1.0})
    bench.compare(["a.xml", "b.xml", "c.xml"], rounds=3, seconds=1)
    assert calls == ["a.xml", "b.xml", "c.xml", "b.xml", "c.xml", "a.xml", "c.xml", "a.xml", "b.xml"]


def test_shapes_parse_as_benchmark_app_writes_them():
    assert bench.parse_shape("input_ids[1,128],attention_mask[1,128]") == {"input_ids": [1, 128],
                                                                           "attention_mask": [1, 128]}
    assert bench.parse_shape("[1,3,224,224]") == [1, 3, 224, 224]
    with pytest.raises(ValueError, match="expected NAME"):
        bench.parse_shape("1x3x224x224")


def test_the_profile_times_every_runtime_layer_and_splits_off_the_int8_layers():
    int8 = ovptq.quantize(builders.conv_relu(), ovptq.Dataset(builders.images(4)))
    measured = profile(ov.Core(), int8, runs=5)
    assert measured.by_category()["Convolution i8"] >= 0 and measured.counts()["Convolution i8"] == 2
    assert all(t.milliseconds >= 0 for t in measured.layers)
    inside = sum(t.milliseconds for t in measured.layers if t.int8_linear)
    assert measured.outside_int8_linear() == pytest.approx(measured.milliseconds - inside)
    assert measured.precision == bench.default_precision()


def test_the_layers_report_compares_fp32_and_int8_per_layer_type(tmp_path):
    ov.save_model(builders.conv_relu(), tmp_path / "fp32.xml")
    ov.save_model(ovptq.quantize(builders.conv_relu(), ovptq.Dataset(builders.images(4))), tmp_path / "int8.xml")
    report = bench.layers_report([str(tmp_path / "fp32.xml"), str(tmp_path / "int8.xml")])
    assert f"fp32.xml at {bench.default_precision()}" in report
    assert "Convolution i8" in report and "Convolution float" in report and "outside int8 Conv/MatMul" in report


def test_the_comparison_benchmark_stores_per_round_ratios_against_every_fp32_entry(monkeypatch):
    from benchmarks import compare
    fps = {"fp32": [100.0, 50.0], "nncf": [110.0, 60.0], "ovptq": [150.0, 60.0]}

    def measured(entries, rounds, seconds, extra):
        return {e.name: bench.Measurement(fps["fp32" if e.name.startswith("FP32") else e.name]) for e in entries}

    monkeypatch.setattr(compare, "benchmark_compare", measured)
    row = {"model": "m", "fp32": {}, "nncf": {"xml": "nncf.xml"}, "ovptq": {"xml": "ovptq.xml"}}
    result = compare.speed(row, "fp32.xml", ["nncf", "ovptq"], 2, 1, [])
    default = f"FP32 @ default ({bench.default_precision()})"
    assert result["ratios"][f"ovptq / {default}"] == {"median": pytest.approx(1.35), "low": 1.2, "high": 1.5,
                                                      "rounds": 2}
    assert result["ratios"]["ovptq / nncf"]["low"] == 1.0 and row["ovptq"]["throughput_fps"] == 105.0
    line = compare.speed_table([row | {"speed": result}])[-1]
    assert line.startswith("| m | 75 / 85 / 105 | 1.35 (1.20-1.50) | 1.15 (1.10-1.20) |")


def test_a_dynamic_fp32_ir_takes_its_shape_from_a_static_int8_ir_or_names_the_option(tmp_path):
    from ovptq.errors import ParameterError
    dynamic = builders.dynamic_batch()
    ov.save_model(dynamic, tmp_path / "fp32.xml")
    static = builders.dynamic_batch()
    static.reshape([2, 3, 8, 8])
    ov.save_model(static, tmp_path / "int8.xml")
    name = dynamic.inputs[0].get_any_name()
    assert bench.shape_argument([str(tmp_path / "fp32.xml"), str(tmp_path / "int8.xml")], None) == \
        f"{name}[2,3,8,8]"
    assert bench.shape_argument([str(tmp_path / "fp32.xml")], "x[1,3,8,8]") == "x[1,3,8,8]"
    with pytest.raises(ParameterError, match=rf"input '{name}' has the dynamic shape .*--shape '{name}\[1,3,8,8\]'"):
        bench.shape_argument([str(tmp_path / "fp32.xml"), str(tmp_path / "fp32.xml")], None)


def test_bench_on_a_dynamic_model_without_a_shape_is_a_clear_error_not_a_traceback(tmp_path):
    from test_cli import ovptq_command
    ov.save_model(builders.dynamic_batch(), tmp_path / "fp32.xml")
    done = ovptq_command("bench", tmp_path / "fp32.xml", tmp_path / "fp32.xml", "--rounds", "1")
    assert done.returncode == 1 and "--shape" in done.stderr and "Traceback" not in done.stderr
