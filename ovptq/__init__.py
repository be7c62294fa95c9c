"""ovptq: post-training INT8 quantization for OpenVINO models.

    import ovptq
    int8_model = ovptq.quantize(model, ovptq.Dataset(data, transform_fn))
"""

from ovptq.version import __version__  # noqa: F401
from ovptq import errors  # noqa: E402
from ovptq.dataset import Dataset  # noqa: E402
from ovptq.runtime.inspect import Int8Report, inspect  # noqa: E402
from ovptq.parameters import (AdvancedQuantizationParameters, AdvancedSmoothQuantParameters,  # noqa: E402
                              DropType, MeasuringParameters, ModelType, OverflowFix, QuantizationPreset,
                              RangeEstimator, TargetDevice, WeightRounding)
from ovptq.placement.plan import QuantizationPlan  # noqa: E402
from ovptq.quantize import quantize  # noqa: E402
from ovptq.scope import IgnoredScope, Subgraph  # noqa: E402
from ovptq.measuring.accuracy_control import (AdvancedAccuracyRestorerParameters,  # noqa: E402
                                              quantize_with_accuracy_control)

__all__ = ["AdvancedAccuracyRestorerParameters", "AdvancedQuantizationParameters", "AdvancedSmoothQuantParameters",
           "Dataset", "DropType", "IgnoredScope", "Int8Report", "MeasuringParameters", "ModelType", "OverflowFix",
           "QuantizationPlan", "QuantizationPreset", "RangeEstimator", "Subgraph", "TargetDevice", "WeightRounding",
           "errors", "inspect", "quantize", "quantize_with_accuracy_control"]
