// The DSP depthwise kernel's inner part for layers whose requantization is the short right-shift one
// (fast_mode 1) and whose filters have 3, 5 or 9 taps, the common case: one pixel's groups of 4 channels,
// each from one stream the code generator writes (DepthwiseDspParams::stream), products, requantization and
// store in one piece of assembly with every value in a register.
//
// Stream, per group of 4 channels: the folded biases of channels 0..3; per tap the int8 word of
// DepthwiseDspParams::filter; multiplier and ~shift of channels 0..3. The sums are doubled to the 2 * acc
// dsp.h's requantize_fast starts from. With 4- or 2-bit weights: the biases times 2^(16 - bits) and the
// group's DepthwisePackedDspParams::filter words, the sums shifted back to 2 * acc before the requantization.
#pragma once

#include "gemm.h"

namespace tx::dsp {

constexpr int32_t kMaxTaps = 64;  // the code generator uses the portable kernel for larger filters

// Calls visit(base, offsets, out) for each output pixel, where base is the address of its top-left tap's
// channel 0 and tap t's 4 inputs of a group lie at (group base) + offsets[t]. The taps sit at fixed byte
// offsets (computed once per layer); only pixels on the border get their own, where the taps outside the
// input point at the zero-point vector instead.
template <typename Visit>
inline void for_each_pixel(const ConvParams& p, const int8_t* padding_vector, const int8_t* input, int8_t* output,
                           Visit&& visit) {
  const int32_t in_h = p.input.h, in_w = p.input.w, c = p.input.c;
  const int32_t fh = p.filter.h, fw = p.filter.w;
  intptr_t inside_offsets[kMaxTaps], border_offsets[kMaxTaps];
  for (int32_t ky = 0, t = 0; ky < fh; ++ky) {
    for (int32_t kx = 0; kx < fw; ++kx, ++t) inside_offsets[t] = (p.dilation_h * ky * in_w + p.dilation_w * kx) * c;
  }
  // the output columns whose taps are all inside the input horizontally: [ox_first, ox_end)
  int32_t ox_first = 0, ox_end = p.output.w;
  while (ox_first < ox_end && ox_first * p.stride_w - p.pad_w < 0) ++ox_first;
  while (ox_end > ox_first && (ox_end - 1) * p.stride_w - p.pad_w + p.dilation_w * (fw - 1) >= in_w) --ox_end;
  const intptr_t padding = reinterpret_cast<intptr_t>(padding_vector);
  int8_t* out = output;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t oy = 0; oy < p.output.h; ++oy) {
      const int32_t y0 = oy * p.stride_h - p.pad_h;
      const bool rows_inside = y0 >= 0 && y0 + p.dilation_h * (fh - 1) < in_h;
      for (int32_t ox = 0; ox < p.output.w; ++ox, out += c) {
        const int32_t x0 = ox * p.stride_w - p.pad_w;
        // integer arithmetic: on the border this address lies outside the input and is never read itself
        const intptr_t base = reinterpret_cast<intptr_t>(input) + ((b * in_h + y0) * in_w + x0) * c;
        const intptr_t* offsets = inside_offsets;
        if (!rows_inside || ox < ox_first || ox >= ox_end) {
          for (int32_t ky = 0, t = 0; ky < fh; ++ky) {
            const int32_t y = y0 + p.dilation_h * ky;
            for (int32_t kx = 0; kx < fw; ++kx, ++t) {
              const int32_t x = x0 + p.dilation_w * kx;
              const bool inside = y >= 0 && y < in_h && x >= 0 && x < in_w;
              border_offsets[t] = inside ? inside_offsets[t] : padding - base;
            }
          }
          offsets = border_offsets;
        }
        visit(base, offsets, out);
      }
    }
  }
}


struct DepthwiseStreamJob {  // read by the assembly: the field order is its layout
  const intptr_t* offsets;   // per tap, the byte offset of its 4 inputs from the group's base
  int32_t channels;          // a multiple of 4
  int32_t round_offset;      // 1 + 2 * output zero point
  uint32_t act_min4, act_max4;
};

// Runs one output pixel: `base` is the address of its top-left tap's channel 0 (only ever read through
// `offsets`, so it may lie outside the input on the border).
using DepthwiseStreamPixel = void (*)(const uint32_t* stream, int8_t* out, intptr_t base, const DepthwiseStreamJob& job);

// The pixel routines (depthwise_stream.cc), by weight bits and tap count.
#define TX_DW_PIXEL(BITS, TAPS) \
  void depthwise_pixel##BITS##_##TAPS(const uint32_t*, int8_t*, intptr_t, const DepthwiseStreamJob&);
TX_DW_PIXEL(8, 3) TX_DW_PIXEL(8, 5) TX_DW_PIXEL(8, 9)
TX_DW_PIXEL(4, 3) TX_DW_PIXEL(4, 5) TX_DW_PIXEL(4, 9)
TX_DW_PIXEL(2, 3) TX_DW_PIXEL(2, 5) TX_DW_PIXEL(2, 9)
#undef TX_DW_PIXEL

// The routine for kBits-bit weights (8, 4 or 2) and `taps` taps (3, 5 or 9; nullptr for others). A template, so
// a firmware links only the routines of the widths its layers use.
template <int32_t kBits>
inline DepthwiseStreamPixel depthwise_stream_pixel(int32_t taps) {
  if constexpr (kBits == 8) {
    return taps == 3 ? depthwise_pixel8_3 : taps == 5 ? depthwise_pixel8_5 : taps == 9 ? depthwise_pixel8_9 : nullptr;
  } else if constexpr (kBits == 4) {
    return taps == 3 ? depthwise_pixel4_3 : taps == 5 ? depthwise_pixel4_5 : taps == 9 ? depthwise_pixel4_9 : nullptr;
  } else {
    return taps == 3 ? depthwise_pixel2_3 : taps == 5 ? depthwise_pixel2_5 : taps == 9 ? depthwise_pixel2_9 : nullptr;
  }
}

}  // namespace tx::dsp
