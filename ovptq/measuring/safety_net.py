"""The safety net: measure the INT8 model's output error against FP32, find the quantizers that cause most of it,
and repair them. A stage of its own, after the rewrite.

    SQNR = 10 log10(sum y^2 / sum (y - y_q)^2) over the first `samples` calibration feeds, for each float output;
    the check reads the lowest (a VAD's probability counts as much as its large recurrent state)

The thresholds are `MeasuringParameters` (advanced_parameters.measuring); every model measured is built by the
trial service (`ovptq.measuring.trial`) from a plan change, and the FP32 outputs come from the statistics pass.

1. Check: the INT8 model's SQNR. At `healthy_db` or above, nothing else is done: one compilation, one inference of
   the feeds.
2. Localise. Every quantizer is a unit: an activation FakeQuantize (the quantizers of one Concat group together) or
   an int8 weight. One batch measures, two compilations at a time: the quantizers the transformer rules would keep
   float, as one unit (they hurt together on basic_pitch, magika and silero_vad, while no group of them alone
   does), and `groups` contiguous groups of the units in model order. The best candidate must gain `min_gain_db`,
   else the search ends. A group is halved, both halves measured in one batch, while the better half still gains
   `min_gain_db` (interacting units stay together).
3. Repair what was found with the cheapest fix that recovers `fix_share` of what float recovers: for a lone
   activation quantizer an asymmetric range; then the global min/max range of its activation quantizers and full
   8-bit weights where the overflow fix halved them (all fixes in one batch). Else what was found goes back to float.
4. A repair must lower the error of `consistent_share` of the samples, not of an outlier alone, and float no more
   than `max_float_units` units (the transformer rules' unit counts as one): more is error spread thin, which
   float would buy with many INT8 layers. The search ends there, when the SQNR reaches `healthy_db`, after
   `max_repairs` repairs, or once `max_measurements` models were measured.

Quantization errors of different layers partly cancel, so the gain of a group is not the sum of its units' gains
(on PP-OCRv5 rec one weight alone gains 5.8 dB while the group of 16 that holds it gains 1.7): the search finds
what stands out, and spread error is left to better rounding and ranges. Every decision goes to the log and to
rt_info (ovptq/safety_net), with why the search ended.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from ovptq.measuring.trial import NO_CHANGE, Measurement, PlanChange, Trials, built, changed, output_reductions
from ovptq.outcomes import QuantizedWeight, Repair, SafetyNet
from ovptq.parameters import MeasuringParameters, ModelType
from ovptq.ranges.activations import state_reductions
from ovptq.ranges.formulas import FQParams, asymmetric_activation, symmetric_activation
from ovptq.ranges.weights import quantize_weights
from ovptq.state import Stage, State

log = logging.getLogger("ovptq")


@dataclass(frozen=True)
class Unit:
    """What goes back to float, or gets a new range, together: activation quantizers (by name) and int8 weights
    (by layer)."""

    name: str
    activations: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()

    def overlaps(self, other: "Unit") -> bool:
        return bool(set(self.activations) & set(other.activations) or set(self.weights) & set(other.weights))


def units_of(state: State) -> list[Unit]:
    """Every quantizer of the plan as a unit, in model order (an activation unit at its first consumer)."""
    graph, plan = state.graph, state.plan
    positioned: list[tuple[int, Unit]] = []
    groups: dict[int, list] = {}
    for q in plan.activations:
        if q.group is None:
            positioned.append((graph.order_index(q.consumers[0].node), Unit(q.name, (q.name,))))
        else:
            groups.setdefault(q.group, []).append(q)
    for members in groups.values():
        first = min(graph.order_index(c.node) for q in members for c in q.consumers)
        positioned.append((first, Unit(members[0].name, tuple(q.name for q in members))))
    for w in plan.weights:
        if not w.embedding:
            positioned.append((graph.order_index(w.node), Unit(f"{w.node}/weights", weights=(w.node,))))
    return [unit for _, unit in sorted(positioned, key=lambda p: (p[0], p[1].name))]


def rule_units(state: State) -> list[Unit]:
    """The quantizers the transformer rules would keep float (residual Add / Multiply, normalisation and softmax
    inputs), as the placement recorded them: one unit, tried whole and never halved."""
    plan = state.plan
    if state.options.model_type is ModelType.TRANSFORMER:
        return []
    planned = {q.name for q in plan.activations}
    weighted = {w.node for w in plan.weights}
    unit = Unit("quantizers the transformer rules keep float",
                tuple(a for a in plan.rule_float_activations if a in planned),
                tuple(w for w in plan.rule_float_weights if w in weighted))
    return [unit] if unit.activations or unit.weights else []


def in_float(units: list[Unit] | tuple[Unit, ...]) -> PlanChange:
    """The units' quantizers back in float (and the bias corrections of their int8 weights undone)."""
    return PlanChange(frozenset(a for u in units for a in u.activations),
                      frozenset(w for u in units for w in u.weights))


