// MEAN over height and width (NHWC, axes 1 and 2), as TFLite Micro's integer QuantizedMeanOrSum: the sum of
// (x - input zero point) rescaled by a multiplier that already holds the division by the element count.
#include "tinyexit/kernels.h"
#include "tinyexit/quantization.h"

namespace tx {

void mean_s8(const MeanParams& p, const int8_t* input, int8_t* output) {
  const Shape4& in = p.input;
  const int32_t count = in.h * in.w;
  for (int32_t b = 0; b < in.n; ++b) {
    for (int32_t c = 0; c < in.c; ++c) {
      int32_t acc = 0;
      const int8_t* src = input + b * count * in.c + c;
      for (int32_t i = 0; i < count; ++i, src += in.c) acc += *src - p.input_zero_point;
      const int32_t v = multiply_by_quantized_multiplier(acc, p.multiplier, p.shift) + p.output_zero_point;
      output[b * in.c + c] = clamp_to_int8(v, -128, 127);
    }
  }
}

}  // namespace tx
