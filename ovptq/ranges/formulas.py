"""Range math: statistics in, FakeQuantize parameters out. Pure numpy.

A FakeQuantize with `levels` L maps x to
    y = round((clip(x, il, ih) - il) / (ih - il) * (L - 1)) / (L - 1) * (oh - ol) + ol
(rounding half to even); ovptq always writes il == ol and ih == oh.

Activations use L = 256. Symmetric: ih = max |x|; il = -ih * 128/127 when the tensor has negative values (the
int8 grid -128..127 with step ih/127), else il = 0 (uint8 0..255). Asymmetric: [min, max] widened to contain 0
and then widened just enough that 0 lies exactly on the grid (zero point an integer).
Weights use L = 255 (int8 -127..127, narrow range), il = -ih with ih = max |w| per output channel; the overflow
fix doubles the range so the int8 values occupy -64..64 (7 bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTIVATION_LEVELS = 256
WEIGHT_LEVELS = 255
# A range narrower than this is widened: a constant tensor still gets a valid, invertible quantizer.
MIN_RANGE = 8e-5
# Per-channel weight ranges below this share of the largest channel's are raised to it (dead filters).
ZERO_FILTER_SHARE = 0.01


@dataclass(frozen=True)
class FQParams:
    """FakeQuantize parameters; arrays are scalars (per tensor) or broadcastable per-channel shapes."""

    low: np.ndarray
    high: np.ndarray
    levels: int

    @property
    def scale(self) -> np.ndarray:
        return (self.high - self.low) / (self.levels - 1)


def symmetric_activation(minimum: np.ndarray, absmax: np.ndarray) -> FQParams:
    """Symmetric activation range: signed (il = -ih*128/127) if any `minimum` < 0, else unsigned (il = 0)."""
    high = np.maximum(np.asarray(absmax, np.float64), MIN_RANGE)
    signed = bool(np.any(np.asarray(minimum) < 0))
    levels = ACTIVATION_LEVELS
    low = -high * levels / (levels - 2) if signed else np.zeros_like(high)
    return FQParams(low.astype(np.float32), high.astype(np.float32), levels)


def asymmetric_activation(minimum: np.ndarray, maximum: np.ndarray) -> FQParams:
    """Asymmetric activation range [min, max] holding 0 exactly on the grid, widened as little as possible.

    With H = L - 1 and a range [lo, hi] containing 0, the zero point is q = -lo * H / (hi - lo). Two ways make q an
    integer while keeping the original range inside: keep hi and move lo down to -q*hi/(H-q) with
    q = ceil(-lo*H/(hi-lo)), or keep lo and move hi up to -lo*(H-q)/q with q = floor(...). The narrower wins.
    """
    lo = np.minimum(np.asarray(minimum, np.float64), 0.0)
    hi = np.maximum(np.asarray(maximum, np.float64), 0.0)
    narrow = hi - lo < MIN_RANGE
    hi = np.where(narrow, lo + MIN_RANGE, hi)
    levels = ACTIVATION_LEVELS
    steps = levels - 1
    exact = -lo * steps / (hi - lo)
    q_up, q_down = np.ceil(exact - 1e-9), np.floor(exact + 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo_moved = np.where(q_up < steps, -q_up * hi / (steps - q_up), -np.inf)
        hi_moved = np.where(q_down > 0, -lo * (steps - q_down) / q_down, np.inf)
    on_grid = np.isclose(exact, np.round(exact), rtol=0, atol=1e-9)
    use_low = (hi - lo_moved) <= (hi_moved - lo)
    new_lo = np.where(on_grid, lo, np.where(use_low, lo_moved, lo))
    new_hi = np.where(on_grid, hi, np.where(use_low, hi, hi_moved))
    return FQParams(new_lo.astype(np.float32), new_hi.astype(np.float32), levels)


def weight_absmax(weight: np.ndarray, channel_axes: tuple[int, ...]) -> np.ndarray:
    """max |w| over every axis except the channel axes, keeping dims so it broadcasts against `weight`."""
    reduce_axes = tuple(a for a in range(weight.ndim) if a not in channel_axes)
    return np.max(np.abs(weight), axis=reduce_axes, keepdims=True) if reduce_axes else np.abs(weight)


def weight_quantile(weight: np.ndarray, channel_axes: tuple[int, ...], q: float) -> np.ndarray:
    """The 1-q quantile of |w| over every axis except the channel axes (keeps dims)."""
    reduce_axes = tuple(a for a in range(weight.ndim) if a not in channel_axes)
    if not reduce_axes:
        return np.abs(weight)
    moved = np.moveaxis(np.abs(weight), channel_axes, range(len(channel_axes)))
    flat = moved.reshape(*moved.shape[:len(channel_axes)], -1)
    result = np.quantile(flat, 1 - q, axis=-1)
    shape = [weight.shape[a] if a in channel_axes else 1 for a in range(weight.ndim)]
    return result.reshape(shape)


def symmetric_weight(absmax: np.ndarray, half_range: bool = False) -> FQParams:
    """Weight range il = -ih, ih = max|w| per channel (raised to 1% of the largest channel), levels 255."""
    absmax = np.asarray(absmax, np.float64)
    floor = max(ZERO_FILTER_SHARE * float(np.max(absmax)) if absmax.size else 0.0, MIN_RANGE)
    high = np.maximum(absmax, floor)
    if half_range:
        high = high * 2
    return FQParams((-high).astype(np.float32), high.astype(np.float32), WEIGHT_LEVELS)


def quantize_weight(weight: np.ndarray, params: FQParams) -> tuple[np.ndarray, np.ndarray]:
    """Int8 values and per-channel scale with weight ~= int8 * scale (symmetric: zero point 0)."""
    scale = params.scale.astype(np.float32)
    integers = np.clip(np.round(weight / scale), -(WEIGHT_LEVELS // 2), WEIGHT_LEVELS // 2).astype(np.int8)
    return integers, scale


def fake_quantize(x: np.ndarray, low, high, out_low, out_high, levels: int) -> np.ndarray:
    """The FakeQuantize op in numpy (round half to even), for weights behind an existing FakeQuantize and tests."""
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    out_low, out_high = np.asarray(out_low, np.float32), np.asarray(out_high, np.float32)
    steps = levels - 1
    q = np.round((np.clip(x, low, high) - low) / (high - low) * steps)
    return (q / steps * (out_high - out_low) + out_low).astype(np.float32)

