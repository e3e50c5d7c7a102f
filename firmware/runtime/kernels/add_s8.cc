// ADD of two same-shape int8 tensors: both inputs are rescaled to a common scale with 20 bits of
// headroom, summed, and requantized to the output (TFLite's general quantized path).
#include "tinyexit/kernels.h"
#include "tinyexit/quantization.h"

namespace tx {

void add_s8(const AddParams& p, const int8_t* a, const int8_t* b, int8_t* output) {
  for (int32_t i = 0; i < p.size; ++i) {
    const int32_t sa = multiply_by_quantized_multiplier((a[i] + p.input1_offset) * (1 << p.left_shift),
                                                        p.input1_multiplier, p.input1_shift);
    const int32_t sb = multiply_by_quantized_multiplier((b[i] + p.input2_offset) * (1 << p.left_shift),
                                                        p.input2_multiplier, p.input2_shift);
    const int32_t sum = multiply_by_quantized_multiplier(sa + sb, p.output_multiplier, p.output_shift) + p.output_offset;
    output[i] = clamp_to_int8(sum, p.act_min, p.act_max);
  }
}

}  // namespace tx
