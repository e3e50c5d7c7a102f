// DEPTHWISE_CONV_2D (depth multiplier 1, channels a multiple of 4), Cortex-M DSP path. Four channels per
// load, widened with SXTB16 (channels 0, 2 | 1, 3) and multiplied by generation-time widened weights with
// SMLABB/SMLATT. The input offset is folded into the bias at generation time (bias + offset * sum of the
// weights); taps outside the input read a vector of the input zero point instead, whose products with the
// folded offset cancel, so every pixel runs the same straight-line code and matches the reference's
// skipped taps exactly.
#include "gemm.h"

namespace tx::dsp {
namespace {

constexpr int32_t kMaxTaps = 64;  // the code generator uses the portable kernel for larger filters

struct Acc4 {
  int32_t c0, c1, c2, c3;
};

// Adds the products of one group of 4 channels over all taps (kTaps: a compile-time count, 0 = `count`).
template <int32_t kTaps>
inline void accumulate_group(const int8_t* const* tap_inputs, int32_t count, int32_t ch, const uint32_t* w,
                             Acc4& acc) {
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  if (kTaps == 9) {
    // 3x3 written out: 9 instructions per tap and 4 channels, no loop.
    uint32_t v, even, w0, w1;
    const int8_t* const* tp = tap_inputs;
    asm volatile(
        ".rept 9\n"
        "ldr %[v], [%[tp]], #4\n"
        "ldr %[v], [%[v], %[ch]]\n"
        "ldrd %[w0], %[w1], [%[w]], #8\n"
        "sxtb16 %[even], %[v]\n"
        "sxtb16 %[v], %[v], ror #8\n"
        "smlabb %[a0], %[even], %[w0], %[a0]\n"
        "smlatt %[a2], %[even], %[w0], %[a2]\n"
        "smlabb %[a1], %[v], %[w1], %[a1]\n"
        "smlatt %[a3], %[v], %[w1], %[a3]\n"
        ".endr\n"
        : [a0] "+r"(acc.c0), [a1] "+r"(acc.c1), [a2] "+r"(acc.c2), [a3] "+r"(acc.c3), [v] "=&r"(v),
          [even] "=&r"(even), [w0] "=&r"(w0), [w1] "=&r"(w1), [tp] "+r"(tp), [w] "+r"(w)
        : [ch] "r"(ch)
        : "memory");
    return;
  }
#endif
  int32_t a0 = acc.c0, a1 = acc.c1, a2 = acc.c2, a3 = acc.c3;
  const int32_t n = kTaps ? kTaps : count;
  for (int32_t t = 0; t < n; ++t, w += 2) {
    const uint32_t v = load32(tap_inputs[t] + ch);
    const uint32_t even = sxtb16(v), odd = sxtb16_ror8(v);
    a0 = smlabb(even, w[0], a0);
    a2 = smlatt(even, w[0], a2);
    a1 = smlabb(odd, w[1], a1);
    a3 = smlatt(odd, w[1], a3);
  }
  acc = {a0, a1, a2, a3};
}

// Every channel of one output pixel. Out of line so the compiler has the registers for the 3x3 block.
template <int32_t kTaps, int kMode, bool kClamp>
__attribute__((noinline)) void pixel(const DepthwiseDspParams& d, const Requantization& q,
                                     const int8_t* const* tap_inputs, int32_t count, int32_t channels,
                                     int8_t* out) {
  const Requantizer<kMode, kClamp> requantize(q, d.fast_requant);
  const uint32_t* w = d.filter;
  for (int32_t ch = 0; ch < channels; ch += 4, w += 2 * count, out += 4) {
    Acc4 acc{d.bias[ch], d.bias[ch + 1], d.bias[ch + 2], d.bias[ch + 3]};
    accumulate_group<kTaps>(tap_inputs, count, ch, w, acc);
    out[0] = requantize(acc.c0, ch);
    out[1] = requantize(acc.c1, ch + 1);
    out[2] = requantize(acc.c2, ch + 2);
    out[3] = requantize(acc.c3, ch + 3);
  }
}

template <int32_t kTaps, int kMode, bool kClamp>
// Out of line: inlined into the dispatch beside its siblings, the per-pixel loop gets worse registers.
__attribute__((noinline)) void run(const ConvParams& p, const DepthwiseDspParams& d, const int8_t* input,
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
        pixel<kTaps, kMode, kClamp>(d, q, tap_inputs, count, c, out);
      }
    }
  }
}
template <int32_t kTaps>
void dispatch(const ConvParams& p, const DepthwiseDspParams& d, const int8_t* input, int8_t* output) {
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  with_requantizer(d.fast_mode, q, [&](auto mode, auto clamp) {
    run<kTaps, decltype(mode)::value, decltype(clamp)::value>(p, d, input, output);
  });
}

}  // namespace

void depthwise_conv_s8(const ConvParams& p, const DepthwiseDspParams& d, const int8_t* input, int8_t* output) {
  switch (p.filter.h * p.filter.w) {  // the common tap counts get their taps loop unrolled
    case 3: return dispatch<3>(p, d, input, output);  // 3x1 / 1x3
    case 5: return dispatch<5>(p, d, input, output);  // 5x1 / 1x5
    case 9: return dispatch<9>(p, d, input, output);  // 3x3 (written out in assembly)
    default: return dispatch<0>(p, d, input, output);
  }
}

}  // namespace tx::dsp
