"""AsyncRunner: results under their keys, errors handed back, and nothing kept alive once it is dropped."""

import gc
import weakref

import builders
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from ovptq.inference import AsyncRunner


@pytest.fixture
def compiled():
    return ov.Core().compile_model(builders.conv_relu(), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def test_every_result_comes_back_under_its_key(compiled):
    items = builders.images(5)
    runner = AsyncRunner(compiled, 2, lambda request: request.get_output_tensor(0).data.copy())
    for key, item in enumerate(items):
        runner.start({0: item}, key)
    runner.finish()
    for key in reversed(range(len(items))):
        assert runner.ready(key)
        np.testing.assert_array_equal(runner.pop(key), compiled({0: items[key]})[0])
    assert not runner.ready(0)


def test_an_error_in_the_callback_is_raised_by_pop(compiled):
    def read(request):
        raise ValueError("cannot read")
    runner = AsyncRunner(compiled, 1, read)
    runner.start({0: builders.images(1)[0]}, "key")
    runner.finish()
    with pytest.raises(ValueError, match="cannot read"):
        runner.pop("key")


def test_a_finished_runner_is_freed_without_garbage_collection(compiled):
    """Nothing ties the runner into a reference cycle: dropping it frees its requests at once, so a second compiled
    model never loads while the first one's requests wait for the collector."""
    runner = AsyncRunner(compiled, 2, lambda request: request.get_output_tensor(0).data.copy())
    runner.start({0: builders.images(1)[0]}, 0)
    runner.finish()
    alive = weakref.ref(runner)
    gc.disable()
    try:
        del runner
        assert alive() is None
    finally:
        gc.enable()


def test_a_failed_inference_raises_from_pop_and_the_others_go_on():
    x = ops.parameter([-1], np.float32, name="x")
    model = ov.Model([ops.result(ops.reshape(x, np.array([2, -1], np.int64), False))], [x])
    runner = AsyncRunner(ov.Core().compile_model(model, "CPU"), 2, lambda r: r.get_output_tensor(0).data.copy())
    for key, length in enumerate([4, 3, 6]):  # 3 values do not make two rows
        runner.start({0: np.ones(length, np.float32)}, key)
        runner.ready(key)
    runner.finish()
    assert runner.pop(0).shape == (2, 2) and runner.pop(2).shape == (2, 3)
    with pytest.raises(RuntimeError):
        runner.pop(1)


def test_an_interrupt_while_reading_goes_up_at_once(compiled):
    def interrupted(infer_request):
        raise KeyboardInterrupt

    runner = AsyncRunner(compiled, 1, interrupted)
    runner.start({0: builders.images(1)[0]}, 0)
    with pytest.raises(KeyboardInterrupt):
        runner.finish()
