"""Exit policy: the integer confidence test run after each exit head, identical here and in firmware.

Kind `max_prob` (the only kind for now). Given an exit's int8 logits l[0..C-1] whose quantization
scale is s (the zero point cancels):

    m        = max_j l[j]                    predicted class = lowest j with l[j] == m
    d_j      = m - l[j]                      0 <= d_j <= 255
    LUT[d]   = round(32768 * exp(-s * d))    uint16, d = 0..255, computed once at generation time
    S        = sum_j LUT[d_j]                uint32; S >= 32768 because LUT[0] = 32768
    conf_q15 = floor(2^30 / S)               the softmax maximum probability in Q15 (0..32768)
    exit    <=> conf_q15 >= threshold_q15

`threshold_q15 = ceil(32768 * t)` for a float threshold t in [0, 1]; 32769 never exits. Because
conf_q15 ~= 32768 * max softmax(s * l), the test agrees with `max softmax >= t` except where the two
sides are within the LUT's rounding (about C * 2^-16) of each other.
"""

from __future__ import annotations

import math

import numpy as np

Q15 = 1 << 15
NEVER = Q15 + 1  # a threshold no confidence reaches


def exp_lut(scale: float) -> np.ndarray:
    """LUT[d] = round(32768 * exp(-scale * d)) for d = 0..255 (uint16). Emitted verbatim into firmware."""
    d = np.arange(256, dtype=np.float64)
    return np.round(Q15 * np.exp(-float(scale) * d)).astype(np.uint16)


def threshold_q15(threshold: float) -> int:
    """Integer threshold for a float probability threshold (values above 1 never exit)."""
    if threshold > 1.0:
        return NEVER
    return int(math.ceil(Q15 * max(0.0, float(threshold)) - 1e-9))


def confidence_q15(logits: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and Q15 confidence for int8 logits of shape (..., C), vectorised."""
    logits = np.asarray(logits).astype(np.int32)
    top = logits.max(axis=-1, keepdims=True)
    total = lut.astype(np.uint32)[top - logits].sum(axis=-1, dtype=np.uint32)
    conf = (np.uint32(1 << 30) // total).astype(np.int32)
    return logits.argmax(axis=-1), conf


def should_exit(logits: np.ndarray, lut: np.ndarray, threshold_q: int) -> np.ndarray:
    return confidence_q15(logits, lut)[1] >= threshold_q


def float_confidence(logits: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The float definition: max softmax probability of the dequantized logits."""
    z = (np.asarray(logits, np.float64) - zero_point) * scale
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e.max(axis=-1) / e.sum(axis=-1)
