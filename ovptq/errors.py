"""Typed errors. Every message names the culprit (input, sample, node, rule) and says what to do."""


class OvptqError(Exception):
    """Base class of every error ovptq raises on purpose."""


class ParameterError(OvptqError, ValueError):
    """An argument of a public function has the wrong type or value."""


class DatasetError(OvptqError):
    """The calibration dataset is empty, or an item does not fit the model inputs."""


class ModelError(OvptqError):
    """The model cannot be read, or is not in a form ovptq can work on."""


class UnsupportedModelError(ModelError):
    """The model is readable but uses a construct ovptq does not support."""


class IgnoredScopeError(OvptqError):
    """Rules of an IgnoredScope matched nothing in the model (with validate=True)."""


class StatisticsError(OvptqError):
    """Calibration inference failed or produced unusable values."""


class ValidationError(OvptqError):
    """The caller's validation_fn raised, or returned something that is not a finite number."""
