// AVERAGE_POOL_2D, Cortex-M DSP path (channels a multiple of 4): one load and two SXTAB16 add four channels'
// values into 16-bit lanes; the lanes go into 32-bit sums every 256 values, before they could overflow (windows
// of at most 256 values on a multiple of 8 channels take eight channels per pass and need no flush).
// Window clipping and rounding as the portable kernel (pool_s8.cc).
#include "tinyexit/dsp.h"
#include "tinyexit/kernels.h"

namespace tx::dsp {

namespace {

constexpr int32_t kLaneValues = 256;  // 256 * 128 <= 32768: a 16-bit lane holds 256 int8 values' sum

inline int32_t average(int32_t sum, int32_t count, const PoolParams& p) {
  const int32_t v = count == 0 ? 0 : sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
  return v < p.act_min ? p.act_min : (v > p.act_max ? p.act_max : v);
}

}  // namespace

// Windows of at most kLaneValues values and channels a multiple of 8: eight channels per pass, two loads and
// four SXTAB16 per input pixel, no flushes.
__attribute__((noinline)) void avg_pool_lanes(const PoolParams& p, const int8_t* input, int8_t* output) {
  const int32_t in_h = p.input.h, in_w = p.input.w, c = p.input.c;
  int8_t* out = output;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t oy = 0; oy < p.output.h; ++oy) {
      const int32_t y0 = oy * p.stride_h - p.pad_h;
      const int32_t ky0 = y0 < 0 ? -y0 : 0;
      const int32_t ky1 = p.filter_h < in_h - y0 ? p.filter_h : in_h - y0;
      for (int32_t ox = 0; ox < p.output.w; ++ox, out += c) {
        const int32_t x0 = ox * p.stride_w - p.pad_w;
        const int32_t kx0 = x0 < 0 ? -x0 : 0;
        const int32_t kx1 = p.filter_w < in_w - x0 ? p.filter_w : in_w - x0;
        const int32_t count = (ky1 - ky0) * (kx1 - kx0), row_values = (kx1 - kx0) * c;
        const int8_t* window = input + ((b * in_h + y0 + ky0) * in_w + x0 + kx0) * c;
        for (int32_t ch = 0; ch < c; ch += 8) {
          uint32_t even0 = 0, odd0 = 0, even1 = 0, odd1 = 0;  // channels ch, ch + 2 | ch + 1, ch + 3 | ch + 4, ...
          const int8_t* row = window + ch;
          for (int32_t ky = ky0; ky < ky1; ++ky, row += in_w * c) {
            for (const int8_t *src = row, *end = row + row_values; src != end; src += c) {
              const uint32_t v0 = load32(src), v1 = load32(src + 4);
              even0 = sxtab16(even0, v0);
              odd0 = sxtab16_ror8(odd0, v0);
              even1 = sxtab16(even1, v1);
              odd1 = sxtab16_ror8(odd1, v1);
            }
          }
          const int32_t sums[8] = {static_cast<int16_t>(even0 & 0xFFFF), static_cast<int16_t>(odd0 & 0xFFFF),
                                   static_cast<int16_t>(even0 >> 16),    static_cast<int16_t>(odd0 >> 16),
                                   static_cast<int16_t>(even1 & 0xFFFF), static_cast<int16_t>(odd1 & 0xFFFF),
                                   static_cast<int16_t>(even1 >> 16),    static_cast<int16_t>(odd1 >> 16)};
          for (int32_t i = 0; i < 8; ++i) out[ch + i] = static_cast<int8_t>(average(sums[i], count, p));
        }
      }
    }
  }
}

void avg_pool_s8(const PoolParams& p, const int8_t* input, int8_t* output) {
  if (p.input.c % 8 == 0 && p.filter_h * p.filter_w <= kLaneValues) return avg_pool_lanes(p, input, output);
  const int32_t in_h = p.input.h, in_w = p.input.w, c = p.input.c;
  int8_t* out = output;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t oy = 0; oy < p.output.h; ++oy) {
      const int32_t y0 = oy * p.stride_h - p.pad_h;
      const int32_t ky0 = y0 < 0 ? -y0 : 0;
      const int32_t ky1 = p.filter_h < in_h - y0 ? p.filter_h : in_h - y0;
      for (int32_t ox = 0; ox < p.output.w; ++ox, out += c) {
        const int32_t x0 = ox * p.stride_w - p.pad_w;
        const int32_t kx0 = x0 < 0 ? -x0 : 0;
        const int32_t kx1 = p.filter_w < in_w - x0 ? p.filter_w : in_w - x0;
        const int32_t count = (ky1 - ky0) * (kx1 - kx0);
        for (int32_t ch = 0; ch < c; ch += 4) {
          int32_t sums[4] = {0, 0, 0, 0};
          uint32_t even = 0, odd = 0;  // lanes: channels ch, ch + 2 | ch + 1, ch + 3
          int32_t in_lanes = 0;
          const auto flush = [&] {
            sums[0] += static_cast<int16_t>(even & 0xFFFF);
            sums[2] += static_cast<int16_t>(even >> 16);
            sums[1] += static_cast<int16_t>(odd & 0xFFFF);
            sums[3] += static_cast<int16_t>(odd >> 16);
            even = odd = 0;
            in_lanes = 0;
          };
          for (int32_t ky = ky0; ky < ky1; ++ky) {
            const int8_t* src = input + ((b * in_h + y0 + ky) * in_w + x0 + kx0) * c + ch;
            for (int32_t kx = kx0; kx < kx1; ++kx, src += c) {
              const uint32_t v = load32(src);
              even = sxtab16(even, v);
              odd = sxtab16_ror8(odd, v);
              if (++in_lanes == kLaneValues) flush();
            }
          }
          flush();
          for (int32_t i = 0; i < 4; ++i) out[ch + i] = static_cast<int8_t>(average(sums[i], count, p));
        }
      }
    }
  }
}

}  // namespace tx::dsp
