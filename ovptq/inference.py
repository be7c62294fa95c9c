"""Asynchronous inference with Python callbacks that can safely be torn down.

`ov.AsyncInferQueue.wait_all()` can return while a callback is still waiting for the GIL in an inference thread;
destroying the compiled model then (the main thread holding the GIL, the executor joining that thread) deadlocks.
`AsyncRunner.finish()` also waits, with the GIL released, until every callback has returned.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import openvino as ov


class AsyncRunner:
    def __init__(self, compiled: ov.CompiledModel, jobs: int | None, read: Callable[[ov.InferRequest], Any]):
        """`read(request)` runs in the callback and returns what to keep of the request's outputs."""
        jobs = jobs or compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        self.queue = ov.AsyncInferQueue(compiled, jobs)
        self.done = threading.Condition()
        self.results: dict[Any, Any] = {}
        self.started = 0
        self.finished = 0

        def on_done(request: ov.InferRequest, key) -> None:
            try:
                value = read(request)
            except BaseException as error:  # handed to the main thread
                value = error
            with self.done:
                self.results[key] = value
                self.finished += 1
                self.done.notify_all()

        self.queue.set_callback(on_done)

    def start(self, feed: dict, key) -> None:
        self.queue.start_async(feed, userdata=key)
        self.started += 1

    def pop(self, key) -> Any:
        """The result for `key` if its callback has run (raising what the callback raised), else KeyError."""
        with self.done:
            value = self.results.pop(key)
        if isinstance(value, BaseException):
            raise value
        return value

    def ready(self, key) -> bool:
        with self.done:
            return key in self.results

    def finish(self) -> None:
        """Wait for every request and every callback."""
        self.queue.wait_all()
        with self.done:
            self.done.wait_for(lambda: self.finished == self.started)
