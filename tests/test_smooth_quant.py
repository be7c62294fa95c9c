"""SmoothQuant: exact FP32 equivalence, folding into LayerNorm and linear producers, exact smoothed statistics."""

import builders
import numpy as np
import pytest

import ovptq
from ovptq import smooth_quant
from ovptq.dataset import Dataset
from ovptq.graph.graph import Graph
from ovptq.placement.placer import PlacementOptions, plan_quantizers
from ovptq.ranges.activations import quantizer_reductions
from ovptq.rewrite import rewrite
from ovptq.statistics.collect import collect_statistics

SAMPLES = builders.outlier_sequences(8)


def smoothed(model, alpha=0.95):
    """Apply SmoothQuant alone to `model`; return (the smoothed copy, plan, {group tensor: where 1/s went}, stats,
    {group tensor: s}, groups)."""
    graph = Graph(model.clone())
    plan = plan_quantizers(graph, {}, PlacementOptions(symmetric_activations=False, transformer=True))
    groups = smooth_quant.smoothing_groups(graph, plan)
    stats, _ = collect_statistics(graph.model, [g.reduction() for g in groups], Dataset(SAMPLES), 300)
    smoothing = smooth_quant.smooth(graph, groups, stats, alpha, quantizer_reductions(plan, None, 0.0, graph))
    working = rewrite.apply(graph.model, rewrite.ModelEdits.of_smoothing(smoothing))
    where = {g.producer: smoothing.where[g.quantizer] for g in groups if g.quantizer in smoothing.where}
    factors = {g.producer: smoothing.input_factors[g.layers[0]] for g in groups if g.quantizer in smoothing.where}
    return working, plan, where, stats, factors, groups


def test_smoothing_keeps_fp32_outputs_and_folds_where_it_can():
    model = builders.pre_norm_block()
    working, plan, where, *_ = smoothed(model)
    # LN output read only by ffn1: into gamma/beta; proj1 + bias read only by proj2: into proj1; GELU: a Multiply
    assert where == {"ln/beta": "ln/gamma", "proj1/bias": "proj1", "gelu": "Multiply", "residual": "Multiply"}
    assert not any(q.producer == "chain" for q in plan.activations)
    multiplies = [op.get_friendly_name() for op in working.get_ordered_ops()
                  if op.get_friendly_name().endswith("/smooth_quant")]
    assert sorted(multiplies) == ["gelu/smooth_quant", "residual/smooth_quant"]
    for sample in builders.outlier_sequences(3, seed=7):
        np.testing.assert_allclose(builders.infer(working, sample)[0], builders.infer(model, sample)[0],
                                   rtol=1e-4, atol=1e-4 * np.abs(builders.infer(model, sample)[0]).max())


def test_shared_weight_read_by_an_unsmoothable_tensor_is_left_alone():
    *_, groups = smoothed(builders.pre_norm_block())
    assert all("shared_a" not in g.layers and "shared_b" not in g.layers for g in groups)


def test_smoothed_statistics_are_those_of_x_over_s():
    model = builders.pre_norm_block()
    _, _, _, stats, scales, groups = smoothed(model)
    group = next(g for g in groups if g.producer == "ln/beta")
    s = scales["ln/beta"]
    result = smooth_quant.smoothed_statistics(stats[group.reduction()], s)
    probe = builders.model(next(op for op in model.get_ordered_ops()
                                if op.get_friendly_name() == "ln/beta").output(0), model.get_parameters())
    values = [builders.infer(probe, x)[0] / s for x in SAMPLES]
    assert result.global_max == pytest.approx(max(v.max() for v in values), rel=1e-5)
    assert result.mean_min == pytest.approx(np.mean([v.min() for v in values]), rel=1e-5)
    assert result.mean_absmax == pytest.approx(np.mean([np.abs(v).max() for v in values]), rel=1e-5)
    # outlier features got the largest s: the flatter per-feature range is the point
    assert set(np.argsort(s)[-2:]) == {3, 11}


def test_smooth_quant_switch_and_it_lowers_the_error_of_outlier_features():
    model = builders.pre_norm_block()
    sample = builders.outlier_sequences(1, seed=9)[0]
    reference = builders.infer(model, sample)[0]
    errors = {}
    for smooth in (True, False):
        advanced = ovptq.AdvancedQuantizationParameters(smooth_quant=smooth)
        int8 = ovptq.quantize(model, ovptq.Dataset(SAMPLES), model_type="transformer", advanced_parameters=advanced)
        assert ("gelu/smooth_quant" in {op.get_friendly_name() for op in int8.get_ordered_ops()}) is smooth
        errors[smooth] = np.abs(builders.infer(int8, sample, emulated=True)[0] - reference).max() / \
            np.abs(reference).max()
    assert errors[True] < 0.8 * errors[False] and errors[True] < 0.05


