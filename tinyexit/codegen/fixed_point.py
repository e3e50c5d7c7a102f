"""gemmlowp's fixed-point arithmetic on Python integers, with C's int32/int16 semantics.

TFLite Micro computes int8 LOGISTIC, TANH and HARD_SWISH in this arithmetic, element by element. Their
output depends on one int8 input value only, so the code generator evaluates them here for all 256 values
and the firmware looks the answers up (kernels/lookup_s8.cc). A raw value `x` of a Q(i).(31-i) number is
an int in [-2^31, 2^31); products are gemmlowp's saturating rounding doubling high multiplies.
"""

from __future__ import annotations

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1


def wrap32(x: int) -> int:
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


def wrap16(x: int) -> int:
    return (x + (1 << 15)) % (1 << 16) - (1 << 15)


def _truncating_div(a: int, b: int) -> int:
    """C's integer division (toward zero) for b > 0."""
    q = abs(a) // b
    return q if a >= 0 else -q


def srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul on int32: (a * b * 2) / 2^32, ties away from zero."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _truncating_div(ab + nudge, 1 << 31)


def srdhm16(a: int, b: int) -> int:
    """The same on int16 (a * b * 2 / 2^16)."""
    if a == b == INT16_MIN:
        return INT16_MAX
    ab = a * b
    nudge = (1 << 14) if ab >= 0 else 1 - (1 << 14)
    return _truncating_div(ab + nudge, 1 << 15)


def sdhm16(a: int, b: int) -> int:
    """SaturatingDoublingHighMul on int16: as srdhm16 but truncating toward zero."""
    if a == b == INT16_MIN:
        return INT16_MAX
    return wrap16(_truncating_div(a * b, 1 << 15))


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    """x / 2^exponent, ties away from zero (x an int32 or int16)."""
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def saturating_rounding_multiply_by_pot(x: int, exponent: int) -> int:
    """x * 2^exponent on int32: saturating for exponent > 0, rounding for exponent < 0."""
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return x << exponent


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: int) -> int:
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor series around -1/8."""
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = a + (1 << 28)  # a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    poly = saturating_rounding_multiply_by_pot(srdhm(wrap32(x4_over_4 + x3), constant_1_over_3) + x2, -1)
    return wrap32(constant_term + srdhm(constant_term, wrap32(x + poly)))


# exp(-2^e) in Q0.31 for the bits of the remainder, e = -2..4
_EXP_OF_POWERS = [(-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
                  (3, 720401), (4, 242)]


def exp_on_negative_values(a: int, integer_bits: int) -> int:
    """exp(a) for a <= 0 in Q(integer_bits); result in Q0.31."""
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_one_quarter = wrap32((a & (one_quarter - 1)) - one_quarter)
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, integer_bits))
    remainder = wrap32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_OF_POWERS:
        if integer_bits > exponent and remainder & (1 << (fractional_bits + exponent)):
            result = srdhm(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):  # below -32: zero
        result = 0
    return INT32_MAX if a == 0 else result


def _newton_reciprocal_q2(half_denominator: int) -> int:
    """1 / half_denominator in Q2.29 for half_denominator in [1/2, 1) (Q0.31): three Newton-Raphson steps."""
    x = wrap32(1515870810 + srdhm(half_denominator, -1010580540))  # 48/17 - 32/17 * d
    one_q2 = 1 << 29
    for _ in range(3):
        one_minus = wrap32(one_q2 - srdhm(half_denominator, x))
        x = wrap32(x + saturating_rounding_multiply_by_pot(srdhm(x, one_minus), 2))
    return x


def _rounding_half_sum(a: int, b: int) -> int:
    total = a + b
    return _truncating_div(total + (1 if total >= 0 else -1), 2)


def one_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    """1 / (1 + a) for a in [0, 1), Q0.31 in and out."""
    x = _newton_reciprocal_q2(_rounding_half_sum(a, INT32_MAX))
    return saturating_rounding_multiply_by_pot(x, 1)


def one_minus_x_over_one_plus_x_for_x_in_0_1(a: int) -> int:
    """(1 - a) / (1 + a) for a in [0, 1), Q0.31 in and out."""
    x = _newton_reciprocal_q2(_rounding_half_sum(a, INT32_MAX))
    return saturating_rounding_multiply_by_pot(wrap32(x - (1 << 29)), 2)


def logistic(a: int, integer_bits: int) -> int:
    """gemmlowp::logistic: Q(integer_bits) in, Q0.31 out."""
    if a == 0:
        return 1 << 30  # one half
    positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs(a), integer_bits))
    return positive if a > 0 else wrap32(INT32_MAX - positive)


def tanh(a: int, integer_bits: int) -> int:
    """gemmlowp::tanh: Q(integer_bits) in, Q0.31 out (exp(2a): the same raw value one integer bit up)."""
    if a == 0:
        return 0
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs(a), integer_bits + 1))
    return -t if a < 0 else t
