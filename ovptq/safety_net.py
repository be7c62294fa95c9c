"""The safety net: measure the INT8 model's output error against FP32, find the quantizers that cause most of it,
and repair them. A stage of its own, after the rewrite.

    SQNR = 10 log10(sum y^2 / sum (y - y_q)^2) over the first SAMPLES calibration items, for each float output;
    the check reads the lowest (a VAD's probability counts as much as its large recurrent state)

1. Check: the INT8 model's SQNR. At HEALTHY_DB or above, nothing else is done (one compile of each model).
2. Localise. Every quantizer is a unit: an activation FakeQuantize (the quantizers of one Concat group together)
   or an int8 weight. The units, in model order, form GROUPS contiguous groups; each group in turn goes back to
   float and the SQNR gain is measured. The best group is bisected, keeping the better half while it still gains
   MIN_GAIN_DB, ideally down to one unit. The quantizers the transformer rules would keep float are one more
   candidate, measured whole: they can hurt together while no group of them alone does (basic_pitch).
   Error powers add up to first order, so the gains of the groups a repair did not touch are reused next round.
3. Repair what was found with the cheapest fix that recovers at least FIX_SHARE of the SQNR that float recovers:
   for an activation, an asymmetric range, then the global min/max range, then a range searched between the two;
   weights are already per-channel min/max, so their only fix is float. Else the unit goes back to float.
4. Stop when the SQNR reaches HEALTHY_DB, when no group gains MIN_GAIN_DB, after MAX_REPAIRS repairs, or once
   MAX_MEASUREMENTS models were measured.

Every decision goes to the log and to rt_info (ovptq/safety_net). Every model measured is built by the rewrite
from the stages' edits: the safety net changes the plan and the parameters, never a model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from ovptq import measure
from ovptq.parameters import ModelType
from ovptq.placement.placer import placement_options, plan_quantizers
from ovptq.ranges.activations import state_reductions
from ovptq.ranges.formulas import FQParams, asymmetric_activation, symmetric_activation
from ovptq.rewrite import rewrite
from ovptq.rewrite.rewrite import ModelEdits
from ovptq.state import Stage, State

log = logging.getLogger("ovptq")

SAMPLES = 8           # calibration items the check runs on
HEALTHY_DB = 18.0     # output SQNR at which the INT8 model needs nothing (NNCF INT8 models: 12-19 dB here)
GROUPS = 6            # contiguous groups of units measured first
MIN_GAIN_DB = 1.0     # a group (or unit) worth repairing gains at least this much in float
FIX_SHARE = 0.8       # a cheap fix is kept when it recovers this share of what float recovers
MAX_REPAIRS = 8
MAX_MEASUREMENTS = 16  # compiled models per check, the first one included


@dataclass(frozen=True)
class Unit:
    """What goes back to float, or gets a new range, together: activation quantizers (by name) and int8 weights
    (by layer)."""

    name: str
    activations: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()

    def overlaps(self, other: "Unit") -> bool:
        return bool(set(self.activations) & set(other.activations) or set(self.weights) & set(other.weights))


@dataclass(frozen=True)
class Repair:
    unit: str
    change: str           # "asymmetric range", "global min/max range", "range x0.50 of global", "float"
    gain_db: float        # output SQNR gained by the change
    float_gain_db: float  # what float would have gained


@dataclass(frozen=True)
class SafetyNet:
    """What the check measured and what it changed."""

    samples: int
    sqnr_before_db: float
    sqnr_after_db: float
    repairs: tuple[Repair, ...] = ()
    measurements: int = 1
    seconds: float = 0.0

    def record(self) -> dict[str, object]:
        return {"samples": self.samples, "sqnr_before_db": round(self.sqnr_before_db, 2),
                "sqnr_after_db": round(self.sqnr_after_db, 2), "measurements": self.measurements,
                "repairs": [{"quantizer": r.unit, "change": r.change, "gain_db": round(r.gain_db, 2),
                             "float_gain_db": round(r.float_gain_db, 2)} for r in self.repairs]}


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
    """Units a placement rule names, tried whole and never bisected (their quantizers hurt together): the
    quantizers the transformer rules would keep float (residual Add / Multiply, normalisation and softmax inputs),
    those of a tensor whose every reader loses its quantizer under the rules."""
    if state.options.model_type is ModelType.TRANSFORMER:
        return []
    rules = plan_quantizers(state.graph, dict(state.plan.ignored), placement_options(state, transformer=True))
    still_read = {c for q in rules.activations for c in q.consumers}
    kept_weights = {w.node for w in rules.weights}
    unit = Unit("quantizers the transformer rules keep float",
                tuple(q.name for q in state.plan.activations if not set(q.consumers) & still_read),
                tuple(w.node for w in state.plan.weights if w.node not in kept_weights and not w.embedding))
    return [unit] if unit.activations or unit.weights else []


def in_float(edits: ModelEdits, units: list[Unit]) -> ModelEdits:
    """The edits without the quantizers of `units` (and without the bias corrections of their int8 weights)."""
    activations = {name for unit in units for name in unit.activations}
    weights = {layer for unit in units for layer in unit.weights}
    return replace(edits, activations=tuple(a for a in edits.activations if a[0].name not in activations),
                   weights=tuple(w for w in edits.weights if w.quantizer.node not in weights),
                   biases=tuple(b for b in edits.biases if b.layer not in weights))


def with_ranges(edits: ModelEdits, ranges: dict[str, FQParams]) -> ModelEdits:
    return replace(edits, activations=tuple((q, ranges.get(q.name, p)) for q, p in edits.activations))


class _Meter:
    """Output SQNR of models built from edits, against the FP32 outputs on the check's samples."""

    def __init__(self, state: State):
        self.state = state
        dataset = state.replay if state.replay is not None else state.dataset
        self.feeds = measure.bind(dataset, state.model, SAMPLES)
        self.reference = measure.run(state.core, state.model, self.feeds)
        self.count = 0

    def sqnr(self, edits: ModelEdits) -> float:
        self.count += 1
        got = measure.run(self.state.core, rewrite.apply(self.state.model, edits), self.feeds)
        return measure.worst_output_sqnr(self.reference, got)


