"""The trial service of the measuring stages: a plan change in, a rebuilt and measured model out.

A measuring stage (the safety net, the speed check, accuracy control) never edits a model and never re-runs
placement. It says what it wants to try as a `PlanChange` (quantizers back in float, new ranges, new int8 weights);
`changed(state, change)` is the state with that change in its plan and parameters, and `built(state)` has the
rewrite build its model from the edits. `Trials` measures changes of one state against FP32 on a few feeds:

    SQNR = 10 log10(sum y^2 / sum (y - y_q)^2) per float output over the feeds; a trial reads the lowest

The FP32 outputs on the first calibration feeds come from the statistics pass (`OutputValues`), so checking a
healthy model costs one compilation and one inference of its feeds. Each change is built and compiled once; two
are built, compiled and run at a time when the model is small enough (a compilation does not keep both cores busy:
four trials of PP-OCRv4 rec took 1.9 s this way and 2.2 s one after the other).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np
import openvino as ov

from ovptq.measuring import measure
from ovptq.outcomes import QuantizedWeight
from ovptq.parameters import TargetDevice
from ovptq.ranges.formulas import FQParams
from ovptq.rewrite import rewrite
from ovptq.state import State
from ovptq.statistics.compile import constant_bytes
from ovptq.statistics.reductions import OutputValues

# Models with at most this many bytes of constants get two trials compiled at once (two copies of their weights
# in memory); larger ones one at a time.
CONCURRENT_TRIAL_BYTES = 256 << 20


@dataclass(frozen=True)
class PlanChange:
    """What a measuring stage tries: activation quantizers back in float (`floated`), int8 weights back in float
    (`floated_weights`, by layer: their bias corrections are undone), new activation ranges (`ranges`, by
    quantizer) and new int8 weights (`requantized`, by layer: such a layer keeps its FP32 bias)."""

    floated: frozenset[str] = frozenset()
    floated_weights: frozenset[str] = frozenset()
    ranges: Mapping[str, FQParams] = field(default_factory=dict)
    requantized: Mapping[str, QuantizedWeight] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "floated", frozenset(self.floated))
        object.__setattr__(self, "floated_weights", frozenset(self.floated_weights))
        object.__setattr__(self, "ranges", MappingProxyType(dict(self.ranges)))
        object.__setattr__(self, "requantized", MappingProxyType(dict(self.requantized)))

    def __bool__(self) -> bool:
        return bool(self.floated or self.floated_weights or self.ranges or self.requantized)

    def __or__(self, other: "PlanChange") -> "PlanChange":
        """Both changes; where both give a quantizer a new range or weight, `other`'s wins."""
        return PlanChange(self.floated | other.floated, self.floated_weights | other.floated_weights,
                          {**self.ranges, **other.ranges}, {**self.requantized, **other.requantized})

    def key(self) -> tuple:
        """What tells two changes apart: names, and the bytes of new parameters."""
        return (tuple(sorted(self.floated)), tuple(sorted(self.floated_weights)),
                tuple(sorted((name, _digest(p.low, p.high, p.levels)) for name, p in self.ranges.items())),
                tuple(sorted((name, _digest(w.integers, w.scale, w.quantizer.half_range))
                             for name, w in self.requantized.items())))


NO_CHANGE = PlanChange()


def _digest(*values) -> str:
    digest = hashlib.sha256()
    for value in values:
        digest.update(np.ascontiguousarray(value).tobytes() if isinstance(value, np.ndarray) else repr(value).encode())
    return digest.hexdigest()


def changed(state: State, change: PlanChange) -> State:
    """The state with `change` in its plan, parameters and bias corrections; its model is not built (`built`)."""
    if not change:
        return state
    plan = state.plan
    weights = {**state.weights, **change.requantized}
    plan = replace(plan, activations=tuple(q for q in plan.activations if q.name not in change.floated),
                   weights=tuple(weights[w.node].quantizer for w in plan.weights
                                 if w.node not in change.floated_weights))
    correction = state.bias_correction
    if correction is not None:
        correction = replace(correction, changed=correction.changed - change.floated_weights - set(change.requantized))
    return replace(state, plan=plan, bias_correction=correction, result=None,
                   activation_ranges=MappingProxyType({**state.activation_ranges, **change.ranges}),
                   weights=MappingProxyType({k: v for k, v in weights.items() if k not in change.floated_weights}))


def built(state: State) -> State:
    """The state with its INT8 model built by the rewrite (a new model: no earlier state's model is touched)."""
    return replace(state, result=rewrite.apply(state.model, rewrite.edits_of(state)))


@dataclass(frozen=True)
class Measurement:
    """A model's worst-output SQNR against FP32 on the trial feeds, its SQNR over every output pooled, and its
    per-sample errors (each output's squared error over that output's mean power, summed over outputs); and its
    worst-output SQNR on the held-out feeds, which no decision is searched on (inf when there are none)."""

    sqnr_db: float
    pooled_db: float
    errors: np.ndarray
    held_out_db: float = float("inf")

    def helps_most_samples(self, than: "Measurement", share: float) -> bool:
        """This model's error is lower than `than`'s on at least `share` of the samples."""
        return float(np.mean(self.errors < than.errors)) >= share


