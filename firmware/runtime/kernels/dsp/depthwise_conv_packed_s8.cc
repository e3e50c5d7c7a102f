// DEPTHWISE_CONV_2D with 4- or 2-bit filters (depth multiplier 1, channels a multiple of 4), Cortex-M DSP
// path: depthwise_conv_s8.cc's scheme (SXTB16-widened inputs, input offset folded into the bias, taps read at
// per-layer offsets, taps outside the input read the zero-point vector, SMLABB/SMLATT, four results stored
// as one word) with each tap's two int16 weight pairs cut from the filter word by one AND with a shifted
// register each (kernels.h DepthwisePackedDspParams): per tap and 4 channels 10 instructions where the int8
// kernel takes 9, plus one word load per 2 (4-bit) or 4 (2-bit) taps. The accumulators start at the bias
// times 2^(16 - bits) (the code generator proves it fits) and are shifted back once.
#include "depthwise_stream.h"
#include "gemm_packed.h"

namespace tx::dsp {
namespace {

template <int32_t kBits>
constexpr uint32_t kLaneMask = kBits == 4 ? 0xF000F000u : 0xC000C000u;

struct Acc4 {
  int32_t c0, c1, c2, c3;
};

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
// The unrolled tap counts (3, 5, 9) written out, one asm block per group of 4 channels, the same fields as
// word_taps below: from C, GCC reloads pointers from the stack between taps and splits each AND into a
// shift and an AND with an immediate. Per tap 10 instructions (TX_TAP), per filter word one load (TX_WORD).
#define TX_WORD "ldr %[p], [%[w]], #4\n"
#define TX_TAP(S0, S1)                         \
  "ldr %[v], [%[offs]], #4\n"                  \
  "ldr %[v], [%[base], %[v]]\n"                \
  "and %[we], %[m], %[p], lsl #" #S0 "\n"      \
  "and %[wo], %[m], %[p], lsl #" #S1 "\n"      \
  "sxtb16 %[even], %[v]\n"                     \
  "sxtb16 %[v], %[v], ror #8\n"                \
  "smlabb %[a0], %[even], %[we], %[a0]\n"      \
  "smlatt %[a2], %[even], %[we], %[a2]\n"      \
  "smlabb %[a1], %[v], %[wo], %[a1]\n"         \
  "smlatt %[a3], %[v], %[wo], %[a3]\n"
#define TX_WORD4 TX_WORD TX_TAP(0, 4) TX_TAP(8, 12)
#define TX_WORD2 TX_WORD TX_TAP(0, 2) TX_TAP(4, 6) TX_TAP(8, 10) TX_TAP(12, 14)
#define TX_GROUP(BODY)                                                                                      \
  asm(BODY                                                                                                  \
      : [a0] "+r"(acc.c0), [a1] "+r"(acc.c1), [a2] "+r"(acc.c2), [a3] "+r"(acc.c3), [v] "=&r"(v),           \
        [even] "=&r"(even), [we] "=&r"(w_even), [wo] "=&r"(w_odd), [p] "=&r"(packed), [offs] "+r"(offs),    \
        [w] "+r"(w)                                                                                         \
      : [base] "r"(base), [m] "r"(mask)                                                                     \
      : "memory")

template <int32_t kBits, int32_t kTaps>
__attribute__((always_inline)) inline const uint32_t* group_asm(intptr_t base, const intptr_t* offs,
                                                               const uint32_t* w, Acc4& acc) {
  const uint32_t mask = kLaneMask<kBits>;
  uint32_t v, even, w_even, w_odd, packed;
  if constexpr (kBits == 4 && kTaps == 9) TX_GROUP(TX_WORD4 TX_WORD4 TX_WORD4 TX_WORD4 TX_WORD TX_TAP(0, 4));
  if constexpr (kBits == 2 && kTaps == 9) TX_GROUP(TX_WORD2 TX_WORD2 TX_WORD TX_TAP(0, 2));
  if constexpr (kBits == 4 && kTaps == 5) TX_GROUP(TX_WORD4 TX_WORD4 TX_WORD TX_TAP(0, 4));
  if constexpr (kBits == 2 && kTaps == 5) TX_GROUP(TX_WORD2 TX_WORD TX_TAP(0, 2));
  if constexpr (kBits == 4 && kTaps == 3) TX_GROUP(TX_WORD4 TX_WORD TX_TAP(0, 4));
  if constexpr (kBits == 2 && kTaps == 3) TX_GROUP(TX_WORD TX_TAP(0, 2) TX_TAP(4, 6) TX_TAP(8, 10));
  return w;
}
#undef TX_GROUP
#undef TX_WORD2
#undef TX_WORD4
#undef TX_TAP
#undef TX_WORD
#endif

// Adds the products of taps [kU, kUsed) of one filter word (tap u's even channel pair in field 2u from the
// top, its odd pair in 2u + 1), each times 2^(16 - kBits); tap t's 4 inputs are at base + offsets[t]. A
// template recursion so every shift is a constant.
template <int32_t kBits, int32_t kU, int32_t kUsed>
__attribute__((always_inline)) inline void word_taps(intptr_t base, const intptr_t* offsets, uint32_t packed,
                                                     uint32_t mask, Acc4& acc) {
  if constexpr (kU < kUsed) {
    const uint32_t v = load32(reinterpret_cast<const int8_t*>(base + offsets[kU]));
    const uint32_t even = sxtb16(v), odd = sxtb16_ror8(v);
    const uint32_t w_even = (packed << (2 * kBits * kU)) & mask;
    const uint32_t w_odd = (packed << (2 * kBits * kU + kBits)) & mask;
    acc.c0 = smlabb(even, w_even, acc.c0);
    acc.c2 = smlatt(even, w_even, acc.c2);
    acc.c1 = smlabb(odd, w_odd, acc.c1);
    acc.c3 = smlatt(odd, w_odd, acc.c3);
    word_taps<kBits, kU + 1, kUsed>(base, offsets, packed, mask, acc);
  }
}

// One group of 4 channels over all taps; kTaps: 3, 5 or 9 written out on Cortex-M (group_asm), else the
// loop over `count` (elsewhere the DSP kernels only run as a check of the same arithmetic: not unrolled,
// which keeps this file's compile time down). Returns where the next group's filter starts.
template <int32_t kBits, int32_t kTaps>
__attribute__((always_inline)) inline const uint32_t* accumulate_group(intptr_t base, const intptr_t* offsets,
                                                                      int32_t count, const uint32_t* w, Acc4& acc) {
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  if constexpr (kTaps == 3 || kTaps == 5 || kTaps == 9) return group_asm<kBits, kTaps>(base, offsets, w, acc);
#endif
  constexpr int32_t kPerWord = 8 / kBits;  // taps per filter word
  const uint32_t mask = kLaneMask<kBits>;
  int32_t t = 0;
  for (; t + kPerWord <= count; t += kPerWord) word_taps<kBits, 0, kPerWord>(base, offsets + t, *w++, mask, acc);
  if (t < count) {  // the last word's unused fields are zero weights: skipped, not multiplied
    // each step brings the next tap's fields to where tap 0's were
    for (uint32_t packed = *w++; t < count; ++t, packed <<= 2 * kBits) {
      word_taps<kBits, 0, 1>(base, offsets + t, packed, mask, acc);
    }
  }
  return w;
}

// The whole layer, as depthwise_conv_s8.cc's run().
template <int32_t kBits, int32_t kTaps, int kMode, bool kClamp>
void run(const ConvParams& p, const DepthwisePackedDspParams& d, const int8_t* input, int8_t* output) {
  constexpr int32_t kScale = 16 - kBits;  // the sums are exact multiples of 2^kScale
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  const Requantizer<kMode, kClamp> requantize(q, d.fast_requant);
  const int32_t c = p.input.c, count = p.filter.h * p.filter.w;
  for_each_pixel(p, d.padding, input, output, [&](intptr_t base, const intptr_t* offsets, int8_t* out) {
    const uint32_t* w = d.filter;
    for (int32_t ch = 0; ch < c; ch += 4) {
      Acc4 acc{d.bias[ch], d.bias[ch + 1], d.bias[ch + 2], d.bias[ch + 3]};
      w = accumulate_group<kBits, kTaps>(base + ch, offsets, count, w, acc);
      const uint32_t packed = pack_s8x4(requantize.unclamped(acc.c0 >> kScale, ch),
                                        requantize.unclamped(acc.c1 >> kScale, ch + 1),
                                        requantize.unclamped(acc.c2 >> kScale, ch + 2),
                                        requantize.unclamped(acc.c3 >> kScale, ch + 3));
      store32(out + ch, requantize.clamp4(packed));
    }
  });
}

// Layers with a stream (depthwise_stream.h).
template <int32_t kBits>
void run_stream(const ConvParams& p, const DepthwisePackedDspParams& d, const int8_t* input, int8_t* output) {
  const DepthwiseStreamPixel pixel = depthwise_stream_pixel<kBits>(p.filter.h * p.filter.w);
  DepthwiseStreamJob job{nullptr, p.input.c, 1 + 2 * p.output_offset, splat_s8x4(p.act_min), splat_s8x4(p.act_max)};
  for_each_pixel(p, d.padding, input, output, [&](intptr_t base, const intptr_t* offsets, int8_t* out) {
    job.offsets = offsets;
    pixel(d.stream, out, base, job);
  });
}

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
constexpr bool kUnrolled = true;
#else
constexpr bool kUnrolled = false;  // one body for every tap count (accumulate_group)
#endif

}  // namespace

template <int32_t kBits, int32_t kTaps, int kMode, bool kClamp>
void depthwise_conv_packed_s8(const ConvParams& p, const DepthwisePackedDspParams& d, const int8_t* input,
                              int8_t* output) {
  if (kMode == kRightShiftRequant && d.stream != nullptr) return run_stream<kBits>(p, d, input, output);
  run<kBits, kUnrolled ? kTaps : 0, kMode, kClamp>(p, d, input, output);
}

// kTaps: 3, 5 and 9 unrolled, 0 any count
#define TX_INSTANTIATE_TAPS(B, M, C, T)                                                                  \
  template void depthwise_conv_packed_s8<B, T, M, C>(const ConvParams&, const DepthwisePackedDspParams&, \
                                                     const int8_t*, int8_t*);
#define TX_INSTANTIATE(B, M, C) \
  TX_INSTANTIATE_TAPS(B, M, C, 0) TX_INSTANTIATE_TAPS(B, M, C, 3) TX_INSTANTIATE_TAPS(B, M, C, 5) TX_INSTANTIATE_TAPS(B, M, C, 9)
TX_PACKED_VARIANTS(TX_INSTANTIATE)
#undef TX_INSTANTIATE
#undef TX_INSTANTIATE_TAPS

}  // namespace tx::dsp
