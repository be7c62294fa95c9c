"""Per-layer time of a model compiled on the CPU, as the plugin counts it (`PERF_COUNT`), and where an INT8 model
spends time that its FP32 model does not.

    time of a layer = median over RUNS inferences of its `real_time`, on one thread and one stream

One thread makes the layer times add up to the latency and keeps them apart from the scheduling of a shared
machine; the median over runs drops the inferences a neighbour slowed down. The FP32 model is compiled at the
plugin's default inference precision (bf16 on CPUs with AVX512-BF16 or AMX): that is what a user's FP32 IR runs
at, and what INT8 has to beat.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import openvino as ov

from ovptq.inference import infer_from_initial_state
from ovptq.runtime.layers import LINEAR_LAYER_TYPES, RuntimeLayer, runtime_layers

RUNS = 20       # inferences profiled (after WARMUP), at least
MIN_SECONDS = 0.1  # and at least this long
WARMUP = 3
# Where an INT8 model can spend time its FP32 model does not: FakeQuantize left as its own float layer, eltwise
# chains the plugin fuses into a Subgraph (a FakeQuantize inside costs a pass over the tensor), precision
# reorders at the borders of int8 regions.
OVERHEAD_TYPES = ("FakeQuantize", "Subgraph", "Reorder")


@dataclass(frozen=True)
class LayerTime:
    layer: RuntimeLayer
    milliseconds: float
    inputs: tuple[str, ...] = ()   # runtime layers feeding this one

    @property
    def category(self) -> str:
        """Linear layers by precision ("Convolution i8"), every other layer by its runtime type."""
        kind = self.layer.layer_type
        if kind in LINEAR_LAYER_TYPES:
            return f"{kind} {'i8' if self.layer.is_int8 else 'float'}"
        return kind

    @property
    def int8_linear(self) -> bool:
        return self.layer.layer_type in LINEAR_LAYER_TYPES and self.layer.is_int8


@dataclass
class Profile:
    """The layers of one compiled model with their times, and the inference precision it was compiled at."""

    layers: list[LayerTime] = field(default_factory=list)
    precision: str = ""

    @property
    def milliseconds(self) -> float:
        return sum(t.milliseconds for t in self.layers)

    def by_category(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for t in self.layers:
            totals[t.category] += t.milliseconds
        return dict(totals)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for t in self.layers:
            counts[t.category] += 1
        return dict(counts)

    def outside_int8_linear(self) -> float:
        """Time of every layer but the int8 Convolution / FullyConnected / MatMul ones (ms)."""
        return sum(t.milliseconds for t in self.layers if not t.int8_linear)

    def kernels(self, category: str) -> dict[str, tuple[int, float]]:
        """Kernel -> (layers, ms) within a category."""
        found: dict[str, tuple[int, float]] = {}
        for t in self.layers:
            if t.category == category:
                count, ms = found.get(t.layer.kernel, (0, 0.0))
                found[t.layer.kernel] = (count + 1, ms + t.milliseconds)
        return found


def compile_for_profile(core: ov.Core, model: ov.Model, precision: str | None = None,
                        device: str = "CPU") -> ov.CompiledModel:
    """`model` compiled with per-layer counters, one thread, one stream; at `precision` (e.g. "f32", "bf16") or the
    plugin's default."""
    config = {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    return core.compile_model(model, device, config)


class Profiler:
    """One model compiled for profiling, measured as often as asked (one compile, many measurements)."""

    def __init__(self, core: ov.Core, model: ov.Model, feeds: Sequence[Mapping] | None = None,
                 precision: str | None = None):
        self.model = model
        self.compiled = compile_for_profile(core, model, precision)
        self.feeds = list(feeds) if feeds else [random_inputs(self.compiled)]
        self.request = self.compiled.create_infer_request()
        for index in range(WARMUP):
            self._infer(index)
        self._layers: list[RuntimeLayer] | None = None

    def _infer(self, index: int) -> None:
        """One inference of feed `index` (modulo): a stateful model's cache does not grow between timings."""
        infer_from_initial_state(self.request, self.feeds[index % len(self.feeds)])

    def measure(self, runs: int = RUNS, seconds: float = MIN_SECONDS) -> Profile:
        """Median time of every runtime layer over at least `runs` inferences of the feeds, in turn, and at least
        `seconds` of them (a tiny model needs many runs for the medians to settle)."""
        times: dict[str, list[float]] = defaultdict(list)
        started, index = time.perf_counter(), 0
        while index < runs or time.perf_counter() - started < seconds:
            self._infer(index)
            for info in self.request.profiling_info:
                times[info.node_name].append(info.real_time.total_seconds() * 1e3)
            index += 1
        if self._layers is None:
            self._layers = [layer for layer in runtime_layers(self.compiled, self.model)
                            if layer.layer_type not in ("Const", "Input", "Output")]
            runtime = self.compiled.get_runtime_model()
            self._producers = {op.get_friendly_name(): tuple(i.get_source_output().get_node().get_friendly_name()
                                                             for i in op.inputs()) for op in runtime.get_ordered_ops()}
        return Profile([LayerTime(layer, statistics.median(times[layer.name]) if times.get(layer.name) else 0.0,
                                  self._producers.get(layer.name, ())) for layer in self._layers],
                       self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())


def profile(core: ov.Core, model: ov.Model, feeds: Sequence[Mapping] | None = None, precision: str | None = None,
            runs: int = RUNS) -> Profile:
    """Median time of every runtime layer over `runs` inferences of `feeds` (in turn; by default random inputs of
    the model's static shapes)."""
    return Profiler(core, model, feeds, precision).measure(runs)


def fastest(profilers: Sequence[Profiler], timings: int = 3, runs: int = RUNS,
            seconds: float = MIN_SECONDS) -> list[Profile]:
    """Each profiler's fastest profile (by total) of `timings`, measured in turn: a neighbour that slows the
    machine for a while slows one timing of each, and the comparison stays fair."""
    best: list[Profile | None] = [None] * len(profilers)
    for _ in range(timings):
        for index, profiler in enumerate(profilers):
            measured = profiler.measure(runs, seconds)
            if best[index] is None or measured.milliseconds < best[index].milliseconds:
                best[index] = measured
    return best


def random_inputs(compiled: ov.CompiledModel, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the compiled model's static shapes: uniform [0, 1) floats, zeros for integer inputs (ids, masks
    with 0 valid everywhere would change nothing in the layer times)."""
    generator = np.random.default_rng(seed)
    inputs = {}
    for port in compiled.inputs:
        shape = port.get_partial_shape()
        if shape.is_dynamic:
            raise ValueError(f"input {port.get_any_name()!r} has the dynamic shape {shape}: give a static shape "
                             "(--shape, or reshape the model)")
        dtype = port.get_element_type().to_dtype()
        shape = tuple(port.get_shape())
        inputs[port.get_any_name()] = (generator.random(shape).astype(dtype) if np.issubdtype(dtype, np.floating)
                                       else np.ones(shape, dtype=dtype))
    return inputs
