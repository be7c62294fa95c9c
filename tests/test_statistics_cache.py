"""The statistics file: written once, reused without inference by runs with other options, refused on mismatch."""

import builders
import openvino as ov
import pytest

import ovptq
from ovptq.errors import StatisticsError

DATA = builders.images(10, seed=5)


def saved(model, path):
    ov.save_model(model, path, compress_to_fp16=False)
    return path.read_bytes(), path.with_suffix(".bin").read_bytes()


def forbid_inference(monkeypatch):
    """Make any statistics pass fail: a run that passes read everything from the file."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a statistics pass ran although the statistics file should have served")
    import sys
    monkeypatch.setattr(sys.modules["ovptq.pipeline"], "collect_statistics", forbidden)


def first_run(tmp_path, model=None, **kwargs):
    path = tmp_path / "stats.npz"
    int8 = ovptq.quantize(model or builders.residual_block(), ovptq.Dataset(DATA), statistics_path=path, **kwargs)
    assert path.exists()
    return path, int8


def test_same_options_give_a_bit_identical_ir_without_inference(tmp_path, monkeypatch):
    model = builders.residual_block()
    path, first = first_run(tmp_path, model)
    plain = ovptq.quantize(model, ovptq.Dataset(DATA))  # the file changes nothing in the result
    assert saved(plain, tmp_path / "c.xml")[1] == saved(first, tmp_path / "a.xml")[1]
    forbid_inference(monkeypatch)
    second = ovptq.quantize(model, ovptq.Dataset(DATA), statistics_path=path)
    assert saved(first, tmp_path / "a.xml") == saved(second, tmp_path / "b.xml")


@pytest.mark.parametrize("options", [
    {"preset": "mixed"},
    {"ignored_scope": ovptq.IgnoredScope(names=["conv2"])},
    {"advanced_parameters": ovptq.AdvancedQuantizationParameters(activations_range_estimator="minmax")},
    {"advanced_parameters": ovptq.AdvancedQuantizationParameters(disable_bias_correction=True)},
    {"fast_bias_correction": False},
])
def test_other_options_reuse_the_file_and_match_a_fresh_run(tmp_path, monkeypatch, options):
    model = builders.residual_block()
    path, _ = first_run(tmp_path, model)
    fresh = ovptq.quantize(model, ovptq.Dataset(DATA), **options)
    forbid_inference(monkeypatch)
    reused = ovptq.quantize(model, ovptq.Dataset(DATA), statistics_path=path, **options)
    assert saved(reused, tmp_path / "reused.xml")[1] == saved(fresh, tmp_path / "fresh.xml")[1]


def test_a_file_written_without_bias_correction_serves_a_run_with_full_correction(tmp_path, monkeypatch):
    model = builders.residual_block()
    path, _ = first_run(tmp_path, model,
                        advanced_parameters=ovptq.AdvancedQuantizationParameters(disable_bias_correction=True))
    fresh = ovptq.quantize(model, ovptq.Dataset(DATA), fast_bias_correction=False)
    forbid_inference(monkeypatch)
    reused = ovptq.quantize(model, ovptq.Dataset(DATA), statistics_path=path, fast_bias_correction=False)
    assert saved(reused, tmp_path / "reused.xml")[1] == saved(fresh, tmp_path / "fresh.xml")[1]


def test_refusals_say_why_and_what_to_do(tmp_path):
    model = builders.residual_block()
    path, _ = first_run(tmp_path, model)
    other_model = builders.residual_block()
    weight = next(op for op in other_model.get_ordered_ops() if op.get_friendly_name() == "conv1/weight")
    weight.output(0).get_target_inputs().pop().replace_source_output(
        ov.opset13.constant(weight.get_data() * 1.01).output(0))
    with pytest.raises(StatisticsError, match="collected on another model.*Delete it"):
        ovptq.quantize(other_model, ovptq.Dataset(DATA), statistics_path=path)
    with pytest.raises(StatisticsError, match="other calibration data"):
        ovptq.quantize(model, ovptq.Dataset(builders.images(10, seed=6)), statistics_path=path)
    with pytest.raises(StatisticsError, match="subset_size=300, not 5"):
        ovptq.quantize(model, ovptq.Dataset(DATA), subset_size=5, statistics_path=path)
    equalization = ovptq.AdvancedQuantizationParameters(cross_layer_equalization=True)
    with pytest.raises(StatisticsError, match="collected with normalize_graph=True, cross_layer_equalization=False, "
                                              "not normalize_graph=True, cross_layer_equalization=True"):
        ovptq.quantize(model, ovptq.Dataset(DATA), statistics_path=path, advanced_parameters=equalization)
    quantile = ovptq.AdvancedQuantizationParameters(activations_range_estimator="mean_quantile")
    with pytest.raises(StatisticsError, match="lacks .* statistics this quantization needs"):
        ovptq.quantize(model, ovptq.Dataset(DATA), statistics_path=path, advanced_parameters=quantile)
    path.write_bytes(b"not a statistics file")
    with pytest.raises(StatisticsError, match="could not be read"):
        ovptq.quantize(model, ovptq.Dataset(DATA), statistics_path=path)


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    from ovptq.files import replacing
    with pytest.raises(RuntimeError):
        with replacing(tmp_path / "stats.npz") as handle:
            handle.write(b"partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
