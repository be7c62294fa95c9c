"""Typed options of `ovptq.quantize`: enums that accept their string values, and the advanced parameters."""

from __future__ import annotations

import enum
from os import PathLike
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from ovptq.errors import ParameterError

E = TypeVar("E", bound="StrEnum")


class StrEnum(str, enum.Enum):
    """An enum whose members compare equal to, and are parsed from, their string values (case-insensitive)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls: type[E], value: Any, argument: str) -> E:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for member in cls:
                if value.lower() in (member.value.lower(), member.name.lower()):
                    return member
        valid = ", ".join(repr(m.value) for m in cls)
        raise ParameterError(f"{argument}={value!r} is not valid; use one of {valid} (or {cls.__name__}.<NAME>).")


class QuantizationPreset(StrEnum):
    """PERFORMANCE: symmetric activations. MIXED: asymmetric activations. Weights are always symmetric."""

    PERFORMANCE = "performance"
    MIXED = "mixed"


class TargetDevice(StrEnum):
    """The device the INT8 model is meant for. INT8 rules are the CPU plugin's for all of them."""

    ANY = "ANY"
    CPU = "CPU"
    GPU = "GPU"
    NPU = "NPU"


class DropType(StrEnum):
    """How accuracy control measures a drop: ABSOLUTE fp32 - int8, RELATIVE (fp32 - int8) / |fp32|."""

    ABSOLUTE = "absolute"
    RELATIVE = "relative"


class ModelType(StrEnum):
    TRANSFORMER = "transformer"


class OverflowFix(StrEnum):
    """Weights quantized to 7 bits (half range), to avoid int16 accumulator saturation on CPUs without VNNI."""

    ENABLE = "enable"
    FIRST_LAYER = "first_layer"
    DISABLE = "disable"


class WeightRounding(StrEnum):
    """NEAREST: each int8 weight is its float value over the scale, rounded. ERROR_FEEDBACK: the weights of a
    layer are rounded column by column, each column's error moved onto the later ones by the layer's input
    statistics, so that the layer's output error is smallest (see `ovptq.ranges.rounding`). AUTO: nearest, and when
    the safety net ends with the model still below `healthy_db`, error feedback is measured as its last candidate
    and kept only if it gains `min_gain_db` on the searched and on the held-out feeds."""

    AUTO = "auto"
    NEAREST = "nearest"
    ERROR_FEEDBACK = "error_feedback"


class RangeEstimator(StrEnum):
    """How a tensor's range is estimated from the calibration samples.

    MINMAX: global min and max over all samples.
    MEAN_MINMAX: mean over samples of each sample's min and max.
    MEAN_QUANTILE: mean over samples of each sample's q and 1-q quantiles (q = quantile_outlier_prob).
    """

    MINMAX = "minmax"
    MEAN_MINMAX = "mean_minmax"
    MEAN_QUANTILE = "mean_quantile"


@dataclass(frozen=True)
class AdvancedSmoothQuantParameters:
    """SmoothQuant migration strength per op type: s_j = a_j^alpha / w_j^(1 - alpha); a negative alpha disables it
    for that op type. Convolutions are not smoothed (alpha must stay negative)."""

    matmul: float = 0.95
    convolution: float = -1.0


@dataclass(frozen=True)
class MeasuringParameters:
    """The thresholds of the measuring stages (`ovptq.measuring`), in one place.

    Safety net: the INT8 model's worst-output SQNR against FP32 on `samples` calibration feeds. At `healthy_db` or
    more nothing else is measured. Below, a repair must gain `min_gain_db`, on those feeds and on the `held_out`
    feeds after them, which the search never looked at (the best of many candidates on 8 samples can be luck). A
    cheaper fix than float is kept when it recovers `fix_share` of what float recovers; at most `max_float_units`
    units go to float in one repair, which must lower the error of `consistent_share` of the samples. `groups`
    contiguous groups of units are measured after the transformer rules' unit; the best is halved while a half
    removes `dominant_share` of the noise its set removes (else the error is spread thin). The search measures at
    most `max_measurements` models and makes at most `max_repairs` repairs; with weight_rounding="auto", a model
    still below `healthy_db` after it costs two more (error-feedback weights against the model as it is). A model
    that ends below `warn_db` gets a warning that says what to check.

    Speed check (target_device="CPU"): a linear layer is slower in int8 when its cost exceeds its float cost by
    `slower_margin` and `slower_min_ms`; a change is kept when the rebuilt model is at least `min_speedup` faster
    in every one of `timings` alternating timings and its output SQNR at the default precision falls by at most
    `max_sqnr_loss_db`; up to `speed_rounds` changes are tried; FP32 models under `min_model_ms` are not timed.
    """

    samples: int = 8
    held_out: int = 8
    healthy_db: float = 18.0
    warn_db: float = 10.0
    min_gain_db: float = 1.0
    fix_share: float = 0.8
    max_float_units: int = 4
    consistent_share: float = 0.75
    max_measurements: int = 10
    max_repairs: int = 4
    groups: int = 4
    dominant_share: float = 0.6
    slower_margin: float = 0.10
    slower_min_ms: float = 0.002
    min_speedup: float = 0.03
    timings: int = 3
    max_sqnr_loss_db: float = 0.5
    speed_rounds: int = 3
    min_model_ms: float = 0.1

    def checked(self) -> "MeasuringParameters":
        for name, value in vars(self).items():
            whole = isinstance(getattr(MeasuringParameters, name), int)
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or value < 0:
                kind = "a non-negative integer" if whole else "a non-negative number"
                raise ParameterError(f"advanced_parameters.measuring.{name}={value!r} must be {kind}.")
        for name in ("samples", "groups", "timings", "max_measurements"):
            if getattr(self, name) < 1:
                raise ParameterError(f"advanced_parameters.measuring.{name}={getattr(self, name)!r} must be at "
                                     "least 1.")
        for name in ("fix_share", "consistent_share", "dominant_share", "min_speedup"):
            if not 0 <= getattr(self, name) <= 1:
                raise ParameterError(f"advanced_parameters.measuring.{name}={getattr(self, name)!r} must lie in "
                                     "[0, 1].")
        return self


