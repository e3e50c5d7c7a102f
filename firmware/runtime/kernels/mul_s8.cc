// MUL, broadcasting: the product of the zero-point-corrected inputs, requantized by one multiplier
// (input1 scale * input2 scale / output scale).
#include "broadcast.h"
#include "tinyexit/quantization.h"

namespace tx {

void mul_s8(const MulParams& p, const int8_t* a, const int8_t* b, int8_t* output) {
  broadcast_loops(p.shape, a, b, output, [p](int32_t x, int32_t y) {
    const int32_t product = (x + p.input1_offset) * (y + p.input2_offset);
    const int32_t scaled = multiply_by_quantized_multiplier(product, p.output_multiplier, p.output_shift);
    return clamp_to_int8(scaled + p.output_offset, p.act_min, p.act_max);
  });
}

}  // namespace tx
