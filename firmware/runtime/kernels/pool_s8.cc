// AVERAGE_POOL_2D and MAX_POOL_2D: the window is clipped to the input, and the average divides by the
// number of input values actually inside it, rounding half away from zero.
#include "tinyexit/kernels.h"
#include "tinyexit/quantization.h"

namespace tx {

template <bool kAverage>
static void pool_s8(const PoolParams& p, const int8_t* input, int8_t* output) {
  const int32_t in_h = p.input.h, in_w = p.input.w, c = p.input.c;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t oy = 0; oy < p.output.h; ++oy) {
      const int32_t y0 = oy * p.stride_h - p.pad_h;
      const int32_t ky0 = y0 < 0 ? -y0 : 0;
      const int32_t ky1 = p.filter_h < in_h - y0 ? p.filter_h : in_h - y0;
      for (int32_t ox = 0; ox < p.output.w; ++ox) {
        const int32_t x0 = ox * p.stride_w - p.pad_w;
        const int32_t kx0 = x0 < 0 ? -x0 : 0;
        const int32_t kx1 = p.filter_w < in_w - x0 ? p.filter_w : in_w - x0;
        const int32_t count = (ky1 - ky0) * (kx1 - kx0);
        for (int32_t ch = 0; ch < c; ++ch) {
          int32_t acc = kAverage ? 0 : -128;
          for (int32_t ky = ky0; ky < ky1; ++ky) {
            for (int32_t kx = kx0; kx < kx1; ++kx) {
              const int32_t v = input[((b * in_h + y0 + ky) * in_w + x0 + kx) * c + ch];
              if (kAverage) acc += v;
              else if (v > acc) acc = v;
            }
          }
          if (kAverage && count > 0) acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
          output[((b * p.output.h + oy) * p.output.w + ox) * c + ch] = clamp_to_int8(acc, p.act_min, p.act_max);
        }
      }
    }
  }
}

void avg_pool_s8(const PoolParams& p, const int8_t* input, int8_t* output) { pool_s8<true>(p, input, output); }
void max_pool_s8(const PoolParams& p, const int8_t* input, int8_t* output) { pool_s8<false>(p, input, output); }

}  // namespace tx