@dataclass(frozen=True)
class Fix:
    """A cheaper change than float: new activation ranges (by quantizer) and new int8 weights (by layer)."""

    description: str
    ranges: Mapping[str, FQParams] = field(default_factory=dict)
    weights: Mapping[str, QuantizedWeight] = field(default_factory=dict)

    def change(self) -> PlanChange:
        return PlanChange(ranges=self.ranges, requantized=self.weights)


def fixes(state: State, culprits: list[Unit]) -> list[Fix]:
    """Cheaper fixes than float for what localisation found, cheapest first: for a lone two-sided symmetric
    activation quantizer an asymmetric range; then, for all of them at once, the global min/max range of every
    activation quantizer (per-tensor ones) and full 8-bit weights where the overflow fix halved them."""
    statistics, reductions = state.range_statistics(), state_reductions(state)
    by_name = {q.name: q for q in state.plan.activations}
    result = []
    ranges: dict[str, FQParams] = {}
    for unit in culprits:
        members = [by_name[name] for name in unit.activations if name in by_name]
        if not members or any(q.per_channel for q in members):
            continue
        stats = [statistics[reductions[q.name]] for q in members]
        low = min(float(np.min(s.global_min)) for s in stats)
        high = max(float(np.max(s.global_max)) for s in stats)
        two_sided = low < 0 < high
        if len(culprits) == 1 and members[0].symmetric and two_sided:
            mean_low = min(float(np.min(s.mean_min)) for s in stats)
            mean_high = max(float(np.max(s.mean_max)) for s in stats)
            result.append(Fix("asymmetric range", {q.name: asymmetric_activation(mean_low, mean_high)
                                                   for q in members}))
        zero_point_free = any(q.zero_point_free for q in members)
        wide = (symmetric_activation(low, max(-low, high)) if zero_point_free or not two_sided
                else asymmetric_activation(low, high))
        ranges.update({q.name: wide for q in members})
    halved = [w for unit in culprits for w in state.plan.weights if w.node in unit.weights and w.half_range]
    advanced = state.options.advanced
    replaced = state.smoothing.constants if state.smoothing is not None else None
    weights = quantize_weights(state.graph, tuple(replace(w, half_range=False) for w in halved),
                               advanced.weights_range_estimator, advanced.quantile_outlier_prob, replaced)
    if ranges or weights:
        parts = ["global min/max range"] * bool(ranges) + ["8-bit weights"] * bool(weights)
        result.append(Fix(" and ".join(parts), ranges, weights))
    return result


class _Search:
    """The measurements of one check: every candidate is measured on top of the repairs kept so far."""

    def __init__(self, trials: Trials, thresholds: MeasuringParameters):
        self.trials, self.thresholds = trials, thresholds
        self.kept = NO_CHANGE
        self.current = trials.measure(NO_CHANGE)

    @property
    def exhausted(self) -> bool:
        return self.trials.compiled >= self.thresholds.max_measurements

    def gains(self, changes: list[PlanChange]) -> list[float]:
        """The SQNR each change gains on top of the kept repairs (measured in one batch)."""
        return [m.sqnr_db - self.current.sqnr_db for m in self.measure([self.kept | c for c in changes])]

    def measure(self, changes: list[PlanChange]) -> list[Measurement]:
        room = self.thresholds.max_measurements - self.trials.compiled
        fresh = [c for c in changes if not self.trials.measured(c)]
        if len(fresh) > room:
            raise _Budget
        return self.trials.measure_all(changes)

    def float_gains(self, candidates: list[list[Unit]]) -> list[float]:
        return self.gains([in_float(c) for c in candidates])


