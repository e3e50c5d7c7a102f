// TRANSPOSE_CONV as TFLite Micro's reference: input (iy, ix) with filter tap (ky, kx) lands on output
// (iy * stride_h - pad_h + ky, ix * stride_w - pad_w + kx). Here each output gathers the taps that land on it
// (ky = oy + pad_h - iy * stride_h for the input rows in range), so the int32 sums need no buffer.
#include "tinyexit/kernels.h"
#include "tinyexit/quantization.h"

namespace tx {

namespace {

// The filter taps along one axis that reach output position `o`: first, last (inclusive, step `stride`).
struct TapRange {
  int32_t first, last;
};

inline TapRange taps_reaching(int32_t o, int32_t pad, int32_t stride, int32_t in_size, int32_t k_size) {
  const int32_t padded = o + pad;  // = i * stride + k
  const int32_t lowest = padded - (in_size - 1) * stride;  // k for the last input row; same residue mod stride
  const int32_t first = lowest > padded % stride ? lowest : padded % stride;
  const int32_t last = padded < k_size - 1 ? padded : k_size - 1;  // input row >= 0
  return {first, last};
}

}  // namespace

void transpose_conv_s8(const TransposeConvParams& p, const int8_t* input, const int8_t* filter, const int32_t* bias,
                       int8_t* output) {
  const int32_t in_h = p.input.h, in_w = p.input.w, in_c = p.input.c;
  const int32_t k_h = p.filter.h, k_w = p.filter.w, out_c = p.output.c;
  for (int32_t b = 0; b < p.output.n; ++b) {
    const int8_t* image = input + b * in_h * in_w * in_c;
    for (int32_t oy = 0; oy < p.output.h; ++oy) {
      const TapRange ys = taps_reaching(oy, p.pad_h, p.stride_h, in_h, k_h);
      for (int32_t ox = 0; ox < p.output.w; ++ox) {
        const TapRange xs = taps_reaching(ox, p.pad_w, p.stride_w, in_w, k_w);
        for (int32_t oc = 0; oc < out_c; ++oc) {
          int32_t acc = 0;
          for (int32_t ky = ys.first; ky <= ys.last; ky += p.stride_h) {
            const int32_t iy = (oy + p.pad_h - ky) / p.stride_h;
            for (int32_t kx = xs.first; kx <= xs.last; kx += p.stride_w) {
              const int32_t ix = (ox + p.pad_w - kx) / p.stride_w;
              const int8_t* in = image + (iy * in_w + ix) * in_c;
              const int8_t* w = filter + ((oc * k_h + ky) * k_w + kx) * in_c;
              for (int32_t ic = 0; ic < in_c; ++ic) acc += (in[ic] + p.input_offset) * w[ic];
            }
          }
          if (bias) acc += bias[oc];
          acc = multiply_by_quantized_multiplier(acc, p.multiplier[oc], p.shift[oc]) + p.output_offset;
          *output++ = clamp_to_int8(acc, -128, 127);
        }
      }
    }
  }
}

}  // namespace tx
