"""The safety net: measure the INT8 model's output error against FP32, find the quantizers that cause most of it,
and repair them. A stage of its own, after the rewrite.

    SQNR = 10 log10(sum y^2 / sum (y - y_q)^2) over the first `samples` calibration feeds, for each float output;
    the check reads the lowest (a VAD's probability counts as much as its large recurrent state)

The thresholds are `MeasuringParameters` (advanced_parameters.measuring); every model measured is built by the
trial service (`ovptq.measuring.trial`) from a plan change, its quantizers emulated in float unless
target_device="CPU", and the FP32 outputs come from the statistics pass.

1. Check: the INT8 model's SQNR. At `healthy_db` or above, nothing else is done: one compilation, one inference of
   the feeds.
2. Localise. A unit is a linear layer with its int8 weight and the activation quantizers it is the first to read
   (a layer's input and weight errors partly cancel), or an activation quantizer no linear layer reads. First the
   quantizers the transformer rules would keep float, as one unit (they hurt together on basic_pitch, magika and
   silero_vad, while no group of them alone does): if it gains `min_gain_db`, it goes to float. Else `groups`
   contiguous groups of units in model order, measured in one batch; the best must gain `min_gain_db`, else the
   search ends; it is halved while a half still gains that much and holds most of its set's gain, measuring one
   half per step (`localise`). A candidate's gain is the lower of its gains on the searched and on the `held_out`
   feeds (one inference gives both).
3. Repair what was found with the cheapest fix that recovers `fix_share` of what float recovers: for a lone
   activation quantizer an asymmetric range; then the global min/max range of its activation quantizers (and, with
   target_device="CPU", full 8-bit weights where the overflow fix halved them); all fixes in one batch. Else what
   was found goes back to float.
4. A repair must lower the error of `consistent_share` of the samples, not of an outlier alone, gain
   `min_gain_db` on `held_out` feeds that the search never measured too (the best of many candidates on 8 samples
   can be luck: on PP-OCRv5 rec one gained 1.8 dB on them and lost 0.8 dB on 56 others), and float no more
   than `max_float_units` units (the transformer rules' unit counts as one): more is error spread thin, which
   float would buy with many INT8 layers. The search ends there, when the SQNR reaches `healthy_db`, after
   `max_repairs` repairs, or once `max_measurements` models were measured.

5. Still below `healthy_db` at the end (weight_rounding="auto", fast or no bias correction), whatever ended the
   search: the weights are rounded again with error feedback
   (`ovptq.ranges.rounding`), the fast bias correction is made again for them, and both models are measured on all
   the feeds (one candidate named in advance: no search has fitted the held-out ones). It is kept when it gains
   `min_gain_db` there and lowers the error of `consistent_share` of the samples. One early layer's rounding can
   move such a model's output by 5 dB (benchmarks/README.md): this is a measured draw, not a rule. These two models
   come on top of the search's `max_measurements`, so that a search that used its budget (PP-OCRv5 rec at 300
   items) does not decide whether the candidate is measured.

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

from ovptq.bias_correction import fast
from ovptq.hardware import LINEAR_TYPES
from ovptq.measuring.trial import NO_CHANGE, Measurement, PlanChange, Trials, built, changed, output_reductions
from ovptq.outcomes import ROUNDING_KEPT, ROUNDING_LEFT, QuantizedWeight, Repair, SafetyNet
from ovptq.parameters import MeasuringParameters, ModelType, TargetDevice, WeightRounding
from ovptq.ranges import rounding
from ovptq.ranges.activations import state_reductions
from ovptq.ranges.formulas import FQParams, asymmetric_activation, symmetric_activation
from ovptq.ranges.weights import quantize_weights
from ovptq.runtime.cpu import cpu_description
from ovptq.state import Stage, State
from ovptq.wording import counted, health, listed

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
    """The quantizers of the plan in units, in model order: per linear layer, its int8 weight and the activation
    quantizers whose first reader it is (a Concat group's quantizers go together); an activation quantizer that no
    linear layer reads is a unit of its own. A layer's input and weight errors partly cancel, so they are tried
    together."""
    graph, plan = state.graph, state.plan
    linear = {w.node for w in plan.weights if not w.embedding}
    linear |= {c.node for q in plan.activations for c in q.consumers if graph.type(c.node) in LINEAR_TYPES}
    members: dict[str, tuple[list[str], list[str]]] = {}  # unit key -> (activation quantizers, weighted layers)
    first: dict[str, int] = {}
    by_group: dict[int, str] = {}
    for q in plan.activations:
        readers = sorted((c.node for c in q.consumers), key=graph.order_index)
        layers = [node for node in readers if node in linear]
        key = by_group.get(q.group) if q.group is not None else None
        key = key or (layers[0] if layers else f"{q.name}")
        if q.group is not None:
            by_group.setdefault(q.group, key)
        members.setdefault(key, ([], []))[0].append(q.name)
        first[key] = min(first.get(key, graph.order_index(readers[0])), graph.order_index(readers[0]))
    for w in plan.weights:
        if not w.embedding:
            members.setdefault(w.node, ([], []))[1].append(w.node)
            first[w.node] = min(first.get(w.node, graph.order_index(w.node)), graph.order_index(w.node))
    return [Unit(key, tuple(members[key][0]), tuple(members[key][1]))
            for key in sorted(members, key=lambda k: (first[k], k))]


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
    activation quantizer (per-tensor ones) and, with target_device="CPU", full 8-bit weights where the overflow fix
    halved them."""
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
    # 8-bit weights only where the trials run this CPU's kernels (target_device="CPU"): the overflow fix halves the
    # first layers' weights for CPUs without VNNI, whose kernels saturate 16-bit sums of u8 x i8 pairs; emulated
    # trials cannot see that saturation (mtcnn_onet's first layer back at 8 bits measured +5 dB emulated, and its
    # accuracy fell from 0.93 to 0.82 on such a CPU)
    halved = [w for unit in culprits for w in state.plan.weights if w.node in unit.weights and w.half_range] \
        if state.options.target_device is TargetDevice.CPU else []
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

    def gains(self, changes: list[PlanChange]) -> list[float]:
        """The SQNR each change gains on top of the kept repairs (measured in one batch): the lower of its gains on
        the searched and on the held-out samples, so that a search follows what holds beyond the samples it looks
        at (the held-out feeds run in the same inference)."""
        measured = self.measure([self.kept | c for c in changes])
        self.current = self.trials.complete(self.kept)
        return [min(m.sqnr_db - self.current.sqnr_db, m.held_out_db - self.current.held_out_db)
                if np.isfinite(m.held_out_db) else m.sqnr_db - self.current.sqnr_db for m in measured]

    def measure(self, changes: list[PlanChange]) -> list[Measurement]:
        """The changes measured, unless the new ones would take the check past `max_measurements` (`_Budget`)."""
        room = self.thresholds.max_measurements - self.trials.compiled
        fresh = [c for c in changes if not self.trials.measured(c)]
        if len(fresh) > room:
            raise _Budget
        return self.trials.measure_all(changes)

    def float_gains(self, candidates: list[list[Unit]]) -> list[float]:
        return self.gains([in_float(c) for c in candidates])

    def doubt(self, change: PlanChange) -> str | None:
        """Why a change that gains `min_gain_db` on the samples searched is not to be kept, or None: it must lower
        the error of `consistent_share` of them, and gain `min_gain_db` on the held-out samples too."""
        measured = self.measure([self.kept | change])[0]
        if not measured.helps_most_samples(self.current, self.thresholds.consistent_share):
            return "gain on only some samples"
        self.current = self.trials.complete(self.kept)
        held_out_gain = measured.held_out_db - self.current.held_out_db
        log.debug("Safety net: %+.2f dB on the held-out samples.", held_out_gain)
        if held_out_gain < self.thresholds.min_gain_db:
            return "gain not confirmed on held-out samples"
        return None

    def float_doubt(self, units: list[Unit]) -> str | None:
        return self.doubt(in_float(units))


def localise(units: list[Unit], whole: list[Unit], gains: Callable[[list[list[Unit]]], list[float]],
             thresholds: MeasuringParameters, doubt: Callable[[list[Unit]], str | None] = lambda units: None
             ) -> tuple[list[Unit], float] | None:
    """The units whose float version gains most, and that gain, by group ablation and bisection. None when nothing
    gains `min_gain_db`. `gains` measures a batch of candidates (lists of units) at once.

    First the `whole` units (the transformer rules' quantizers), each alone: one that gains `min_gain_db` is taken
    as it is (it needs no bisection). Else `groups` contiguous groups of `units` in one batch; the best is halved
    while a half still gains `min_gain_db` and removes `dominant_share` of the noise its set removes (else the error
    is spread over the set), measuring the first half of each step: the noise power a set removes is, to first
    order, the sum of what its parts remove, so the second half's share is the group's minus the first half's. Errors partly cancel, so a gain inferred that way is measured before it is returned; when it falls
    short, the smallest measured set that gains `min_gain_db` is returned instead. Before it is bisected, the best
    group must pass `doubt` (its gain holds on most samples and on held-out ones); else nothing within it would, and
    the search ends (`_Ended`) without the bisection."""
    if whole:
        whole_gains = gains([[unit] for unit in whole])
        best = int(np.argmax(whole_gains))
        if whole_gains[best] >= thresholds.min_gain_db:
            return [whole[best]], whole_gains[best]
    if not units:
        return None
    size = max(1, -(-len(units) // thresholds.groups))
    groups = [units[i:i + size] for i in range(0, len(units), size)]
    group_gains = gains(groups)
    best = int(np.argmax(group_gains))
    if group_gains[best] < thresholds.min_gain_db:
        return None
    candidates, best_gain, measured = groups[best], group_gains[best], True
    if len(candidates) > 1 and (reason := doubt(candidates)) is not None:
        raise _Ended(f"{reason} (the best group)")
    found = (candidates, best_gain)           # the smallest measured set that gains min_gain_db
    while len(candidates) > 1:
        first, second = candidates[:len(candidates) // 2], candidates[len(candidates) // 2:]
        [first_gain] = gains([first])
        if first_gain >= thresholds.min_gain_db:
            found = (first, first_gain)
        removed = _noise_removed(best_gain) - _noise_removed(first_gain)   # the second half's share of the noise
        second_gain = -10 * np.log10(1 - removed) if 0 < removed < 1 else 0.0
        half, half_gain = (first, first_gain) if first_gain >= second_gain else (second, second_gain)
        if half_gain < thresholds.min_gain_db or \
                _noise_removed(half_gain) < thresholds.dominant_share * _noise_removed(best_gain):
            break   # neither half holds most of the gain: the error is spread over the set
        candidates, best_gain, measured = half, half_gain, half is first
    if not measured:
        [best_gain] = gains([candidates])
        if best_gain >= thresholds.min_gain_db:
            found = (candidates, best_gain)
    return found


def _noise_removed(gain_db: float) -> float:
    """The share of the output noise power that a change gaining `gain_db` removes: 1 - 10^(-gain / 10)."""
    return 1 - 10 ** (-gain_db / 10)


class _Ended(Exception):
    """The search ends, for the reason given."""


class _Budget(_Ended):
    """The check measured as many models as it may."""


def check(state: State, healthy_db: float | None = None) -> State:
    """The state with the INT8 model checked and repaired until its worst-output SQNR reaches `healthy_db` (by
    default the thresholds'; accuracy control asks for a stricter bound first)."""
    started = time.perf_counter()
    thresholds = state.options.advanced.measuring
    healthy_db = thresholds.healthy_db if healthy_db is None else healthy_db
    trials = Trials.on_calibration(state, thresholds.samples, "the safety net", thresholds.held_out)
    search = _Search(trials, thresholds)
    before = search.current.sqnr_db
    searched = len(trials.feeds) - trials.held_out
    log.info("Safety net: output SQNR of the INT8 model against FP32 on %d samples: %.1f dB, %s.", searched, before,
             health(before, healthy_db))
    repairs: list[Repair] = []
    ended = "healthy"
    units, whole = ([], []) if before >= healthy_db else (units_of(state), rule_units(state))
    try:
        while search.current.sqnr_db < healthy_db:
            if len(repairs) >= thresholds.max_repairs or not units:
                ended = "no quantizer left to try" if not units else "repair limit"
                break
            found = localise(units, whole, search.float_gains, thresholds, search.float_doubt)
            if found is None:
                ended = f"no candidate gains {thresholds.min_gain_db:g} dB"
                break
            culprits, float_gain = found
            name = " + ".join(unit.name for unit in culprits)
            shown = listed((unit.name for unit in culprits), " + ")
            if shown != name:
                log.debug("Safety net: the candidate's quantizers: %s", name)
            # the transformer rules' unit goes to float as a whole: it is what those rules would have done
            candidates = [] if culprits[0] in whole else [(f.description, f.change()) for f in fixes(state, culprits)]
            try:
                fix_gains = search.gains([change for _, change in candidates])
            except _Budget:  # no room left to measure fixes: float, measured already, is what can be kept
                candidates, fix_gains = [], []
            chosen = next(((what, change, gain) for (what, change), gain in zip(candidates, fix_gains)
                           if gain >= thresholds.fix_share * float_gain), None)
            if chosen is None and len(culprits) > thresholds.max_float_units:
                log.info("Safety net: the error is spread over %d quantizers (%s, %+.1f dB in float): left as it is.",
                         len(culprits), shown, float_gain)
                ended = "error spread thin"
                break
            what, change, gain = chosen or ("float", in_float(culprits), float_gain)
            reason = search.doubt(change)
            if reason is not None:
                log.info("Safety net: %s -> %s gains %+.1f dB, but %s: left as it is.", shown, what, gain, reason)
                ended = reason
                break
            repaired = search.kept | change
            measured = search.measure([repaired])[0]
            repairs.append(Repair(name, what, gain, float_gain))
            log.info("Safety net: %s -> %s: %+.1f dB (float: %+.1f dB).", shown, what, gain, float_gain)
            search.kept, search.current = repaired, measured
            units = [u for u in units if not any(u.overlaps(c) for c in culprits)]
            whole = [u for u in whole if not any(u.overlaps(c) for c in culprits)]
    except _Budget:
        ended = f"measured {thresholds.max_measurements} models"
    except _Ended as stop:
        ended = str(stop)
        log.info("Safety net: search ended: %s.", ended)
    result = built(changed(state, search.kept)) if search.kept else state
    rounding_outcome = ""
    if search.current.sqnr_db < healthy_db and _tries_error_feedback(state):
        result, rounding_outcome, search.current = _error_feedback_candidate(result, search, trials, thresholds)
    outcome = SafetyNet(searched, before, search.current.sqnr_db, tuple(repairs), trials.compiled,
                        time.perf_counter() - started, ended, "" if trials.emulated else cpu_description(),
                        rounding_outcome)
    if trials.compiled > 1:
        log.info("Safety net: %s, output SQNR %.1f -> %.1f dB, %s (%d models measured, %.1f s; ended: %s).",
                 counted(len(repairs), "repair"), before, outcome.sqnr_after_db,
                 health(outcome.sqnr_after_db, healthy_db), outcome.measurements, outcome.seconds, ended)
    if outcome.sqnr_after_db < thresholds.warn_db:
        log.warning("The INT8 model's output is far from FP32's: SQNR %.1f dB on %d calibration samples (below "
                    "%g dB). Check that the calibration items are what the model sees in use (one kind of input, "
                    "the same preprocessing as at inference), then measure your metric: if it holds, nothing is "
                    "wrong; if not, try more items, fast_bias_correction=False, or "
                    "ovptq.quantize_with_accuracy_control.", outcome.sqnr_after_db, searched, thresholds.warn_db)
    return replace(result, safety_net=outcome)


def _tries_error_feedback(state: State) -> bool:
    options = state.options
    return (options.advanced.weight_rounding is WeightRounding.AUTO and bool(state.weights)
            and (options.fast_bias_correction or not options.bias_correction))


def _error_feedback_candidate(state: State, search: "_Search", trials: Trials,
                              thresholds: MeasuringParameters) -> tuple[State, str, Measurement]:
    """(the state to keep, what was done, its measurement): the state with its weights rounded with error feedback
    and their fast bias correction, when that measures better by the margins, else `state` as it was."""
    candidate = rounding.with_error_feedback(state)
    if not rounding.rerounded(candidate.rounding):
        return state, "", search.current   # no layer it may re-round, or none rounded better
    if state.options.bias_correction:
        candidate = fast.STAGE.run(candidate)
    candidate = built(candidate)
    current, measured = (trials.measure_everywhere(s.result) for s in (state, candidate))
    gain = measured.sqnr_db - current.sqnr_db
    kept = gain >= thresholds.min_gain_db and measured.helps_most_samples(current, thresholds.consistent_share)
    what = f"{ROUNDING_KEPT if kept else ROUNDING_LEFT}: {gain:+.1f} dB on {len(trials.feeds)} samples"
    log.info("Safety net: weights rounded with error feedback: output SQNR %.1f -> %.1f dB on %d samples: %s.",
             current.sqnr_db, measured.sqnr_db, len(trials.feeds), "kept" if kept else "left as it was")
    return (candidate, what, measured) if kept else (state, what, search.current)


def _record(state: State) -> dict[str, str]:
    if state.safety_net is None:
        return {}
    return {"safety_net": json.dumps(state.safety_net.record())}


def _feeds(state: State) -> int:
    return state.options.advanced.measuring.samples + state.options.advanced.measuring.held_out


def _rereads(state: State) -> int:
    """The feeds the check binds, and the items error feedback's second moments read when it may be tried."""
    tries = state.options.advanced.weight_rounding is WeightRounding.AUTO
    return max(_feeds(state), rounding.ROUNDING_SAMPLES if tries else 0)


STAGE = Stage("safety net", check, enabled=lambda options: options.advanced.safety_net,
              reductions=lambda state: output_reductions(_feeds(state)), rereads=_rereads, record=_record)
