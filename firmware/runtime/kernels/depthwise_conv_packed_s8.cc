// DEPTHWISE_CONV_2D with 4- or 2-bit filters (kernels.h PackedWeights): depthwise_conv_s8.cc's loops, each
// weight unpacked where it is used.
#include "tinyexit/kernels.h"
#include "tinyexit/quantization.h"

namespace tx {

void depthwise_conv_packed_s8(const ConvParams& p, const int8_t* input, const PackedWeights& filter,
                              const int32_t* bias, int8_t* output) {
  const int32_t in_h = p.input.h, in_w = p.input.w, in_c = p.input.c, out_c = p.output.c;
  const int32_t k_h = p.filter.h, k_w = p.filter.w;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t oy = 0; oy < p.output.h; ++oy) {
      const int32_t y0 = oy * p.stride_h - p.pad_h;
      for (int32_t ox = 0; ox < p.output.w; ++ox) {
        const int32_t x0 = ox * p.stride_w - p.pad_w;
        for (int32_t ic = 0; ic < in_c; ++ic) {
          for (int32_t m = 0; m < p.depth_multiplier; ++m) {
            const int32_t oc = ic * p.depth_multiplier + m;
            int32_t acc = 0;
            for (int32_t ky = 0; ky < k_h; ++ky) {
              const int32_t y = y0 + p.dilation_h * ky;
              if (y < 0 || y >= in_h) continue;
              for (int32_t kx = 0; kx < k_w; ++kx) {
                const int32_t x = x0 + p.dilation_w * kx;
                if (x < 0 || x >= in_w) continue;
                acc += packed_weight(filter, (ky * k_w + kx) * out_c + oc) *
                       (input[((b * in_h + y) * in_w + x) * in_c + ic] + p.input_offset);
              }
            }
            if (bias) acc += bias[oc];
            acc = multiply_by_quantized_multiplier(acc, p.multiplier[oc], p.shift[oc]) + p.output_offset;
            output[((b * p.output.h + oy) * p.output.w + ox) * out_c + oc] = clamp_to_int8(acc, p.act_min, p.act_max);
          }
        }
      }
    }
  }
}

}  // namespace tx
