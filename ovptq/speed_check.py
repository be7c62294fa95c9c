"""The speed check: time the INT8 model per layer against the FP32 model on the CPU that quantizes, and give back
to float what runs slower in int8. A stage of its own, after the safety net.

    cost of a linear layer = time of its runtime layer + time of the Reorders that feed it or read it
    (PERF_COUNT, one thread, median of runs: `ovptq.runtime.profile`)

The FP32 model runs at the plugin's default inference precision, the one a user's FP32 IR runs at: bf16 on CPUs
with AVX512-BF16 or AMX, where a small int8 convolution (or a depthwise one whose input has a zero point, which
moves it off the brgconv kernel) with its reorders can lose to the bf16 one.

1. Profile the FP32 and the INT8 model on the first calibration item, TIMINGS times in turn.
2. Propose what to give back (`proposal`): the linear layers whose int8 cost exceeds their float cost by MARGIN
   and MIN_LOSS_MS; else the quantizers of element-wise chains that cost more than in float and that no linear
   layer reads; else, while the whole INT8 model is slower than the FP32 one, every layer that is not faster.
   A proposal whose profiles promise less than MIN_GAIN of the model's time is not worth a rebuild.
3. Rebuild without the proposal (the int8 weights, and every activation quantizer that no longer leads to an int8
   layer) and time both versions in turn; keep the change only when the model got at least MIN_GAIN faster and
   its worst-output SQNR against FP32, run as compiled (bf16 layers included), on the safety net's samples, fell
   by at most MAX_SQNR_LOSS_DB. A layer back in float is not always closer to FP32: in bf16 it rounds its inputs to
   8 bits of mantissa; and on PP-OCRv4 rec, after the safety net had put the first convolution's weights back in
   float, any change to one depthwise convolution (its weights or its input back in float) took the SQNR from
   19.3 to 14.7 dB at f32 (17.3 at bf16), a loss not yet explained.
   Up to ROUNDS proposals: a layer back in float changes the reorders of its neighbours.
4. If the INT8 model is still slower than the FP32 model, every quantizer goes back (a warning says so).
A model whose FP32 inference takes under MIN_MODEL_MS is left as it is: per-layer times of a microsecond or two
cannot tell int8 from float.

With that guard the check does not cost accuracy. Its decisions go to the log
and to rt_info (ovptq/speed_check). It measures this machine: for an IR deployed on another CPU, turn it off
(advanced_parameters.speed_check=False, or target_device GPU / NPU).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, replace

from ovptq import measure, safety_net
from ovptq.hardware import LINEAR_TYPES
from ovptq.parameters import TargetDevice
from ovptq.rewrite import rewrite
from ovptq.runtime.layers import LINEAR_LAYER_TYPES
from ovptq.runtime.profile import Profile, Profiler, fastest
from ovptq.state import Options, Stage, State

log = logging.getLogger("ovptq")

MARGIN = 0.10         # a layer is slower when its int8 cost > (1 + MARGIN) x its float cost
MIN_LOSS_MS = 0.002   # ... and by at least 2 us (the counters count whole microseconds)
MIN_GAIN = 0.01       # the model with layers given back must be this much faster, as a whole
ROUNDS = 3
MAX_SQNR_LOSS_DB = 0.5  # a change may lower the output SQNR (at the default precision) by this much at most
SAMPLES = safety_net.SAMPLES  # calibration items of that SQNR
MIN_MODEL_MS = 0.1    # an FP32 model faster than this is not checked: its layers take a few microseconds each
TIMINGS = 2           # alternating timings of the current and the candidate model; the fastest of each counts
ELEMENTWISE_TYPES = ("Subgraph", "FakeQuantize", "Eltwise")  # runtime layers a FakeQuantize can end up in
RUNS, SECONDS = 3, 0.05  # a timing: the median of at least RUNS inferences and SECONDS


@dataclass(frozen=True)
class SlowLayer:
    """A linear layer of the IR (by name) and its cost in int8 and in float, in ms."""

    layer: str
    int8_ms: float
    float_ms: float


@dataclass(frozen=True)
class SpeedCheck:
    """What the check measured (ms per inference, one thread) and what it gave back."""

    precision: str                          # the FP32 model's inference precision
    fp32_ms: float
    int8_ms: float                          # the INT8 model as the earlier stages built it
    final_ms: float                         # after the check
    given_back: tuple[SlowLayer, ...] = ()
    quantizers: tuple[str, ...] = ()        # every activation quantizer given back
    rejected: tuple[str, ...] = ()          # layers (or quantizers) whose return did not speed the model up

    def record(self) -> dict:
        """What rt_info keeps: the decisions, not the times (they differ from run to run; the log has them)."""
        return {"fp32_precision": self.precision, "layers": [s.layer for s in self.given_back],
                "quantizers": list(self.quantizers), "kept_after_timing": list(self.rejected)}


def layer_costs(profile: Profile) -> dict[str, float]:
    """IR linear op -> the time of the runtime layer that runs it plus the Reorders that feed it or read it."""
    by_name = {t.layer.name: t for t in profile.layers}
    readers = defaultdict(list)
    for t in profile.layers:
        for producer in t.inputs:
            readers[producer].append(t)
    costs = {}
    for t in profile.layers:
        if t.layer.layer_type in LINEAR_LAYER_TYPES and t.layer.ir_name:
            near = [by_name[p] for p in t.inputs if p in by_name] + readers[t.layer.name]
            costs[t.layer.ir_name] = t.milliseconds + sum(n.milliseconds for n in near
                                                          if n.layer.layer_type == "Reorder")
    return costs


def slower_layers(fp32: Profile, int8: Profile) -> list[SlowLayer]:
    """The int8 linear layers whose cost exceeds that of the same layer in float by MARGIN and MIN_LOSS_MS."""
    float_costs, int8_costs = layer_costs(fp32), layer_costs(int8)
    running_int8 = {t.layer.ir_name for t in int8.layers if t.int8_linear}
    return [SlowLayer(name, cost, float_costs[name]) for name, cost in int8_costs.items()
            if name in running_int8 and name in float_costs
            and cost > (1 + MARGIN) * float_costs[name] and cost - float_costs[name] >= MIN_LOSS_MS]


def quantizers_of(state: State, layers: set[str]) -> tuple[set[str], set[str]]:
    """What goes back to float with `layers`: their int8 weights, and every activation quantizer whose readers
    lead to no other int8 layer through ops without weights (the quantizers of an Add that fed only those layers
    go too; a quantizer that also feeds an int8 layer stays)."""
    graph, plan = state.graph, state.plan
    int8_layers = {w.node for w in plan.weights if not w.embedding}
    int8_layers |= {c.node for q in plan.activations for c in q.consumers if graph.type(c.node) in LINEAR_TYPES}
    feeding_int8 = int8_layers - layers
    stack = list(feeding_int8)
    while stack:
        for parent in graph.nx.predecessors(stack.pop()):
            if parent not in feeding_int8 and graph.type(parent) not in LINEAR_TYPES:
                feeding_int8.add(parent)
                stack.append(parent)
    activations = {q.name for q in plan.activations
                   if not any(c.node in feeding_int8 or graph.type(c.node) == "Result" for c in q.consumers)}
    return activations, {w.node for w in plan.weights if w.node in layers}


class _Timer:
    """Profilers of models built from the state, on the first calibration item, at the default precision."""

    def __init__(self, state: State):
        dataset = state.replay if state.replay is not None else state.dataset
        self.state = state
        self.samples = measure.bind(dataset, state.model, SAMPLES, "the speed check")
        self.feeds = self.samples[:1]
        self._reference = None

    def profiler(self, model) -> Profiler:
        return Profiler(self.state.core, model, self.feeds)

    def sqnr(self, profiler: Profiler) -> float:
        """Worst-output SQNR of a profiled model, as compiled (the default precision), against the f32 FP32
        model on the safety net's samples."""
        if self._reference is None:
            self._reference = measure.run(self.state.core, self.state.model, self.samples)
        return measure.worst_output_sqnr(self._reference, measure.run_compiled(profiler.compiled, self.samples))


