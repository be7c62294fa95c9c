"""The rewrite: the only writer of the INT8 model. It applies every edit the stages decided to a fresh clone of the
FP32 model, in this order:

1. constants SmoothQuant rescaled, and its Multiply(x, 1/s) in front of a tensor's readers;
2. int8 weights: `Constant(i8) -> Convert -> Multiply(scale per output channel)`, the form the CPU plugin reads as
   int8 weights with a dequantization scale (w ~= int8 * scale, scale = ih / 127); ops that read one weight
   share one int8 constant;
3. one FakeQuantize per activation quantizer, on the tensor its consumers read;
4. corrected biases (a new bias Add for a layer that had none);
5. the parameters, in rt_info under ovptq/...

Every created op is named after what it belongs to, so two runs write the same IR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from ovptq.graph.graph import numpy_dtype
from ovptq.placement.plan import ActivationQuantizer
from ovptq.ranges.formulas import FQParams
from ovptq.ranges.weights import QuantizedWeight
from ovptq.rewrite import record
from ovptq.rewrite.edits import BiasValue, ConstantInput, ScaledConstant, Scaling
from ovptq.state import Stage, State


@dataclass(frozen=True)
class ModelEdits:
    """Everything the rewrite applies, as data."""

    constants: tuple[ConstantInput | ScaledConstant, ...] = ()
    scalings: tuple[Scaling, ...] = ()
    weights: tuple[QuantizedWeight, ...] = ()
    activations: tuple[tuple[ActivationQuantizer, FQParams], ...] = ()
    biases: tuple[BiasValue, ...] = ()
    rt_info: Mapping[str, object] = field(default_factory=dict)

    @staticmethod
    def of_smoothing(smoothing) -> "ModelEdits":
        """SmoothQuant's edits alone: the FP32 model in the coordinates the quantizers see."""
        if smoothing is None:
            return ModelEdits()
        return ModelEdits(tuple(smoothing.constants.values()), smoothing.scalings)


def apply(model: ov.Model, edits: ModelEdits) -> ov.Model:
    """A clone of `model` with `edits` applied; `model` itself is not touched."""
    clone = model.clone()
    by_name = {op.get_friendly_name(): op for op in clone.get_ordered_ops()}
    int8_inputs = {(weight.quantizer.node, weight.quantizer.port) for weight in edits.weights}
    for edit in edits.constants:
        if (edit.node, edit.port) in int8_inputs:
            continue  # its int8 weight (made from this value) takes the input below
        by_name[edit.node].input(edit.port).replace_source_output(_shared_constant(edit.value, edit.name).output(0))
    for scaling in edits.scalings:
        factor = ops.constant(scaling.factor, name=scaling.factor_name)
        multiply = ops.multiply(by_name[scaling.producer].output(scaling.port), factor, name=scaling.name)
        for reader in scaling.readers:
            by_name[reader].input(0).replace_source_output(multiply.output(0))
    shared: dict[tuple, ov.Output] = {}
    for weight in edits.weights:
        _int8_weight(by_name[weight.quantizer.node].input(weight.quantizer.port), weight, shared)
    for quantizer, params in edits.activations:
        _fake_quantize(by_name, quantizer, params)
    for bias in edits.biases:
        _set_bias(by_name, bias)
    clone.validate_nodes_and_infer_types()
    _stamp(clone, edits.rt_info)
    return clone


def stamped(model: ov.Model, values: Mapping[str, object]) -> ov.Model:
    """A copy of `model` (its constants shared, not copied) with `values` added to its rt_info under ovptq/: a model
    that an earlier state holds is never written."""
    copy = model.clone()
    _stamp(copy, values)
    return copy


def _stamp(model: ov.Model, values: Mapping[str, object]) -> None:
    for key, value in values.items():
        model.set_rt_info(str(value), ["ovptq", *key.split("/")])


def _int8_weight(target: ov.Input, weight: QuantizedWeight, shared: dict[tuple, ov.Output]) -> None:
    quantizer = weight.quantizer
    key = (*weight.source, quantizer.channel_axes, quantizer.half_range)
    if key not in shared:
        element_type = target.get_source_output().get_element_type()
        name = f"{quantizer.node}/fq_weights_{quantizer.port}"
        int8 = _shared_constant(weight.integers, f"{name}/int8")
        convert = ops.convert(int8, element_type, name=f"{name}/convert")
        scale = ops.constant(weight.scale.astype(numpy_dtype(element_type)), name=f"{name}/scale")
        shared[key] = ops.multiply(convert, scale, name=name).output(0)
    target.replace_source_output(shared[key])


