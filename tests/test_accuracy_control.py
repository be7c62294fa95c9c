"""quantize_with_accuracy_control on hand-built models with numpy metrics: the planted culprit is what gets
restored, an unreachable budget returns the best model with a warning, bad metrics get typed errors."""

import json
import logging

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import ovptq
from ovptq.measuring.accuracy_control import Budget
from ovptq.errors import ValidationError

ITEMS = builders.images(16, low=0.0, high=1.0)


def planted_culprit() -> ov.Model:
    """input -> {clean (1x1, weights exact in int8) -> output 0, culprit (3x3, one outlier weight per output
    channel: the other weights lose most of their bits) -> output 1}"""
    x = ops.parameter([1, 3, 16, 16], np.float32, name="input")
    clean = ops.convolution(x, ops.constant(np.full((4, 3, 1, 1), 0.5, np.float32)), [1, 1], [0, 0], [0, 0], [1, 1],
                            name="clean")
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.1
    w[:, 0, 0, 0] = 20.0
    culprit = ops.convolution(x, ops.constant(w), [1, 1], [1, 1], [1, 1], [1, 1], name="culprit")
    return builders.model([clean, culprit], x)


FP32 = [builders.infer(planted_culprit(), item) for item in ITEMS]


def close_to_fp32(compiled: ov.CompiledModel, data) -> tuple[float, list[float]]:
    """Per item: 1 when the culprit's output is within 1% (relative L2) of FP32's."""
    values = []
    for item, reference in zip(data, FP32):
        got = compiled(item)[compiled.outputs[1]]
        values.append(float(np.linalg.norm(got - reference[1]) / np.linalg.norm(reference[1]) < 0.01))
    return float(np.mean(values)), values


def control(metric=close_to_fp32, **kwargs):
    """Accuracy control on the planted model, with 7-bit weights: the int8 kernels of a CPU without VNNI compute
    then what the IR says, as every other CPU's do, so the ranking (on this CPU's kernels) is the same everywhere."""
    kwargs.setdefault("advanced_quantization_parameters", ovptq.AdvancedQuantizationParameters(overflow_fix="enable"))
    return ovptq.quantize_with_accuracy_control(planted_culprit(), ovptq.Dataset(ITEMS), ovptq.Dataset(ITEMS),
                                                metric, **kwargs)


def record_of(model: ov.Model) -> dict:
    return json.loads(model.get_rt_info(["ovptq", "accuracy_control"]).astype(str))


def test_the_budget_is_met_by_restoring_the_planted_culprit():
    int8 = control(max_drop=0.01)
    record = record_of(int8)
    assert record["int8_metric"] < 0.5 and record["met"] and record["final_metric"] == 1.0
    assert record["restored"] == ["culprit"]
    report = ovptq.inspect(int8)
    assert report.int8_names() == {"clean"} and report.kept_float == {"culprit": "accuracy control"}
    assert "culprit" in str(report) and any("restored by accuracy control" in h for h in report.hints())
    # FP32, default INT8, then far fewer than one validation per group
    assert record["validations"] == len(record["steps"]) + 1 <= 8


def test_validation_items_that_are_input_label_pairs_with_no_transform_fn_rank_on_the_calibration_items(caplog):
    """NNCF-style validation data: (input, label) items that only validation_fn reads. The groups are ranked on
    the calibration items, the log says so, and the planted culprit is restored as with model-input items."""
    pairs = [(item, f"label {i}") for i, item in enumerate(ITEMS)]

    def on_pairs(compiled, data):
        return close_to_fp32(compiled, [item for item, _ in data])
    with caplog.at_level(logging.INFO, logger="ovptq"):
        int8 = ovptq.quantize_with_accuracy_control(
            planted_culprit(), ovptq.Dataset(ITEMS), ovptq.Dataset(pairs), on_pairs, max_drop=0.01,
            advanced_quantization_parameters=ovptq.AdvancedQuantizationParameters(overflow_fix="enable"))
    record = record_of(int8)
    assert record["met"] and record["restored"] == ["culprit"] and record["validations"] <= 8
    said = [r.getMessage() for r in caplog.records if "not model inputs" in r.getMessage()]
    assert len(said) == 1 and "Dataset item 0 is a tuple of 2" in said[0]
    assert "ranked on the calibration items" in said[0]


def test_the_ranking_measures_the_int8_kernels_validation_fn_runs_not_an_emulation(monkeypatch):
    """validation_fn runs the model on this CPU's int8 kernels (16-bit sums that saturate on a CPU without VNNI),
    so the ranking measures those kernels too, even for target_device="ANY", whose own stages emulate."""
    from ovptq.measuring import measure
    modes = []
    real_run = measure.run

    def recording(core, model, feeds, emulated=False):
        modes.append(emulated)
        return real_run(core, model, feeds, emulated)
    monkeypatch.setattr(measure, "run", recording)
    from ovptq.measuring import accuracy_control
    ranked = []
    real_rank = accuracy_control.rank

    def ranking(*args):
        modes.clear()
        ranked.extend(real_rank(*args))
        ranked.append(list(modes))
        return ranked[:-1]
    monkeypatch.setattr(accuracy_control, "rank", ranking)
    control(max_drop=0.01)
    assert ranked[0] == "culprit" and ranked[-1] and not any(ranked[-1])


