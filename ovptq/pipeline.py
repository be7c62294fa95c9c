"""The runner of a list of stages (the default list is `ovptq.quantize.DEFAULT_STAGES`), and the one statistics
pass that feeds them.

Each stage is one module (`STAGE` in it) and a pure function of the state (`ovptq.state`). The statistics pass
measures the union of the reductions every enabled stage declares, before the first stage that reads them; with a
statistics file, the union with every option on is measured, so later runs with other options can read it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from ovptq.dataset import Dataset
from ovptq.state import Options, Stage, State
from ovptq.statistics import cache
from ovptq.statistics.collect import collect_statistics, mean_items
from ovptq.statistics.reductions import OutputValues, StatisticsPlan

log = logging.getLogger("ovptq")


def run(state: State, stages: tuple[Stage, ...]) -> State:
    """Run the enabled `stages` in order; stop early when a stage says the work is done (nothing to quantize). Each
    stage's wall time goes to the debug log ("Stage <name>: <seconds> s"), never into the model."""
    state = replace(state, stages=tuple(stages))
    enabled = [stage for stage in stages if stage.enabled(state.options)]
    for position, stage in enumerate(enabled):
        if stage.reads_statistics and state.statistics is None:
            started = time.perf_counter()
            state = statistics_pass(state, enabled[position:], stages)
            log.debug("Stage %s: %.3f s", "statistics pass", time.perf_counter() - started)
        started = time.perf_counter()
        state = stage.run(state)
        log.debug("Stage %s: %.3f s", stage.name, time.perf_counter() - started)
        if state.finished:
            break
    return state


def statistics_plan(stages: list[Stage] | tuple[Stage, ...], state: State) -> StatisticsPlan:
    """The union of the reductions the enabled `stages` declare for `state`."""
    return StatisticsPlan.union([(stage.name, stage.reductions(state)) for stage in stages
                                 if stage.enabled(state.options)])


def statistics_pass(state: State, enabled: list[Stage], every: tuple[Stage, ...]) -> State:
    """The state with the statistics of what `enabled` declares, from one pass or from the statistics file (which
    holds what `every` stage would declare with every option on)."""
    plan = statistics_plan(enabled, state)
    log.debug("%s", plan)
    dataset, replay = _recorded(state, enabled)
    options = state.options
    if options.statistics_path is None:
        statistics, samples = _collect(state, list(plan.reductions), dataset)
    else:
        superset = statistics_plan(every, replace(state, options=options.everything_on()))
        statistics, samples = _from_file(state, dataset, plan, superset)
    return replace(state, statistics=MappingProxyType(statistics), samples=samples, replay=replay)


def _collect(state: State, reductions: list, dataset: Dataset) -> tuple[dict, int]:
    """One statistics pass over the state's model with its options."""
    options = state.options
    return collect_statistics(state.model, reductions, dataset, options.subset_size,
                              options.advanced.inference_requests, options.advanced.show_progress, state.core,
                              mean_items=mean_items(options.subset_size), device=options.advanced.statistics_device)


def _recorded(state: State, stages: list[Stage]) -> tuple[Dataset, Dataset | None]:
    """The dataset for the statistics pass, and the first items again for the stages that read them twice: a
    one-shot dataset (a generator) keeps those items in memory as the pass reads them."""
    wanted = {stage.name: stage.rereads(state) for stage in stages}
    count = max(wanted.values(), default=0)
    if not count or state.dataset.reiterable():
        return state.dataset, None
    names = " and ".join(name for name, n in wanted.items() if n)
    log.info("%s reads its %d items again: keeping them in memory.", names[:1].upper() + names[1:], count)
    recording, kept = state.dataset.recording(count)
    return recording, state.dataset.replay(kept)


def graph_options(options: Options) -> str:
    """The options that change the graph the statistics are measured on, as the statistics file records them."""
    advanced = options.advanced
    return (f"normalize_graph={advanced.normalize_graph}, "
            f"cross_layer_equalization={advanced.cross_layer_equalization}")


def _from_file(state: State, dataset: Dataset, plan: StatisticsPlan, superset: StatisticsPlan) -> tuple[dict, int]:
    """Read the statistics from the file if it exists (checking model and data), else measure the superset and
    write it. The model's outputs (`OutputValues`) are not kept in the file: a run that reads it leaves them to the
    stages that want them (they infer the FP32 model themselves)."""
    options, path = state.options, Path(state.options.statistics_path)
    model_key = cache.model_fingerprint(state.source)
    kept = [r for r in plan.reductions if not isinstance(r, OutputValues)]
    if path.exists():
        statistics, samples = cache.load(path, model_key, cache.data_fingerprint(dataset, options.subset_size),
                                         options.subset_size, kept, graph_options(options))
        log.info("Statistics read from %s (%d samples): no inference pass.", path, samples)
        return statistics, samples
    hashed, hasher = cache.hashing(dataset, options.subset_size)
    statistics, samples = _collect(state, list(dict.fromkeys([*plan.reductions, *superset.reductions])), hashed)
    cache.save(path, model_key, hasher.hexdigest(), options.subset_size, samples,
               {r: v for r, v in statistics.items() if not isinstance(r, OutputValues)}, graph_options(options))
    log.info("Statistics written to %s.", path)
    return {reduction: statistics[reduction] for reduction in plan.reductions}, samples
