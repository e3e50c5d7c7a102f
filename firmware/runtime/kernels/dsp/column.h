// The CONV_2D DSP kernels' column gathering (conv_s8.cc, conv_packed_s8.cc): each output pixel's receptive
// field, widened to int16, into one slot of the two-pixel column buffer the GEMM reads (gemm.h).
#pragma once

#include "gemm.h"

namespace tx::dsp {

// Appends int16 values in natural order to one pixel's slot of the column buffer, where each group of 4
// products is followed by the other pixel's 4: whole groups at a time where it can.
struct Column {
  int16_t* dst;
  int32_t k = 0;

  Column(uint32_t* cols, int32_t pixel) : dst(reinterpret_cast<int16_t*>(cols) + pixel * 4) {}

  void put(int32_t value) {
    *dst = static_cast<int16_t>(value);
    ++k;
    dst += (k & 3) ? 1 : 5;
  }

  void values(const int8_t* src, int32_t count, int32_t offset) {
    for (; count > 0 && (k & 3) != 0; --count) put(*src++ + offset);
    for (; count >= 4; count -= 4, src += 4, dst += 8, k += 4) {
      dst[0] = static_cast<int16_t>(src[0] + offset);
      dst[1] = static_cast<int16_t>(src[1] + offset);
      dst[2] = static_cast<int16_t>(src[2] + offset);
      dst[3] = static_cast<int16_t>(src[3] + offset);
    }
    for (; count > 0; --count) put(*src++ + offset);
  }

  void zeros(int32_t count) {
    for (; count > 0 && (k & 3) != 0; --count) put(0);
    for (; count >= 4; count -= 4, dst += 8, k += 4) dst[0] = dst[1] = dst[2] = dst[3] = 0;
    for (; count > 0; --count) put(0);
  }
};

// The column of output pixel (b, oy, ox) into slot `pixel` of the column buffer (input offset added, padding
// left at 0, which is what the reference's skipped taps contribute). Params: GemmDspParams or
// GemmPackedDspParams (both say `grouped` and `k_padded`).
template <typename Params>
inline void gather(const ConvParams& p, const Params& d, const int8_t* input, int32_t b, int32_t oy, int32_t ox,
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
  // in_c % 4 != 0 (e.g. a first layer on 1 or 3 channels): the column in natural order, runs of values at a
  // time; bounds are settled per filter row, not per value
  Column column(cols, pixel);
  const int32_t row_values = p.filter.w * in_c;
  // the filter columns that land inside the input: kx in [kx_first, kx_end)
  int32_t kx_first = 0, kx_end = p.filter.w;
  while (kx_first < kx_end && x0 + p.dilation_w * kx_first < 0) ++kx_first;
  while (kx_end > kx_first && x0 + p.dilation_w * (kx_end - 1) >= in_w) --kx_end;
  for (int32_t ky = 0; ky < p.filter.h; ++ky) {
    const int32_t y = y0 + p.dilation_h * ky;
    if (y < 0 || y >= in_h) {
      column.zeros(row_values);
      continue;
    }
    column.zeros(kx_first * in_c);
    const int8_t* row = input + ((b * in_h + y) * in_w + x0) * in_c;
    if (p.dilation_w == 1) {  // the inside taps are contiguous
      column.values(row + kx_first * in_c, (kx_end - kx_first) * in_c, p.input_offset);
    } else {
      for (int32_t kx = kx_first; kx < kx_end; ++kx) column.values(row + p.dilation_w * kx * in_c, in_c, p.input_offset);
    }
    column.zeros((p.filter.w - kx_end) * in_c);
  }
  column.zeros(d.k_padded - column.k);
}

}  // namespace tx::dsp
