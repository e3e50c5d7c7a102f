// PRELU, alpha broadcast against the input: values >= 0 (after the zero point) are rescaled to the output,
// negative ones multiplied by their alpha and rescaled by input scale * alpha scale / output scale.
#include "broadcast.h"
#include "tinyexit/quantization.h"

namespace tx {

void prelu_s8(const PreluParams& p, const int8_t* input, const int8_t* alpha, int8_t* output) {
  broadcast_loops(p.shape, input, alpha, output, [p](int32_t x, int32_t a) {
    const int32_t value = x + p.input_offset;
    const int32_t scaled =
        value >= 0 ? multiply_by_quantized_multiplier(value, p.identity_multiplier, p.identity_shift)
                   : multiply_by_quantized_multiplier(value * (a + p.alpha_offset), p.alpha_multiplier, p.alpha_shift);
    return clamp_to_int8(scaled + p.output_offset, -128, 127);
  });
}

}  // namespace tx