def localise(units: list[Unit], gain: Callable[[list[Unit]], float], group_gains: dict[tuple[Unit, ...], float],
             whole: list[Unit] = ()) -> tuple[list[Unit], float] | None:
    """The units whose float version gains most, by group ablation then bisection: the best group is halved while
    one half still gains MIN_GAIN_DB (interacting units stay together). A unit of `whole` is measured as a group of
    its own and, if best, returned as it is. None when nothing gains MIN_GAIN_DB. `group_gains` holds the gains of
    groups measured before, kept across rounds; the caller drops the groups a repair changed."""
    size = max(1, -(-len(units) // GROUPS))
    groups = [tuple(units[i:i + size]) for i in range(0, len(units), size)] + [(unit,) for unit in whole]
    for group in groups:
        if group not in group_gains:
            group_gains[group] = gain(list(group))
    best = max(groups, key=lambda g: group_gains[g])
    if group_gains[best] < MIN_GAIN_DB:
        return None
    candidates, best_gain = list(best), group_gains[best]
    while len(candidates) > 1:
        halves = [candidates[:len(candidates) // 2], candidates[len(candidates) // 2:]]
        gains = [gain(half) for half in halves]
        better = int(np.argmax(gains))
        if gains[better] < MIN_GAIN_DB:
            break
        candidates, best_gain = halves[better], gains[better]
    return candidates, best_gain


def range_fixes(state: State, unit: Unit) -> list[tuple[str, dict[str, FQParams]]]:
    """Cheaper fixes than float for an activation unit, cheapest first: (description, new ranges by quantizer)."""
    if not unit.activations:
        return []
    statistics = state.range_statistics()
    reductions = state_reductions(state)
    by_name = {q.name: q for q in state.plan.activations}
    members = [by_name[name] for name in unit.activations]
    stats = [statistics[reductions[q.name]] for q in members]
    if any(q.per_channel for q in members):
        return []
    mean_low = min(float(np.min(s.mean_min)) for s in stats)
    mean_high = max(float(np.max(s.mean_max)) for s in stats)
    low = min(float(np.min(s.global_min)) for s in stats)
    high = max(float(np.max(s.global_max)) for s in stats)
    symmetric = members[0].symmetric

    def uniform(params: FQParams) -> dict[str, FQParams]:
        return {q.name: params for q in members}

    fixes = []
    if symmetric and low < 0 < high:
        fixes.append(("asymmetric range", uniform(asymmetric_activation(mean_low, mean_high))))
    global_range = (symmetric_activation(low, max(-low, high)) if symmetric and not (low < 0 < high)
                    else asymmetric_activation(low, high))
    fixes.append(("global min/max range", uniform(global_range)))
    return fixes


def _check(state: State) -> State:
    started = time.perf_counter()
    meter = _Meter(state)
    edits = rewrite.edits_of(state)
    before = current = meter.sqnr(edits)
    log.info("Safety net: output SQNR of the INT8 model against FP32 on %d samples: %.1f dB.", len(meter.feeds),
             before)
    repairs: list[Repair] = []
    units, whole = units_of(state), rule_units(state)
    floated: list[Unit] = []
    ranges: dict[str, FQParams] = {}
    group_gains: dict[tuple[Unit, ...], float] = {}
    while current < HEALTHY_DB and len(repairs) < MAX_REPAIRS and units and meter.count < MAX_MEASUREMENTS:
        found = localise(units, lambda part: meter.sqnr(in_float(edits, part)) - current, group_gains, whole)
        if found is None:
            break
        culprits, float_gain = found
        name = " + ".join(unit.name for unit in culprits)
        change, gain, fixed = "float", float_gain, in_float(edits, culprits)
        for description, new_ranges in (range_fixes(state, culprits[0]) if len(culprits) == 1 else []):
            candidate = with_ranges(edits, new_ranges)
            candidate_gain = meter.sqnr(candidate) - current
            if candidate_gain >= FIX_SHARE * float_gain:
                change, gain, fixed = description, candidate_gain, candidate
                ranges.update(new_ranges)
                break
        if change == "float":
            floated.extend(culprits)
        repairs.append(Repair(name, change, gain, float_gain))
        log.info("Safety net: %s -> %s: %+.1f dB (float: %+.1f dB).", name, change, gain, float_gain)
        edits, current = fixed, current + gain
        units = [u for u in units if not any(u.overlaps(c) for c in culprits)]
        whole = [u for u in whole if not any(u.overlaps(c) for c in culprits)]
        group_gains = {g: v for g, v in group_gains.items() if not any(u.overlaps(c) for u in g for c in culprits)}
    outcome = SafetyNet(len(meter.feeds), before, current, tuple(repairs), meter.count,
                        time.perf_counter() - started)
    if repairs:
        log.info("Safety net: %d repairs, output SQNR %.1f -> %.1f dB (%d measurements, %.1f s).", len(repairs),
                 before, current, meter.count, outcome.seconds)
    return _with_repairs(replace(state, safety_net=outcome), floated, ranges)


def _with_repairs(state: State, floated: list[Unit], ranges: dict[str, FQParams]) -> State:
    """The state with the floated units out of the plan and the new ranges in, rebuilt by the rewrite."""
    if not floated and not ranges:
        return replace(state, result=rewrite.apply(state.model, rewrite.edits_of(state)))
    activations = {name for unit in floated for name in unit.activations}
    weights = {layer for unit in floated for layer in unit.weights}
    plan = replace(state.plan, activations=tuple(q for q in state.plan.activations if q.name not in activations),
                   weights=tuple(w for w in state.plan.weights if w.node not in weights))
    correction = state.bias_correction
    if correction is not None:
        correction = replace(correction, changed=correction.changed - weights)
    state = replace(state, plan=plan, activation_ranges=MappingProxyType({**state.activation_ranges, **ranges}),
                    weights=MappingProxyType({k: v for k, v in state.weights.items() if k not in weights}),
                    bias_correction=correction)
    return replace(state, result=rewrite.apply(state.model, rewrite.edits_of(state)))


def _record(state: State) -> dict[str, str]:
    if state.safety_net is None:
        return {}
    return {"safety_net": json.dumps(state.safety_net.record())}


STAGE = Stage("safety net", _check, enabled=lambda options: options.advanced.safety_net,
              rereads=lambda state: SAMPLES, record=_record)