def test_a_default_model_within_budget_costs_one_int8_validation():
    calls = []

    def lenient(compiled, data):
        calls.append(1)
        return 0.9
    int8 = control(lenient, max_drop=0.01)
    assert len(calls) == 2 and record_of(int8)["steps"] == [{"what": "default INT8 model", "metric": 0.9}]
    assert ovptq.inspect(int8).int8_names() == {"clean", "culprit"}


def test_an_unreachable_budget_returns_the_best_model_with_a_warning(caplog):
    calls = []

    def never_as_good(compiled, data):
        calls.append(1)
        return 1.0 if len(calls) == 1 else 0.5 + 0.01 * len(calls)  # later models score a little better
    with caplog.at_level(logging.WARNING, logger="ovptq"):
        int8 = control(never_as_good, max_drop=0.01)
    record = record_of(int8)
    assert not record["met"] and record["final_metric"] == max(s["metric"] for s in record["steps"])
    assert "no model met max_drop=0.01" in caplog.text and f"{record['final_metric']:.4f}" in caplog.text


def test_the_validation_limit_stops_the_search():
    record = record_of(control(max_drop=0.01, advanced_accuracy_restorer_parameters=ovptq.
                               AdvancedAccuracyRestorerParameters(max_num_iterations=1)))
    assert record["validations"] == 3 and not record["met"]


def test_a_relative_drop_is_the_drop_over_the_fp32_metric():
    assert Budget(0.8, 0.05, ovptq.DropType.RELATIVE).drop(0.76) == pytest.approx(0.05)
    assert Budget(0.8, 0.05, ovptq.DropType.ABSOLUTE).drop(0.76) == pytest.approx(0.04)

    def in_percent(compiled, data):
        metric, values = close_to_fp32(compiled, data)
        return 100 * metric, [100 * v for v in values]
    record = record_of(control(in_percent, max_drop=0.01, drop_type="relative"))
    assert record["drop_type"] == "relative" and record["met"] and record["restored"] == ["culprit"]


@pytest.mark.parametrize("result, message", [
    (float("nan"), "returned nan on the FP32 model: it must return a finite number"),
    ("0.9", "returned '0.9' on the FP32 model"),
    ((None, [1.0]), "returned (None, [1.0]) on the FP32 model")])
def test_a_metric_that_is_not_a_number_gets_a_typed_error_naming_the_function(result, message):
    def word_accuracy(compiled, data):
        return result
    with pytest.raises(ValidationError, match=r"validation_fn .*word_accuracy " + message.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        control(word_accuracy)


def test_a_metric_that_raises_gets_a_typed_error_naming_the_function_and_the_model():
    calls = []

    def word_accuracy(compiled, data):
        calls.append(1)
        if len(calls) == 2:
            raise KeyError("labels")
        return 1.0
    with pytest.raises(ValidationError, match="word_accuracy raised KeyError on the default INT8 model") as error:
        control(word_accuracy)
    assert isinstance(error.value.__cause__, KeyError)


def test_the_callers_model_is_untouched():
    model = planted_culprit()
    before = [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()]
    ovptq.quantize_with_accuracy_control(model, ovptq.Dataset(ITEMS), ovptq.Dataset(ITEMS), close_to_fp32)
    assert [(op.get_friendly_name(), op.get_type_name()) for op in model.get_ordered_ops()] == before
    assert not model.has_rt_info(["ovptq"])


def test_the_command_line_runs_accuracy_control_with_a_metric_from_a_module(tmp_path):
    from test_cli import ovptq_command
    ov.save_model(planted_culprit(), tmp_path / "model.xml", compress_to_fp16=False)
    np.save(tmp_path / "data.npy", np.concatenate(ITEMS))
    (tmp_path / "mymetrics.py").write_text(
        "import numpy as np\n"
        "def agreement(compiled, data):\n"
        "    return float(np.mean([compiled(x)[compiled.outputs[1]].max() > 0 for x in data]))\n")
    done = ovptq_command("quantize", "model.xml", "--data", "data.npy", "-o", "int8.xml", "--max-drop", "0.05",
                         "--validate", "mymetrics:agreement", "--val-data", "data.npy", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert record_of(ov.Core().read_model(tmp_path / "int8.xml"))["validations"] >= 2
    missing = ovptq_command("quantize", "model.xml", "--data", "data.npy", "-o", "other.xml", "--max-drop", "0.05",
                            cwd=tmp_path)
    assert missing.returncode == 2 and "--max-drop, --validate and --val-data together" in missing.stderr
    assert not (tmp_path / "other.xml").exists()
