"""Asynchronous inference on a few infer requests, read back in the calling thread.

No Python callback runs in OpenVINO's threads. With `ov.AsyncInferQueue` callbacks, the callback's closure tied
the runner into a reference cycle, so its requests (and their compiled model) stayed in memory until the next
garbage collection, and freeing them at once instead raced with the end of the last callback. Here each request
is waited for and read by the thread that started it: dropping the runner frees everything at once, safely.

Every inference starts from the model's initial state (`reset_state`): a stateful model (ReadValue / Assign, e.g.
a decoder's KV cache) sees each feed as one independent sequence, whichever request runs it and whatever ran
before. A feed that is one step of a longer sequence is not supported.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import openvino as ov


class AsyncRunner:
    def __init__(self, compiled: ov.CompiledModel, jobs: int | None, read: Callable[[ov.InferRequest], Any]):
        """`read(infer_request)` returns what to keep of a finished inference's outputs."""
        jobs = jobs or compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        self.idle = deque(compiled.create_infer_request() for _ in range(jobs))
        self.running: deque[tuple[ov.InferRequest, Any]] = deque()  # in the order they were started
        self.results: dict[Any, Any] = {}
        self.read = read

    def start(self, feed: dict, key) -> None:
        """Start one inference, first waiting for the oldest running one when every request is busy."""
        if not self.idle:
            self._complete_oldest()
        request = self.idle.popleft()
        try:
            request.reset_state()  # as in `infer_from_initial_state`
            request.start_async(feed)
        except BaseException:
            self.idle.appendleft(request)
            raise
        self.running.append((request, key))

    def _complete_oldest(self) -> None:
        request, key = self.running.popleft()
        try:
            request.wait()
            value = self.read(request)
        except Exception as error:  # handed over by pop; an interrupt (Ctrl-C) goes up at once
            value = error
        self.results[key] = value
        self.idle.append(request)

    def pop(self, key) -> Any:
        """The result for `key` if its inference has been read (raising what it raised), else KeyError."""
        value = self.results.pop(key)
        if isinstance(value, Exception):
            raise value
        return value

    def ready(self, key) -> bool:
        """Read every leading inference that has finished, without blocking; whether `key`'s result is in."""
        while self.running and _finished(self.running[0][0]):
            self._complete_oldest()
        return key in self.results

    def finish(self) -> None:
        """Wait for and read every running inference."""
        while self.running:
            self._complete_oldest()


def infer_from_initial_state(request: ov.InferRequest, feed: dict) -> None:
    """One synchronous inference of `feed` as one independent sequence: a stateful model's state starts from its
    initial value, whatever the request ran before."""
    request.reset_state()
    request.infer(feed)


def _finished(request: ov.InferRequest) -> bool:
    try:
        return request.wait_for(0)
    except RuntimeError:  # it failed: reading it records the error for `pop`
        return True
