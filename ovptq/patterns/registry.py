"""The fused units the CPU plugin executes as one kernel (or one float block): no quantizer goes inside them.

A matched unit's nodes request no input quantizers, except steps marked `keeps_rules` (the linear ops inside an SE
block). Quantizers wanted by the unit's consumers stop at its last node's output.
"""

from __future__ import annotations

from ovptq.hardware import LINEAR_TYPES as LINEAR
from ovptq.patterns.matcher import IN, Pattern, Step

ACTIVATIONS = {"Relu", "Clamp", "PRelu", "Swish", "HSwish", "HSigmoid", "HardSigmoid", "Sigmoid", "Elu", "Gelu",
               "Mish", "Tanh", "SoftPlus", "Selu", "LeakyRelu"}
SCALE_SHIFT = {"Add", "Subtract", "Multiply", "Divide"}
GATES = {"Sigmoid", "HSigmoid", "HardSigmoid"}


def _linear_unit() -> Pattern:
    return Pattern("linear_bias_activation", [
        Step("linear", LINEAR, inputs=(IN,), constants=1, keeps_rules=True),
        Step("bias", {"Add", "Subtract"}, inputs=("linear",), constants=1, optional=True),
        Step("scale", SCALE_SHIFT, inputs=("bias",), constants=1, optional=True),
        Step("shift", {"Add", "Subtract"}, inputs=("scale",), constants=1, optional=True),
        Step("activation", ACTIVATIONS, inputs=("shift",), optional=True),
    ], doc="Conv/MatMul -> bias -> scale-shift -> activation; one int8 kernel with post-ops.")


