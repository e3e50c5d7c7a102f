"""Feature codecs for the device -> edge cascade: the Python twin of firmware/runtime/codec (same bytes).

A device that is not confident at an exit sends its cut tensor (int8 with a zero point) to the edge.
Streams carry no header: both sides know the Params (manifest's offload section) and the value count.
  RAW        n bytes, the int8 values as they are.
  LOSSLESS   exact, for post-ReLU maps (mostly zero_point): byte 0 the mode (0: every value >= zero_point,
             u = x - zp; 1: zigzag of x - zp; 2: stored, n raw bytes follow, so never more than n + 1
             bytes), then a bit stream filled from each byte's least significant bit, per block of up to 64
             values: 1 bit "any value != zp" (0 ends the block), 3 bits Rice parameter k (smallest k <= 7
             with count << (k + 1) >= sum(u - 1)), one bit per value (1 = != zp), then per such value Rice(u - 1,
             k): (u - 1) >> k one bits, a zero bit, the k low bits. Padding bits are zero.
  REQUANT4/2 each value's distance from the zero point, d = x - zp, shifted right with rounding
             (q = (d + 2^(shift-1)) >> shift, no rounding at shift 0) and clamped to [0, 2^bits - 1]
             (or two's complement [-2^(bits-1), 2^(bits-1) - 1] with signed_codes); packed first value in the
             low bits; decoded to clamp(zp + q << shift) in the original quantization.

`measure()` reports every codec's bytes per sample and the empirical entropy on a set of cut tensors;
`choose()` picks the codec for a cut (rule in its docstring); `calibrate_shift()` the requantization shift.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

import numpy as np

BLOCK = 64
MODE_UNSIGNED, MODE_ZIGZAG, MODE_STORED = 0, 1, 2


class Kind(enum.IntEnum):
    RAW = 0
    LOSSLESS = 1
    REQUANT4 = 2
    REQUANT2 = 3


BITS = {Kind.REQUANT4: 4, Kind.REQUANT2: 2}


class CodecError(ValueError):
    """A stream that does not decode (truncated, corrupt), a capacity too small or invalid parameters."""


@dataclass(frozen=True)
class Params:
    kind: Kind
    zero_point: int
    shift: int = 0              # requantization only: 0..8
    signed_codes: bool = False  # requantization only: codes two's complement around zero_point

    def __post_init__(self):
        object.__setattr__(self, "kind", Kind(self.kind))
        if not -128 <= self.zero_point <= 127:
            raise CodecError(f"zero point {self.zero_point} is not int8")
        if self.kind in BITS and not 0 <= self.shift <= 8:
            raise CodecError(f"requantization shift {self.shift} is outside 0..8")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind.name.lower()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Params":
        return cls(Kind[d["kind"].upper()], int(d["zero_point"]), int(d.get("shift", 0)),
                   bool(d.get("signed_codes", False)))


def max_encoded_bytes(p: Params, n: int) -> int:
    if p.kind == Kind.LOSSLESS:
        return n + 1
    if p.kind in BITS:
        return (n * BITS[p.kind] + 7) // 8
    return n


def encode(p: Params, data: np.ndarray, capacity: int | None = None) -> bytes:
    """The stream for `data` (int8, any shape, C order); CodecError when longer than `capacity`."""
    x = np.ascontiguousarray(data, dtype=np.int8).reshape(-1)
    if p.kind == Kind.LOSSLESS:
        stream = _encode_lossless(p.zero_point, x)
    elif p.kind in BITS:
        stream = _encode_requant(p, BITS[p.kind], x)
    else:
        stream = x.tobytes()
    if capacity is not None and len(stream) > capacity:
        raise CodecError(f"{len(stream)} encoded bytes do not fit in {capacity}")
    return stream


def decode(p: Params, stream: bytes, n: int) -> tuple[np.ndarray, int]:
    """n int8 values and the bytes consumed; CodecError on a malformed stream (never reads past it)."""
    buf = np.frombuffer(bytes(stream), np.uint8)
    if p.kind == Kind.LOSSLESS:
        return _decode_lossless(p.zero_point, buf, n)
    if p.kind in BITS:
        return _decode_requant(p, BITS[p.kind], buf, n)
    if len(buf) < n:
        raise CodecError(f"raw stream of {len(buf)} bytes is shorter than {n} values")
    return buf[:n].view(np.int8).copy(), n


# --- requantization -----------------------------------------------------------------------------------

def requantize(p: Params, bits: int, x: np.ndarray) -> np.ndarray:
    """The integer codes (int32), exactly as the firmware computes them."""
    d = x.astype(np.int32) - p.zero_point
    q = (d + ((1 << p.shift) >> 1)) >> p.shift
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if p.signed_codes else (0, (1 << bits) - 1)
    return np.clip(q, lo, hi)


def dequantize(p: Params, q: np.ndarray) -> np.ndarray:
    return np.clip(p.zero_point + (q.astype(np.int32) << p.shift), -128, 127).astype(np.int8)


def _encode_requant(p: Params, bits: int, x: np.ndarray) -> bytes:
    per_byte = 8 // bits
    q = (requantize(p, bits, x) & ((1 << bits) - 1)).astype(np.uint8)
    q = np.concatenate([q, np.zeros(-len(q) % per_byte, np.uint8)]).reshape(-1, per_byte)
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    return np.bitwise_or.reduce(q << shifts, axis=1).astype(np.uint8).tobytes()


def _decode_requant(p: Params, bits: int, buf: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    per_byte = 8 // bits
    size = (n * bits + 7) // 8
    if len(buf) < size:
        raise CodecError(f"{bits}-bit stream of {len(buf)} bytes is shorter than {size} for {n} values")
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    q = ((buf[:size, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)[:n].astype(np.int32)
    if p.signed_codes:
        q = np.where(q >= 1 << (bits - 1), q - (1 << bits), q)
    return dequantize(p, q), size


def calibrate_shift(cuts: np.ndarray, zero_point: int, bits: int, signed_codes: bool | None = None) -> Params:
    """The requantization Params whose decode is closest (mean squared error) to `cuts`; signed codes
    when some value lies below the zero point (not a post-ReLU map), unless told."""
    x = np.asarray(cuts, np.int8).reshape(-1)
    if signed_codes is None:
        signed_codes = bool((x < zero_point).any())
    kind = Kind.REQUANT4 if bits == 4 else Kind.REQUANT2
    best = None
    for shift in range(9):
        p = Params(kind, zero_point, shift, signed_codes)
        err = float(np.mean((dequantize(p, requantize(p, bits, x)).astype(np.int32) - x) ** 2))
        if best is None or err < best[0]:
            best = (err, p)
    return best[1]


# --- lossless -----------------------------------------------------------------------------------------

def _codes(x: np.ndarray, zero_point: int) -> tuple[np.ndarray, int]:
    d = x.astype(np.int32) - zero_point
    if (d < 0).any():
        return np.where(d >= 0, 2 * d, -2 * d - 1), MODE_ZIGZAG
    return d, MODE_UNSIGNED


def rice_parameters(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per block of 64 codes: the nonzero count and the Rice parameter k the firmware picks."""
    n = len(u)
    padded = np.concatenate([u, np.zeros(-n % BLOCK, u.dtype)]).reshape(-1, BLOCK)
    count = (padded != 0).sum(1)
    total = np.where(padded != 0, padded - 1, 0).sum(1)
    k = np.zeros(len(count), np.int64)
    for _ in range(7):  # smallest k <= 7 with count << (k + 1) >= total
        k += (count << (k + 1)) < total
    return count, k