def test_bad_smooth_quant_alphas_are_rejected():
    bad = ovptq.AdvancedQuantizationParameters(smooth_quant_alphas=ovptq.AdvancedSmoothQuantParameters(convolution=0.5))
    with pytest.raises(ovptq.errors.ParameterError, match="convolution negative"):
        ovptq.quantize(builders.pre_norm_block(), ovptq.Dataset(SAMPLES), advanced_parameters=bad)


def test_rt_info_records_smoothing_and_transformer_rules():
    import json
    # the shared weight of shared_a and shared_b is the subject: graph normalisation would give each MatMul a copy
    unnormalized = ovptq.AdvancedQuantizationParameters(normalize_graph=False)
    int8 = ovptq.quantize(builders.pre_norm_block(), ovptq.Dataset(SAMPLES), model_type="transformer",
                          advanced_parameters=unnormalized)
    smoothed = json.loads(int8.get_rt_info(["ovptq", "smooth_quant"]).astype(str))
    assert sorted(smoothed.values()) == ["Multiply", "Multiply", "ln/gamma", "proj1"]
    rules = json.loads(int8.get_rt_info(["ovptq", "transformer_rules"]).astype(str))
    assert rules["residual"].startswith("model_type=transformer")


def test_full_correction_measures_a_layer_that_took_1_over_s_in_its_own_coordinates():
    import json
    int8 = ovptq.quantize(builders.pre_norm_block(), ovptq.Dataset(SAMPLES), model_type="transformer",
                          fast_bias_correction=False)
    records = {r["layer"]: r for r in json.loads(int8.get_rt_info(["ovptq", "bias_correction"]).astype(str))}
    # proj1 outputs y / s after SmoothQuant folded 1/s into it; compared with FP32 means of y it would show a shift
    # of the order of y itself (1.67x its output scale before this was handled)
    assert records["proj1"]["method"] == "full" and records["proj1"]["max_relative_shift"] < 0.01


def test_attention_output_is_not_smoothed_but_the_layers_reading_layer_norms_are():
    graph = Graph(builders.attention_block().clone())
    plan = plan_quantizers(graph, {}, PlacementOptions(symmetric_activations=False, transformer=True))
    groups = {g.producer: g.layers for g in smooth_quant.smoothing_groups(graph, plan)}
    # Softmax x V -> Transpose -> Reshape feeds the output dense alone, yet stays unsmoothed
    assert any(q.producer == "merge/reshape" for q in plan.activations)
    assert "merge/reshape" not in groups
    assert groups["ln1/beta"] == ("ffn1",)


def test_a_tensor_whose_factors_all_exceed_the_cap_is_left_alone():
    # the residual stream scaled by 1000: every s_j is above 100, and a uniform s = 100 would change no quantized
    # value, only add a Multiply; the LayerNorm output keeps its scale and is still smoothed
    loud = [x * 1000 for x in SAMPLES]
    int8 = ovptq.quantize(builders.pre_norm_block(), ovptq.Dataset(loud), model_type="transformer")
    import json
    smoothed = json.loads(int8.get_rt_info(["ovptq", "smooth_quant"]).astype(str))
    assert "ln/beta/fq_output_0" in smoothed and "residual/fq_output_0" not in smoothed
    assert "residual/smooth_quant" not in {op.get_friendly_name() for op in int8.get_ordered_ops()}


def test_rescaled_weights_are_computed_when_read_and_equal_the_weight_times_every_factor():
    """SmoothQuant holds its factors, not a float copy of each weight: proj1 takes 1/s of proj2's input on its
    output channels and s of its own input on its input channels, applied in that order in float32."""
    from ovptq.graph.weights import find_weight, weight_value
    from ovptq.rewrite.edits import ScaledConstant
    model = builders.pre_norm_block()
    graph = Graph(model.clone())
    plan = plan_quantizers(graph, {}, PlacementOptions(symmetric_activations=False, transformer=True))
    groups = smooth_quant.smoothing_groups(graph, plan)
    stats, _ = collect_statistics(graph.model, [g.reduction() for g in groups], Dataset(SAMPLES), 300)
    smoothing = smooth_quant.smooth(graph, groups, stats, 0.95, quantizer_reductions(plan, None, 0.0, graph))
    weights = {key: edit for key, edit in smoothing.constants.items() if key in {("proj1", 1), ("proj2", 1)}}
    assert weights and all(isinstance(edit, ScaledConstant) for edit in weights.values())
    proj1 = weights[("proj1", 1)]
    assert len(proj1.factors) == 2
    expected = weight_value(graph, find_weight(graph, "proj1")).astype(np.float32)
    for factor in proj1.factors:
        expected = (expected * factor).astype(np.float32)
    np.testing.assert_array_equal(proj1.value, expected)