def localise(units: list[Unit], whole: list[Unit], gains: Callable[[list[list[Unit]]], list[float]],
             thresholds: MeasuringParameters) -> tuple[list[Unit], float] | None:
    """The units whose float version gains most, and that gain: the best of the `whole` units and `groups`
    contiguous groups of `units`, halved while the better half still gains `min_gain_db` (interacting units stay
    together). None when no candidate gains that much. `gains` measures a batch of candidates at once."""
    size = max(1, -(-len(units) // thresholds.groups))
    candidates = [units[i:i + size] for i in range(0, len(units), size)] + [[unit] for unit in whole]
    measured = gains(candidates)
    best = int(np.argmax(measured))
    found, gain = candidates[best], measured[best]
    if gain < thresholds.min_gain_db:
        return None
    while len(found) > 1:
        halves = [found[:len(found) // 2], found[len(found) // 2:]]
        half_gains = gains(halves)
        better = int(np.argmax(half_gains))
        if half_gains[better] < thresholds.min_gain_db:
            break
        found, gain = halves[better], half_gains[better]
    return found, gain


class _Budget(Exception):
    """The check measured as many models as it may."""


def check(state: State, healthy_db: float | None = None) -> State:
    """The state with the INT8 model checked and repaired until its worst-output SQNR reaches `healthy_db` (by
    default the thresholds'; accuracy control asks for a stricter bound first)."""
    started = time.perf_counter()
    thresholds = state.options.advanced.measuring
    healthy_db = thresholds.healthy_db if healthy_db is None else healthy_db
    trials = Trials.on_calibration(state, thresholds.samples, "the safety net")
    search = _Search(trials, thresholds)
    before = search.current.sqnr_db
    log.info("Safety net: output SQNR of the INT8 model against FP32 on %d samples: %.1f dB.", len(trials.feeds),
             before)
    repairs: list[Repair] = []
    ended = "healthy"
    units, whole = ([], []) if before >= healthy_db else (units_of(state), rule_units(state))
    try:
        while search.current.sqnr_db < healthy_db:
            if len(repairs) >= thresholds.max_repairs or not units:
                ended = "no quantizer left to try" if not units else "repair limit"
                break
            found = localise(units, whole, search.float_gains, thresholds)
            if found is None:
                ended = f"no candidate gains {thresholds.min_gain_db:g} dB"
                break
            culprits, float_gain = found
            name = " + ".join(unit.name for unit in culprits)
            candidates = [(f.description, f.change()) for f in fixes(state, culprits)]
            fix_gains = search.gains([change for _, change in candidates])
            chosen = next(((what, change, gain) for (what, change), gain in zip(candidates, fix_gains)
                           if gain >= thresholds.fix_share * float_gain), None)
            if chosen is None and len(culprits) > thresholds.max_float_units:
                log.info("Safety net: the error is spread over %d quantizers (%s, %+.1f dB in float): left as it is.",
                         len(culprits), name, float_gain)
                ended = "error spread thin"
                break
            what, change, gain = chosen or ("float", in_float(culprits), float_gain)
            repaired = search.kept | change
            measured = search.measure([repaired])[0]
            if not measured.helps_most_samples(search.current, thresholds.consistent_share):
                log.info("Safety net: %s -> %s gains %+.1f dB on only some samples: left as it is.", name, what, gain)
                ended = "gain on only some samples"
                break
            repairs.append(Repair(name, what, gain, float_gain))
            log.info("Safety net: %s -> %s: %+.1f dB (float: %+.1f dB).", name, what, gain, float_gain)
            search.kept, search.current = repaired, measured
            units = [u for u in units if not any(u.overlaps(c) for c in culprits)]
            whole = [u for u in whole if not any(u.overlaps(c) for c in culprits)]
    except _Budget:
        ended = f"measured {thresholds.max_measurements} models"
    outcome = SafetyNet(len(trials.feeds), before, search.current.sqnr_db, tuple(repairs), trials.compiled,
                        time.perf_counter() - started, ended)
    if trials.compiled > 1:
        log.info("Safety net: %d repairs, output SQNR %.1f -> %.1f dB (%d models measured, %.1f s; ended: %s).",
                 len(repairs), before, outcome.sqnr_after_db, outcome.measurements, outcome.seconds, ended)
    state = replace(state, safety_net=outcome)
    return built(changed(state, search.kept)) if search.kept else state


def _record(state: State) -> dict[str, str]:
    if state.safety_net is None:
        return {}
    return {"safety_net": json.dumps(state.safety_net.record())}


STAGE = Stage("safety net", check, enabled=lambda options: options.advanced.safety_net,
              reductions=lambda state: output_reductions(state.options.advanced.measuring.samples),
              rereads=lambda state: state.options.advanced.measuring.samples, record=_record)