def costly_quantizers(fp32: Profile, int8: Profile, names: set[str]) -> tuple[list[str], float]:
    """Activation quantizers (of `names`) inside a Subgraph, FakeQuantize or Eltwise layer of the INT8 model that
    costs more than the FP32 layers running the same IR ops (by MARGIN and MIN_LOSS_MS): FakeQuantize ops in an
    element-wise chain that the plugin could not fold into a convolution or matmul. Also the time those layers
    take beyond their float counterparts (ms)."""
    float_layers: dict[str, list] = defaultdict(list)
    for t in fp32.layers:
        for name in t.layer.original_names:
            float_layers[name].append(t)
    found, excess = [], 0.0
    for t in int8.layers:
        inside = [n for n in t.layer.original_names if n in names]
        if t.layer.layer_type not in ELEMENTWISE_TYPES or not inside:
            continue
        counterparts = {id(f): f for n in t.layer.original_names if n not in names for f in float_layers[n]}
        float_ms = sum(f.milliseconds for f in counterparts.values())
        if t.milliseconds > (1 + MARGIN) * float_ms and t.milliseconds - float_ms >= MIN_LOSS_MS:
            found.extend(inside)
            excess += t.milliseconds - float_ms
    return found, excess


def proposal(state: State, fp32: Profile, int8: Profile, current_ms: float,
             rejected: set[str]) -> tuple[set[str], set[str], list[SlowLayer]]:
    """What to try in float next, as (activation quantizers, int8 weights, the slower layers they belong to); only
    a change whose profiles promise at least MIN_GAIN of the model's time is tried:
    1. the slower linear layers;
    2. else the quantizers of costly element-wise chains that no linear layer reads directly (they only made an
       element-wise op int8);
    3. else, while the INT8 model as a whole is slower than the FP32 one, every int8 layer that is not faster
       (the reorders between int8 and float regions are what costs then)."""
    worth = MIN_GAIN * current_ms
    slow = [s for s in slower_layers(fp32, int8) if s.layer not in rejected]
    if slow and sum(s.int8_ms - s.float_ms for s in slow) >= worth:
        return (*quantizers_of(state, {s.layer for s in slow}), slow)
    direct = {q.name for q in state.plan.activations
              if any(state.graph.type(c.node) in LINEAR_TYPES for c in q.consumers)}
    eltwise = {q.name for q in state.plan.activations} - direct - rejected
    costly, excess = costly_quantizers(fp32, int8, eltwise)
    if costly and excess >= worth:
        return set(costly), set(), []
    if current_ms - fp32.milliseconds < worth:
        return set(), set(), []
    float_costs, int8_costs = layer_costs(fp32), layer_costs(int8)
    running = [t.layer.ir_name for t in int8.layers if t.int8_linear and t.layer.ir_name in float_costs]
    chosen = [SlowLayer(name, int8_costs[name], float_costs[name]) for name in running
              if name not in rejected and int8_costs[name] >= float_costs[name]]
    return (*quantizers_of(state, {s.layer for s in chosen}), chosen) if chosen else (set(), set(), [])


