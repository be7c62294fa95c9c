"""Activation ranges: exact FakeQuantize parameters from statistics, the sign rule and shared Concat ranges."""

import numpy as np
import pytest

from ovptq.graph.graph import Port
from ovptq.parameters import RangeEstimator
from ovptq.placement.plan import ActivationQuantizer, QuantizationPlan
from ovptq.ranges.activations import activation_params
from ovptq.statistics.reductions import TensorStatistics


def quantizer(name, symmetric=True, group=None, per_channel=False):
    return ActivationQuantizer(name, f"{name}_producer", 0, (Port(f"{name}_reader", 0),), True, per_channel,
                               symmetric, group)


def stats(global_min, global_max, mean_min, mean_max, mean_absmax):
    return TensorStatistics(*(np.asarray(v, np.float32) for v in (global_min, global_max, mean_min, mean_max,
                                                                   mean_absmax)))


def params_of(quantizers, statistics, estimator=None):
    return activation_params(QuantizationPlan(quantizers), statistics, estimator)


def test_symmetric_range_is_the_mean_absmax_and_tiny_negatives_keep_it_unsigned():
    # half a step of the unsigned grid of [0, 2.55] is 0.005: a minimum of -0.004 is clipped at 0
    params = params_of([quantizer("a")], {"a": stats(-0.004, 9.0, -0.001, 2.0, 2.55)})["a"]
    assert params.low == 0.0 and params.high == pytest.approx(2.55) and params.levels == 256


def test_a_negative_minimum_beyond_half_a_step_makes_the_range_signed():
    params = params_of([quantizer("a")], {"a": stats(-2.0, 9.0, -1.8, 2.0, 2.54)})["a"]
    assert params.high == pytest.approx(2.54) and params.low == pytest.approx(-2.56)  # -ih * 128 / 127


def test_a_one_sided_signed_tensor_gets_an_asymmetric_range_unless_its_reader_needs_no_zero_point():
    # HSwish-like: mean range [-0.3, 10]; a signed grid would span [-10.08, 10], twice what the tensor needs
    one_sided = {"a": stats(-0.37, 12.0, -0.3, 10.0, 10.0)}
    params = params_of([quantizer("a")], one_sided)["a"]
    assert params.low == pytest.approx(-0.3, abs=0.03) and params.high == pytest.approx(10.0, abs=0.05)
    assert params.scale == pytest.approx(10.3 / 255, rel=0.01)
    forced = ActivationQuantizer("a", "a_producer", 0, (Port("a_reader", 0),), True, symmetric=True,
                                 zero_point_free=True)
    params = params_of([forced], one_sided)["a"]
    assert params.high == pytest.approx(10.0) and params.low == pytest.approx(-10.0 * 128 / 127)


def test_the_sign_of_a_per_channel_range_is_decided_per_channel():
    # channel 0 reaches only 0.1, and -0.03 is 76 of its half steps below 0; channel 1 reaches 20
    per_channel = stats([-0.03, 0.0], [0.1, 20.0], [-0.03, 0.0], [0.1, 20.0], [0.1, 20.0])
    params = params_of([quantizer("d", per_channel=True)], {"d": per_channel}, RangeEstimator.MINMAX)["d"]
    assert np.all(params.low < 0)


def test_concat_inputs_share_the_widest_range_and_the_sign_of_any_member():
    plan = [quantizer("a", group=0), quantizer("b", group=0), quantizer("c")]
    params = params_of(plan, {"a": stats(0.0, 5.0, 0.0, 1.0, 1.0),       # non-negative on its own
                              "b": stats(-2.5, 3.0, -1.5, 2.0, 2.54),
                              "c": stats(0.0, 5.0, 0.0, 1.0, 1.0)})
    for name in ("a", "b"):
        assert params[name].high == pytest.approx(2.54) and params[name].low == pytest.approx(-2.56)
    assert params["c"].low == 0.0 and params["c"].high == pytest.approx(1.0)  # outside the group: its own


def test_asymmetric_group_takes_the_lowest_mean_minimum_and_highest_mean_maximum():
    plan = [quantizer("a", symmetric=False, group=1), quantizer("b", symmetric=False, group=1)]
    params = params_of(plan, {"a": stats(-3.0, 1.0, -1.0, 0.5, 1.0), "b": stats(-0.5, 9.0, -0.25, 2.0, 2.0)})
    # [-1, 2] with 255 steps: the zero point 85 is exact, so the range stays as it is
    for name in ("a", "b"):
        assert params[name].low == pytest.approx(-1.0) and params[name].high == pytest.approx(2.0)
        assert -params[name].low / params[name].scale == pytest.approx(85.0)


def test_per_channel_quantizers_default_to_the_global_extremes_and_minmax_applies_to_all():
    per_channel = stats([-1.0, 0.0], [2.0, 4.0], [-0.5, 0.0], [1.0, 2.0], [1.0, 2.0])
    params = params_of([quantizer("d", per_channel=True)], {"d": per_channel})["d"]
    np.testing.assert_allclose(params.high, [2.0, 4.0])
    np.testing.assert_allclose(params.low, [-2.0 * 128 / 127, -4.0 * 128 / 127], rtol=1e-6)  # signed: one min < 0
    minmax = params_of([quantizer("a")], {"a": stats(-2.5, 3.0, -0.2, 2.0, 2.0)}, RangeEstimator.MINMAX)["a"]
    assert minmax.high == pytest.approx(3.0) and minmax.low == pytest.approx(-3.0 * 128 / 127)