def _encode_lossless(zero_point: int, x: np.ndarray) -> bytes:
    n = len(x)
    u, mode = _codes(x, zero_point)
    count, k = rice_parameters(u)
    nblocks = len(count)
    # Every field of the bit stream, with a sort key (block, position inside the block) to order them.
    coded = count > 0
    keys, values, widths, unary = [], [], [], []

    def add(key, value, width, is_unary):
        keys.append(np.asarray(key, np.int64))
        values.append(np.asarray(value, np.int64))
        widths.append(np.asarray(width, np.int64))
        unary.append(np.full(len(keys[-1]), is_unary))

    b = np.arange(nblocks)
    add(b * 256, coded.astype(np.int64), np.ones(nblocks), False)               # block flag
    add(b[coded] * 256 + 1, k[coded], np.full(coded.sum(), 3), False)            # Rice parameter
    index = np.arange(n)
    block_of = index // BLOCK
    inner = index % BLOCK
    in_coded = coded[block_of]
    add(block_of[in_coded] * 256 + 2 + inner[in_coded], (u[in_coded] != 0).astype(np.int64),
        np.ones(in_coded.sum()), False)                                          # zero map
    nz = u != 0
    v = u[nz] - 1
    kv = k[block_of[nz]]
    add(block_of[nz] * 256 + 66 + 2 * inner[nz], v >> kv, (v >> kv) + 1, True)  # unary quotient
    add(block_of[nz] * 256 + 67 + 2 * inner[nz], v & ((1 << kv) - 1), kv, False)  # k low bits
    key = np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    value = np.concatenate(values)[order]
    width = np.concatenate(widths)[order].astype(np.int64)
    is_unary = np.concatenate(unary)[order]
    field = np.repeat(np.arange(len(width)), width)
    offset = np.arange(int(width.sum())) - np.repeat(np.cumsum(width) - width, width)
    bits = np.where(is_unary[field], offset < value[field], (value[field] >> offset) & 1).astype(np.uint8)
    packed = np.packbits(bits, bitorder="little").tobytes()
    if len(packed) > n:
        return bytes([MODE_STORED]) + x.tobytes()
    return bytes([mode]) + packed


