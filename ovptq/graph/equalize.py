"""Cross-layer equalisation: even out the channel scales of two convolutions in a row, data-free.

For a chain C1 -> [+ bias] -> [ReLU | PReLU] -> C2 (convolutions with constant weights, each tensor read only by
the next op), output channel i of C1 and input channel i of C2 can trade a factor s_i > 0 exactly, since ReLU and
PReLU are positively homogeneous (f(x / s) = f(x) / s):
    W1'[i] = W1[i] / s_i,   b'[i] = b[i] / s_i,   W2'[:, i] = s_i W2[:, i]   (depthwise C2: W2'[i] = s_i W2[i])
    s_i = sqrt(r1_i / r2_i),  r1_i = max |W1[i]|,  r2_i = max |W2[:, i]|
so that both weights reach the same range r_i = sqrt(r1_i r2_i) on channel i (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", 2019). The network computes the same function, up
to float rounding.

With per-channel int8 weights the gain is not in the weights (C1's rows keep their own scales) but in the tensor
between: C2's input is quantized per tensor, and its channel i is divided by s_i, which shrinks the channels whose
producer is large and whose reader is small, and widens the ones C2 weighs most. A channel with an all-zero row or
column keeps s_i = 1, and s is clipped to [q, 100 q] with q its 10th percentile, so that no channel is crushed.

Chains through ReLU6 (Clamp), HSwish or any other op that is not positively homogeneous are left alone, as are
grouped C2s other than depthwise. One pass in model order; a layer in two chains (C2 of one, C1 of the next) gets
both factors. Measured on the corpus in benchmarks/README.md ("Cross-layer equalisation").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openvino as ov
from openvino import opset13

from ovptq.graph.weights import output_value

CONVOLUTIONS = frozenset({"Convolution", "GroupConvolution"})
HOMOGENEOUS = frozenset({"Relu", "PRelu"})   # f(x / s) = f(x) / s for every s > 0
FACTOR_RANGE = 100.0                           # max s / min s after clipping
FACTOR_FLOOR_QUANTILE = 0.1


@dataclass(frozen=True)
class Chain:
    first: ov.Node          # C1
    bias: ov.Node | None    # Add(C1, constant)
    second: ov.Node         # C2, reading C1's channels on input 0


def equalize(model: ov.Model) -> list[tuple[str, str]]:
    """Equalise every chain of `model` (ovptq's own copy) in place; returns the (C1, C2) names equalised."""
    done = []
    for chain in chains(model):
        first, second = weight(chain.first), weight(chain.second)
        depthwise = chain.second.get_type_name() == "GroupConvolution"
        s = factors(output_ranges(chain.first, first), input_ranges(second, depthwise))
        _set_input(chain.first, 1, scale_outputs(chain.first, first, 1.0 / s))
        _set_input(chain.second, 1, scale_inputs(second, s, depthwise))
        if chain.bias is not None:
            port = _constant_port(chain.bias)
            bias = _value(chain.bias.input_value(port))
            _set_input(chain.bias, port, bias / s.reshape(_channel_shape(bias.shape)))
        done.append((chain.first.get_friendly_name(), chain.second.get_friendly_name()))
    if done:
        model.validate_nodes_and_infer_types()
    return done


def chains(model: ov.Model) -> list[Chain]:
    """Every C1 -> [+ bias] -> [ReLU | PReLU] -> C2 chain, in model order."""
    found = []
    for second in model.get_ordered_ops():
        if second.get_type_name() not in CONVOLUTIONS or not _constant(second.input_value(1)):
            continue
        tensor = second.input_value(0)
        if tensor.get_node().get_type_name() in HOMOGENEOUS and _only_reader(tensor):
            tensor = tensor.get_node().input_value(0)
        bias = None
        node = tensor.get_node()
        if node.get_type_name() == "Add" and _only_reader(tensor) and _constant_port(node) is not None:
            bias, tensor = node, node.input_value(1 - _constant_port(node))
        first = tensor.get_node()
        if (first.get_type_name() in CONVOLUTIONS and _constant(first.input_value(1)) and _only_reader(tensor)
                and _fits(first, bias, second)):
            found.append(Chain(first, bias, second))
    return found


def factors(first_ranges: np.ndarray, second_ranges: np.ndarray) -> np.ndarray:
    """s_i = sqrt(r1_i / r2_i); 1 where either range is 0; clipped to [q, FACTOR_RANGE q], q the 10th percentile."""
    usable = (first_ranges > 0) & (second_ranges > 0)
    s = np.ones_like(first_ranges, dtype=np.float64)
    s[usable] = np.sqrt(first_ranges[usable].astype(np.float64) / second_ranges[usable])
    floor = np.quantile(s, FACTOR_FLOOR_QUANTILE)
    return np.clip(s, floor, floor * FACTOR_RANGE).astype(np.float32)


def weight(conv: ov.Node) -> np.ndarray:
    return _value(conv.input_value(1))


def output_ranges(conv: ov.Node, value: np.ndarray) -> np.ndarray:
    """max |W[i]| per output channel i (a GroupConvolution's [G, O/G, ...] read as G * O/G channels)."""
    rows = _by_output(conv, value)
    return np.abs(rows).reshape(rows.shape[0], -1).max(axis=1)


def input_ranges(value: np.ndarray, depthwise: bool) -> np.ndarray:
    """max |W[:, i]| per input channel i (depthwise: max |W[i]|)."""
    channels_first = value if depthwise else np.moveaxis(value, 1, 0)
    return np.abs(channels_first).reshape(channels_first.shape[0], -1).max(axis=1)


def scale_outputs(conv: ov.Node, value: np.ndarray, scale: np.ndarray) -> np.ndarray:
    rows = _by_output(conv, value)
    return (rows * scale.reshape(-1, *[1] * (rows.ndim - 1))).reshape(value.shape)


def scale_inputs(value: np.ndarray, scale: np.ndarray, depthwise: bool) -> np.ndarray:
    shape = [1] * value.ndim
    shape[0 if depthwise else 1] = -1
    return value * scale.reshape(shape)


def _by_output(conv: ov.Node, value: np.ndarray) -> np.ndarray:
    return value.reshape(-1, *value.shape[2:]) if conv.get_type_name() == "GroupConvolution" else value


def _fits(first: ov.Node, bias: ov.Node | None, second: ov.Node) -> bool:
    """C1's output channels are C2's input channels; a GroupConvolution C2 must be depthwise; the bias is per
    channel or a scalar; static weights of float type."""
    shapes = [first.get_input_partial_shape(1), second.get_input_partial_shape(1)]
    if any(s.is_dynamic for s in shapes) or first.get_output_partial_shape(0).rank.is_dynamic:
        return False
    w1, w2 = (tuple(d.get_length() for d in s) for s in shapes)
    channels = w1[0] * w1[1] if first.get_type_name() == "GroupConvolution" else w1[0]
    if second.get_type_name() == "GroupConvolution":
        if w2[:3] != (channels, 1, 1):
            return False
    elif w2[1] != channels:
        return False
    if bias is not None:
        size = int(np.prod(tuple(d.get_length() for d in bias.get_input_partial_shape(_constant_port(bias)))))
        if size not in (1, channels):
            return False
    return all(node.get_output_element_type(0).is_real() for node in (first, second))


def _channel_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The bias constant's shape with its channel axis (the one of size > 1, else the last) as -1."""
    if int(np.prod(shape)) == 1:
        return (1,) * len(shape)
    return tuple(-1 if d > 1 else 1 for d in shape)


def _only_reader(tensor: ov.Output) -> bool:
    return len(tensor.get_target_inputs()) == 1


def _constant_port(add: ov.Node) -> int | None:
    """The input of `add` that is a constant (the other one is not), or None."""
    constant = [port for port in range(2) if _constant(add.input_value(port))]
    return constant[0] if len(constant) == 1 else None


def _constant(tensor: ov.Output) -> bool:
    """A sub-graph of constants only (a Constant, its Convert, Transpose, Reshape, ...)."""
    node = tensor.get_node()
    if node.get_type_name() == "Constant":
        return True
    if node.get_type_name() in ("Parameter", "ReadValue") or node.get_input_size() == 0:
        return False
    return all(_constant(node.input_value(port)) for port in range(node.get_input_size()))


def _value(tensor: ov.Output) -> np.ndarray:
    """The value of a constant sub-graph, in float32."""
    return output_value(tensor).astype(np.float32)


def _set_input(node: ov.Node, port: int, value: np.ndarray) -> None:
    """Feed `node`'s input `port` from a new f32 Constant. It takes the name of the op it replaces, so that names
    the user knows (an IgnoredScope entry, a report) still mean the same weight; when that op has other readers, it
    stays for them and the new one is named '<name>/equalized'."""
    old = node.input_value(port)
    name = old.get_node().get_friendly_name()
    constant = opset13.constant(np.ascontiguousarray(value, dtype=np.float32))
    constant.set_friendly_name(name if len(old.get_target_inputs()) == 1 else f"{name}/equalized")
    node.input(port).replace_source_output(constant.output(0))
