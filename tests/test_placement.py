"""Golden placement plans on small hand-built models (tests/builders.py)."""

import builders
import pytest

from ovptq.graph.graph import Graph
from ovptq.parameters import OverflowFix
from ovptq.placement.placer import PlacementOptions, plan_quantizers
from ovptq.placement.plan import QuantizationPlan
from ovptq.scope import postprocessing_nodes


def plan_of(model, **options):
    graph = Graph(model)
    return plan_quantizers(graph, postprocessing_nodes(graph), PlacementOptions(**options))


def tensors(plan):
    return {f"{q.producer}:{q.port}" for q in plan.activations}


def test_conv_relu_quantizes_input_and_relu_output_and_both_weights():
    plan = plan_of(builders.conv_relu())
    assert plan.summary() == {"activations": {"input:0": ["conv1:0"], "relu1:0": ["conv2:0"]},
                              "weights": ["conv1", "conv2"]}
    assert all(q.whole and q.symmetric and not q.per_channel for q in plan.activations)


def test_residual_block_quantizes_both_add_inputs_and_nothing_inside_conv_bias():
    plan = plan_of(builders.residual_block())
    assert tensors(plan) == {"input:0", "relu1:0", "relu2:0", "conv3/bias:0", "relu3:0"}
    relu1 = next(q for q in plan.activations if q.producer == "relu1")
    # one quantizer feeds both the conv2 branch and the skip connection
    assert {c.node for c in relu1.consumers} == {"conv2", "add"} and relu1.whole


def test_depthwise_input_is_per_channel_and_pointwise_input_is_per_tensor():
    plan = plan_of(builders.depthwise_block())
    by_tensor = {f"{q.producer}:{q.port}": q for q in plan.activations}
    assert set(by_tensor) == {"input:0", "relu6:0", "hswish:0"}
    assert by_tensor["relu6:0"].per_channel
    assert not by_tensor["hswish:0"].per_channel
    depthwise = next(w for w in plan.weights if w.node == "depthwise")
    assert depthwise.channel_axes == (0, 1)


def test_concat_inputs_share_one_group_and_quantizer_moves_above_maxpool():
    plan = plan_of(builders.concat_block())
    grouped = {f"{q.producer}:{q.port}": q.group for q in plan.activations if q.group is not None}
    assert grouped == {"relu_a:0": 0, "relu_b:0": 0}
    assert "pool_b:0" not in tensors(plan) and "concat:0" not in tensors(plan)


def test_preprocessing_gets_its_quantizer_after_normalisation():
    plan = plan_of(builders.preprocessing_block())
    assert tensors(plan) == {"scale:0"}


def test_postprocessing_towards_topk_stays_float():
    plan = plan_of(builders.postprocessing_block())
    assert {"softmax", "topk", "rescale", "flatten"} <= set(plan.ignored)
    assert tensors(plan) == {"input:0", "relu1:0"}
    assert plan.summary()["weights"] == ["conv1", "conv2"]


def test_se_block_keeps_its_fcs_quantized_but_not_the_gating_multiply():
    plan = plan_of(builders.se_block())
    assert tensors(plan) == {"input:0", "se/mean:0", "se/relu:0", "se/mul:0"}
    assert "se/sigmoid:0" not in tensors(plan) and "relu1:0" not in tensors(plan)
    assert plan.summary()["weights"] == ["conv1", "conv2", "se/fc1", "se/fc2"]


def test_decomposed_swish_gets_no_quantizer_inside():
    plan = plan_of(builders.swish_block())
    assert tensors(plan) == {"input:0", "swish:0"}


def test_matmul_of_two_activations_is_symmetric_even_with_the_mixed_preset():
    plan = plan_of(builders.matmul_block(), symmetric_activations=False)
    by_tensor = {f"{q.producer}:{q.port}": q for q in plan.activations}
    assert by_tensor["fc1/bias:0"].symmetric  # feeds q x q^T
    assert not by_tensor["input:0"].symmetric  # feeds a MatMul with constant weights
    assert {c.port for c in by_tensor["fc1/bias:0"].consumers} == {0, 1}
    weights = {w.node: w.channel_axes for w in plan.weights}
    assert weights == {"fc1": (1,), "fc2": (0,)}  # [K, N] and, transposed, [N, K]


def test_fan_out_to_a_float_consumer_keeps_the_float_path_unquantized():
    import numpy as np
    import openvino.opset13 as ops
    x = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    relu = ops.relu(builders.conv(x, 4, "conv1"), name="relu")
    pooled = ops.max_pool(relu, [1, 1], [1, 1], [0, 0], [0, 0], [1, 1], name="pool").output(0)
    plan = plan_of(builders.model([builders.conv(pooled, 4, "conv2", seed=1), ops.sigmoid(pooled, name="sig")], x))
    quantizer = next(q for q in plan.activations if q.producer == "pool")
    assert not quantizer.whole and [c.node for c in quantizer.consumers] == ["conv2"]


def test_overflow_fix_modes():
    first = plan_of(builders.residual_block())
    assert [w.node for w in first.weights if w.half_range] == ["conv1"]
    everywhere = plan_of(builders.residual_block(), overflow_fix=OverflowFix.ENABLE)
    assert all(w.half_range for w in everywhere.weights)
    none = plan_of(builders.residual_block(), overflow_fix=OverflowFix.DISABLE)
    assert not any(w.half_range for w in none.weights)


