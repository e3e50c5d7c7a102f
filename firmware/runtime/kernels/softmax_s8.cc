// SOFTMAX, int8 in, int8 out (scale 1/256, zero point -128), in gemmlowp fixed point as TFLite does:
// exp of the (rescaled) differences to the row maximum in Q5.26 -> Q0.31, a Q12.19 sum, a Newton-Raphson
// reciprocal, and a final rounding shift. No floating point.
#include "tinyexit/kernels.h"
#include "tinyexit/quantization.h"

namespace tx {
namespace {

int32_t srdhm(int32_t a, int32_t b) { return saturating_rounding_doubling_high_mul(a, b); }

// x * 2^exponent with saturation (exponent > 0) or rounding (exponent < 0).
int32_t saturating_rounding_multiply_by_pot(int32_t x, int exponent) {
  if (exponent < 0) return rounding_divide_by_pot(x, -exponent);
  const int32_t threshold = (int32_t{1} << (31 - exponent)) - 1;
  if (x > threshold) return INT32_MAX;
  if (x < -threshold) return INT32_MIN;
  return static_cast<int32_t>(static_cast<uint32_t>(x) << exponent);
}

// exp(a) for a in [-1/4, 0), Q0.31 in and out: Taylor expansion around -1/8.
int32_t exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a) {
  const int32_t constant_term = 1895147668;     // exp(-1/8)
  const int32_t constant_1_over_3 = 715827883;  // 1/3
  const int32_t x = a + (int32_t{1} << 28);     // a + 1/8
  const int32_t x2 = srdhm(x, x);
  const int32_t x3 = srdhm(x2, x);
  const int32_t x4 = srdhm(x2, x2);
  const int32_t x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2);
  const int32_t poly = saturating_rounding_multiply_by_pot(srdhm(x4_over_4 + x3, constant_1_over_3) + x2, -1);
  return constant_term + srdhm(constant_term, x + poly);
}

// exp(a) for a <= 0 given in Q5.26; result in Q0.31.
int32_t exp_on_negative_values(int32_t a) {
  constexpr int kFractionalBits = 26;
  const int32_t one_quarter = int32_t{1} << (kFractionalBits - 2);
  const int32_t a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter;
  int32_t result = exp_on_interval_between_negative_one_quarter_and_0_excl(
      saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, 5));
  const int32_t remainder = a_mod_quarter_minus_one_quarter - a;
  // exp(-2^e) for e = -2..4, Q0.31: multiply in one factor per set bit of the remainder
  static const int32_t kFactors[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
  for (int e = -2; e <= 4; ++e) {
    if (remainder & (int32_t{1} << (kFractionalBits + e))) result = srdhm(result, kFactors[e + 2]);
  }
  return a == 0 ? INT32_MAX : result;
}

int count_leading_zeros(uint32_t x) {
  int n = 0;
  while (n < 32 && !(x & (uint32_t{1} << (31 - n)))) ++n;
  return n;
}

// 1 / (1 + x) for x in [0, 1), Q0.31 in and out (Newton-Raphson in Q2.29).
int32_t one_over_one_plus_x_for_x_in_0_1(int32_t a) {
  const int64_t sum = int64_t{a} + INT32_MAX;
  const int32_t half_denominator = static_cast<int32_t>((sum + (sum >= 0 ? 1 : -1)) / 2);
  const int32_t constant_48_over_17 = 1515870810;
  const int32_t constant_neg_32_over_17 = -1010580540;
  int32_t x = constant_48_over_17 + srdhm(half_denominator, constant_neg_32_over_17);
  const int32_t one_q2 = int32_t{1} << 29;
  for (int i = 0; i < 3; ++i) {
    const int32_t half_denominator_times_x = srdhm(half_denominator, x);
    const int32_t one_minus = one_q2 - half_denominator_times_x;
    x = x + saturating_rounding_multiply_by_pot(srdhm(x, one_minus), 2);
  }
  return saturating_rounding_multiply_by_pot(x, 1);
}

}  // namespace

void softmax_s8(const SoftmaxParams& p, const int8_t* input, int8_t* output) {
  for (int32_t row = 0; row < p.rows; ++row) {
    const int8_t* in = input + row * p.depth;
    int8_t* out = output + row * p.depth;
    int32_t top = -128;
    for (int32_t c = 0; c < p.depth; ++c) top = in[c] > top ? in[c] : top;
    int32_t sum_of_exps = 0;  // Q12.19
    for (int32_t c = 0; c < p.depth; ++c) {
      const int32_t diff = in[c] - top;
      if (diff >= p.diff_min) {
        const int32_t rescaled = srdhm(diff * (1 << p.input_left_shift), p.input_multiplier);
        sum_of_exps += rounding_divide_by_pot(exp_on_negative_values(rescaled), 12);
      }
    }
    const int headroom_plus_one = count_leading_zeros(static_cast<uint32_t>(sum_of_exps));
    const int num_bits_over_unit = 12 - headroom_plus_one;
    const int32_t shifted_sum_minus_one =
        static_cast<int32_t>((static_cast<uint32_t>(sum_of_exps) << headroom_plus_one) - (uint32_t{1} << 31));
    const int32_t shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one);
    for (int32_t c = 0; c < p.depth; ++c) {
      const int32_t diff = in[c] - top;
      if (diff >= p.diff_min) {
        const int32_t rescaled = srdhm(diff * (1 << p.input_left_shift), p.input_multiplier);
        const int32_t exp_in_0 = exp_on_negative_values(rescaled);
        const int32_t unsat = rounding_divide_by_pot(srdhm(shifted_scale, exp_in_0), num_bits_over_unit + 31 - 8);
        out[c] = clamp_to_int8(unsat - 128, -128, 127);
      } else {
        out[c] = -128;
      }
    }
  }
}

}  // namespace tx
