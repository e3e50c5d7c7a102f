// The short requantizations of the DSP ADD, SUB and MUL kernels (dsp.h's derivation), exact for the
// parameters the code generator hands them (tinyexit/codegen/ops/elementwise.py, the ops' dsp()).
#pragma once

#include "../broadcast.h"
#include "tinyexit/dsp.h"
#include "tinyexit/kernels.h"

namespace tx::dsp {

// ADD's input rescale MultiplyByQuantizedMultiplier((x + offset) * 2^20, multiplier, shift) takes one of two
// forms. The input with the larger scale has multiplier 2^30 and shift 0: exactly (x + offset) * 2^19.
struct ShiftRescale {
  int32_t offset_q19;
  explicit ShiftRescale(int32_t offset) : offset_q19(offset * (1 << 19)) {}
  int32_t operator()(int32_t x) const { return x * (1 << 19) + offset_q19; }
};

// The other shifts right (shift <= -1): |(x + offset) * 2^21| < 2^29, so the doubling high multiply is one
// SMMULR, and the rounding shift as in dsp.h requantize_fast.
struct MultiplyRescale {
  int32_t offset_q21, multiplier, shift_minus_1;
  MultiplyRescale(int32_t offset, int32_t multiplier_, int32_t shift)
      : offset_q21(offset * (1 << 21)), multiplier(multiplier_), shift_minus_1(-shift - 1) {}
  int32_t operator()(int32_t x) const {
    const int32_t s = smmulr(x * (1 << 21) + offset_q21, multiplier);
    return (((s + (s >> 31)) >> shift_minus_1) + 1) >> 1;
  }
};

// The output requantization with a right shift (dsp.h requantize_fast) and the activation's clamp.
struct OutputRequantize {
  int32_t multiplier, shift_minus_1, round_offset, act_min, act_max;
  OutputRequantize(int32_t multiplier_, int32_t shift, int32_t output_offset, int32_t act_min_, int32_t act_max_)
      : multiplier(multiplier_), shift_minus_1(-shift - 1), round_offset(1 + 2 * output_offset),
        act_min(act_min_), act_max(act_max_) {}
  int8_t operator()(int32_t acc) const {  // |acc| < 2^30
    const int32_t v = requantize_fast(acc, multiplier, shift_minus_1, round_offset);
    return static_cast<int8_t>(v < act_min ? act_min : (v > act_max ? act_max : v));
  }
};

inline bool is_shift_rescale(int32_t multiplier, int32_t shift) { return multiplier == (1 << 30) && shift == 0; }

// ADD (kSign 1) and SUB (kSign -1): |rescaled a +- rescaled b| <= 2 * 255 * 2^20 < 2^30.
template <int kSign>
void add_or_subtract(const AddParams& p, const int8_t* a, const int8_t* b, int8_t* output) {
  const OutputRequantize requantize(p.output_multiplier, p.output_shift, p.output_offset, p.act_min, p.act_max);
  auto run = [&](auto rescale_a, auto rescale_b) {
    broadcast_loops(p.shape, a, b, output,
                    [=](int32_t x, int32_t y) { return requantize(rescale_a(x) + kSign * rescale_b(y)); });
  };
  const bool shift_a = is_shift_rescale(p.input1_multiplier, p.input1_shift);
  const bool shift_b = is_shift_rescale(p.input2_multiplier, p.input2_shift);
  if (shift_a && shift_b) {
    run(ShiftRescale(p.input1_offset), ShiftRescale(p.input2_offset));
  } else if (shift_a) {
    run(ShiftRescale(p.input1_offset), MultiplyRescale(p.input2_offset, p.input2_multiplier, p.input2_shift));
  } else {
    run(MultiplyRescale(p.input1_offset, p.input1_multiplier, p.input1_shift), ShiftRescale(p.input2_offset));
  }
}

}  // namespace tx::dsp
