// The inner loop of the DSP CONV_2D and FULLY_CONNECTED kernels (gemm.h), with the requantization of its
// four results right behind it.
#include "gemm.h"

namespace tx::dsp {

namespace {

// sums[0..3] = bias + the products of (pixel a, channel 0 of the pair), (a, 1), (b, 0), (b, 1); returns
// where the next pair's filter starts. Per group of 4 products the filter holds channel 0's 4 int8 weights
// then channel 1's (kernels.h GemmDspParams::filter): SXTB16 widens products 0, 2 and, rotated, 1, 3, the
// order of the column words. Out of line and free of other work: with more values live around it, GCC runs
// out of registers for the hand-scheduled loop.
__attribute__((noinline)) const uint32_t* dot_pair(const uint32_t* cols, const uint32_t* cols_end,
                                                   const uint32_t* w, const int32_t* bias, int32_t* sums) {
  int32_t a0 = bias[0], a1 = bias[1], b0 = a0, b1 = a1;
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  // Per 4 products: one LDM of both pixels' inputs, per channel one weight word and two SXTB16, 8 SMLAD
  // (16 MACs). Written out so the loads stay LDMs: instruction count is what this path is measured by.
  const uint32_t* c = cols;
  uint32_t even;
#define TX_DOT_CHANNEL(A, B)                 \
  "ldr r6, [%[w]], #4\n"                    \
  "sxtb16 %[e], r6\n"                       \
  "sxtb16 r6, r6, ror #8\n"                 \
  "smlad %[" A "], r2, %[e], %[" A "]\n"    \
  "smlad %[" B "], r4, %[e], %[" B "]\n"    \
  "smlad %[" A "], r3, r6, %[" A "]\n"      \
  "smlad %[" B "], r5, r6, %[" B "]\n"
  asm volatile(
      "1:\n"
      ".rept 2\n"
      "ldmia %[c]!, {r2, r3, r4, r5}\n"
      TX_DOT_CHANNEL("a0", "b0") TX_DOT_CHANNEL("a1", "b1")
      ".endr\n"
      "cmp %[c], %[end]\n"
      "bne 1b\n"
      : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1), [c] "+r"(c), [w] "+r"(w), [e] "=&r"(even)
      : [end] "r"(cols_end)
      : "r2", "r3", "r4", "r5", "r6", "cc", "memory");
#undef TX_DOT_CHANNEL
#else
  for (const uint32_t* c = cols; c < cols_end; c += 4, w += 2) {
    a0 = smlad(c[0], sxtb16(w[0]), a0);
    b0 = smlad(c[2], sxtb16(w[0]), b0);
    a0 = smlad(c[1], sxtb16_ror8(w[0]), a0);
    b0 = smlad(c[3], sxtb16_ror8(w[0]), b0);
    a1 = smlad(c[0], sxtb16(w[1]), a1);
    b1 = smlad(c[2], sxtb16(w[1]), b1);
    a1 = smlad(c[1], sxtb16_ror8(w[1]), a1);
    b1 = smlad(c[3], sxtb16_ror8(w[1]), b1);
  }
#endif
  sums[0] = a0, sums[1] = a1, sums[2] = b0, sums[3] = b1;
  return w;
}

}  // namespace

template <int kMode, bool kClamp>
void gemm_pair(const GemmDspParams& d, const Requantization& q, int32_t out_c, const uint32_t* cols,
               int8_t* out_a, int8_t* out_b) {
  const Requantizer<kMode, kClamp> requantize(q, d.fast_requant);
  const uint32_t* const cols_end = cols + d.k_padded;
  const uint32_t* w = d.filter;
  const int32_t* bias = d.bias;
  int32_t s[4];
  int32_t oc = 0;
  for (; oc + 1 < out_c; oc += 2, bias += 2) {
    w = dot_pair(cols, cols_end, w, bias, s);
    // both pixels' two results in one word: one clamp for the four, two halfword stores
    const uint32_t packed = requantize.clamp4(pack_s8x4(requantize.unclamped(s[0], oc), requantize.unclamped(s[1], oc + 1),
                                                        requantize.unclamped(s[2], oc), requantize.unclamped(s[3], oc + 1)));
    store16(out_a + oc, packed);
    if (out_b != nullptr) store16(out_b + oc, packed >> 16);
  }
  if (oc < out_c) {  // odd channel count: the filter's last pair is padded with a zero channel
    dot_pair(cols, cols_end, w, bias, s);
    out_a[oc] = requantize(s[0], oc);
    if (out_b != nullptr) out_b[oc] = requantize(s[2], oc);
  }
}

template void gemm_pair<0, false>(const GemmDspParams&, const Requantization&, int32_t, const uint32_t*,
                                    int8_t*, int8_t*);
template void gemm_pair<0, true>(const GemmDspParams&, const Requantization&, int32_t, const uint32_t*,
                                    int8_t*, int8_t*);
template void gemm_pair<1, false>(const GemmDspParams&, const Requantization&, int32_t, const uint32_t*,
                                    int8_t*, int8_t*);
template void gemm_pair<1, true>(const GemmDspParams&, const Requantization&, int32_t, const uint32_t*,
                                    int8_t*, int8_t*);
template void gemm_pair<2, false>(const GemmDspParams&, const Requantization&, int32_t, const uint32_t*,
                                    int8_t*, int8_t*);
template void gemm_pair<2, true>(const GemmDspParams&, const Requantization&, int32_t, const uint32_t*,
                                    int8_t*, int8_t*);
template void gemm_pair<3, false>(const GemmDspParams&, const Requantization&, int32_t, const uint32_t*,
                                    int8_t*, int8_t*);
template void gemm_pair<3, true>(const GemmDspParams&, const Requantization&, int32_t, const uint32_t*,
                                    int8_t*, int8_t*);

}  // namespace tx::dsp
