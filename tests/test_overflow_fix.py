"""The overflow fix: which CPUs' int8 kernels saturate, the default target_device="CPU" takes from that, and that
7-bit weights make the int8 kernels compute what the IR says on any CPU."""

import json

import numpy as np
import openvino.opset13 as ops
import pytest

import builders
import ovptq
from ovptq.runtime import cpu
from ovptq.quantize import quantized_state

AVX2_ONLY = ("AMD EPYC", {"sse2", "avx2", "fma"})
VNNI = ("Intel Xeon", {"avx2", "avx512f", "avx512_vnni"})


@pytest.mark.parametrize("info, saturates", [
    (AVX2_ONLY, True), (VNNI, False), (("Intel Xeon", {"avx2", "avx_vnni"}), False),
    (("Intel Xeon", {"avx2", "avx512f", "amx_int8"}), False), (("unknown CPU", set()), False)])
def test_int8_sums_saturate_on_x86_with_avx2_and_no_vnni_or_amx(monkeypatch, info, saturates):
    monkeypatch.setattr(cpu, "_cpu_info", lambda: info)
    assert cpu.int8_sums_saturate() is saturates


def overflow_fix_of(monkeypatch, info, **kwargs) -> str:
    monkeypatch.setattr(cpu, "_cpu_info", lambda: info)
    state = quantized_state(builders.conv_relu(), ovptq.Dataset(builders.images(4)),
                            advanced_parameters=ovptq.AdvancedQuantizationParameters(safety_net=False,
                                                                                    **kwargs.pop("advanced", {})),
                            **kwargs)
    return state.options.advanced.overflow_fix


def test_target_cpu_without_vnni_halves_every_layers_weights(monkeypatch, caplog):
    caplog.set_level("INFO", logger="ovptq")
    assert overflow_fix_of(monkeypatch, AVX2_ONLY, target_device="CPU", advanced={"speed_check": False}) == "enable"
    assert "Overflow fix on every layer" in caplog.text and "AMD EPYC (AVX2)" in caplog.text


@pytest.mark.parametrize("info, kwargs, expected", [
    (VNNI, {"target_device": "CPU"}, "first_layer"),                     # no saturation there
    (AVX2_ONLY, {"target_device": "ANY"}, "first_layer"),                # one IR for every CPU
    (AVX2_ONLY, {"target_device": "CPU", "advanced": {"overflow_fix": "first_layer"}}, "first_layer"),  # asked
])
def test_the_cpu_decision_applies_only_to_target_cpu_and_an_unset_overflow_fix(monkeypatch, info, kwargs, expected):
    kwargs.setdefault("advanced", {}).setdefault("speed_check", False)
    assert overflow_fix_of(monkeypatch, info, **kwargs) == expected


def test_half_range_weights_make_the_int8_kernels_compute_the_irs_math():
    """Large weights of both signs on a signed input (shifted to u8 by the kernels): pairs of products near the
    16-bit limit. With 7-bit weights the CPU's int8 kernels (saturating or not) give the emulated result."""
    x = ops.parameter([1, 16, 8, 8], np.float32, name="input")
    conv = builders.conv(x, 16, "conv", kernel=1, seed=3)
    model = builders.model(builders.conv(ops.relu(conv), 8, "conv2", kernel=1, seed=4), x)
    rng = np.random.default_rng(0)
    items = [rng.normal(size=(1, 16, 8, 8)).astype(np.float32) * 3 for _ in range(16)]
    parameters = ovptq.AdvancedQuantizationParameters(overflow_fix="enable", safety_net=False)
    int8 = ovptq.quantize(model, ovptq.Dataset(items), advanced_parameters=parameters)
    assert len(ovptq.inspect(int8).int8_linear) == 2
    for item in items[:4]:
        real, emulated = builders.infer(int8, [item])[0], builders.infer(int8, [item], emulated=True)[0]
        np.testing.assert_allclose(real, emulated, rtol=1e-3, atol=1e-3 * float(np.abs(emulated).max()))
    assert int8.get_rt_info(["ovptq", "quantization", "advanced_parameters", "overflow_fix"]).astype(str) == "enable"


def test_inspect_on_a_saturating_cpu_says_when_the_weights_use_all_8_bits(monkeypatch):
    model = builders.conv_relu()
    items = ovptq.Dataset(builders.images(4))
    full = ovptq.quantize(model, items, advanced_parameters=ovptq.AdvancedQuantizationParameters(safety_net=False))
    halved = ovptq.quantize(model, items, advanced_parameters=ovptq.AdvancedQuantizationParameters(
        safety_net=False, overflow_fix="enable"))
    monkeypatch.setattr(cpu, "_cpu_info", lambda: AVX2_ONLY)
    hint = [h for h in ovptq.inspect(full).hints() if "saturate" in h]
    assert len(hint) == 1 and "overflow_fix='first_layer'" in hint[0] and "target_device='CPU'" in hint[0]
    assert not [h for h in ovptq.inspect(halved).hints() if "saturate" in h]
    monkeypatch.setattr(cpu, "_cpu_info", lambda: VNNI)
    assert not [h for h in ovptq.inspect(full).hints() if "saturate" in h]


def test_the_report_says_when_its_errors_come_from_saturating_kernels(monkeypatch):
    import ovptq.report
    model, items = builders.conv_relu(), ovptq.Dataset(builders.images(4))
    int8 = ovptq.quantize(model, items, advanced_parameters=ovptq.AdvancedQuantizationParameters(safety_net=False))
    monkeypatch.setattr(cpu, "_cpu_info", lambda: AVX2_ONLY)
    report = ovptq.report.layer_errors(model, int8, items, samples=2)
    assert "saturate" in str(report) and json.loads(report.to_json())["saturating_cpu"].startswith("AMD EPYC")
    monkeypatch.setattr(cpu, "_cpu_info", lambda: VNNI)
    assert "saturate" not in str(ovptq.report.layer_errors(model, int8, items, samples=2))
