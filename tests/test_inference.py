"""AsyncRunner: results under their keys, errors handed back, and nothing kept alive once it is dropped."""

import gc
import weakref

import builders
import numpy as np
import openvino as ov
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