PATTERNS: list[Pattern] = [
    # Squeeze-and-excitation: x * gate(FC(act(FC(mean(x))))). The FCs stay quantized; x and the gate do not.
    Pattern("se_block", [
        Step("mean", {"ReduceMean", "AvgPool", "AdaptiveAvgPool"}, inputs=(IN,)),
        Step("fc1", LINEAR, inputs=("mean",), constants=1, keeps_rules=True),
        Step("bias1", {"Add"}, inputs=("fc1",), constants=1, optional=True),
        Step("act", {"Relu", "PRelu", "Swish", "Clamp", "HSwish"}, inputs=("bias1",)),
        Step("fc2", LINEAR, inputs=("act",), constants=1, keeps_rules=True),
        Step("bias2", {"Add"}, inputs=("fc2",), constants=1, optional=True),
        Step("gate", GATES | {"Clamp"}, inputs=("bias2",)),
        Step("gate_scale", {"Multiply", "Divide"}, inputs=("gate",), constants=1, optional=True),
        Step("mul", {"Multiply"}, inputs=(IN, "gate_scale")),
    ], doc="SE block: reduce, two FCs, a gate, and the gating Multiply."),
    # Decomposed activations: their internal Multiply of two activations must not get quantizers.
    Pattern("swish", [
        Step("sigmoid", {"Sigmoid"}, inputs=(IN,)),
        Step("mul", {"Multiply"}, inputs=(IN, "sigmoid")),
    ], doc="x * sigmoid(x)"),
    Pattern("hswish_gate", [
        Step("gate", {"HSigmoid", "HardSigmoid"}, inputs=(IN,)),
        Step("mul", {"Multiply"}, inputs=(IN, "gate")),
    ], doc="x * hardsigmoid(x)"),
    Pattern("hswish", [
        Step("shift", {"Add"}, inputs=(IN,), constants=1),
        Step("clamp", {"Clamp", "Relu"}, inputs=("shift",)),
        Step("min6", {"Minimum"}, inputs=("clamp",), constants=1, optional=True),
        Step("scale", {"Multiply", "Divide"}, inputs=("min6",), constants=1, optional=True),
        Step("mul", {"Multiply"}, inputs=(IN, "scale")),
        Step("post_scale", {"Multiply", "Divide"}, inputs=("mul",), constants=1, optional=True),
    ], doc="x * relu6(x + 3) / 6"),
    Pattern("hardsigmoid", [
        Step("shift", {"Add"}, inputs=(IN,), constants=1),
        Step("clamp", {"Clamp", "Relu"}, inputs=("shift",)),
        Step("min6", {"Minimum"}, inputs=("clamp",), constants=1, optional=True),
        Step("scale", {"Multiply", "Divide"}, inputs=("min6",), constants=1),
    ], doc="relu6(x + 3) / 6"),
    Pattern("mish", [
        Step("softplus", {"SoftPlus"}, inputs=(IN,)),
        Step("tanh", {"Tanh"}, inputs=("softplus",)),
        Step("mul", {"Multiply"}, inputs=(IN, "tanh")),
    ], doc="x * tanh(softplus(x))"),
    Pattern("gelu_erf", [
        Step("scale", {"Multiply", "Divide"}, inputs=(IN,), constants=1),
        Step("erf", {"Erf"}, inputs=("scale",)),
        Step("one", {"Add"}, inputs=("erf",), constants=1),
        Step("mul", {"Multiply"}, inputs=(IN, "one")),
        Step("half", {"Multiply", "Divide"}, inputs=("mul",), constants=1, optional=True),
    ], doc="x * (1 + erf(x / sqrt(2))) / 2"),
    Pattern("softmax", [
        Step("max", {"ReduceMax"}, inputs=(IN,), constants=1),
        Step("sub", {"Subtract"}, inputs=(IN, "max")),
        Step("exp", {"Exp"}, inputs=("sub",)),
        Step("sum", {"ReduceSum"}, inputs=("exp",), constants=1),
        Step("div", {"Divide"}, inputs=("exp", "sum")),
    ], doc="exp(x - max x) / sum exp(x - max x)"),
    Pattern("softmax_unstable", [
        Step("exp", {"Exp"}, inputs=(IN,)),
        Step("sum", {"ReduceSum"}, inputs=("exp",), constants=1),
        Step("div", {"Divide"}, inputs=("exp", "sum")),
    ], doc="exp(x) / sum exp(x)"),
    Pattern("layer_norm", [
        Step("mean", {"ReduceMean"}, inputs=(IN,), constants=1),
        Step("center", {"Subtract"}, inputs=(IN, "mean")),
        Step("square", {"Power", "Multiply"}, inputs=("center",), constants=1),
        Step("variance", {"ReduceMean"}, inputs=("square",), constants=1),
        Step("eps", {"Add"}, inputs=("variance",), constants=1),
        Step("std", {"Sqrt"}, inputs=("eps",)),
        Step("normalize", {"Divide"}, inputs=("center", "std")),
        Step("gamma", {"Multiply"}, inputs=("normalize",), constants=1, optional=True),
        Step("beta", {"Add"}, inputs=("gamma",), constants=1, optional=True),
    ], doc="(x - mean x) / sqrt(var x + eps) * gamma + beta"),
    Pattern("mvn_scale_shift", [
        Step("mvn", {"MVN"}, inputs=(IN,)),
        Step("scale", {"Multiply"}, inputs=("mvn",), constants=1, optional=True),
        Step("shift", {"Add"}, inputs=("scale",), constants=1, optional=True),
    ], doc="MVN -> gamma -> beta"),
    Pattern("input_preprocessing", [
        Step("input", {"Parameter"}),
        Step("convert", {"Convert"}, inputs=("input",), optional=True),
        Step("shift", {"Subtract", "Add"}, inputs=("convert",), constants=1, optional=True),
        Step("scale", {"Multiply", "Divide"}, inputs=("shift",), constants=1, optional=True),
        Step("transpose", {"Transpose"}, inputs=("scale",), constants=1, optional=True),
    ], doc="Parameter -> mean / scale normalisation -> layout change; the input quantizer goes after it."),
    _linear_unit(),
]