def _check(state: State) -> State:
    started = time.perf_counter()
    timer = _Timer(state)
    float_model = timer.profiler(state.model)
    first = float_model.measure(RUNS, SECONDS)
    if first.milliseconds < MIN_MODEL_MS:
        log.info("Speed check: the FP32 model runs in under %.1f ms, too fast to time per layer (the counters count "
                 "microseconds): nothing changed.", MIN_MODEL_MS)
        state = replace(state, speed_check=SpeedCheck(first.precision, first.milliseconds, 0.0, 0.0))
        return replace(state, result=rewrite.restamp(state))
    current = timer.profiler(state.result)
    fp32, int8 = fastest([float_model, current], TIMINGS, RUNS, SECONDS)
    first_ms = current_ms = int8.milliseconds
    log.info("Speed check: FP32 model at %s %.3f ms, INT8 model %.3f ms per inference (one thread).",
             fp32.precision, fp32.milliseconds, first_ms)
    given_back: list[SlowLayer] = []
    given_back_quantizers: list[str] = []
    rejected: set[str] = set()
    current_sqnr = None
    for _ in range(ROUNDS):
        activations, weights, slow = proposal(state, fp32, int8, current_ms, rejected)
        if not activations and not weights:
            break
        candidate_state = state.without_quantizers(activations, weights)
        candidate_state = replace(candidate_state, result=rewrite.apply(candidate_state.model,
                                                                        rewrite.edits_of(candidate_state)))
        candidate = timer.profiler(candidate_state.result)
        now, measured = fastest([current, candidate], TIMINGS, RUNS, SECONDS)
        before_ms, after_ms = now.milliseconds, measured.milliseconds
        what = _describe(slow, activations)
        if after_ms > (1 - MIN_GAIN) * before_ms:
            log.info("Speed check: %s back in float would not make the model faster (%.3f -> %.3f ms): kept.",
                     what, before_ms, after_ms)
            rejected.update([s.layer for s in slow] or activations)
            continue
        if current_sqnr is None:
            current_sqnr = timer.sqnr(current)
        candidate_sqnr = timer.sqnr(candidate)
        if candidate_sqnr < current_sqnr - MAX_SQNR_LOSS_DB:
            log.info("Speed check: %s back in float would be faster (%.3f -> %.3f ms) but lowers the output SQNR at "
                     "%s from %.1f to %.1f dB: kept.", what, before_ms, after_ms, fp32.precision, current_sqnr,
                     candidate_sqnr)
            rejected.update([s.layer for s in slow] or activations)
            continue
        log.info("Speed check: %s run slower than at %s: back to float, %.3f -> %.3f ms (output SQNR %.1f -> %.1f "
                 "dB).", what, fp32.precision, before_ms, after_ms, current_sqnr, candidate_sqnr)
        current_sqnr = candidate_sqnr
        given_back.extend(slow)
        given_back_quantizers.extend(sorted(activations))
        state, current, current_ms, int8 = candidate_state, candidate, after_ms, measured
    if given_back or current_ms > fp32.milliseconds:
        now, float_profile = fastest([current, float_model], TIMINGS, RUNS, SECONDS)
        if float_profile.milliseconds < (1 - MIN_GAIN) * now.milliseconds:
            log.warning("Speed check: on this CPU the INT8 model runs slower (%.3f ms) than the FP32 model at %s "
                        "(%.3f ms): every layer back in float. advanced_parameters.speed_check=False keeps INT8 "
                        "(for a model deployed on another CPU).", now.milliseconds, fp32.precision,
                        float_profile.milliseconds)
            slow = [SlowLayer(name, 0.0, 0.0) for name in sorted({w.node for w in state.plan.weights})]
            given_back.extend(slow)
            given_back_quantizers.extend(q.name for q in state.plan.activations)
            state = state.without_quantizers({q.name for q in state.plan.activations},
                                             {w.node for w in state.plan.weights})
            state = replace(state, result=rewrite.apply(state.model, rewrite.edits_of(state)))
            current_ms = float_profile.milliseconds
    outcome = SpeedCheck(fp32.precision, fp32.milliseconds, first_ms, current_ms, tuple(given_back),
                         tuple(given_back_quantizers), tuple(sorted(rejected)))
    log.info("Speed check: %d layers and %d quantizers back in float, %.3f -> %.3f ms per inference (%.1f s).",
             len(given_back), len(given_back_quantizers), first_ms, current_ms, time.perf_counter() - started)
    state = replace(state, speed_check=outcome)
    return replace(state, result=rewrite.restamp(state))


def _describe(slow: list[SlowLayer], activations: set[str]) -> str:
    if slow:
        names = ", ".join(s.layer for s in slow[:6]) + (f" and {len(slow) - 6} more" if len(slow) > 6 else "")
        return f"{len(slow)} int8 layers ({names})"
    names = ", ".join(sorted(activations)[:6]) + (f" and {len(activations) - 6} more" if len(activations) > 6 else "")
    return f"{len(activations)} quantizers of element-wise chains ({names})"


def enabled(options: Options) -> bool:
    return options.advanced.speed_check and options.target_device in (TargetDevice.ANY, TargetDevice.CPU)


def _record(state: State) -> dict[str, str]:
    if state.speed_check is None:
        return {}
    return {"speed_check": json.dumps(state.speed_check.record())}


STAGE = Stage("speed check", _check, enabled=enabled, rereads=lambda state: SAMPLES, record=_record)
