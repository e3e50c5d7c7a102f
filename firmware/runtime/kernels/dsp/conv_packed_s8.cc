// CONV_2D with 4- or 2-bit filters, Cortex-M DSP path: the int8 DSP kernel's scheme (conv_s8.cc: each pair
// of output pixels gathered into the int16 column buffer, padding left at 0) with the sub-byte GEMM
// (gemm_packed.h).
#include "gemm_packed.h"

namespace tx::dsp {
namespace {

// The column of output pixel (b, oy, ox) into slot `pixel` of the column buffer.
void gather_column(const ConvParams& p, const GemmPackedDspParams& d, const int8_t* input, int32_t b, int32_t oy,
                   int32_t ox, uint32_t* cols, int32_t pixel) {
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
  // in_c % 4 != 0 (a first layer): value k of the column goes to int16 slot (k / 4) * 8 + pixel * 4 + k % 4
  int16_t* slots = reinterpret_cast<int16_t*>(cols) + pixel * 4;
  int32_t k = 0;
  for (int32_t ky = 0; ky < p.filter.h; ++ky) {
    const int32_t y = y0 + p.dilation_h * ky;
    for (int32_t kx = 0; kx < p.filter.w; ++kx) {
      const int32_t x = x0 + p.dilation_w * kx;
      const bool inside = y >= 0 && y < in_h && x >= 0 && x < in_w;
      const int8_t* src = input + ((b * in_h + y) * in_w + x) * in_c;
      for (int32_t ic = 0; ic < in_c; ++ic, ++k) {
        slots[(k >> 2) * 8 + (k & 3)] = static_cast<int16_t>(inside ? src[ic] + p.input_offset : 0);
      }
    }
  }
  for (; k < d.k_padded; ++k) slots[(k >> 2) * 8 + (k & 3)] = 0;
}

}  // namespace

void conv_packed_s8(const ConvParams& p, const GemmPackedDspParams& d, const int8_t* input, int8_t* output,
                    void* scratch) {
  uint32_t* cols = static_cast<uint32_t*>(scratch);
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  const int32_t out_h = p.output.h, out_w = p.output.w, out_c = p.output.c;
  const int32_t pixels = p.output.n * out_h * out_w;
  for (int32_t first = 0; first < pixels; first += 2) {
    const bool pair = first + 1 < pixels;
    for (int32_t slot = 0; slot < 2; ++slot) {
      const int32_t i = pair ? first + slot : first;
      gather_column(p, d, input, i / (out_h * out_w), (i / out_w) % out_h, i % out_w, cols, slot);
    }
    int8_t* out = output + first * out_c;
    gemm_packed_pair(d, q, out_c, cols, out, pair ? out + out_c : nullptr);
  }
}

}  // namespace tx::dsp
