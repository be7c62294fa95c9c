"""Changes to the model that stages describe as data, for the rewrite to apply (the only writer of the model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConstantInput:
    """Input `port` of `node` reads a new constant `value`, named `name`."""

    node: str
    port: int
    value: np.ndarray
    name: str


@dataclass(frozen=True, eq=False)
class ScaledConstant:
    """Input `port` of `node` reads its float weight times `factors` (each broadcasting against it), named `name`.
    The value is computed when read, one multiplication in float32 per factor, so that a model's rescaled weights
    take no memory between the stages that read them (SmoothQuant rescales nearly every weight of a transformer)."""

    node: str
    port: int
    original: Callable[[], np.ndarray]   # the weight as the op sees it, in float32
    factors: tuple[np.ndarray, ...]
    name: str

    @property
    def value(self) -> np.ndarray:
        value = self.original()
        for factor in self.factors:
            value = np.ascontiguousarray(value * factor, np.float32)
        return value


@dataclass(frozen=True)
class Scaling:
    """x * `factor` (a Multiply named `name`, its constant `factor_name`; `factor` broadcasts against x as numpy
    does) inserted between output `port` of `producer` and input 0 of each of `readers`, which are all its
    readers."""

    producer: str
    port: int
    factor: np.ndarray
    readers: tuple[str, ...]
    name: str
    factor_name: str


@dataclass(frozen=True)
class BiasValue:
    """A layer's bias becomes `values` (one per output channel): in the constant input `port` of its bias op
    `holder` (times `sign`, -1 for a Subtract), or, without one, in a new Add after the layer."""

    layer: str
    values: np.ndarray
    channel_axis: int
    holder: str | None = None
    port: int = 1
    sign: float = 1.0
