// MEAN and SUM over any axes (kernels_matmul.h ReduceParams), as TFLite Micro's QuantizedMeanOrSum:
// (sum - input zero point * count) rescaled by a multiplier that, for MEAN, already holds the division by the
// count. (Older TFLite Micro releases took a truncating plain average when input and output were quantized
// alike; the reference this project matches rescales then too.)
#include "tinyexit/kernels.h"
#include "tinyexit/quantization.h"

namespace tx {

namespace {

// Each output: the sum over d1 and d3, less the zero point's share, rescaled.
void rescaled_sums(const ReduceParams& p, const int8_t* input, int8_t* output) {
  const int32_t d0 = p.dims[0], d1 = p.dims[1], d2 = p.dims[2], d3 = p.dims[3], d4 = p.dims[4];
  const int32_t step3 = d4, step1 = d2 * d3 * d4;  // input strides of the reduced axes
  const int32_t zero_sum = p.input_zero_point * d1 * d3;
  for (int32_t a = 0; a < d0; ++a) {
    for (int32_t b = 0; b < d2; ++b) {
      const int8_t* base = input + (a * d1 * d2 + b) * d3 * d4;
      for (int32_t c = 0; c < d4; ++c) {
        int32_t acc = 0;
        for (int32_t i = 0; i < d1; ++i) {
          const int8_t* src = base + i * step1 + c;
          for (int32_t j = 0; j < d3; ++j, src += step3) acc += *src;
        }
        const int32_t v = multiply_by_quantized_multiplier(acc - zero_sum, p.multiplier, p.shift);
        *output++ = clamp_to_int8(v + p.output_zero_point, -128, 127);
      }
    }
  }
}

}  // namespace

void mean_s8(const ReduceParams& p, const int8_t* input, int8_t* output) { rescaled_sums(p, input, output); }
void sum_s8(const ReduceParams& p, const int8_t* input, int8_t* output) { rescaled_sums(p, input, output); }

}  // namespace tx