class Trials:
    """Plan changes of one state, each built, compiled (CPU, f32) and measured once against the FP32 outputs on
    `feeds`. `compiled` counts the models compiled.

    For target_device="CPU" a model runs on this CPU's int8 kernels; otherwise its quantizers are emulated in float
    (`measure.EMULATED`), so that the decisions hold for any device: what the IR computes does not depend on the
    CPU that quantized it (without VNNI, this CPU's kernels add 16-bit saturation that others do not have).
    `on_this_cpu` runs them on this CPU's kernels whatever the target, for a caller whose decisions are taken on
    this CPU anyway (accuracy control: validation_fn runs the model here)."""

    def __init__(self, state: State, feeds: list[dict], reference: list[list[np.ndarray]], held_out: int = 0,
                 on_this_cpu: bool = False):
        self.state = state
        self.feeds = feeds
        self.reference = reference
        self.held_out = min(held_out, max(0, len(feeds) - 1))  # the last feeds: a confirmation, not a search
        self.emulated = not on_this_cpu and state.options.target_device is not TargetDevice.CPU
        self.compiled = 0
        self._measured: dict[tuple, Measurement] = {}
        self._workers = 2 if constant_bytes(state.model) <= CONCURRENT_TRIAL_BYTES else 1
        self._unchanged: ov.CompiledModel | None = None   # the model as built: its held-out feeds run when asked

    @staticmethod
    def on_calibration(state: State, samples: int, reader: str, held_out: int = 0) -> "Trials":
        """Trials on the first `samples` calibration feeds, and `held_out` feeds after them (`reader` names the stage
        in errors). The FP32 outputs are the statistics pass's when it kept them for these feeds, else one FP32
        inference."""
        dataset = state.replay if state.replay is not None else state.dataset
        feeds = measure.bind(dataset, state.model, samples + held_out, reader)
        reference = recorded_outputs(state, len(feeds)) or measure.run(state.core, state.model, feeds)
        return Trials(state, feeds, reference, held_out if len(feeds) > samples else 0)

    def measure(self, change: PlanChange = NO_CHANGE) -> Measurement:
        return self.measure_all([change])[0]

    def measure_all(self, changes: Sequence[PlanChange]) -> list[Measurement]:
        """Each change measured (once: a change measured before is not built again), two compiled at a time."""
        missing = list({change.key(): change for change in changes if change.key() not in self._measured}.values())
        if len(missing) > 1 and self._workers > 1:
            with ThreadPoolExecutor(self._workers) as pool:
                results = list(pool.map(self._measure, missing))
        else:
            results = [self._measure(change) for change in missing]
        for change, result in zip(missing, results):
            self._measured[change.key()] = result
        self.compiled += len(missing)
        return [self._measured[change.key()] for change in changes]

    def measured(self, change: PlanChange) -> bool:
        return change.key() in self._measured

    def complete(self, change: PlanChange) -> Measurement:
        """The change's measurement with its held-out SQNR: the model as built is measured on the searched feeds
        first (a healthy model needs no more), and on the held-out ones only when a repair is weighed against it."""
        measured = self.measure(change)
        if change or not np.isnan(measured.held_out_db):
            return measured
        got = measure.run_compiled(self._unchanged, self.feeds[self._searched:])
        measured = replace(measured, held_out_db=measure.worst_output_sqnr(
            [r[self._searched:] for r in self.reference], got))
        self._measured[change.key()] = measured
        self._unchanged = None
        return measured

    def measure_everywhere(self, model: ov.Model) -> Measurement:
        """A model (built outside the plan changes: other int8 weights and biases) measured on every feed, held-out
        ones included: for one candidate chosen before any measurement, which no search can have fitted to them."""
        self.compiled += 1
        return _measurement(self.reference, measure.run(self.state.core, model, self.feeds, self.emulated))

    def score(self, compiled: ov.CompiledModel) -> Measurement:
        """A model compiled elsewhere (the speed check's, at the default precision) measured on the trial feeds."""
        return self._score(measure.run_compiled(compiled, self.feeds))

    @property
    def _searched(self) -> int:
        """How many feeds, from the first, the search looks at: all but the held-out ones."""
        return len(self.feeds) - self.held_out

    def _measure(self, change: PlanChange) -> Measurement:
        if not change and self.held_out:
            self._unchanged = measure.compile_f32(self.state.core, self.state.result, self.emulated)
            got = measure.run_compiled(self._unchanged, self.feeds[:self._searched])
            return replace(self._score(got, searched=True), held_out_db=float("nan"))
        model = built(changed(self.state, change)).result if change else self.state.result
        return self._score(measure.run(self.state.core, model, self.feeds, self.emulated))

    def _score(self, got: list[list[np.ndarray]], searched: bool = False) -> Measurement:
        """The measurement of outputs on every feed (or, with `searched`, on the searched feeds only)."""
        search = self._searched
        held_out = measure.worst_output_sqnr([r[search:] for r in self.reference], [g[search:] for g in got]) \
            if self.held_out and not searched else float("inf")
        return replace(_measurement([r[:search] for r in self.reference], [g[:search] for g in got]),
                       held_out_db=held_out)


def _measurement(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> Measurement:
    """Worst-output SQNR, pooled SQNR and per-sample errors of `got` against `reference` (no held-out feeds)."""
    return Measurement(measure.worst_output_sqnr(reference, got), measure.output_sqnr(reference, got),
                       measure.sample_errors(reference, got))


def recorded_outputs(state: State, feeds: int) -> list[list[np.ndarray]] | None:
    """The FP32 model's outputs on the first `feeds` feeds as the statistics pass kept them (f32, on the CPU), or
    None when it did not keep them for that many."""
    if state.options.advanced.statistics_device != "CPU" or not state.statistics:
        return None
    for reduction, outputs in state.statistics.items():
        if isinstance(reduction, OutputValues) and outputs and len(outputs[0]) >= feeds:
            return [values[:feeds] for values in outputs]
    return None


def output_reductions(samples: int) -> list[OutputValues]:
    """What a stage that builds `Trials.on_calibration(state, samples, ...)` declares to the statistics pass."""
    return [OutputValues(samples)]
