"""The speed check (target_device="CPU"): time the INT8 model per layer against the FP32 model on the CPU that
quantizes, and give back to float what runs slower in int8 there. A stage of its own, after the safety net.

    cost of a linear layer = time of its runtime layer + time of the Reorders that feed it or read it
    (PERF_COUNT, one thread, median of runs: `ovptq.runtime.profile`)

The FP32 model runs at the plugin's default inference precision, the one a user's FP32 IR runs at: bf16 on CPUs
with AVX512-BF16 or AMX, where a small int8 convolution (or a depthwise one whose input has a zero point, which
moves it off the brgconv kernel) with its reorders can lose to the bf16 one; f32 elsewhere, where int8 kernels
without VNNI can lose too.

1. Profile the FP32 and the INT8 model on the first calibration item, in turn.
2. Propose what to give back (`proposal`): the linear layers whose int8 cost exceeds their float cost by
   `slower_margin` and `slower_min_ms`; else the quantizers of element-wise chains that cost more than in float and
   that no linear layer reads; else, while the whole INT8 model is slower than the FP32 one, every layer that is
   not faster. A proposal whose profiles promise less than `min_speedup` of the model's time is not rebuilt.
3. Rebuild without the proposal (the trial service) and time both versions `timings` times in turn; keep the change
   only when the rebuilt model is `min_speedup` faster in every timing (a margin the noise of a busy machine does
   not cross) and its worst-output SQNR against FP32, run as compiled, falls by at most `max_sqnr_loss_db` (a layer
   back in bf16 rounds its inputs to 8 bits of mantissa). Up to `speed_rounds` proposals.
4. If the INT8 model is still slower than the FP32 model in every timing, every quantizer goes back (a warning says
   so, and the summary).
A model whose FP32 inference takes under `min_model_ms` is left as it is.

The decisions are kept in a speed record (`speed_records`), keyed by the CPU, the versions, the model and the
data, and replayed by any later run with that key: the IR then does not depend on timings at all. The IR records
the CPU the decisions hold for (rt_info ovptq/speed_check); `ovptq inspect` on another CPU says so.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from ovptq.hardware import LINEAR_TYPES
from ovptq.measuring import speed_records
from ovptq.measuring.trial import PlanChange, Trials, built, changed, output_reductions
from ovptq.outcomes import SlowLayer, SpeedCheck
from ovptq.parameters import MeasuringParameters, TargetDevice
from ovptq.runtime.cpu import cpu_description
from ovptq.runtime.layers import LINEAR_LAYER_TYPES
from ovptq.runtime.profile import Profile, Profiler
from ovptq.state import Options, Stage, State
from ovptq.wording import counted, listed

log = logging.getLogger("ovptq")

ELEMENTWISE_TYPES = ("Subgraph", "FakeQuantize", "Eltwise")  # runtime layers a FakeQuantize can end up in
RUNS, SECONDS = 3, 0.05  # a timing: the median of at least RUNS inferences and SECONDS


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


def slower_layers(fp32: Profile, int8: Profile, thresholds: MeasuringParameters = MeasuringParameters()
                  ) -> list[SlowLayer]:
    """The int8 linear layers whose cost exceeds that of the same layer in float by the margin."""
    float_costs, int8_costs = layer_costs(fp32), layer_costs(int8)
    running_int8 = {t.layer.ir_name for t in int8.layers if t.int8_linear}
    return [SlowLayer(name, cost, float_costs[name]) for name, cost in int8_costs.items()
            if name in running_int8 and name in float_costs
            and cost > (1 + thresholds.slower_margin) * float_costs[name]
            and cost - float_costs[name] >= thresholds.slower_min_ms]


def quantizers_of(state: State, layers: set[str]) -> PlanChange:
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
    return PlanChange(activations, {w.node for w in plan.weights if w.node in layers})


def costly_quantizers(fp32: Profile, int8: Profile, names: set[str],
                      thresholds: MeasuringParameters = MeasuringParameters()) -> tuple[list[str], float]:
    """Activation quantizers (of `names`) inside a Subgraph, FakeQuantize or Eltwise layer of the INT8 model that
    costs more than the FP32 layers running the same IR ops (by the margin): FakeQuantize ops in an element-wise
    chain that the plugin could not fold into a convolution or matmul. Also the time those layers take beyond their
    float counterparts (ms)."""
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
        if t.milliseconds > (1 + thresholds.slower_margin) * float_ms and \
                t.milliseconds - float_ms >= thresholds.slower_min_ms:
            found.extend(inside)
            excess += t.milliseconds - float_ms
    return found, excess


def proposal(state: State, fp32: Profile, int8: Profile, current_ms: float,
             rejected: set[str]) -> tuple[PlanChange, list[SlowLayer]]:
    """What to try in float next, and the slower layers it belongs to; only a change whose profiles promise at least
    `min_speedup` of the model's time is tried:
    1. the slower linear layers;
    2. else the quantizers of costly element-wise chains that no linear layer reads directly (they only made an
       element-wise op int8);
    3. else, while the INT8 model as a whole is slower than the FP32 one, every int8 layer that is not faster
       (the reorders between int8 and float regions are what costs then)."""
    thresholds = state.options.advanced.measuring
    worth = thresholds.min_speedup * current_ms
    slow = [s for s in slower_layers(fp32, int8, thresholds) if s.layer not in rejected]
    if slow and sum(s.int8_ms - s.float_ms for s in slow) >= worth:
        return quantizers_of(state, {s.layer for s in slow}), slow
    direct = {q.name for q in state.plan.activations
              if any(state.graph.type(c.node) in LINEAR_TYPES for c in q.consumers)}
    eltwise = {q.name for q in state.plan.activations} - direct - rejected
    costly, excess = costly_quantizers(fp32, int8, eltwise, thresholds)
    if costly and excess >= worth:
        return PlanChange(frozenset(costly)), []
    if current_ms - fp32.milliseconds < worth:
        return PlanChange(), []
    float_costs, int8_costs = layer_costs(fp32), layer_costs(int8)
    running = [t.layer.ir_name for t in int8.layers if t.int8_linear and t.layer.ir_name in float_costs]
    chosen = [SlowLayer(name, int8_costs[name], float_costs[name]) for name in running
              if name not in rejected and int8_costs[name] >= float_costs[name]]
    return (quantizers_of(state, {s.layer for s in chosen}), chosen) if chosen else (PlanChange(), [])


def faster(profilers: list[Profiler], timings: int) -> tuple[list[Profile], list[list[float]]]:
    """Each profiler timed `timings` times, in turn (a neighbour that slows the machine for a while slows one
    timing of each): the fastest profile of each, and every timing's totals."""
    best: list[Profile | None] = [None] * len(profilers)
    totals: list[list[float]] = [[] for _ in profilers]
    for _ in range(timings):
        for index, profiler in enumerate(profilers):
            measured = profiler.measure(RUNS, SECONDS)
            totals[index].append(measured.milliseconds)
            if best[index] is None or measured.milliseconds < best[index].milliseconds:
                best[index] = measured
    return best, totals


