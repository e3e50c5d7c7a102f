"""How filters are laid out in flash for the kernels: sub-byte packing, the DSP kernels' widened and
streamed orders (SXTB16 groups, GEMM rows, six-pixel streams) and the short requantization's proofs."""

from __future__ import annotations

import numpy as np

from tinyexit.tflite_graph import Tensor


def rounding_offset(zero_point: int, shift_minus_1: int) -> int:
    """The int8 stream's per-channel rounding constant: (1 + 2 * output zero point) << ~shift."""
    return (1 + 2 * zero_point) << shift_minus_1


QUARTER = (1 << 30, -1)  # the requantization multiplier 1/4: Q31 0.5 times 2^-1


def fast_mode(w: np.ndarray, bias: np.ndarray, mults: list[tuple[int, int]]) -> tuple[int, list[list[int]]]:
    """(fast_mode, fast_requant table) as Op.fast_requant describes them; (0, []) when a channel is unsafe."""
    bound = 255 * np.abs(w.astype(np.int64)).sum(axis=1) + np.abs(bias)
    shifts = np.array([shift for _, shift in mults])
    right = shifts <= -1
    safe = np.where(right, bound < (1 << 30), bound * (2.0 ** (np.maximum(shifts, 0) + 1)) < 2.0 ** 31)
    if not np.all(safe):
        return 0, []
    if np.all(right):
        return 1, [[m, ~sh] for m, sh in mults]
    if not np.any(right):
        return 2, [[m, sh + 1] for m, sh in mults]
    return 3, [[m, ~sh if sh <= -1 else ~(sh + 1)] for m, sh in mults]  # left shifts: ~(shift + 1) < 0


GROUP_ORDER = [0, 2, 1, 3]  # SXTB16 widens bytes 0, 2 into one word and 1, 3 into the next


def gemm_products(k: int, run_bytes: int) -> int:
    """Products per output in the DSP GEMM's order: each run of run_bytes inputs padded to whole words."""
    return k // run_bytes * (-(-run_bytes // 4) * 4)