WINDOW_BITS = 2048
WINDOW_MASK = (1 << WINDOW_BITS) - 1


class _Bits:
    """Reads the bit stream after the mode byte; positions are bit indices, every read bounds-checked."""

    def __init__(self, buf: np.ndarray):
        self.size = 8 * len(buf)
        self.raw = buf.tobytes()
        self.word = int.from_bytes(self.raw, "little")  # bit i of the stream is bit i of this integer
        bits = np.unpackbits(buf, bitorder="little")
        zeros = np.append(np.flatnonzero(bits == 0), self.size)
        # next_zero[i]: index of the first zero bit at or after i (self.size when none)
        self.next_zero = zeros[np.searchsorted(zeros, np.arange(self.size + 1))].tolist()
        self.pos = 0

    def get(self, count: int) -> int:
        """count <= 16 bits from the current position."""
        end = self.pos + count
        if end > self.size:
            raise CodecError("lossless stream ends early")
        byte = self.pos >> 3  # count <= 16: three bytes hold the field
        value = (int.from_bytes(self.raw[byte:byte + 3], "little") >> (self.pos & 7)) & ((1 << count) - 1)
        self.pos = end
        return value

    def unary(self) -> int:
        zero = self.next_zero[self.pos]
        if zero >= self.size:
            raise CodecError("lossless stream ends early")
        q = zero - self.pos
        self.pos = zero + 1
        return q


