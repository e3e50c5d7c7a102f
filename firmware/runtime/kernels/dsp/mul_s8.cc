// MUL, Cortex-M DSP path: |product| <= 255^2 < 2^16, so dsp.h's short requantizations are exact for a right
// shift and for a left shift up to 14 (|product| * 2^(shift + 1) < 2^31); the code generator calls it then.
// Same bits as ../mul_s8.cc.
#include "elementwise.h"

namespace tx::dsp {

void mul_s8(const MulParams& p, const int8_t* a, const int8_t* b, int8_t* output) {
  const int32_t o1 = p.input1_offset, o2 = p.input2_offset, lo = p.act_min, hi = p.act_max;
  if (p.output_shift < 0) {
    const OutputRequantize requantize(p.output_multiplier, p.output_shift, p.output_offset, lo, hi);
    broadcast_loops(p.shape, a, b, output, [=](int32_t x, int32_t y) { return requantize((x + o1) * (y + o2)); });
  } else {
    const int32_t m = p.output_multiplier, left_shift_plus_1 = p.output_shift + 1, offset = p.output_offset;
    broadcast_loops(p.shape, a, b, output, [=](int32_t x, int32_t y) {
      const int32_t v = requantize_fast_left((x + o1) * (y + o2), m, left_shift_plus_1, offset);
      return static_cast<int8_t>(v < lo ? lo : (v > hi ? hi : v));
    });
  }
}

}  // namespace tx::dsp
