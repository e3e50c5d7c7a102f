// The inner loop of the DSP CONV_2D and FULLY_CONNECTED kernels (gemm.h), with the requantization of its
// four results right behind it.
#include "gemm.h"

namespace tx::dsp {

namespace {

// sums[0..3] = bias + the products of (pixel a, channel 0 of the pair), (a, 1), (b, 0), (b, 1); returns
// where the next pair's filter starts. Out of line and free of other work: with more values live around
// it, GCC runs out of registers for the hand-scheduled loop.
__attribute__((noinline)) const uint32_t* dot_pair(const uint32_t* cols, const uint32_t* cols_end,
                                                   const uint32_t* w, const int32_t* bias, int32_t* sums) {
  int32_t a0 = bias[0], a1 = bias[1], b0 = a0, b1 = a1;
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  // Per 4 products: one LDM of both pixels' inputs, one LDM per channel's weights, 8 SMLAD (16 MACs).
  // Written out so the loads stay LDMs: instruction count is what this path is measured by.
  const uint32_t* c = cols;
  asm volatile(
      "1:\n"
      "ldmia %[c]!, {r2, r3, r4, r5}\n"
      "ldmia %[w]!, {r6, r8}\n"
      "smlad %[a0], r2, r6, %[a0]\n"
      "smlad %[b0], r4, r6, %[b0]\n"
      "smlad %[a0], r3, r8, %[a0]\n"
      "smlad %[b0], r5, r8, %[b0]\n"
      "ldmia %[w]!, {r6, r8}\n"
      "smlad %[a1], r2, r6, %[a1]\n"
      "smlad %[b1], r4, r6, %[b1]\n"
      "smlad %[a1], r3, r8, %[a1]\n"
      "smlad %[b1], r5, r8, %[b1]\n"
      "ldmia %[c]!, {r2, r3, r4, r5}\n"
      "ldmia %[w]!, {r6, r8}\n"
      "smlad %[a0], r2, r6, %[a0]\n"
      "smlad %[b0], r4, r6, %[b0]\n"
      "smlad %[a0], r3, r8, %[a0]\n"
      "smlad %[b0], r5, r8, %[b0]\n"
      "ldmia %[w]!, {r6, r8}\n"
      "smlad %[a1], r2, r6, %[a1]\n"
      "smlad %[b1], r4, r6, %[b1]\n"
      "smlad %[a1], r3, r8, %[a1]\n"
      "smlad %[b1], r5, r8, %[b1]\n"
      "cmp %[c], %[end]\n"
      "bne 1b\n"
      : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1), [c] "+r"(c), [w] "+r"(w)
      : [end] "r"(cols_end)
      : "r2", "r3", "r4", "r5", "r6", "r8", "cc", "memory");
#else
  for (const uint32_t* c = cols; c < cols_end; c += 4, w += 4) {
    a0 = smlad(c[0], w[0], a0);
    b0 = smlad(c[2], w[0], b0);
    a0 = smlad(c[1], w[1], a0);
    b0 = smlad(c[3], w[1], b0);
    a1 = smlad(c[0], w[2], a1);
    b1 = smlad(c[2], w[2], b1);
    a1 = smlad(c[1], w[3], a1);
    b1 = smlad(c[3], w[3], b1);
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