def clearly_faster(candidate: list[float], current: list[float], margin: float) -> bool:
    """The candidate beat the current model by `margin` in every timing, and their fastest timings too."""
    return all(c <= (1 - margin) * b for c, b in zip(candidate, current)) and \
        min(candidate) <= (1 - margin) * min(current)


class _Check:
    """One speed check: the trials, the profilers, and what has been decided so far."""

    def __init__(self, state: State):
        self.thresholds = state.options.advanced.measuring
        self.trials = Trials.on_calibration(state, self.thresholds.samples, "the speed check")
        self.feeds = self.trials.feeds[:1]
        self.state = state

    def profiler(self, model) -> Profiler:
        return Profiler(self.state.core, model, self.feeds)

    def measure(self) -> tuple[PlanChange, SpeedCheck]:
        """Time, propose, keep what is clearly faster; the change to the plan and the outcome."""
        thresholds, state = self.thresholds, self.state
        cpu = cpu_description()
        float_model = self.profiler(state.model)
        first = float_model.measure(RUNS, SECONDS)
        if first.milliseconds < thresholds.min_model_ms:
            log.info("Speed check: the FP32 model runs in under %.1f ms, too fast to time per layer (the counters "
                     "count microseconds): nothing changed.", thresholds.min_model_ms)
            return PlanChange(), SpeedCheck(cpu, first.precision, first.milliseconds, 0.0, 0.0)
        current = self.profiler(state.result)
        (fp32, int8), _ = faster([float_model, current], thresholds.timings)
        first_ms = current_ms = int8.milliseconds
        log.info("Speed check on %s: FP32 model at %s %.3f ms, INT8 model %.3f ms per inference (one thread).", cpu,
                 fp32.precision, fp32.milliseconds, first_ms)
        kept, given_back, rejected = PlanChange(), [], set()
        current_sqnr = None
        for _ in range(thresholds.speed_rounds):
            change, slow = proposal(changed(state, kept), fp32, int8, current_ms, rejected)
            if not change:
                break
            candidate = self.profiler(built(changed(state, kept | change)).result)
            (now, measured), (before, after) = faster([current, candidate], thresholds.timings)
            what = _describe(slow, change.floated)
            log.debug("Speed check: trying layers %s and quantizers %s in float.", [s.layer for s in slow],
                      sorted(change.floated))
            if not clearly_faster(after, before, thresholds.min_speedup):
                log.info("Speed check: %s back in float is not %.0f%% faster in every timing (%.3f -> %.3f ms): "
                         "kept.", what, 100 * thresholds.min_speedup, now.milliseconds, measured.milliseconds)
                rejected.update([s.layer for s in slow] or change.floated)
                continue
            if current_sqnr is None:
                current_sqnr = self.trials.score(current.compiled).sqnr_db
            candidate_sqnr = self.trials.score(candidate.compiled).sqnr_db
            if candidate_sqnr < current_sqnr - thresholds.max_sqnr_loss_db:
                log.info("Speed check: %s back in float would be faster (%.3f -> %.3f ms) but lowers the output SQNR "
                         "at %s from %.1f to %.1f dB: kept.", what, now.milliseconds, measured.milliseconds,
                         fp32.precision, current_sqnr, candidate_sqnr)
                rejected.update([s.layer for s in slow] or change.floated)
                continue
            log.info("Speed check: %s run slower than at %s: back to float, %.3f -> %.3f ms (output SQNR %.1f -> "
                     "%.1f dB).", what, fp32.precision, now.milliseconds, measured.milliseconds, current_sqnr,
                     candidate_sqnr)
            kept, current_sqnr = kept | change, candidate_sqnr
            given_back.extend(slow)
            current, current_ms, int8 = candidate, measured.milliseconds, measured
        left = {w.node for w in changed(state, kept).plan.weights if not w.embedding}
        whole = not left
        if left:
            (_, float_profile), (int8_times, float_times) = faster([current, float_model], thresholds.timings)
            if clearly_faster(float_times, int8_times, thresholds.min_speedup):
                whole, current_ms = True, float_profile.milliseconds
                given_back.extend(SlowLayer(name, 0.0, 0.0) for name in sorted(left))
        if whole:
            kept = kept | PlanChange({q.name for q in state.plan.activations}, {w.node for w in state.plan.weights})
        outcome = SpeedCheck(cpu, fp32.precision, fp32.milliseconds, first_ms, current_ms, tuple(given_back),
                             tuple(sorted(kept.floated)), tuple(sorted(rejected)), whole)
        return kept, outcome


