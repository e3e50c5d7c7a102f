"""Requantization parameters exactly as TFLite Micro computes them in its kernels' Prepare step."""

from __future__ import annotations

import math

import numpy as np

ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}


def round_half_away(x: float) -> int:
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(Q31 multiplier, shift) with real = multiplier * 2^(shift - 31), as TFLite's QuantizeMultiplier."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    fixed = round_half_away(q * (1 << 31))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def f32(x) -> float:
    """A float32 value (as stored in the flatbuffer) widened to double, as TFLite does."""
    return float(np.float32(x))


def activation_range(code: int, scale: float, zero_point: int) -> tuple[int, int]:
    """int8 clamp bounds for a fused activation (TFLite's CalculateActivationRangeQuantized)."""
    def q(v: float) -> int:
        return zero_point + round_half_away(float(np.float32(v) / np.float32(scale)))

    lo, hi = -128, 127
    kind = ACTIVATIONS.get(code, "unsupported")
    if kind == "RELU":
        lo = max(lo, q(0.0))
    elif kind == "RELU6":
        lo, hi = max(lo, q(0.0)), min(hi, q(6.0))
    elif kind == "RELU_N1_TO_1":
        lo, hi = max(lo, q(-1.0)), min(hi, q(1.0))
    elif kind == "unsupported":
        raise ValueError(code)
    return lo, hi


def same_padding(stride: int, dilation: int, in_size: int, filter_size: int, out_size: int) -> int:
    effective = (filter_size - 1) * dilation + 1
    return max((out_size - 1) * stride + effective - in_size, 0) // 2


def _wrap32(x: int) -> int:
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    """TFLite's MultiplyByQuantizedMultiplier on one int32 (firmware/include/tinyexit/quantization.h): the
    left shift wraps in 32 bits as the C code does, then the rounding doubling high multiply (ties away
    from zero), then a rounding right shift (ties away from zero)."""
    left, right = max(shift, 0), max(-shift, 0)
    a = _wrap32(x << left)
    if a == multiplier == -(1 << 31):
        return (1 << 31) - 1
    ab = a * multiplier
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    high = abs(ab + nudge) >> 31  # the division truncates toward zero
    high = high if ab + nudge >= 0 else -high
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0)

