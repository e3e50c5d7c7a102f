// Integer requantization with TFLite's rounding rules (gemmlowp fixed point, "double rounding").
// Multipliers and shifts are computed once at generation time (tinyexit/codegen/quantization.py).
#pragma once

#include <cstdint>

namespace tx {

// (a * b * 2) >> 32, rounded to nearest, saturating the single overflow case a == b == INT32_MIN.
inline int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  return static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));  // division truncates toward zero
}

// x / 2^exponent, rounded to nearest with ties away from zero.
inline int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// x * multiplier * 2^shift with multiplier a Q31 value in [0.5, 1).
inline int32_t multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x * (1 << left), multiplier), right);
}

inline int8_t clamp_to_int8(int32_t x, int32_t lo, int32_t hi) {
  return static_cast<int8_t>(x < lo ? lo : (x > hi ? hi : x));
}

}  // namespace tx