def gemm_filter16(w: np.ndarray, run_bytes: int) -> tuple[np.ndarray, int]:
    """[channels, products] -> int16 pair-words (the order kernels.h's sub-byte GEMM words pack, see
    pack_pair_words) as uint32 words, and k_padded. The products in the order the kernels gather them
    (dsp/column.h): runs of run_bytes inputs contiguous in memory, each read as whole words (the bytes past
    its end get zero weights), each group of 4 in SXTB16's order (0, 2, 1, 3)."""
    channels, k = w.shape
    runs, run_words = k // run_bytes, -(-run_bytes // 4)
    k_padded = -(-gemm_products(k, run_bytes) // 8) * 8
    logical = np.zeros((channels, runs, run_words * 4), np.int16)
    logical[:, :, :run_bytes] = w.astype(np.int16).reshape(channels, runs, run_bytes)
    logical = logical.reshape(channels, -1, 4)[:, :, GROUP_ORDER].reshape(channels, -1)
    padded = np.zeros((channels + channels % 2, k_padded), np.int16)
    padded[:channels, :logical.shape[1]] = logical
    blocks = padded.reshape(-1, 2, k_padded // 4, 4).transpose(0, 2, 1, 3)  # [pair][group][channel][4]
    return np.ascontiguousarray(blocks).astype("<i2").view("<u4").reshape(-1), k_padded


def gemm_rows(w: np.ndarray, run_bytes: int) -> np.ndarray:
    """int8 [channels, products] -> int8 [channels, gemm_products]: the products in the order the DSP kernels
    gather them (dsp/column.h), runs of run_bytes inputs each padded with zero weights to whole words."""
    channels, k = w.shape
    runs, run_words = k // run_bytes, -(-run_bytes // 4)
    rows = np.zeros((channels, runs, run_words * 4), np.int8)
    rows[:, :, :run_bytes] = np.asarray(w, np.int8).reshape(channels, runs, run_bytes)
    return rows.reshape(channels, -1)


def gemm_filter(w: np.ndarray, run_bytes: int) -> tuple[np.ndarray, int]:
    """int8 [channels, products] -> GemmDspParams::filter (kernels.h) as uint32 words, and k_padded: per channel
    pair and group of 4 products, channel 0's 4 weights then channel 1's, one byte each in product order."""
    rows = gemm_rows(w, run_bytes)
    channels = len(rows)
    k_padded = -(-rows.shape[1] // 8) * 8
    padded = np.zeros((channels + channels % 2, k_padded), np.int8)
    padded[:channels, :rows.shape[1]] = rows
    blocks = padded.reshape(-1, 2, k_padded // 4, 4).transpose(0, 2, 1, 3)  # [pair][group][channel][4]
    return np.ascontiguousarray(blocks).view("<u4").reshape(-1), k_padded


def gemm_stream(w: np.ndarray, bias: np.ndarray, table: list[list[int]], run_bytes: int) -> np.ndarray:
    """The two-pixel int8 stream of dsp/gemm_stream.h for a layer of even channel count whose channels all shift
    right (fast_mode 1; table: its [multiplier, ~shift] rows): per channel pair 2 * bias0, 2 * bias1, the pair's
    gemm_filter words, multiplier0, ~shift0, multiplier1, ~shift1 (the kernel doubles the inputs)."""
    words, k_padded = gemm_filter(w, run_bytes)
    return stream_words(2 * np.asarray(bias, np.int64), words.reshape(len(w) // 2, k_padded // 2), table)


def gemm_stream6(rows: np.ndarray, bias: np.ndarray, table: list[list[int]],
                 zero_point: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The six-pixel int8 stream of tinyexit/dsp_streams.h for a layer whose channels all shift right (fast_mode
    1; table: its [multiplier, ~shift] rows); rows: gemm_rows. The channels ordered by shift, per channel: first
    weight word, 2 * bias, the other weight words, multiplier, 2 * channel (+ 1 on a segment's last channel).
    Returns the stream and the segments as (shift, channels, rounding offset)."""
    channels = len(rows)
    words = np.ascontiguousarray(rows).view("<u4").astype(np.int64)  # [channels, groups]
    shifts = [e1 + 1 for _, e1 in table]
    order = sorted(range(channels), key=lambda ch: (shifts[ch], ch))
    parts, segments = [], []
    for e in sorted(set(shifts)):
        members = [ch for ch in order if shifts[ch] == e]
        for i, ch in enumerate(members):
            code = 2 * ch + (i == len(members) - 1)
            parts.append(np.concatenate([words[ch, :1], [2 * int(bias[ch])], words[ch, 1:], [table[ch][0], code]]))
        segments.append((e, len(members), rounding_offset(zero_point, e - 1)))
    stream = np.concatenate(parts).astype(np.int64)
    return (stream & 0xFFFFFFFF).astype(np.uint32), segments


def stream_words(bias: np.ndarray, filter_words: np.ndarray, table: list[list[int]]) -> np.ndarray:
    """A GEMM stream (dsp/gemm_stream.h) from the biases as the kernel starts from them, the filter words of
    each channel pair ([pairs, words]) and the [multiplier, ~shift] rows."""
    pairs = len(filter_words)
    stream = np.concatenate([bias.reshape(pairs, 2), filter_words.astype(np.int64),
                             np.array(table, np.int64).reshape(pairs, 4)], axis=1)
    return (stream & 0xFFFFFFFF).astype(np.uint32)


SUBBYTE_RANGES = {4: (-8, 7), 2: (-2, 1)}  # two's complement 4- and 2-bit values


def unpacked_values(w: Tensor) -> np.ndarray:
    """A weight tensor's integer values in its shape; TFLite's packed INT4 (low nibble first) unpacked."""
    if w.dtype == "int4":
        raw = np.asarray(w.data, np.uint8)
        nibbles = np.stack([raw & 15, raw >> 4], axis=1).reshape(-1)[:int(np.prod(w.shape))].astype(np.int8)
        return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8).reshape(w.shape)
    return w.data


def fitting_bits(values: np.ndarray) -> int:
    for bits in (2, 4):
        lo, hi = SUBBYTE_RANGES[bits]
        if values.size and values.min() >= lo and values.max() <= hi:
            return bits
    return 8


def packed_nbytes(count: int, bits: int) -> int:
    return -(-count * bits // 8)


def pack_values(values: np.ndarray, bits: int) -> np.ndarray:
    """kernels.h PackedWeights: value i in byte i / (8 / bits) at bit bits * (i % (8 / bits))."""
    per_byte = 8 // bits
    flat = np.zeros(packed_nbytes(values.size, bits) * per_byte, np.uint8)
    flat[:values.size] = values.reshape(-1).astype(np.uint8) & ((1 << bits) - 1)
    fields = flat.reshape(-1, per_byte).astype(np.uint32) << (bits * np.arange(per_byte, dtype=np.uint32))
    return fields.sum(axis=1).astype(np.uint8)


def pack_pair_words(words: np.ndarray, bits: int) -> np.ndarray:
    """int16-pair words (the DSP kernels' int8 filter layout) -> kernels.h's sub-byte words: 16 / bits pair-words
    per word, pair-word j's low half in field 16 / bits - 1 - j, its high half in field 32 / bits - 1 - j."""
    per_word = 16 // bits
    mask = np.uint32((1 << bits) - 1)
    lo = (words & 0xFFFF).astype(np.uint32).reshape(-1, per_word) & mask
    hi = (words >> 16).astype(np.uint32).reshape(-1, per_word) & mask
    packed = np.zeros(len(lo), np.uint32)
    for j in range(per_word):
        packed |= (lo[:, j] << np.uint32(bits * (per_word - 1 - j))) | (hi[:, j] << np.uint32(bits * (2 * per_word - 1 - j)))
    return packed


def packed_dsp_exact(w: np.ndarray, input_bound: int, bits: int, bias: np.ndarray | None = None) -> bool:
    """The sub-byte DSP kernels accumulate (bias + the products) * 2^(16 - bits), starting from the bias so
    scaled: exact while that stays below 2^31 for every possible input (|input| <= input_bound).
    w: [channels, products]; bias: per channel (None: zeros)."""
    worst = input_bound * np.abs(w.astype(np.int64)).sum(axis=1)
    if bias is not None:
        worst = worst + np.abs(np.asarray(bias, np.int64))
    return bool(worst.max(initial=0) << (16 - bits) < (1 << 31))


def align8(n: int) -> int:
    return -(-n // 8) * 8


def gemm_scratch_bytes(k: int, run_bytes: int) -> int:
    """The DSP GEMM's column buffer (kernels.h): two pixels' inputs widened to int16, k_padded each."""
    return 4 * (-(-gemm_products(k, run_bytes) // 8) * 8)


def padded_bias(bias: np.ndarray) -> np.ndarray:
    """Per-channel biases padded to an even count (the GEMM takes channels in pairs)."""
    return np.append(bias, np.zeros(len(bias) % 2, np.int64)).astype(np.int32)