def test_two_inputs_each_get_a_quantizer_and_overflow_fix():
    plan = plan_of(builders.two_inputs())
    assert {"a:0", "b:0"} <= tensors(plan)
    assert sorted(w.node for w in plan.weights if w.half_range) == ["conv_a", "conv_b"]


def test_quantize_outputs_adds_a_quantizer_before_the_result():
    plan = plan_of(builders.conv_relu(), quantize_outputs=True)
    assert "conv2/bias:0" in tensors(plan)


def test_ignored_node_gets_no_quantizers_and_blocks_propagation():
    graph = Graph(builders.concat_block())
    plan = plan_quantizers(graph, {"pool_b": "test"})
    assert "pool_b:0" in tensors(plan)  # the concat's quantizer can no longer pass the ignored MaxPool
    plan = plan_quantizers(graph, {"conv_c": "test"})
    assert "conv_c" not in plan.summary()["weights"] and "relu_a:0" not in tensors(plan)


def test_plan_round_trips_through_json_and_prints():
    plan = plan_of(builders.concat_block())
    assert QuantizationPlan.from_json(plan.to_json()) == plan
    text = str(plan)
    assert "relu_a:0" in text and "group 0" in text and "half-range" in text


@pytest.mark.parametrize("builder", ["conv_relu", "residual_block", "depthwise_block", "concat_block", "se_block"])
def test_plan_is_deterministic(builder):
    assert plan_of(getattr(builders, builder)()) == plan_of(getattr(builders, builder)())


@pytest.mark.parametrize("transformer", [False, True])
def test_attention_block_quantizes_linear_inputs_and_query_key_symmetric_only(transformer):
    plan = plan_of(builders.attention_block(), symmetric_activations=False, transformer=transformer)
    assert plan.summary()["activations"] == {
        "embeddings:0": ["key:0", "query:0", "value:0"],   # not the residual Add beside them
        "query/bias:0": ["query/split:0"], "key/bias:0": ["key/split:0"],   # Q x K^T, above reshape/transpose
        "merge/reshape:0": ["out:0"],                      # the output dense, below the heads Transpose/Reshape
        "ln1/beta:0": ["ffn1:0"], "gelu:0": ["ffn2:0"]}
    symmetric = {q.producer for q in plan.activations if q.symmetric}
    assert symmetric == {"query/bias", "key/bias"}         # act x act MatMul: no zero points, even under mixed
    # float by structure: residual Adds into LayerNorms, the LayerNorms, the mask Add, Softmax x V (V unquantized)
    assert {n: r for n, r in plan.float_rules.items() if not r.startswith("model_type")} == {
        "residual1": "residual Add into a normalisation", "residual2": "residual Add into a normalisation",
        "ln1/mvn": "normalisation of a residual stream", "ln2/mvn": "normalisation of a residual stream",
        "mask": "attention scores on their way to Softmax", "context": "Softmax x V"}
    assert QuantizationPlan.from_json(plan.to_json()) == plan


def test_attention_inside_a_cnn_gets_the_transformer_rules_there_and_cnn_rules_elsewhere():
    plan = plan_of(builders.conv_attention())
    assert set(plan.float_rules) == {"neck/residual1", "neck/residual2", "neck/ln1/mvn", "neck/ln2/mvn",
                                     "neck/context"}
    assert plan.summary()["activations"]["to_sequence:0"] == ["neck/key:0", "neck/query:0", "neck/value:0"]
    assert {"image:0", "stem/relu:0", "conv2/relu:0"} <= set(plan.summary()["activations"])
    # the CNN residual block keeps its rules: both Add inputs quantized
    assert {"conv3/bias:0", "relu1:0"} <= tensors(plan_of(builders.residual_block()))


def test_rotary_embedding_angles_stay_float_weights_included():
    plan = plan_of(builders.rotary_block())
    assert plan.float_rules == {"angles": "rotary embedding angles"}
    assert [w.node for w in plan.weights] == ["proj"]
    assert "positions:0" not in plan.summary()["activations"]


def score_head(then_conv: bool):
    """conv -> sigmoid -> ReduceMean over space -> (a 1x1 conv ->) output: a detector's score, a VAD's probability."""
    import numpy as np
    import openvino.opset13 as ops
    x = ops.parameter([1, 3, 8, 8], np.float32, name="input")
    y = ops.sigmoid(builders.conv(x, 4, "conv1"), name="probability")
    y = ops.reduce_mean(y, np.array([2, 3], np.int64), True, name="mean")
    return builders.model(builders.conv(y, 2, "head", kernel=1) if then_conv else y, x)


def test_an_op_without_weights_gets_input_quantizers_only_when_an_int8_kernel_follows():
    assert tensors(plan_of(score_head(then_conv=False))) == {"input:0"}
    assert tensors(plan_of(score_head(then_conv=True))) == {"input:0", "probability:0", "mean:0"}
    assert "probability:0" in tensors(plan_of(score_head(then_conv=False), quantize_outputs=True))
    ranges = {q.name: q for q in plan_of(score_head(then_conv=True)).activations}
    assert all(not q.zero_point_free for q in ranges.values())
