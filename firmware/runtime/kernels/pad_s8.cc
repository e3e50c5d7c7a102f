// PAD: the input copied into the middle of the output, everything else set to the pad value (the output
// zero point: PAD keeps its input's quantization).
#include "tinyexit/kernels.h"

namespace tx {

void pad_s8(const PadParams& p, const int8_t* input, int8_t* output) {
  const Shape4& in = p.input;
  const Shape4& out = p.output;
  for (int32_t b = 0; b < out.n; ++b) {
    for (int32_t y = 0; y < out.h; ++y) {
      for (int32_t x = 0; x < out.w; ++x) {
        int8_t* dst = output + ((b * out.h + y) * out.w + x) * out.c;
        const int32_t ib = b - p.before_n, iy = y - p.before_h, ix = x - p.before_w;
        const bool inside = ib >= 0 && ib < in.n && iy >= 0 && iy < in.h && ix >= 0 && ix < in.w;
        const int8_t* src = inside ? input + ((ib * in.h + iy) * in.w + ix) * in.c : nullptr;
        for (int32_t c = 0; c < out.c; ++c) {
          const int32_t ic = c - p.before_c;
          dst[c] = (src != nullptr && ic >= 0 && ic < in.c) ? src[ic] : static_cast<int8_t>(p.value);
        }
      }
    }
  }
}

}  // namespace tx
