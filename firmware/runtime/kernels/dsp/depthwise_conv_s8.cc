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

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
// 3x3 filters, written out: 9 instructions per tap and 4 channels (2 of them multiply-accumulates pairs'
// halves), no loop. Out of line so the compiler has the registers for it.
__attribute__((noinline)) void accumulate_group_3x3(const int8_t* const* tap_inputs, int32_t ch, const uint32_t* w,
                                                    int32_t acc[4]) {
  int32_t a0, a1, a2, a3;
  uint32_t v, even, w0, w1;
  asm volatile(
      "ldrd %[a0], %[a1], [%[acc]]\n"
      "ldrd %[a2], %[a3], [%[acc], #8]\n"
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
      "strd %[a0], %[a1], [%[acc]]\n"
      "strd %[a2], %[a3], [%[acc], #8]\n"
      : [a0] "=&r"(a0), [a1] "=&r"(a1), [a2] "=&r"(a2), [a3] "=&r"(a3), [v] "=&r"(v), [even] "=&r"(even),
        [w0] "=&r"(w0), [w1] "=&r"(w1), [tp] "+r"(tap_inputs), [w] "+r"(w)
      : [ch] "r"(ch), [acc] "r"(acc)
      : "memory");
}
#endif

template <int32_t kTaps>  // 0: any count (runtime `taps`)
inline void accumulate_group(const int8_t* const* tap_inputs, int32_t taps, int32_t ch, const uint32_t* w,
                             int32_t acc[4]) {
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  if (kTaps == 9) return accumulate_group_3x3(tap_inputs, ch, w, acc);
#endif
  int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  const int32_t count = kTaps ? kTaps : taps;
  for (int32_t t = 0; t < count; ++t, w += 2) {
    const uint32_t v = load32(tap_inputs[t] + ch);
    const uint32_t even = sxtb16(v), odd = sxtb16_ror8(v);
    a0 = smlabb(even, w[0], a0);
    a2 = smlatt(even, w[0], a2);
    a1 = smlabb(odd, w[1], a1);
    a3 = smlatt(odd, w[1], a3);
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

template <int32_t kTaps, bool kFast, bool kClamp>
void run(const ConvParams& p, const DepthwiseDspParams& d, const int8_t* input, int8_t* output) {
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  const int32_t in_h = p.input.h, in_w = p.input.w, c = p.input.c;
  const int32_t taps = p.filter.h * p.filter.w;
  const int8_t* tap_inputs[kMaxTaps];
  int8_t* out = output;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t oy = 0; oy < p.output.h; ++oy) {
      for (int32_t ox = 0; ox < p.output.w; ++ox) {
        int32_t t = 0;
        for (int32_t ky = 0; ky < p.filter.h; ++ky) {
          const int32_t y = oy * p.stride_h - p.pad_h + p.dilation_h * ky;
          for (int32_t kx = 0; kx < p.filter.w; ++kx, ++t) {
            const int32_t x = ox * p.stride_w - p.pad_w + p.dilation_w * kx;
            const bool inside = y >= 0 && y < in_h && x >= 0 && x < in_w;
            tap_inputs[t] = inside ? input + ((b * in_h + y) * in_w + x) * c : d.padding;
          }
        }
        const uint32_t* w = d.filter;
        for (int32_t ch = 0; ch < c; ch += 4, w += 2 * taps, out += 4) {
          int32_t acc[4] = {d.bias[ch], d.bias[ch + 1], d.bias[ch + 2], d.bias[ch + 3]};
          accumulate_group<kTaps>(tap_inputs, taps, ch, w, acc);
          out[0] = requantize<kFast, kClamp>(acc[0], q, ch);
          out[1] = requantize<kFast, kClamp>(acc[1], q, ch + 1);
          out[2] = requantize<kFast, kClamp>(acc[2], q, ch + 2);
          out[3] = requantize<kFast, kClamp>(acc[3], q, ch + 3);
        }
      }
    }
  }
}

template <int32_t kTaps>
void dispatch(const ConvParams& p, const DepthwiseDspParams& d, const int8_t* input, int8_t* output) {
  const bool clamp = p.act_min > -128 || p.act_max < 127;
  if (d.fast_requantize) {
    clamp ? run<kTaps, true, true>(p, d, input, output) : run<kTaps, true, false>(p, d, input, output);
  } else {
    clamp ? run<kTaps, false, true>(p, d, input, output) : run<kTaps, false, false>(p, d, input, output);
  }
}

}  // namespace

void depthwise_conv_s8(const ConvParams& p, const DepthwiseDspParams& d, const int8_t* input, int8_t* output) {
  if (p.filter.h * p.filter.w == 9) {
    dispatch<9>(p, d, input, output);  // 3x3: the taps loop unrolls
  } else {
    dispatch<0>(p, d, input, output);
  }
}

}  // namespace tx::dsp