def _decode_lossless(zero_point: int, buf: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    if len(buf) < 1:
        raise CodecError("lossless stream is empty")
    mode = int(buf[0])
    if mode == MODE_STORED:
        if len(buf) - 1 < n:
            raise CodecError(f"stored stream of {len(buf) - 1} bytes is shorter than {n} values")
        return buf[1:1 + n].view(np.int8).copy(), n + 1
    if mode not in (MODE_UNSIGNED, MODE_ZIGZAG):
        raise CodecError(f"unknown lossless mode {mode}")
    bits = _Bits(buf[1:])
    word, size, next_zero = bits.word, bits.size, bits.next_zero
    positions, codes = [], []  # the nonzero values' indices and Rice values, checked and mapped at the end
    for start in range(0, n, BLOCK):
        length = min(BLOCK, n - start)
        if not bits.get(1):
            continue
        k = bits.get(3)
        zero_map = 0
        for part in range(0, length, 16):
            zero_map |= bits.get(min(16, length - part)) << part
        if not zero_map:
            raise CodecError("lossless block flagged nonzero has an empty map")
        low_mask = (1 << k) - 1
        pos = bits.pos
        window_start = pos  # shifts of a short window of the stream, not of the whole stream, stay cheap
        window = (word >> pos) & WINDOW_MASK
        for j in range(length):
            if not zero_map >> j & 1:
                continue
            zero = next_zero[pos]  # the unary quotient ends at the next zero bit
            if zero + 1 + k > size:
                raise CodecError("lossless stream ends early")
            q = zero - pos
            if q > 511:
                raise CodecError("lossless value out of range")
            positions.append(start + j)
            if zero + 1 + k > window_start + WINDOW_BITS:
                window_start = zero + 1
                window = (word >> window_start) & WINDOW_MASK
            codes.append((q << k) | ((window >> (zero + 1 - window_start)) & low_mask))
            pos = zero + 1 + k
        bits.pos = pos
    u = np.array(codes, np.int64) + 1
    d = np.where(u & 1, -((u + 1) >> 1), u >> 1) if mode == MODE_ZIGZAG else u
    x = zero_point + d
    if np.any(u > 511) or np.any(x < -128) or np.any(x > 127):
        raise CodecError("lossless value out of range")
    out = np.full(n, zero_point, np.int8)
    out[np.array(positions, np.int64)] = x
    return out, 1 + (bits.pos + 7) // 8


# --- entropy and choice -------------------------------------------------------------------------------

def entropy_bits(cuts: np.ndarray) -> float:
    """Empirical order-0 entropy of the int8 values, bits per value (what an ideal per-value code needs)."""
    counts = np.bincount(np.asarray(cuts, np.int8).reshape(-1).view(np.uint8), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


@dataclass
class CodecFigures:
    params: Params
    bytes_per_sample: float
    ratio: float           # raw bytes / encoded bytes
    rmse: float            # decode error in int8 units (0 for lossless)


@dataclass
class CutReport:
    values_per_sample: int
    zero_point: int
    zero_fraction: float   # share of values equal to the zero point
    entropy_bits: float    # order-0, bits per value
    codecs: dict           # Kind name -> CodecFigures


def measure(cuts: np.ndarray, zero_point: int, max_samples: int | None = None) -> CutReport:
    """Every codec's bytes per sample on cut tensors (N, ...) int8, by actually encoding them (and
    decoding the lossy ones for their error); requantization shifts calibrated on the same cuts."""
    x = np.asarray(cuts, np.int8).reshape(len(cuts), -1)
    if max_samples is not None:
        x = x[:max_samples]
    n = x.shape[1]
    candidates = [Params(Kind.RAW, zero_point), Params(Kind.LOSSLESS, zero_point),
                  calibrate_shift(x, zero_point, 4), calibrate_shift(x, zero_point, 2)]
    figures = {}
    for p in candidates:
        sizes, sq = [], 0.0
        for row in x:
            stream = encode(p, row)
            sizes.append(len(stream))
            if p.kind in BITS:
                sq += float(np.sum((decode(p, stream, n)[0].astype(np.int32) - row) ** 2))
        mean = float(np.mean(sizes))
        figures[p.kind.name] = CodecFigures(p, mean, n / mean, float(np.sqrt(sq / x.size)))
    return CutReport(n, zero_point, float((x == zero_point).mean()), entropy_bits(x), figures)


ENTROPY_THRESHOLD_BITS = 4.0


def choose(report: CutReport, max_bytes_per_sample: float | None = None,
           entropy_threshold: float = ENTROPY_THRESHOLD_BITS) -> Params:
    """The codec for a cut, from `measure()` on the validation split.

    Rule: lossless when the map's order-0 entropy is at most `entropy_threshold` bits per value (default
    4: lossless then needs about as few bytes as 4-bit requantization, so exactness costs nothing) and its
    measured bytes per sample fit `max_bytes_per_sample` (the link budget; None: no budget). Otherwise
    4-bit requantization when it fits the budget, else 2-bit. The caller measures the accuracy after
    decode (e.g. the rest of the network on decoded validation cuts) and may tighten the budget or the
    threshold from it."""
    fits = (lambda kind: max_bytes_per_sample is None
            or report.codecs[kind].bytes_per_sample <= max_bytes_per_sample)
    if report.entropy_bits <= entropy_threshold and fits("LOSSLESS"):
        return report.codecs["LOSSLESS"].params
    if fits("REQUANT4"):
        return report.codecs["REQUANT4"].params
    return report.codecs["REQUANT2"].params
