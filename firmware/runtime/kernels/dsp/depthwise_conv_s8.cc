// DEPTHWISE_CONV_2D (depth multiplier 1, channels a multiple of 4), Cortex-M DSP path. Four channels per
// load, widened with SXTB16 (channels 0, 2 | 1, 3) and multiplied by the int8 weights, widened the same way in
// registers, with SMLABB/SMLATT. The input offset is folded into the bias at generation time (bias + offset * sum of the
// weights); taps outside the input read a vector of the input zero point instead, whose products with the
// folded offset cancel, so every pixel runs the same straight-line code and matches the reference's
// skipped taps exactly.
#include "depthwise_stream.h"
#include "gemm.h"

namespace tx::dsp {
namespace {

struct Acc4 {
  int32_t c0, c1, c2, c3;
};

// Adds the products of one group of 4 channels over all taps (kTaps: a compile-time count, 0 = `count`).
// Tap t's 4 inputs are at group_base + offsets[t]; its 4 int8 weights are word w[t] (channels in order), widened
// like the inputs (SXTB16: channels 0, 2 | 1, 3).
template <int32_t kTaps>
inline void accumulate_group(intptr_t group_base, const intptr_t* offsets, int32_t count, const uint32_t* w,
                             Acc4& acc) {
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  if (kTaps == 9) {
    // 3x3 written out: 11 instructions per tap and 4 channels, no loop.
    uint32_t v, even, w0, w1;
    const intptr_t* tp = offsets;  // 4-byte entries on Arm
    asm volatile(
        ".rept 9\n"
        "ldr %[v], [%[tp]], #4\n"
        "ldr %[v], [%[base], %[v]]\n"
        "ldr %[w1], [%[w]], #4\n"
        "sxtb16 %[even], %[v]\n"
        "sxtb16 %[v], %[v], ror #8\n"
        "sxtb16 %[w0], %[w1]\n"
        "sxtb16 %[w1], %[w1], ror #8\n"
        "smlabb %[a0], %[even], %[w0], %[a0]\n"
        "smlatt %[a2], %[even], %[w0], %[a2]\n"
        "smlabb %[a1], %[v], %[w1], %[a1]\n"
        "smlatt %[a3], %[v], %[w1], %[a3]\n"
        ".endr\n"
        : [a0] "+r"(acc.c0), [a1] "+r"(acc.c1), [a2] "+r"(acc.c2), [a3] "+r"(acc.c3), [v] "=&r"(v),
          [even] "=&r"(even), [w0] "=&r"(w0), [w1] "=&r"(w1), [tp] "+r"(tp), [w] "+r"(w)
        : [base] "r"(group_base)
        : "memory");
    return;
  }
#endif
  int32_t a0 = acc.c0, a1 = acc.c1, a2 = acc.c2, a3 = acc.c3;
  const int32_t n = kTaps ? kTaps : count;
  for (int32_t t = 0; t < n; ++t) {
    const uint32_t v = load32(reinterpret_cast<const int8_t*>(group_base + offsets[t]));
    const uint32_t even = sxtb16(v), odd = sxtb16_ror8(v), w_even = sxtb16(w[t]), w_odd = sxtb16_ror8(w[t]);
    a0 = smlabb(even, w_even, a0);
    a2 = smlatt(even, w_even, a2);
    a1 = smlabb(odd, w_odd, a1);
    a3 = smlatt(odd, w_odd, a3);
  }
  acc = {a0, a1, a2, a3};
}

// The whole layer, one instantiation per tap count, requantization mode and activation. Out of line:
// inlined into the dispatch beside its siblings, the loops get worse registers.
template <int32_t kTaps, int kMode, bool kClamp>
__attribute__((noinline)) void run(const ConvParams& p, const DepthwiseDspParams& d, const int8_t* input,
                                   int8_t* output) {
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  const Requantizer<kMode, kClamp> requantize(q, d.fast_requant);
  const int32_t c = p.input.c, count = p.filter.h * p.filter.w;
  for_each_pixel(p, d.padding, input, output, [&](intptr_t base, const intptr_t* offsets, int8_t* out) {
    const uint32_t* w = d.filter;
    for (int32_t ch = 0; ch < c; ch += 4, w += count) {
      Acc4 acc{d.bias[ch], d.bias[ch + 1], d.bias[ch + 2], d.bias[ch + 3]};
      accumulate_group<kTaps>(base + ch, offsets, count, w, acc);
      const uint32_t packed = pack_s8x4(requantize.unclamped(acc.c0, ch), requantize.unclamped(acc.c1, ch + 1),
                                        requantize.unclamped(acc.c2, ch + 2), requantize.unclamped(acc.c3, ch + 3));
      store32(out + ch, requantize.clamp4(packed));
    }
  });
}

// Layers with a stream (depthwise_stream.h).
__attribute__((noinline)) void run_stream(const ConvParams& p, const DepthwiseDspParams& d, const int8_t* input,
                                          int8_t* output) {
  const DepthwiseStreamPixel pixel = depthwise_stream_pixel<8>(p.filter.h * p.filter.w);
  DepthwiseStreamJob job{nullptr, p.input.c, 1 + 2 * p.output_offset, splat_s8x4(p.act_min), splat_s8x4(p.act_max)};
  for_each_pixel(p, d.padding, input, output, [&](intptr_t base, const intptr_t* offsets, int8_t* out) {
    job.offsets = offsets;
    pixel(d.stream, out, base, job);
  });
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
  if (d.stream != nullptr) return run_stream(p, d, input, output);
  switch (p.filter.h * p.filter.w) {  // the common tap counts get their taps loop unrolled
    case 3: return dispatch<3>(p, d, input, output);  // 3x1 / 1x3
    case 5: return dispatch<5>(p, d, input, output);  // 5x1 / 1x5
    case 9: return dispatch<9>(p, d, input, output);  // 3x3 (written out in assembly)
    default: return dispatch<0>(p, d, input, output);
  }
}

}  // namespace tx::dsp
