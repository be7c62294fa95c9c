"""Graph normalisation: the fused form that OpenVINO's model conversion gives, whichever way the model came in.

`core.read_model("x.onnx")` keeps HSwish, HSigmoid, Swish, LayerNorm, GELU and attention decomposed into
element-wise ops, and BatchNorm beside its convolution; `ov.convert_model` and `ovc` run OpenVINO's front-end passes
(MOC), which fuse them. A saved IR keeps whichever form it was saved in. The CPU plugin runs the same fusions when it
compiles, so they change no numerics (the outputs of PP-OCRv4 rec before and after are bit-identical on CPU), but a
quantizer placed inside a decomposed unit splits what the plugin would run as one kernel, and leaves a FakeQuantize
as a float layer of its own. Running the passes on ovptq's working copy gives every form of a network the same fused
units, hence the same placement.

Constant folding stays off, as in `ovc`. The passes still fold the `Convert` of f16-compressed weights (an IR saved
with compression, the `ovc` default) into f32 constants: a second, anonymous copy of the weights at twice their
size. So the weights of weighted ops and the tables of Gathers (embeddings) whose values the passes left as they
were get their f16 constant and its decompression back (the caller's own, sharing its memory); the quantizers read
them through the Convert.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import openvino as ov

from ovptq.hardware import OP_RULES, Role

FUSED_NAMES = "fused_names_0"  # rt_info key of the op names a fusion merged into an op


def normalize(model: ov.Model) -> None:
    """Run OpenVINO's front-end fusions on `model` (ovptq's own copy) in place."""
    from openvino._offline_transformations import apply_moc_transformations

    before = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    decompressions = _weight_decompressions(model)
    apply_moc_transformations(model, cf=False)
    _restore_decompressions(model, decompressions)
    _name_new_ops(model, before)


def _weight_decompressions(model: ov.Model) -> dict[str, ov.Node]:
    """name -> Convert(f16 Constant) for each decompression that feeds the weight port of a weighted op or the table
    of a Gather (an embedding)."""
    found = {}
    for op in model.get_ordered_ops():
        rule = OP_RULES.get(op.get_type_name())
        if op.get_type_name() == "Gather":
            ports: tuple[int, ...] = (0,)
        elif rule is not None and rule.role is Role.WEIGHTED:
            ports = rule.weight_ports
        else:
            continue
        for port in ports:
            source = op.input_value(port).get_node() if port < op.get_input_size() else None
            if source is not None and source.get_type_name() == "Convert" and \
                    source.input_value(0).get_node().get_type_name() == "Constant" and \
                    source.get_input_element_type(0) == ov.Type.f16:
                found[source.get_friendly_name()] = source
    return found


def _restore_decompressions(model: ov.Model, decompressions: dict[str, ov.Node]) -> None:
    """Put back each f16 decompression the passes folded into an f32 Constant of the same name and values."""
    for op in model.get_ordered_ops():
        convert = decompressions.get(op.get_friendly_name())
        if convert is None or op.get_type_name() != "Constant" or op.get_output_shape(0) != \
                convert.get_output_shape(0):
            continue
        if np.array_equal(op.get_data(), convert.input_value(0).get_node().get_data().astype(np.float32)):
            op.output(0).replace(convert.output(0))


def _name_new_ops(model: ov.Model, before: dict[str, str]) -> None:
    """Ops the passes create are named from a process-wide counter (`Transpose_1721`), which differs from one call to
    the next. A new op takes the name of the caller's op of its type that it replaces (a Convolution with its
    BatchNorm folded in stays `conv1`), else `<replaced op>/<type>` or `normalized/<type>`, numbered in model order:
    the same model always gives the same IR, and names the user knows still mean the same layers."""
    taken = {op.get_friendly_name() for op in model.get_ordered_ops()}
    seen: Counter = Counter()
    for op in model.get_ordered_ops():
        if op.get_friendly_name() in before:
            continue
        replaced = sorted(caller_names(op) & before.keys())
        same_type = [name for name in replaced if before[name] == op.get_type_name() and name not in taken]
        if same_type:
            taken.add(same_type[0])
            op.set_friendly_name(same_type[0])
            continue
        base = f"{replaced[-1] if replaced else 'normalized'}/{op.get_type_name()}"
        name = base
        while name in taken:
            seen[base] += 1
            name = f"{base}_{seen[base]}"
        taken.add(name)
        op.set_friendly_name(name)


def caller_names(op: ov.Node) -> frozenset[str]:
    """The names of the caller's ops that `op` stands for: its own, and those of the ops fused into it."""
    rt_info = op.get_rt_info()
    fused = rt_info[FUSED_NAMES].astype(str).split(",") if FUSED_NAMES in rt_info else []
    return frozenset(name for name in [op.get_friendly_name(), *fused] if name)
