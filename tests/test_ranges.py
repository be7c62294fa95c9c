"""Range math: exact values of the FakeQuantize parameters."""

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from ovptq.ranges.formulas import (MIN_RANGE, asymmetric_activation, fake_quantize, quantize_weight,
                                   symmetric_activation, symmetric_weight, weight_absmax, weight_quantile)


def test_symmetric_signed_activation_has_128_negative_and_127_positive_steps():
    params = symmetric_activation(np.float32(-1.0), np.float32(2.54))
    assert params.levels == 256
    assert params.high == pytest.approx(2.54)
    assert params.low == pytest.approx(-2.56)  # -ih * 256 / 254
    assert params.scale == pytest.approx(0.02)


def test_symmetric_unsigned_activation_starts_at_zero():
    params = symmetric_activation(np.float32(0.0), np.float32(2.55))
    assert params.low == 0.0 and params.high == pytest.approx(2.55)
    assert params.scale == pytest.approx(0.01)


def test_constant_tensor_gets_a_minimal_nonzero_range():
    params = symmetric_activation(np.float32(0.0), np.float32(0.0))
    assert params.high == pytest.approx(MIN_RANGE) and params.low == 0.0
    params = asymmetric_activation(np.float32(0.0), np.float32(0.0))
    assert params.high - params.low == pytest.approx(MIN_RANGE)


def zero_point(params):
    return -params.low * (params.levels - 1) / (params.high - params.low)


def test_asymmetric_range_moves_the_cheaper_border_so_zero_is_on_the_grid():
    params = asymmetric_activation(np.float32(-1.0), np.float32(3.0))
    # -1 * 255 / 4 = 63.75: moving the low border to q = 64 widens less than moving the high border to q = 63.
    assert params.high == pytest.approx(3.0)
    assert params.low == pytest.approx(-192 / 191)
    assert zero_point(params) == pytest.approx(64.0, abs=1e-4)


def test_asymmetric_range_always_contains_zero_and_the_data():
    positive = asymmetric_activation(np.float32(2.0), np.float32(5.0))
    assert (positive.low, positive.high) == (0.0, 5.0)
    negative = asymmetric_activation(np.float32(-3.0), np.float32(-1.0))
    assert (negative.low, negative.high) == (-3.0, 0.0)


@pytest.mark.parametrize("seed", range(20))
def test_asymmetric_zero_point_is_an_integer_and_the_range_only_grows(seed):
    rng = np.random.default_rng(seed)
    low, high = -rng.uniform(0.01, 10), rng.uniform(0.01, 10)
    params = asymmetric_activation(np.float32(low), np.float32(high))
    assert params.low <= np.float32(low) + 1e-6 and params.high >= np.float32(high) - 1e-6
    assert zero_point(params) == pytest.approx(round(float(zero_point(params))), abs=1e-3)
    # never wider than what moving one border by one step costs
    assert params.high - params.low <= (high - low) * (1 + 1.0 / 254) + 1e-5


def test_per_channel_weight_range_rounding_and_overflow_fix():
    weight = np.array([[1.0, -2.0], [0.5, 0.25]], np.float32)
    absmax = weight_absmax(weight, (0,))
    assert absmax.tolist() == [[2.0], [0.5]]
    params = symmetric_weight(absmax)
    assert params.levels == 255
    assert params.low.tolist() == [[-2.0], [-0.5]] and params.high.tolist() == [[2.0], [0.5]]
    integers, scale = quantize_weight(weight, params)
    assert integers.dtype == np.int8
    assert integers.tolist() == [[64, -127], [127, 64]]  # 63.5 rounds half to even
    np.testing.assert_allclose(scale, [[2 / 127], [0.5 / 127]], rtol=1e-6)
    half_integers, half_scale = quantize_weight(weight, symmetric_weight(absmax, half_range=True))
    assert half_integers.tolist() == [[32, -64], [64, 32]]
    np.testing.assert_allclose(half_scale, [[4 / 127], [1 / 127]], rtol=1e-6)


def test_dead_filter_range_is_raised_to_one_percent_of_the_largest():
    params = symmetric_weight(weight_absmax(np.array([[1.0, -1.0], [0.0, 0.0]], np.float32), (0,)))
    assert params.high.ravel().tolist() == pytest.approx([1.0, 0.01])


def test_weight_quantile_clips_outliers_per_channel():
    weight = np.concatenate([np.linspace(-1, 1, 1001), [50.0]]).astype(np.float32)[None]
    assert weight_quantile(weight, (0,), 0.01)[0, 0] == pytest.approx(0.99, abs=0.01)
    assert weight_absmax(weight, (0,))[0, 0] == 50.0


def test_numpy_fake_quantize_matches_openvino():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(2, 4, 5, 5)).astype(np.float32)
    low = np.float32(-1.3)
    high = np.float32(2.1)
    param = ops.parameter(x.shape, np.float32)
    fq = ops.fake_quantize(param, low, high, low, high, 256)
    compiled = ov.Core().compile_model(ov.Model([fq], [param]), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    expected = compiled(x)[0]
    np.testing.assert_allclose(fake_quantize(x, low, high, low, high, 256), expected, atol=1e-5)
