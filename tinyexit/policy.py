"""Exit policies: the integer confidence tests run after each exit head, identical here and in firmware.

Each kind turns an exit's int8 logits into a Q15 score (0..32768, higher = more confident); the exit takes
the sample iff score >= threshold_q15. Kinds: `max_prob` (softmax maximum), `margin` (top-1 minus top-2
softmax probability), `entropy` (1 - entropy / ln C). All start from the same integer softmax. Given logits
l[0..C-1] whose quantization scale is s (the zero point cancels):

    m        = max_j l[j]                    predicted class = lowest j with l[j] == m
    d_j      = m - l[j]                      0 <= d_j <= 255
    LUT[d]   = round(32768 * exp(-s * d))    uint16, d = 0..255, computed once at generation time
    S        = sum_j LUT[d_j]                uint32; S >= 32768 because LUT[0] = 32768
    conf_q15 = floor(2^30 / S)               the softmax maximum probability in Q15 (0..32768)
    exit    <=> conf_q15 >= threshold_q15

`threshold_q15 = ceil(32768 * t)` for a float threshold t in [0, 1]; 32769 never exits. Because
conf_q15 ~= 32768 * max softmax(s * l), the test agrees with `max softmax >= t` except where the two
sides are within the LUT's rounding (about C * 2^-16) of each other.

    margin_q15  = floor((32768 - LUT[d_2]) * 2^15 / S)        d_2 = m - the second largest logit (255 if C = 1)
    entropy: with NL[d] = round(16 * LUT[d] * ln(32768 / LUT[d])) (0 where LUT[d] = 0; uint32, per exit),
             e = floor(log2 S), i = (S >> (e - 8)) & 255, LOG2[i] = round(4096 * log2(1 + i / 256)),
             ln_q12   = floor(((e - 15) * 4096 + LOG2[i]) * 2839 / 4096)       ln(S / 32768), 2839/4096 ~ ln 2
             h_q12    = ln_q12 + floor(sum_j NL[d_j] * 256 / S)                entropy in nats, Q12 (uint64 math)
             score    = max(0, 32768 - floor(h_q12 * 32768 / LNC))             LNC = round(4096 * ln C), C >= 2
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


KINDS = ("max_prob", "margin", "entropy")
LN2_Q12 = 2839  # round(4096 * ln 2)
LOG2_Q12 = np.round(4096 * np.log2(1 + np.arange(256) / 256)).astype(np.uint16)  # emitted into firmware too


def kind_of(exit_: dict) -> str:
    """The policy kind of a manifest exit (max_prob where none is set)."""
    return (exit_.get("policy") or {}).get("kind", "max_prob")


def exit_scores(exit_: dict, logits: np.ndarray, kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and Q15 score of a manifest exit's logits under its policy kind (or `kind`)."""
    return scores_q15(kind or kind_of(exit_), logits, exp_lut(exit_["logit_scale"]))


def entropy_lut(lut: np.ndarray) -> np.ndarray:
    """NL[d] = round(16 * LUT[d] * ln(32768 / LUT[d])), 0 where LUT[d] = 0 (uint32)."""
    e = lut.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        nl = np.where(e > 0, np.round(16 * e * np.log(Q15 / np.maximum(e, 1))), 0)
    return nl.astype(np.uint32)


def ln_classes_q12(classes: int) -> int:
    return int(round(4096 * math.log(max(classes, 2))))


def scores_q15(kind: str, logits: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and the Q15 score of policy `kind` for int8 logits (..., C), vectorised."""
    if kind == "max_prob":
        return confidence_q15(logits, lut)
    if kind not in KINDS:
        raise ValueError(f"unknown exit policy '{kind}' (known: {', '.join(KINDS)})")
    logits = np.asarray(logits).astype(np.int32)
    top = logits.max(axis=-1, keepdims=True)
    d = top - logits
    total = lut.astype(np.uint64)[d].sum(axis=-1)
    if kind == "margin":
        if logits.shape[-1] < 2:
            second = np.full(total.shape, 255)
        else:
            second = np.sort(d, axis=-1)[..., 1]
        score = ((Q15 - lut.astype(np.uint64)[second]) << np.uint64(15)) // total
        return logits.argmax(axis=-1), score.astype(np.int32)
    nl = entropy_lut(lut).astype(np.uint64)[d].sum(axis=-1)
    e = np.floor(np.log2(total.astype(np.float64))).astype(np.int64)  # exact: total < 2^53
    e = np.where((np.uint64(1) << e.astype(np.uint64)) > total, e - 1, e)
    i = ((total >> (e - 8).astype(np.uint64)) & np.uint64(255)).astype(np.int64)
    ln_q12 = (((e - 15) * 4096 + LOG2_Q12[i].astype(np.int64)) * LN2_Q12) // 4096
    h_q12 = ln_q12 + ((nl << np.uint64(8)) // total).astype(np.int64)
    score = np.maximum(0, Q15 - (h_q12 * Q15) // ln_classes_q12(logits.shape[-1]))
    return logits.argmax(axis=-1), score.astype(np.int32)


def float_score(kind: str, logits: np.ndarray, scale: float) -> np.ndarray:
    """The float definitions the integer scores approximate."""
    z = np.asarray(logits, np.float64) * scale
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    if kind == "max_prob":
        return p.max(axis=-1)
    if kind == "margin":
        top2 = np.sort(p, axis=-1)[..., -2:]
        return top2[..., 1] - top2[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0).sum(axis=-1)
    return np.maximum(0, 1 - h / math.log(max(p.shape[-1], 2)))
