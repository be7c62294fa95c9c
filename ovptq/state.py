"""What the stages of the pipeline share: the parsed options, the state they read, and the shape of a stage.

Every stage is a pure function from one `State` to the next: it reads what earlier stages left (model, graph,
plan, statistics, parameters, records) and returns a copy with its own results added. Nothing in a state is
changed in place: the plan, the statistics and the FP32 model stay as they were, and only the rewrite stage
builds the INT8 model, on a fresh clone, from the edits the stages describe as data.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import openvino as ov

from ovptq.bias_correction.correct import BiasCorrection
from ovptq.dataset import Dataset
from ovptq.graph.graph import Graph
from ovptq.outcomes import QuantizedWeight, SafetyNet, Smoothing, SpeedCheck
from ovptq.parameters import AdvancedQuantizationParameters, ModelType, QuantizationPreset, TargetDevice
from ovptq.placement.plan import QuantizationPlan
from ovptq.ranges.formulas import FQParams
from ovptq.scope import IgnoredScope


@dataclass(frozen=True)
class Options:
    """Every argument of `ovptq.quantize`, checked, with enums parsed and defaults filled in."""

    preset: QuantizationPreset
    target_device: TargetDevice
    subset_size: int
    fast_bias_correction: bool
    model_type: ModelType | None
    ignored_scope: IgnoredScope | None
    advanced: AdvancedQuantizationParameters
    statistics_path: Path | None = None

    @property
    def bias_correction(self) -> bool:
        return not self.advanced.disable_bias_correction

    @property
    def smooth_quant(self) -> bool:
        """SmoothQuant: on by default with model_type="transformer"; a negative MatMul alpha turns it off."""
        enabled = self.advanced.smooth_quant
        if enabled is None:
            enabled = self.model_type is ModelType.TRANSFORMER
        return enabled and self.advanced.smooth_quant_alphas.matmul >= 0

    def everything_on(self) -> "Options":
        """These options with every statistics-reading step on (SmoothQuant, full bias correction): what a
        statistics file measures, so that later runs with other options can read it."""
        advanced = replace(self.advanced, disable_bias_correction=False, smooth_quant=True)
        if advanced.smooth_quant_alphas.matmul < 0:
            advanced = replace(advanced, smooth_quant_alphas=type(advanced.smooth_quant_alphas)())
        return replace(self, fast_bias_correction=False, advanced=advanced)


@dataclass(frozen=True)
class State:
    """The pipeline's state: what `quantize.start` sets up, then what each stage adds, in pipeline order."""

    options: Options
    core: ov.Core
    source: ov.Model                # the caller's model: read only
    model: ov.Model                 # ovptq's FP32 copy of it, every op name unique: read only
    graph: Graph                    # of `model`
    dataset: Dataset                # the calibration data
    renamed: Mapping[str, str] = field(default_factory=dict)  # de-duplicated op name -> the caller's name
    stages: tuple[Stage, ...] = ()               # the pipeline being run
    plan: QuantizationPlan = QuantizationPlan()
    statistics: Mapping | None = None            # reduction -> its value, from the one statistics pass
    samples: int = 0                             # calibration samples the statistics pass saw
    replay: Dataset | None = None                # the first items again, for stages that read them twice
    smoothing: Smoothing | None = None
    activation_ranges: Mapping[str, FQParams] = field(default_factory=dict)  # quantizer -> FakeQuantize parameters
    weights: Mapping[str, QuantizedWeight] = field(default_factory=dict)     # weighted op -> its int8 weight
    rounding: tuple[dict, ...] = ()              # weight rounding: each layer's output error before and after
    bias_correction: BiasCorrection | None = None
    result: ov.Model | None = None               # the INT8 model (or, with nothing to quantize, a copy)
    safety_net: SafetyNet | None = None          # what the check of the INT8 model measured and repaired
    speed_check: SpeedCheck | None = None        # what the per-layer timing measured and gave back to float
    finished: bool = False                       # nothing more to do: the pipeline stops

    def range_statistics(self) -> Mapping:
        """The statistics as the quantizers see them: those of x / s where SmoothQuant rescaled a tensor x."""
        overrides = self.smoothing.statistics if self.smoothing is not None else {}
        return ChainMap(dict(overrides), self.statistics or {})


def _no_reductions(state: State) -> list:
    return []


def _always(options: Options) -> bool:
    return True


def _no_rereads(state: State) -> int:
    return 0


def _no_record(state: State) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    `run(state)` returns the state with the stage's results. `reductions(state)` lists the statistics it reads,
    given the plan; the statistics pass measures the union of every enabled stage's list, once, before the first
    stage that reads any. `enabled(options)` says whether the options turn the stage on. `rereads(state)` is the
    number of first calibration items it reads again (kept in memory when the dataset is one-shot). `record(state)`
    is what the INT8 model's rt_info keeps of the stage's results, under ovptq/<key> (also when it did not run).
    """

    name: str
    run: Callable[[State], State]
    reductions: Callable[[State], list] = _no_reductions
    enabled: Callable[[Options], bool] = _always
    rereads: Callable[[State], int] = _no_rereads
    record: Callable[[State], dict[str, str]] = _no_record

    @property
    def reads_statistics(self) -> bool:
        return self.reductions is not _no_reductions
