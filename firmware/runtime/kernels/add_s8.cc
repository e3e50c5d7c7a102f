// ADD, broadcasting: both inputs are rescaled to a common scale with 20 bits of headroom, summed, and
// requantized to the output (TFLite's general quantized path).
#include "broadcast.h"
#include "tinyexit/quantization.h"

namespace tx {

void add_s8(const AddParams& p, const int8_t* a, const int8_t* b, int8_t* output) {
  broadcast_loops(p.shape, a, b, output, [p](int32_t x, int32_t y) {
    const int32_t sx = multiply_by_quantized_multiplier((x + p.input1_offset) * (1 << p.left_shift),
                                                        p.input1_multiplier, p.input1_shift);
    const int32_t sy = multiply_by_quantized_multiplier((y + p.input2_offset) * (1 << p.left_shift),
                                                        p.input2_multiplier, p.input2_shift);
    const int32_t sum = multiply_by_quantized_multiplier(sx + sy, p.output_multiplier, p.output_shift);
    return clamp_to_int8(sum + p.output_offset, p.act_min, p.act_max);
  });
}

}  // namespace tx
