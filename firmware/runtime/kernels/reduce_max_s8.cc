// REDUCE_MAX over any axes (kernels_matmul.h ReduceParams); TFLite Micro requires input and output quantized
// alike, so the largest raw value is the result.
#include "tinyexit/kernels.h"

namespace tx {

void reduce_max_s8(const ReduceParams& p, const int8_t* input, int8_t* output) {
  const int32_t d0 = p.dims[0], d1 = p.dims[1], d2 = p.dims[2], d3 = p.dims[3], d4 = p.dims[4];
  const int32_t step3 = d4, step1 = d2 * d3 * d4;  // input strides of the reduced axes
  for (int32_t a = 0; a < d0; ++a) {
    for (int32_t b = 0; b < d2; ++b) {
      const int8_t* base = input + (a * d1 * d2 + b) * d3 * d4;
      for (int32_t c = 0; c < d4; ++c) {
        int32_t largest = -128;
        for (int32_t i = 0; i < d1; ++i) {
          const int8_t* src = base + i * step1 + c;
          for (int32_t j = 0; j < d3; ++j, src += step3) largest = *src > largest ? *src : largest;
        }
        *output++ = static_cast<int8_t>(largest);
      }
    }
  }
}

}  // namespace tx
