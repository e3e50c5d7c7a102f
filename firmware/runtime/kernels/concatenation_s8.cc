#include "tinyexit/kernels.h"

namespace tx {

void concatenation_s8(const ConcatParams& p, const int8_t* const* inputs, int8_t* output) {
  for (int32_t o = 0; o < p.outer; ++o) {
    for (int32_t i = 0; i < p.count; ++i) {
      const int8_t* src = inputs[i] + o * p.inner[i];
      for (int32_t k = 0; k < p.inner[i]; ++k) *output++ = src[k];
    }
  }
}

void copy_s8(const int8_t* input, int32_t size, int8_t* output) {
  if (input == output) return;
  for (int32_t i = 0; i < size; ++i) output[i] = input[i];
}

}  // namespace tx
