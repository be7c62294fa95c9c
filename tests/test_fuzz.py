"""Random small graphs from an op menu: quantize succeeds, the INT8 IR compiles, its output stays near FP32.

Examples are derandomized (the same every run) and bounded, so the default suite stays fast and deterministic.
"""

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import builders
import ovptq

MENU = ["conv1x1", "conv3x3", "depthwise", "relu", "relu6", "sigmoid", "hswish", "maxpool", "avgpool", "residual",
        "concat", "reshape_transpose"]
SQNR_BOUND_DB = 15.0


def build(steps: list[str], seed: int) -> ov.Model:
    """Apply `steps` to a [1, 4, 12, 12] input, keeping earlier tensors for residual Adds and Concats; end with a
    MatMul head on the flattened feature map."""
    x = ops.parameter([1, 4, 12, 12], np.float32, name="input")
    y, history = x.output(0), []
    for index, step in enumerate(steps):
        name = f"s{index}_{step}"
        channels = y.get_partial_shape()[1].get_length()
        if step in ("conv1x1", "conv3x3"):
            y = builders.conv(y, 8, name, kernel=1 if step == "conv1x1" else 3, seed=seed + index).output(0)
        elif step == "depthwise":
            y = builders.conv(y, channels, name, groups=channels, seed=seed + index).output(0)
        elif step == "relu":
            y = ops.relu(y, name=name).output(0)
        elif step == "relu6":
            y = ops.clamp(y, 0.0, 6.0, name=name).output(0)
        elif step == "sigmoid":
            y = ops.sigmoid(y, name=name).output(0)
        elif step == "hswish":
            y = ops.hswish(y, name=name).output(0)
        elif step == "maxpool":  # 3x3, stride 1, padded: the shape stays
            y = ops.max_pool(y, [1, 1], [1, 1], [1, 1], [1, 1], [3, 3], name=name).output(0)
        elif step == "avgpool":
            y = ops.avg_pool(y, [1, 1], [1, 1], [1, 1], [3, 3], False, name=name).output(0)
        elif step == "residual":
            same = [h for h in history if h.get_partial_shape() == y.get_partial_shape()]
            if same:
                y = ops.add(y, same[-1], name=name).output(0)
        elif step == "concat":
            if history:
                y = ops.concat([y, history[-1]], 1, name=name).output(0)
        elif step == "reshape_transpose":
            shape = [d.get_length() for d in y.get_partial_shape()]
            flat = ops.reshape(y, np.array([1, shape[1], -1], np.int64), False, name=f"{name}/flatten")
            swapped = ops.transpose(flat, np.array([0, 2, 1], np.int64), name=f"{name}/swap")
            back = ops.transpose(swapped, np.array([0, 2, 1], np.int64), name=f"{name}/back")
            y = ops.reshape(back, np.array(shape, np.int64), False, name=f"{name}/unflatten").output(0)
        history.append(y)
    flat = ops.reshape(y, np.array([1, -1], np.int64), False, name="flatten")
    return builders.model(builders.linear(flat, 5, "head", seed=seed), x)


def sqnr_db(reference: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - got) ** 2))
    return 10 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / max(noise, 1e-30))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.sampled_from(MENU), min_size=1, max_size=7), seed=st.integers(0, 1000))
def test_random_graphs_quantize_compile_and_stay_close(steps, seed):
    model = build(steps, seed)
    calibration = builders.images(8, shape=(1, 4, 12, 12), seed=seed)
    int8 = ovptq.quantize(model, ovptq.Dataset(calibration),
                          advanced_parameters=ovptq.AdvancedQuantizationParameters(show_progress=False))
    quantizers = int(int8.get_rt_info(["ovptq", "quantization", "activation_quantizers"]).astype(str))
    assert quantizers == sum(op.get_type_name() == "FakeQuantize" for op in int8.get_ordered_ops()) > 0
    report = ovptq.inspect(int8)
    assert report.coverage == 1.0 and not report.standalone_fake_quantize, (steps, str(report))
    sample = builders.images(1, shape=(1, 4, 12, 12), seed=seed + 1)[0]
    # the IR's own math (quantizers emulated in float): a CPU without VNNI adds its kernels' 16-bit saturation,
    # which differs from one kernel choice to another
    reference, got = builders.infer(model, sample)[0], builders.infer(int8, sample, emulated=True)[0]
    assert sqnr_db(reference, got) > SQNR_BOUND_DB, steps