@dataclass(frozen=True)
class AdvancedQuantizationParameters:
    """Expert options. `None` means the documented default.

    overflow_fix: FIRST_LAYER by default (the first Convolution reached from each model input gets 7-bit weights);
        with target_device="CPU" on an x86 CPU without VNNI or AMX (int8 sums that saturate), ENABLE.
    quantize_outputs: also quantize the tensors that feed model outputs.
    activations_range_estimator: MEAN_MINMAX for per-tensor activations and MINMAX for per-channel ones by default.
    weights_range_estimator: MINMAX (per-channel abs-max) or MEAN_QUANTILE (per-channel |w| quantile 1-q).
    weight_rounding: AUTO (default: nearest, error feedback when the safety net measures it better), NEAREST or
        ERROR_FEEDBACK: the int8 weights of Convolutions and MatMuls chosen by
        their layer's output error on 16 calibration items (WeightRounding).
    quantile_outlier_prob: q of the quantile estimators.
    disable_bias_correction: skip the bias correction step.
    bias_correction_threshold: a bias shift is applied to an output channel when |shift| <= threshold x the
        channel's output magnitude, sum |W[o]| x the input's mean per-sample max |x| (None: 0.25).
    inference_requests: parallel requests of the statistics pass (None: what the CPU plugin finds optimal).
    show_progress: progress bars (None: only when stderr is a terminal and OVPTQ_PROGRESS is not "0").
    smooth_quant: SmoothQuant before quantization (None: on with model_type="transformer", off otherwise).
    smooth_quant_alphas: its alpha per op type (AdvancedSmoothQuantParameters).
    normalize_graph: fuse decomposed activations, normalisations and attention with OpenVINO's own front-end
        passes before placement, so `read_model(onnx)`, `convert_model` and saved IR get the same quantization.
    cross_layer_equalization: even out the channel scales of two convolutions in a row (through a bias, ReLU or
        PReLU) before quantizing, data-free; the network computes the same function (`ovptq.graph.equalize`). Off
        by default: on the corpus it helps some models and costs others (benchmarks/README.md).
    safety_net: after the INT8 model is built, measure its output error against FP32 and repair the quantizers
        that cause most of it (see `ovptq.measuring.safety_net`).
    speed_check: profile the INT8 model per layer against the FP32 model on this machine's CPU and give back to
        float the layers that run slower in int8 (see `ovptq.measuring.speed_check`). None: on with
        target_device="CPU" (an IR for the CPU that quantizes), off otherwise (an IR for any CPU).
    speed_records: the folder where the speed check keeps its decisions, keyed by CPU, OpenVINO and ovptq versions
        and the model, and replays them (None: $OVPTQ_CACHE_DIR/speed_records, else ~/.cache/ovptq/speed_records).
    measuring: the thresholds of the safety net and the speed check (MeasuringParameters).
    statistics_device: the OpenVINO device the statistics pass runs on (f32 inference), e.g. "GPU".
    """

    overflow_fix: OverflowFix | str | None = None
    quantize_outputs: bool = False
    activations_range_estimator: RangeEstimator | str | None = None
    weights_range_estimator: RangeEstimator | str = RangeEstimator.MINMAX
    weight_rounding: WeightRounding | str = WeightRounding.AUTO
    quantile_outlier_prob: float = 1e-4
    disable_bias_correction: bool = False
    bias_correction_threshold: float | None = None
    inference_requests: int | None = None
    show_progress: bool | None = None
    smooth_quant: bool | None = None
    smooth_quant_alphas: AdvancedSmoothQuantParameters = AdvancedSmoothQuantParameters()
    normalize_graph: bool = True
    cross_layer_equalization: bool = False
    safety_net: bool = True
    speed_check: bool | None = None
    speed_records: str | None = None
    measuring: MeasuringParameters = MeasuringParameters()
    statistics_device: str = "CPU"

    def normalized(self) -> "AdvancedQuantizationParameters":
        """A copy with strings parsed into enums and every value checked."""
        overflow = OverflowFix.FIRST_LAYER if self.overflow_fix is None else OverflowFix.parse(
            self.overflow_fix, "advanced_parameters.overflow_fix")
        activations = None if self.activations_range_estimator is None else RangeEstimator.parse(
            self.activations_range_estimator, "advanced_parameters.activations_range_estimator")
        weights = RangeEstimator.parse(self.weights_range_estimator, "advanced_parameters.weights_range_estimator")
        rounding = WeightRounding.parse(self.weight_rounding, "advanced_parameters.weight_rounding")
        if weights == RangeEstimator.MEAN_MINMAX:
            raise ParameterError("advanced_parameters.weights_range_estimator='mean_minmax' makes no sense for "
                                 "weights (there is one weight tensor, not samples); use 'minmax' or 'mean_quantile'.")
        if not isinstance(self.quantile_outlier_prob, float | int) or not 0 < self.quantile_outlier_prob < 0.5:
            raise ParameterError(f"advanced_parameters.quantile_outlier_prob={self.quantile_outlier_prob!r} must be "
                                 "a number in (0, 0.5).")
        if self.inference_requests is not None and (
                not isinstance(self.inference_requests, int) or self.inference_requests < 1):
            raise ParameterError(f"advanced_parameters.inference_requests={self.inference_requests!r} must be a "
                                 "positive integer or None.")
        if self.bias_correction_threshold is not None and (
                isinstance(self.bias_correction_threshold, bool)
                or not isinstance(self.bias_correction_threshold, float | int) or self.bias_correction_threshold < 0):
            raise ParameterError(f"advanced_parameters.bias_correction_threshold={self.bias_correction_threshold!r} "
                                 "must be a non-negative number or None.")
        alphas = self.smooth_quant_alphas
        if not isinstance(alphas, AdvancedSmoothQuantParameters) or not all(
                isinstance(a, float | int) and not isinstance(a, bool) for a in (alphas.matmul, alphas.convolution)):
            raise ParameterError("advanced_parameters.smooth_quant_alphas must be an "
                                 "AdvancedSmoothQuantParameters(matmul=..., convolution=...) of numbers.")
        if alphas.matmul > 1 or alphas.convolution >= 0:
            raise ParameterError(f"advanced_parameters.smooth_quant_alphas={alphas!r}: matmul must be <= 1 (negative "
                                 "disables it) and convolution negative (convolutions are not smoothed).")
        if self.smooth_quant is not None and not isinstance(self.smooth_quant, bool):
            raise ParameterError(f"advanced_parameters.smooth_quant must be True, False or None, not "
                                 f"{self.smooth_quant!r}.")
        if self.show_progress is not None and not isinstance(self.show_progress, bool):
            raise ParameterError(f"advanced_parameters.show_progress must be True, False or None, not "
                                 f"{self.show_progress!r}.")
        if self.speed_check is not None and not isinstance(self.speed_check, bool):
            raise ParameterError(f"advanced_parameters.speed_check must be True, False or None, not "
                                 f"{self.speed_check!r}.")
        if self.speed_records is not None and not isinstance(self.speed_records, str | PathLike):
            raise ParameterError(f"advanced_parameters.speed_records must be a folder path or None, not "
                                 f"{self.speed_records!r}.")
        if not isinstance(self.measuring, MeasuringParameters):
            raise ParameterError("advanced_parameters.measuring must be an ovptq.MeasuringParameters, not "
                                 f"{type(self.measuring).__name__}.")
        for name in ("quantize_outputs", "disable_bias_correction", "normalize_graph", "cross_layer_equalization",
                     "safety_net"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(f"advanced_parameters.{name} must be True or False, "
                                     f"not {getattr(self, name)!r}.")
        if not isinstance(self.statistics_device, str) or not self.statistics_device:
            raise ParameterError(f"advanced_parameters.statistics_device={self.statistics_device!r} must be an "
                                 "OpenVINO device name such as 'CPU' or 'GPU'.")
        return AdvancedQuantizationParameters(
            overflow_fix=overflow, quantize_outputs=self.quantize_outputs,
            activations_range_estimator=activations, weights_range_estimator=weights, weight_rounding=rounding,
            quantile_outlier_prob=float(self.quantile_outlier_prob),
            disable_bias_correction=self.disable_bias_correction,
            bias_correction_threshold=self.bias_correction_threshold,
            inference_requests=self.inference_requests, show_progress=self.show_progress,
            smooth_quant=self.smooth_quant, smooth_quant_alphas=alphas, normalize_graph=self.normalize_graph,
            cross_layer_equalization=self.cross_layer_equalization,
            safety_net=self.safety_net, speed_check=self.speed_check,
            speed_records=None if self.speed_records is None else str(self.speed_records),
            measuring=self.measuring.checked(), statistics_device=self.statistics_device)

    def as_dict(self) -> dict[str, str]:
        """Every option as text, for rt_info; the speed records' folder is where decisions are kept, not an option
        of the quantization (and a home folder differs from machine to machine)."""
        return {f.name: str(v) for f, v in zip(fields(self), asdict(self).values()) if f.name != "speed_records"}
