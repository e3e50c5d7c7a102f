// DEPTHWISE_CONV_2D with 4- or 2-bit filters (depth multiplier 1, channels a multiple of 4), Cortex-M DSP
// path: depthwise_conv_s8.cc's scheme (SXTB16-widened inputs, input offset folded into the bias, taps
// outside the input read the zero-point vector) with each tap's two int16 weight pairs unpacked from the
// filter word by one AND each (kernels.h DepthwisePackedDspParams).
#include "gemm.h"

namespace tx::dsp {
namespace {

constexpr int32_t kMaxTaps = 64;  // as the int8 kernel: larger filters take the portable one

// Adds the products of one tap and 4 channels; `shift` selects the tap's fields in the filter word.
template <int32_t kBits>
inline void tap(const int8_t* in, uint32_t packed, int32_t shift, int32_t (&acc)[4]) {
  constexpr uint32_t mask = kBits == 4 ? 0xF000F000u : 0xC000C000u;
  const uint32_t v = load32(in);
  const uint32_t even = sxtb16(v), odd = sxtb16_ror8(v);
  const uint32_t w_even = (packed << shift) & mask, w_odd = (packed << (shift + kBits)) & mask;
  acc[0] = smlabb(even, w_even, acc[0]);
  acc[2] = smlatt(even, w_even, acc[2]);
  acc[1] = smlabb(odd, w_odd, acc[1]);
  acc[3] = smlatt(odd, w_odd, acc[3]);
}

template <int32_t kBits, int kMode, bool kClamp>
__attribute__((noinline)) void pixel(const DepthwisePackedDspParams& d, const Requantization& q,
                                     const int8_t* const* tap_inputs, int32_t count, int32_t channels,
                                     int8_t* out) {
  constexpr int32_t kTapsPerWord = 16 / (2 * kBits);
  constexpr int32_t kScale = 16 - kBits;
  const Requantizer<kMode, kClamp> requantize(q, d.fast_requant);
  const uint32_t* w = d.filter;
  const int32_t whole = count - count % kTapsPerWord;
  for (int32_t ch = 0; ch < channels; ch += 4, out += 4) {
    int32_t acc[4] = {0, 0, 0, 0};
    int32_t t = 0;
    for (; t < whole; t += kTapsPerWord) {
      const uint32_t packed = *w++;
      for (int32_t u = 0; u < kTapsPerWord; ++u) tap<kBits>(tap_inputs[t + u] + ch, packed, 2 * kBits * u, acc);
    }
    if (t < count) {  // the last word's unused fields are zero weights: skipped, not multiplied
      const uint32_t packed = *w++;
      for (int32_t u = 0; t + u < count; ++u) tap<kBits>(tap_inputs[t + u] + ch, packed, 2 * kBits * u, acc);
    }
    for (int32_t i = 0; i < 4; ++i) out[i] = requantize((acc[i] >> kScale) + d.bias[ch + i], ch + i);
  }
}

template <int32_t kBits, int kMode, bool kClamp>
__attribute__((noinline)) void run(const ConvParams& p, const DepthwisePackedDspParams& d, const int8_t* input,
                                   int8_t* output) {
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  const int32_t in_h = p.input.h, in_w = p.input.w, c = p.input.c;
  const int32_t count = p.filter.h * p.filter.w;
  const int8_t* tap_inputs[kMaxTaps];
  int8_t* out = output;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t oy = 0; oy < p.output.h; ++oy) {
      for (int32_t ox = 0; ox < p.output.w; ++ox, out += c) {
        int32_t t = 0;
        for (int32_t ky = 0; ky < p.filter.h; ++ky) {
          const int32_t y = oy * p.stride_h - p.pad_h + p.dilation_h * ky;
          for (int32_t kx = 0; kx < p.filter.w; ++kx, ++t) {
            const int32_t x = ox * p.stride_w - p.pad_w + p.dilation_w * kx;
            const bool inside = y >= 0 && y < in_h && x >= 0 && x < in_w;
            tap_inputs[t] = inside ? input + ((b * in_h + y) * in_w + x) * c : d.padding;
          }
        }
        pixel<kBits, kMode, kClamp>(d, q, tap_inputs, count, c, out);
      }
    }
  }
}

template <int32_t kBits>
void dispatch(const ConvParams& p, const DepthwisePackedDspParams& d, const int8_t* input, int8_t* output) {
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  with_requantizer(d.fast_mode, q, [&](auto mode, auto clamp) {
    run<kBits, decltype(mode)::value, decltype(clamp)::value>(p, d, input, output);
  });
}

}  // namespace

void depthwise_conv_packed_s8(const ConvParams& p, const DepthwisePackedDspParams& d, const int8_t* input,
                              int8_t* output) {
  if (d.bits == 4) {
    dispatch<4>(p, d, input, output);
  } else {
    dispatch<2>(p, d, input, output);
  }
}

}  // namespace tx::dsp
