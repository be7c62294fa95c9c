"""What the stages decide and measure, as plain data: the types a `State` holds.

They live apart from the stages that make them, so that `ovptq.state` imports no stage, and a stage reads another's
results without importing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ovptq.placement.plan import WeightQuantizer
from ovptq.rewrite.edits import ConstantInput, ScaledConstant, Scaling
from ovptq.statistics.reductions import RangeReduction, TensorStatistics


@dataclass(frozen=True)
class QuantizedWeight:
    """A weighted op's int8 weight: `integers` (the weight's shape) times `scale` (per output channel)."""

    quantizer: WeightQuantizer
    source: tuple[str, int]      # the output the weight comes from; ops with the same source share the int8 weight
    integers: np.ndarray
    scale: np.ndarray

    def dequantized(self) -> np.ndarray:
        return np.multiply(self.integers, self.scale, dtype=np.float32)


@dataclass(frozen=True)
class Smoothing:
    """What SmoothQuant decided: edits for the rewrite, the statistics of the rescaled tensors, and its factors."""

    constants: Mapping[tuple[str, int], ConstantInput | ScaledConstant] = field(default_factory=dict)  # (node, port)
    scalings: tuple[Scaling, ...] = ()
    statistics: Mapping[RangeReduction, TensorStatistics] = field(default_factory=dict)  # x's quantizer: of x / s
    input_factors: Mapping[str, np.ndarray] = field(default_factory=dict)   # layer reading x / s -> s
    output_factors: Mapping[str, np.ndarray] = field(default_factory=dict)  # op that took 1/s (outputs y / s) -> s
    where: Mapping[str, str] = field(default_factory=dict)   # quantizer -> the op that took 1/s, or "Multiply"


@dataclass(frozen=True)
class Repair:
    unit: str
    change: str           # "asymmetric range", "global min/max range and 8-bit weights", ..., "float"
    gain_db: float        # output SQNR gained by the change
    float_gain_db: float  # what float would have gained


# What SafetyNet.rounding starts with once the error-feedback candidate was measured, then ": <gain> dB on <n> samples"
ROUNDING_KEPT = "error feedback kept"
ROUNDING_LEFT = "error feedback not kept"


@dataclass(frozen=True)
class SafetyNet:
    """What the check measured, what it changed, and why its search ended."""

    samples: int
    sqnr_before_db: float
    sqnr_after_db: float
    repairs: tuple[Repair, ...] = ()
    measurements: int = 1
    seconds: float = 0.0          # the log's; never in rt_info
    ended: str = "healthy"        # why the search stopped (see `ovptq.measuring.safety_net`)
    cpu: str = ""                 # the CPU whose int8 kernels were measured ("": quantizers emulated, any CPU)
    rounding: str = ""            # what the error-feedback candidate did ("": not measured), ROUNDING_KEPT or _LEFT

    @property
    def rounding_kept(self) -> bool:
        """The model took the error-feedback weights."""
        return self.rounding.startswith(f"{ROUNDING_KEPT}:")

    def record(self) -> dict[str, object]:
        """What rt_info keeps: the same model, data and options give the same record (no wall time)."""
        return {"samples": self.samples, "sqnr_before_db": round(self.sqnr_before_db, 2),
                "sqnr_after_db": round(self.sqnr_after_db, 2), "measurements": self.measurements, "ended": self.ended,
                **({"cpu": self.cpu} if self.cpu else {}), **({"rounding": self.rounding} if self.rounding else {}),
                "repairs": [{"quantizer": r.unit, "change": r.change, "gain_db": round(r.gain_db, 2),
                             "float_gain_db": round(r.float_gain_db, 2)} for r in self.repairs]}


@dataclass(frozen=True)
class SlowLayer:
    """A linear layer of the IR (by name) and its cost in int8 and in float, in ms."""

    layer: str
    int8_ms: float
    float_ms: float


@dataclass(frozen=True)
class SpeedCheck:
    """What the per-layer timing on this CPU decided (ms per inference, one thread), and where it was measured."""

    cpu: str                                # the CPU the decisions hold for: model name and ISA flags
    precision: str                          # the FP32 model's inference precision there
    fp32_ms: float
    int8_ms: float                          # the INT8 model as the earlier stages built it
    final_ms: float                         # after the check
    given_back: tuple[SlowLayer, ...] = ()
    quantizers: tuple[str, ...] = ()        # every activation quantizer given back
    rejected: tuple[str, ...] = ()          # layers (or quantizers) whose return did not pass the margin
    whole: bool = False                     # every quantizer given back: the model runs in float
    replayed: bool = False                  # the decisions came from the speed record, not from timings

    def record(self) -> dict:
        """What rt_info keeps: the decisions and the CPU they hold for, not the times (the log has them)."""
        return {"cpu": self.cpu, "fp32_precision": self.precision, "whole_model_in_float": self.whole,
                "layers": [s.layer for s in self.given_back], "quantizers": list(self.quantizers),
                "kept_after_timing": list(self.rejected)}
