"""What the OpenVINO CPU plugin runs in INT8, as one table: placement reads the roles and ports, and every stage
that handles weights (graph, SmoothQuant, bias correction, the report) reads the weight layouts.

Roles:
  WEIGHTED      takes quantized activations and int8 per-output-channel symmetric weights (Conv, MatMul, ...);
                its `layout` says where the output channels are on the weight and on the output.
  QUANTIZABLE   takes quantized activations on its float data inputs (eltwise, pooling, reductions, ...).
  AGNOSTIC      precision-preserving: a quantizer wanted at its output may move to its input (MaxPool, Reshape...).
  CONCAT        like AGNOSTIC, but the quantizer moves to every input and those inputs share one range.
Any op type missing from the table is a stop: it runs in float, quantizers never pass it.

The same rules hold for every target device: OpenVINO's GPU and NPU plugins accept the CPU's 8-bit scheme.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.Enum):
    WEIGHTED = "weighted"
    QUANTIZABLE = "quantizable"
    AGNOSTIC = "agnostic"
    CONCAT = "concat"


@dataclass(frozen=True)
class WeightLayout:
    """Where a weighted op keeps its output channels: axes `weight_axes` of its weight (None: a MatMul's, by its
    transpose attributes) and axis `output_axis` of its output. `input_mean`: the mean of its input from which
    sum(W * mean) is the mean of each output channel ("taps": per kernel tap, zero padding included; "channel": per
    input channel, for a transposed convolution without padding; "last": per input feature), None when there is
    none."""

    name: str
    weight_axes: tuple[int, ...] | None
    output_axis: int
    input_mean: str | None


CONV = WeightLayout("conv", (0,), 1, "taps")                   # [O, I, k...]
GROUP_CONV = WeightLayout("group_conv", (0, 1), 1, "taps")     # [G, O, I, k...]
DECONV = WeightLayout("deconv", (1,), 1, "channel")            # [I, O, k...]
GROUP_DECONV = WeightLayout("group_deconv", (0, 2), 1, None)   # [G, I, O, k...]
MATMUL = WeightLayout("matmul", None, -1, "last")              # [..., K, N], or [..., N, K] with transpose_b


@dataclass(frozen=True)
class OpRule:
    role: Role
    data_ports: tuple[int, ...] | None = None  # float inputs that take quantizers (None: every activation input)
    weight_ports: tuple[int, ...] = ()         # inputs that may hold a constant weight
    per_channel_input: bool = False            # activation input may be quantized per channel (depthwise only)
    symmetric_inputs: bool = False             # the plugin needs zero-point-free inputs
    with_constant: bool = True                 # quantize `x op constant` (False: only ops of two activations)
    layout: WeightLayout | None = None         # WEIGHTED ops: where the output channels are


_ELTWISE = OpRule(Role.QUANTIZABLE, with_constant=False)

OP_RULES: dict[str, OpRule] = {
    # Linear ops. Activations per tensor (per channel kills the int8 convolution kernels), weights per channel.
    "Convolution": OpRule(Role.WEIGHTED, data_ports=(0,), weight_ports=(1,), layout=CONV),
    "GroupConvolution": OpRule(Role.WEIGHTED, data_ports=(0,), weight_ports=(1,), per_channel_input=True,
                               layout=GROUP_CONV),
    # The CPU plugin disables int8 deconvolution for zero points on activations or weights.
    "ConvolutionBackpropData": OpRule(Role.WEIGHTED, data_ports=(0,), weight_ports=(1,), symmetric_inputs=True,
                                      layout=DECONV),
    "GroupConvolutionBackpropData": OpRule(Role.WEIGHTED, data_ports=(0,), weight_ports=(1,),
                                           symmetric_inputs=True, layout=GROUP_DECONV),
    # A MatMul of two activations runs int8 only without zero points; see placement for the two-activation case.
    "MatMul": OpRule(Role.WEIGHTED, data_ports=(0, 1), weight_ports=(1, 0), layout=MATMUL),
    # Element-wise arithmetic and comparisons: int8 inputs only when both inputs are activations.
    **{kind: _ELTWISE for kind in ("Add", "Multiply", "Subtract", "Divide", "Maximum", "Minimum", "Less",
                                   "LessEqual", "Greater", "GreaterEqual", "Equal", "NotEqual", "FloorMod",
                                   "SquaredDifference")},
    # Activation-only quantizable ops.
    **{kind: OpRule(Role.QUANTIZABLE, data_ports=(0,)) for kind in (
        "AvgPool", "AdaptiveAvgPool", "ReduceMean", "ReduceSum", "ReduceL2", "NormalizeL2", "MVN", "Interpolate",
        "GroupNormalization")},
    # Precision-preserving ops: quantizers move through them towards the producer.
    **{kind: OpRule(Role.AGNOSTIC, data_ports=(0,)) for kind in (
        "MaxPool", "AdaptiveMaxPool", "ReduceMax", "Reshape", "Squeeze", "Unsqueeze", "Split", "VariadicSplit",
        "Transpose", "Tile", "StridedSlice", "ShuffleChannels", "Broadcast", "Pad", "Gather", "GatherND",
        "GatherElements", "DepthToSpace", "SpaceToDepth", "BatchToSpace", "SpaceToBatch")},
    "Concat": OpRule(Role.CONCAT),
}

AGNOSTIC_TYPES = frozenset(kind for kind, rule in OP_RULES.items() if rule.role is Role.AGNOSTIC)
# The linear ops: int8 kernels with per-output-channel weights.
LINEAR_TYPES = frozenset(kind for kind, rule in OP_RULES.items() if rule.role is Role.WEIGHTED)

# Precision-preserving ops a quantizer stays below, by the type of the op that feeds them, together with the
# shape-only ops after them (the CPU plugin moves a quantizer placed between them back up). The plugin runs a u8
# Transpose of a MatMul's output (attention heads merged after Softmax x V) with a slow kernel; below them the
# quantized values are the same.
QUANTIZERS_STAY_BELOW = {"Transpose": frozenset({"MatMul"})}
SHAPE_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Transpose"})
_ARITHMETIC = frozenset({"Add", "Multiply", "Subtract", "Divide"})


@dataclass(frozen=True)
class FloatRule:
    """Transformer structure that stays float: ops of type `ops` take no quantizers (inputs or weights) when their
    output reaches an op of `feeds`, or their input comes from an op of `fed_by`, walking only through `through`.
    "normalisation" in `feeds` / `fed_by` stands for MVN and decomposed LayerNorms."""

    name: str
    ops: frozenset[str]
    feeds: frozenset[str] = frozenset()
    fed_by: frozenset[str] = frozenset()
    through: frozenset[str] = AGNOSTIC_TYPES
    two_activations: bool = False  # only ops whose two inputs are both activations


# Applied wherever the structure appears, whatever the model type: a CNN with one attention block gets them there
# and keeps the CNN rules elsewhere. Quantizing these tensors is what makes transformers lose accuracy: residual
# streams and attention scores carry outliers a per-tensor 8-bit range cannot hold.
TRANSFORMER_RULES = (
    FloatRule("residual Add into a normalisation", frozenset({"Add"}), feeds=frozenset({"normalisation"}),
              two_activations=True),
    FloatRule("normalisation of a residual stream", frozenset({"normalisation"}), fed_by=frozenset({"Add"})),
    FloatRule("attention scores on their way to Softmax", _ARITHMETIC, feeds=frozenset({"Softmax"}),
              through=AGNOSTIC_TYPES | _ARITHMETIC, two_activations=True),
    FloatRule("Softmax x V", frozenset({"MatMul"}), fed_by=frozenset({"Softmax"}), two_activations=True),
    # positions x inverse frequencies -> cos / sin: 8 bits cannot hold the angles (weights stay float too)
    FloatRule("rotary embedding angles", frozenset({"MatMul", "Multiply"}), feeds=frozenset({"Cos", "Sin"}),
              through=AGNOSTIC_TYPES | {"Concat"}),
)

# With model_type="transformer", these op types take no input quantizers anywhere (NNCF's TRANSFORMER list):
# residual Adds, normalisations, scalings and comparisons stay float; linear ops keep their quantizers.
TRANSFORMER_FLOAT_OPS = frozenset({
    "Add", "Multiply", "Subtract", "Divide", "Power", "Sqrt", "SquaredDifference", "Maximum", "Minimum", "MVN",
    "GroupNormalization", "BatchNormInference", "ReduceMean", "ReduceSum", "ReduceL2", "AvgPool", "Squeeze",
    "Greater", "GreaterEqual", "Less", "LessEqual", "Equal", "NotEqual"})

# Ops that mark detection post-processing: the non-weighted ops between them and the outputs stay float.
POSTPROCESSING_MARKERS = frozenset({"TopK", "NonMaxSuppression", "NMSRotated", "MulticlassNms", "MatrixNms",
                                    "ExperimentalDetectronDetectionOutput", "DetectionOutput"})

# Constant tables read by Gather with at least this many rows (token vocabularies) get int8 rows with one scale
# each, weight-only: the lookup and what follows stay as they were. Such a table holds a large share of a
# transformer's weights, while 8-bit rows of a small table read at every position cost accuracy.
EMBEDDING_MIN_ROWS = 4096

# Linear ops whose weights get the overflow fix under OverflowFix.FIRST_LAYER (first reached from an input).
FIRST_LAYER_TYPES = frozenset({"Convolution"})
# Linear ops whose weights get the overflow fix under OverflowFix.ENABLE.
OVERFLOW_FIX_TYPES = LINEAR_TYPES