def _describe(slow: list[SlowLayer], activations) -> str:
    if slow:
        return f"{counted(len(slow), 'int8 layer')} ({listed(s.layer for s in slow)})"
    return f"{counted(len(activations), 'quantizer')} of element-wise chains ({listed(sorted(activations))})"


def _check(state: State) -> State:
    started = time.perf_counter()
    check = _Check(state)
    folder = Path(state.options.advanced.speed_records or speed_records.default_folder())
    record_key = speed_records.key(cpu_description(), state.result, check.feeds, check.thresholds)
    record = speed_records.load(folder, record_key)
    if record is not None:
        change = PlanChange(record["quantizers"], record["weights"])
        outcome = SpeedCheck(record["cpu"], record["fp32_precision"], record["fp32_ms"], record["int8_ms"],
                             record["final_ms"], tuple(SlowLayer(*s) for s in record["given_back"]),
                             tuple(record["quantizers"]), tuple(record["rejected"]), record["whole"], replayed=True)
        log.info("Speed check: decisions replayed from the speed record %s (measured on %s).",
                 folder / f"{record_key}.json", outcome.cpu)
    else:
        change, outcome = check.measure()
        speed_records.save(folder, record_key, {
            "cpu": outcome.cpu, "fp32_precision": outcome.precision, "fp32_ms": outcome.fp32_ms,
            "int8_ms": outcome.int8_ms, "final_ms": outcome.final_ms,
            "given_back": [[s.layer, s.int8_ms, s.float_ms] for s in outcome.given_back],
            "quantizers": sorted(change.floated), "weights": sorted(change.floated_weights),
            "rejected": list(outcome.rejected), "whole": outcome.whole})
    if outcome.whole:
        log.warning("Speed check: on this CPU (%s) the INT8 model runs slower (%.3f ms) than the FP32 model at %s "
                    "(%.3f ms): every layer is back in float, the model is the FP32 one. target_device='ANY' keeps "
                    "INT8 (for an IR deployed on other CPUs).", outcome.cpu, outcome.int8_ms, outcome.precision,
                    outcome.fp32_ms)
    log.info("Speed check: %d layers and %d quantizers back in float, %.3f -> %.3f ms per inference (%.1f s).",
             len(outcome.given_back), len(outcome.quantizers), outcome.int8_ms, outcome.final_ms,
             time.perf_counter() - started)
    return replace(built(changed(state, change)) if change else state, speed_check=outcome)


def enabled(options: Options) -> bool:
    """On with target_device="CPU" (the CPU that quantizes is the one the IR is for), unless turned off; with any
    other target device only when asked for (speed_check=True)."""
    asked = options.advanced.speed_check
    return asked if asked is not None else options.target_device is TargetDevice.CPU


def _record(state: State) -> dict[str, str]:
    if state.speed_check is None:
        return {}
    return {"speed_check": json.dumps(state.speed_check.record())}


STAGE = Stage("speed check", _check, enabled=enabled,
              reductions=lambda state: output_reductions(state.options.advanced.measuring.samples),
              rereads=lambda state: state.options.advanced.measuring.samples, record=_record)
