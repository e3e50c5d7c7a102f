// CONV_2D, Cortex-M DSP path: each pair of output pixels gathers its receptive fields into an int16 column
// buffer (input offset added, padding left at 0, which is what the reference's skipped taps contribute),
// then one pass over the output channels does two pixels x two channels per SMLAD pair (gemm.h).
#include "gemm.h"

namespace tx::dsp {
namespace {

// The column of output pixel (b, oy, ox) into slot `pixel` of the column buffer.
void gather(const ConvParams& p, const GemmDspParams& d, const int8_t* input, int32_t b, int32_t oy, int32_t ox,
            uint32_t* cols, int32_t pixel) {
  const int32_t in_h = p.input.h, in_w = p.input.w, in_c = p.input.c;
  const int32_t y0 = oy * p.stride_h - p.pad_h, x0 = ox * p.stride_w - p.pad_w;
  if (d.grouped) {
    const uint32_t offset2 = offset_pair(p.input_offset);
    const int32_t groups_per_tap = in_c / 4;
    int32_t group = 0;
    for (int32_t ky = 0; ky < p.filter.h; ++ky) {
      const int32_t y = y0 + p.dilation_h * ky;
      for (int32_t kx = 0; kx < p.filter.w; ++kx, group += groups_per_tap) {
        const int32_t x = x0 + p.dilation_w * kx;
        if (y < 0 || y >= in_h || x < 0 || x >= in_w) {
          zero_groups(groups_per_tap, cols, group, pixel);
        } else {
          widen_grouped(input + ((b * in_h + y) * in_w + x) * in_c, in_c, offset2, cols, group, pixel);
        }
      }
    }
    zero_groups(d.k_padded / 4 - group, cols, group, pixel);
    return;
  }
  // one value at a time (in_c % 4 != 0, e.g. a first layer on 1 channel), natural order: 4 values of this
  // pixel, then skip the other pixel's 4
  int16_t* dst = reinterpret_cast<int16_t*>(cols) + pixel * 4;
  int32_t k = 0;
  const auto put_next = [&](int32_t value) {
    const int16_t v = static_cast<int16_t>(value);
    __builtin_memcpy(dst, &v, 2);
    ++k;
    dst += (k & 3) ? 1 : 5;
  };
  for (int32_t ky = 0; ky < p.filter.h; ++ky) {
    const int32_t y = y0 + p.dilation_h * ky;
    for (int32_t kx = 0; kx < p.filter.w; ++kx) {
      const int32_t x = x0 + p.dilation_w * kx;
      if (y < 0 || y >= in_h || x < 0 || x >= in_w) {
        for (int32_t c = 0; c < in_c; ++c) put_next(0);
      } else {
        const int8_t* src = input + ((b * in_h + y) * in_w + x) * in_c;
        for (int32_t c = 0; c < in_c; ++c) put_next(src[c] + p.input_offset);
      }
    }
  }
  while (k < d.k_padded) put_next(0);
}

template <bool kFast, bool kClamp>
void run(const ConvParams& p, const GemmDspParams& d, const int8_t* input, int8_t* output, uint32_t* cols) {
  int32_t* const sums = reinterpret_cast<int32_t*>(cols + d.k_padded);
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  const int32_t out_h = p.output.h, out_w = p.output.w, out_c = p.output.c;
  const int32_t pixels = p.output.n * out_h * out_w;
  for (int32_t first = 0; first < pixels; first += 2) {
    const bool pair = first + 1 < pixels;
    for (int32_t slot = 0; slot < 2; ++slot) {
      const int32_t i = pair ? first + slot : first;
      gather(p, d, input, i / (out_h * out_w), (i / out_w) % out_h, i % out_w, cols, slot);
    }
    int8_t* out = output + first * out_c;
    if (pair) {
      gemm_pair<kFast, kClamp, true>(d, q, out_c, cols, sums, out, out + out_c);
    } else {
      gemm_pair<kFast, kClamp, false>(d, q, out_c, cols, sums, out, nullptr);
    }
  }
}

}  // namespace

void conv_s8(const ConvParams& p, const GemmDspParams& d, const int8_t* input, int8_t* output, void* scratch) {
  uint32_t* cols = static_cast<uint32_t*>(scratch);
  const bool clamp = p.act_min > -128 || p.act_max < 127;
  if (d.fast_requantize) {
    clamp ? run<true, true>(p, d, input, output, cols) : run<true, false>(p, d, input, output, cols);
  } else {
    clamp ? run<false, true>(p, d, input, output, cols) : run<false, false>(p, d, input, output, cols);
  }
}

}  // namespace tx::dsp
