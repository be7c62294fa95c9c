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
   for a lone activation quantizer an asymmetric range; then the global min/max range of its activation
   quantizers and full 8-bit weights where the overflow fix halved them. Weights are already per-channel min/max,
   so that is their only fix short of float. Else what was found goes back to float.
4. A repair must lower the error of CONSISTENT_SHARE of the samples, not of an outlier alone, and float no more
   than MAX_FLOAT_UNITS units (the transformer rules' unit counts as one): more is error spread thin, which float
   would buy with many INT8 layers. Else the check stops there. It stops also when the SQNR reaches HEALTHY_DB,
   when no group gains MIN_GAIN_DB, after MAX_REPAIRS repairs, or once MAX_MEASUREMENTS models were measured.

Every decision goes to the log and to rt_info (ovptq/safety_net). Every model measured is built by the rewrite
from the stages' edits: the safety net changes the plan and the parameters, never a model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from ovptq import measure
from ovptq.parameters import ModelType
from ovptq.placement.placer import placement_options, plan_quantizers
from ovptq.ranges.activations import state_reductions
from ovptq.ranges.formulas import FQParams, asymmetric_activation, symmetric_activation
from ovptq.ranges.weights import QuantizedWeight, quantize_weights
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
MAX_FLOAT_UNITS = 4   # more units than this gaining together is spread error, not a bad quantizer: no float
CONSISTENT_SHARE = 0.75  # a repair must lower the error of this share of the samples
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
    change: str           # "asymmetric range", "global min/max range and 8-bit weights", ..., "float"
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
        """What rt_info keeps: the same model, data and options give the same record (no wall time)."""
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
    activations, weights = _members(units)
    return replace(edits, activations=tuple(a for a in edits.activations if a[0].name not in activations),
                   weights=tuple(w for w in edits.weights if w.quantizer.node not in weights),
                   biases=tuple(b for b in edits.biases if b.layer not in weights))


@dataclass(frozen=True)
class Fix:
    """A cheaper change than float: new activation ranges (by quantizer) and new int8 weights (by layer)."""

    description: str
    ranges: Mapping[str, FQParams] = field(default_factory=dict)
    weights: Mapping[str, QuantizedWeight] = field(default_factory=dict)


def _members(units: list[Unit]) -> tuple[set[str], set[str]]:
    """The activation quantizers and the weighted layers of `units`."""
    return ({name for unit in units for name in unit.activations},
            {layer for unit in units for layer in unit.weights})


def with_fix(edits: ModelEdits, fix: Fix) -> ModelEdits:
    """The edits with the fix's ranges and weights; a re-quantized weight's layer keeps its original bias."""
    return replace(edits, activations=tuple((q, fix.ranges.get(q.name, p)) for q, p in edits.activations),
                   weights=tuple(fix.weights.get(w.quantizer.node, w) for w in edits.weights),
                   biases=tuple(b for b in edits.biases if b.layer not in fix.weights))


class _Meter:
    """Output SQNR of models built from edits, against the FP32 outputs on the check's samples; each model's
    per-sample errors are kept, to tell a repair that helps most samples from one that helps an outlier."""

    def __init__(self, state: State):
        self.state = state
        dataset = state.replay if state.replay is not None else state.dataset
        self.feeds = measure.bind(dataset, state.model, SAMPLES, "the safety net")
        self.reference = measure.run(state.core, state.model, self.feeds)
        self.count = 0
        self.errors: dict[tuple, np.ndarray] = {}

    def sqnr(self, edits: ModelEdits) -> float:
        self.count += 1
        got = measure.run(self.state.core, rewrite.apply(self.state.model, edits), self.feeds)
        self.errors[_key(edits)] = measure.sample_errors(self.reference, got)
        return measure.worst_output_sqnr(self.reference, got)

    def measured(self, edits: ModelEdits) -> bool:
        return _key(edits) in self.errors

    def helps_most_samples(self, candidate: ModelEdits, current: ModelEdits) -> bool:
        """The candidate (measured) lowers the error of at least CONSISTENT_SHARE of the samples."""
        better = self.errors[_key(candidate)] < self.errors[_key(current)]
        return float(np.mean(better)) >= CONSISTENT_SHARE


def _key(edits: ModelEdits) -> tuple:
    """What tells two sets of edits apart within one check (their parameters are never copied)."""
    return (tuple((q.name, id(p)) for q, p in edits.activations), tuple(map(id, edits.weights)),
            tuple(map(id, edits.biases)))


def localise(units: list[Unit], gain: Callable[[list[Unit]], float], group_gains: dict[tuple[Unit, ...], float],
             whole: list[Unit] = ()) -> tuple[list[Unit], float] | None:
    """The units whose float version gains most, by group ablation then bisection: the best group is halved while
    one half still gains MIN_GAIN_DB (interacting units stay together). A unit of `whole` is measured as a group of
    its own and, if best, returned as it is. None when nothing gains MIN_GAIN_DB. `group_gains` holds the gains of
    groups measured before, kept across rounds; the caller drops the groups a repair changed.

    Bisection measures one half: the noise power a set removes is, to first order, the sum of what its parts remove,
    so the other half's share of the noise is the group's minus the measured half's. The units found are measured
    at the end if their gain was inferred; when that falls short (the parts interact), the smallest measured set
    that gains MIN_GAIN_DB is returned instead. Every gain returned is measured."""
    size = max(1, -(-len(units) // GROUPS))
    groups = [tuple(units[i:i + size]) for i in range(0, len(units), size)] + [(unit,) for unit in whole]
    for group in groups:
        if group not in group_gains:
            group_gains[group] = gain(list(group))
    best = max(groups, key=lambda g: group_gains[g])
    if group_gains[best] < MIN_GAIN_DB:
        return None
    candidates, best_gain, measured = list(best), group_gains[best], True
    found = (candidates, best_gain)           # the smallest measured set that gains MIN_GAIN_DB
    while len(candidates) > 1:
        first, second = candidates[:len(candidates) // 2], candidates[len(candidates) // 2:]
        first_gain = gain(first)
        if first_gain >= MIN_GAIN_DB:
            found = (first, first_gain)
        removed = _noise_removed(best_gain) - _noise_removed(first_gain)   # the second half's share of the noise
        second_gain = -10 * np.log10(1 - removed) if 0 < removed < 1 else 0.0
        half, half_gain = (first, first_gain) if first_gain >= second_gain else (second, second_gain)
        if half_gain < MIN_GAIN_DB:
            break
        candidates, best_gain, measured = half, half_gain, half is first
    if not measured:
        best_gain = gain(candidates)
        if best_gain >= MIN_GAIN_DB:
            found = (candidates, best_gain)
    return found


def _noise_removed(gain_db: float) -> float:
    """The share of the output noise power that a change gaining `gain_db` removes: 1 - 10^(-gain / 10)."""
    return 1 - 10 ** (-gain_db / 10)


def fixes(state: State, culprits: list[Unit]) -> list[Fix]:
    """Cheaper fixes than float for what localisation found, cheapest first: for a lone two-sided symmetric
    activation quantizer an asymmetric range; then, for all of them at once, the global min/max range of every
    activation quantizer (per-tensor ones) and full 8-bit weights where the overflow fix halved them."""
    statistics, reductions = state.range_statistics(), state_reductions(state)
    by_name = {q.name: q for q in state.plan.activations}
    result = []
    ranges: dict[str, FQParams] = {}
    for unit in culprits:
        members = [by_name[name] for name in unit.activations]
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


def check(state: State, healthy_db: float = HEALTHY_DB) -> State:
    """The state with the INT8 model checked and repaired until its worst-output SQNR reaches `healthy_db` (a
    stricter bound than HEALTHY_DB is what accuracy control asks first)."""
    started = time.perf_counter()
    meter = _Meter(state)
    edits = rewrite.edits_of(state)
    before = current = meter.sqnr(edits)
    log.info("Safety net: output SQNR of the INT8 model against FP32 on %d samples: %.1f dB.", len(meter.feeds),
             before)
    repairs: list[Repair] = []
    healthy = current >= healthy_db  # then the units, and the transformer rules' placement, are not needed
    units, whole = ([], []) if healthy else (units_of(state), rule_units(state))
    floated: list[Unit] = []
    applied: list[Fix] = []
    group_gains: dict[tuple[Unit, ...], float] = {}
    while current < healthy_db and len(repairs) < MAX_REPAIRS and units and meter.count < MAX_MEASUREMENTS:
        found = localise(units, lambda part: meter.sqnr(in_float(edits, part)) - current, group_gains, whole)
        if found is None:
            break
        culprits, float_gain = found
        name = " + ".join(unit.name for unit in culprits)
        change, gain, fixed = "float", float_gain, in_float(edits, culprits)
        if not meter.measured(fixed):  # its gain was measured in an earlier round, before other repairs
            gain = float_gain = meter.sqnr(fixed) - current
            if float_gain < MIN_GAIN_DB:
                break
        chosen = None
        for fix in fixes(state, culprits):
            candidate = with_fix(edits, fix)
            candidate_gain = meter.sqnr(candidate) - current
            log.debug("Safety net: %s with %s: %+.1f dB.", name, fix.description, candidate_gain)
            if candidate_gain >= FIX_SHARE * float_gain:
                change, gain, fixed, chosen = fix.description, candidate_gain, candidate, fix
                break
        if chosen is None and len(culprits) > MAX_FLOAT_UNITS:
            log.info("Safety net: the error is spread over %d quantizers (%s, %+.1f dB in float): left as it is.",
                     len(culprits), name, float_gain)
            break
        if not meter.helps_most_samples(fixed, edits):
            log.info("Safety net: %s -> %s gains %+.1f dB on only some samples: left as it is.", name, change, gain)
            break
        if chosen is not None:
            applied.append(chosen)
        else:
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
    return _with_repairs(replace(state, safety_net=outcome), floated, applied)


def _with_repairs(state: State, floated: list[Unit], applied: list[Fix]) -> State:
    """The state with the floated units out of the plan and the fixes in, rebuilt by the rewrite (only restamped
    when nothing changed)."""
    activations, weights = _members(floated)
    requantized = {layer: w for fix in applied for layer, w in fix.weights.items()}
    ranges = {name: p for fix in applied for name, p in fix.ranges.items()}
    if not (activations or weights or ranges or requantized):
        return replace(state, result=rewrite.restamp(state))
    state = state.without_quantizers(activations, weights)
    plan = replace(state.plan, weights=tuple(requantized[w.node].quantizer if w.node in requantized else w
                                             for w in state.plan.weights))
    correction = state.bias_correction
    if correction is not None:
        correction = replace(correction, changed=correction.changed - set(requantized))
    state = replace(state, plan=plan, bias_correction=correction,
                    activation_ranges=MappingProxyType({**state.activation_ranges, **ranges}),
                    weights=MappingProxyType({**state.weights, **requantized}))
    return replace(state, result=rewrite.apply(state.model, rewrite.edits_of(state)))


def _record(state: State) -> dict[str, str]:
    if state.safety_net is None:
        return {}
    return {"safety_net": json.dumps(state.safety_net.record())}


STAGE = Stage("safety net", check, enabled=lambda options: options.advanced.safety_net,
              rereads=lambda state: SAMPLES, record=_record)