def _shared_constant(value: np.ndarray, name: str) -> ov.Node:
    """A Constant that holds `value`'s own buffer: several models built from the same edits, as full bias
    correction's probe and the INT8 model, hold one copy of the large weights. (Edits are never written after they
    are made; OpenVINO shares only writeable arrays, so they cannot be frozen.)"""
    constant = ov.op.Constant(np.ascontiguousarray(value), shared_memory=True)
    constant.set_friendly_name(name)
    return constant


def _fake_quantize(by_name: dict[str, ov.Node], quantizer: ActivationQuantizer, params: FQParams) -> None:
    """A FakeQuantize on the tensor the quantizer's consumers read (after SmoothQuant's Multiply, if any)."""
    sources = {_source_key(by_name[c.node].input(c.port)) for c in quantizer.consumers}
    if len(sources) != 1:
        raise AssertionError(f"the consumers of quantizer {quantizer.name} read different tensors")
    output = by_name[quantizer.consumers[0].node].input(quantizer.consumers[0].port).get_source_output()
    rank = output.get_partial_shape().rank.get_length()
    low, high = _range_constants(params, rank, quantizer.per_channel, output.get_element_type(), quantizer.name)
    fq = ops.fake_quantize(output, low, high, low, high, params.levels, name=quantizer.name)
    for consumer in quantizer.consumers:
        by_name[consumer.node].input(consumer.port).replace_source_output(fq.output(0))


def _source_key(target: ov.Input) -> tuple[str, int]:
    source = target.get_source_output()
    return source.get_node().get_friendly_name(), source.get_index()


def _range_constants(params: FQParams, rank: int, per_channel: bool, element_type: ov.Type, name: str):
    """The FakeQuantize's low and high constants, named after it (unnamed ops get process-global counter names,
    which would make two runs' IRs differ)."""
    dtype = numpy_dtype(element_type) if element_type.is_real() else np.float32
    shape = [1, -1] + [1] * (rank - 2) if per_channel else []
    return (ops.constant(np.asarray(params.low, dtype).reshape(shape), name=f"{name}/low"),
            ops.constant(np.asarray(params.high, dtype).reshape(shape), name=f"{name}/high"))


def _set_bias(by_name: dict[str, ov.Node], bias: BiasValue) -> None:
    """The layer's bias becomes `bias.values`: in its bias op's constant (broadcast to that constant's shape), or in
    a new Add between the layer and all its readers."""
    op = by_name[bias.layer]
    element_type = op.get_output_element_type(0)
    rank = op.get_output_partial_shape(0).rank.get_length()
    if bias.holder is None:
        targets = list(op.output(0).get_target_inputs())
        shape = [1] * rank
        shape[bias.channel_axis] = len(bias.values)
        constant = ops.constant(bias.values.reshape(shape).astype(numpy_dtype(element_type)),
                                name=f"{bias.layer}/bias_value")
        add = ops.add(op.output(0), constant, name=f"{bias.layer}/bias")
        for target in targets:
            target.replace_source_output(add.output(0))
        return
    holder = by_name[bias.holder]
    old_shape = list(holder.input(bias.port).get_source_output().get_partial_shape().to_shape())
    shape = [1] * len(old_shape)
    axis = bias.channel_axis - (rank - len(old_shape))
    if 0 <= axis < len(old_shape):
        shape[axis] = len(bias.values)
    value = np.broadcast_to((bias.values * bias.sign).reshape(shape), np.broadcast_shapes(shape, old_shape))
    constant = ops.constant(np.ascontiguousarray(value).astype(numpy_dtype(element_type)),
                            name=f"{bias.holder}/corrected")
    holder.input(bias.port).replace_source_output(constant.output(0))


def edits_of(state: State) -> ModelEdits:
    """Every edit the stages of `state` decided, and the record of them."""
    smoothing = ModelEdits.of_smoothing(state.smoothing)
    correction = state.bias_correction
    return ModelEdits(smoothing.constants, smoothing.scalings,
                      tuple(state.weights[q.node] for q in state.plan.weights),
                      tuple((q, state.activation_ranges[q.name]) for q in state.plan.activations),
                      tuple(correction.edits()) if correction is not None else (), record.rt_info(state))


STAGE = Stage("rewrite", lambda state: replace(state, result=apply(state.model, edits_of(state))))

# The last stage: the INT8 model with the record of every stage, on a copy (the measuring stages after the rewrite
# may have kept the model it built).
RECORD_STAGE = Stage("record", lambda state: replace(state, result=stamped(state.result, record.rt_info(state))))
