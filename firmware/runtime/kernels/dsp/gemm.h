// Shared by the DSP CONV_2D and FULLY_CONNECTED kernels: two output pixels at a time against every output
// channel, two channels at a time, from int16 operands (inputs widened with their offset added into the column
// buffer, int8 filter words widened in registers with SXTB16), so one SMLAD does two multiply-accumulates and
// each widened weight is used twice.
#pragma once

#include <cstdint>
#include <type_traits>

#include "tinyexit/dsp.h"
#include "tinyexit/kernels.h"

namespace tx::dsp {

// A layer's requantization, copied into locals by each kernel: through a reference the compiler would
// reload every field after each int8 store (it may alias anything).
struct Requantization {
  const int32_t* multiplier;
  const int32_t* shift;
  int32_t output_offset, act_min, act_max;
};

// kernels.h fast_mode: which requantization a layer's outputs take.
constexpr int kExactRequant = 0, kRightShiftRequant = 1, kLeftShiftRequant = 2, kMixedShiftRequant = 3;

template <int kMode, bool kClamp>
struct Requantizer {
  const int32_t* fast;  // [multiplier, ~shift or shift + 1 or ~(shift + 1)] per channel (kMode != kExactRequant)
  const int32_t* multiplier;
  const int32_t* shift;
  int32_t output_offset, round_offset, act_min, act_max;
  uint32_t act_min4, act_max4;  // the bounds in each byte

  Requantizer(const Requantization& q, const int32_t* fast_requant)
      : fast(fast_requant), multiplier(q.multiplier), shift(q.shift), output_offset(q.output_offset),
        round_offset(1 + 2 * q.output_offset), act_min(q.act_min), act_max(q.act_max),
        act_min4(splat_s8x4(q.act_min)), act_max4(splat_s8x4(q.act_max)) {}

  int8_t operator()(int32_t acc, int32_t channel) const {
    int32_t v = unclamped(acc, channel);
    if (kClamp) {
      v = v < act_min ? act_min : v;
      v = v > act_max ? act_max : v;
    }
    return static_cast<int8_t>(v);
  }

  // Four results packed into a word (pack_s8x4) clamped to the activation's range: 4 SIMD instructions
  // instead of 3 per value.
  uint32_t clamp4(uint32_t packed) const {
    if (!kClamp) return packed;
    return min_s8x4(max_s8x4(packed, act_min4), act_max4);
  }

  // The value saturated to int8, before the activation's clamp.
  int32_t unclamped(int32_t acc, int32_t channel) const {
    int32_t v;
    if (kMode == kRightShiftRequant) {
      v = requantize_fast(acc, fast[2 * channel], fast[2 * channel + 1], round_offset);
    } else if (kMode == kLeftShiftRequant) {
      v = requantize_fast_left(acc, fast[2 * channel], fast[2 * channel + 1], output_offset);
    } else if (kMode == kMixedShiftRequant) {  // the sign of the second entry says which way the channel shifts
      const int32_t code = fast[2 * channel + 1];
      v = code >= 0 ? requantize_fast(acc, fast[2 * channel], code, round_offset)
                    : requantize_fast_left(acc, fast[2 * channel], ~code, output_offset);
    } else {
      v = requantize_exact(acc, multiplier[channel], shift[channel], output_offset);
    }
    return v;
  }
};

// Calls run(mode, clamp) with the layer's requantization mode and whether its activation clamps below
// int8's range, each as a compile-time constant (std::integral_constant), so each kernel is instantiated
// once per combination and the hot loops carry no branch on them.
template <typename Run>
inline void with_requantizer(int32_t fast_mode, const Requantization& q, Run&& run) {
  using Exact = std::integral_constant<int, kExactRequant>;
  using Right = std::integral_constant<int, kRightShiftRequant>;
  using Left = std::integral_constant<int, kLeftShiftRequant>;
  using Mixed = std::integral_constant<int, kMixedShiftRequant>;
  const bool clamp = q.act_min > -128 || q.act_max < 127;
  switch (fast_mode) {
    case kRightShiftRequant: return clamp ? run(Right{}, std::true_type{}) : run(Right{}, std::false_type{});
    case kLeftShiftRequant: return clamp ? run(Left{}, std::true_type{}) : run(Left{}, std::false_type{});
    case kMixedShiftRequant: return clamp ? run(Mixed{}, std::true_type{}) : run(Mixed{}, std::false_type{});
    default: return clamp ? run(Exact{}, std::true_type{}) : run(Exact{}, std::false_type{});
  }
}

// Both pixels' outputs for every channel. cols: per group of 4 products, 2 words of pixel a then 2 words of
// pixel b (k_padded int16 per pixel). out_b nullptr: pixel b is a copy of a (odd
// pixel count) and its results are dropped. (gemm.cc)
template <int kMode, bool kClamp>
void gemm_pair(const GemmDspParams& d, const Requantization& q, int32_t out_c, const uint32_t* cols,
               int8_t* out_a, int8_t* out_b);

inline uint32_t offset_pair(int32_t offset) {
  return (static_cast<uint32_t>(offset) & 0xFFFF) | (static_cast<uint32_t>(offset) << 16);
}

}  // namespace tx::dsp
