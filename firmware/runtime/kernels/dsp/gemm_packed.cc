// The inner loop of the sub-byte DSP CONV_2D and FULLY_CONNECTED kernels (gemm_packed.h). Per 8 products and
// channel pair it loads 2 words (4-bit) or 1 word (2-bit) of filter where the int8 path loads 8, and spends
// one AND per int16 pair on unpacking.
#include "gemm_packed.h"

namespace tx::dsp {

namespace {

template <int32_t kBits>
constexpr uint32_t kLaneMask = kBits == 4 ? 0xF000F000u : 0xC000C000u;

// sums[0..3] = (bias + the products) of (pixel a, channel 0 of the pair), (a, 1), (b, 0), (b, 1), times
// 2^(16 - kBits) (the bias comes so scaled); returns where the next pair's filter starts.
template <int32_t kBits>
__attribute__((noinline)) const uint32_t* dot_pair_packed(const uint32_t* cols, const uint32_t* cols_end,
                                                          const uint32_t* w, const int32_t* bias, int32_t* sums) {
  int32_t a0 = bias[0], a1 = bias[1], b0 = a0, b1 = a1;
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  // 8 products per pass: two LDMs of both pixels' inputs, 2 (4-bit) or 1 (2-bit) filter words, 8 ANDs,
  // 16 SMLADs. Written out for the same reason as gemm.cc's loop.
  const uint32_t* c = cols;
  uint32_t packed, lanes;
  const uint32_t mask = kLaneMask<kBits>;
#define TX_UNPACK_GROUP(S0, S1, S2, S3)            \
  "ldmia %[c]!, {r2, r3, r4, r5}\n"                \
  "and %[t], %[m], %[p], lsl #" #S0 "\n"           \
  "smlad %[a0], r2, %[t], %[a0]\n"                 \
  "smlad %[b0], r4, %[t], %[b0]\n"                 \
  "and %[t], %[m], %[p], lsl #" #S1 "\n"           \
  "smlad %[a0], r3, %[t], %[a0]\n"                 \
  "smlad %[b0], r5, %[t], %[b0]\n"                 \
  "and %[t], %[m], %[p], lsl #" #S2 "\n"           \
  "smlad %[a1], r2, %[t], %[a1]\n"                 \
  "smlad %[b1], r4, %[t], %[b1]\n"                 \
  "and %[t], %[m], %[p], lsl #" #S3 "\n"           \
  "smlad %[a1], r3, %[t], %[a1]\n"                 \
  "smlad %[b1], r5, %[t], %[b1]\n"
  if (kBits == 4) {
    asm volatile(
        "1:\n"
        "ldr %[p], [%[w]], #4\n" TX_UNPACK_GROUP(0, 4, 8, 12)
        "ldr %[p], [%[w]], #4\n" TX_UNPACK_GROUP(0, 4, 8, 12)
        "cmp %[c], %[end]\n"
        "bne 1b\n"
        : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1), [c] "+r"(c), [w] "+r"(w),
          [p] "=&r"(packed), [t] "=&r"(lanes)
        : [end] "r"(cols_end), [m] "r"(mask)
        : "r2", "r3", "r4", "r5", "cc", "memory");
  } else {
    asm volatile(
        "1:\n"
        "ldr %[p], [%[w]], #4\n" TX_UNPACK_GROUP(0, 2, 4, 6) TX_UNPACK_GROUP(8, 10, 12, 14)
        "cmp %[c], %[end]\n"
        "bne 1b\n"
        : [a0] "+r"(a0), [a1] "+r"(a1), [b0] "+r"(b0), [b1] "+r"(b1), [c] "+r"(c), [w] "+r"(w),
          [p] "=&r"(packed), [t] "=&r"(lanes)
        : [end] "r"(cols_end), [m] "r"(mask)
        : "r2", "r3", "r4", "r5", "cc", "memory");
  }
#undef TX_UNPACK_GROUP
#else
  constexpr uint32_t mask = kLaneMask<kBits>;
  for (const uint32_t* c = cols; c < cols_end; c += 8) {
    uint32_t packed = *w++;
    for (int32_t half = 0; half < 2; ++half) {
      if (kBits == 4 && half == 1) packed = *w++;
      const uint32_t* g = c + 4 * half;
      const int32_t s = kBits == 4 ? 0 : 8 * half;  // 2-bit: the second group uses the word's other fields
      uint32_t t = (packed << s) & mask;
      a0 = smlad(g[0], t, a0);
      b0 = smlad(g[2], t, b0);
      t = (packed << (s + kBits)) & mask;
      a0 = smlad(g[1], t, a0);
      b0 = smlad(g[3], t, b0);
      t = (packed << (s + 2 * kBits)) & mask;
      a1 = smlad(g[0], t, a1);
      b1 = smlad(g[2], t, b1);
      t = (packed << (s + 3 * kBits)) & mask;
      a1 = smlad(g[1], t, a1);
      b1 = smlad(g[3], t, b1);
    }
  }
#endif
  sums[0] = a0, sums[1] = a1, sums[2] = b0, sums[3] = b1;
  return w;
}

}  // namespace

template <int32_t kBits, int kMode, bool kClamp>
void gemm_packed_pair(const GemmPackedDspParams& d, const Requantization& q, int32_t out_c, const uint32_t* cols,
                      int8_t* out_a, int8_t* out_b) {
  constexpr int32_t kScale = 16 - kBits;  // the sums are exact multiples of 2^kScale
  const Requantizer<kMode, kClamp> requantize(q, d.fast_requant);
  const uint32_t* const cols_end = cols + d.k_padded;
  const uint32_t* w = d.filter;
  const int32_t* bias = d.bias;
  int32_t s[4];
  int32_t oc = 0;
  for (; oc + 1 < out_c; oc += 2, bias += 2) {
    w = dot_pair_packed<kBits>(cols, cols_end, w, bias, s);
    // as gemm.cc: both pixels' two results in one word, one clamp, two halfword stores
    const uint32_t packed = requantize.clamp4(
        pack_s8x4(requantize.unclamped(s[0] >> kScale, oc), requantize.unclamped(s[1] >> kScale, oc + 1),
                  requantize.unclamped(s[2] >> kScale, oc), requantize.unclamped(s[3] >> kScale, oc + 1)));
    store16(out_a + oc, packed);
    if (out_b != nullptr) store16(out_b + oc, packed >> 16);
  }
  if (oc < out_c) {  // odd channel count: the filter's last pair is padded with a zero channel
    dot_pair_packed<kBits>(cols, cols_end, w, bias, s);
    out_a[oc] = requantize(s[0] >> kScale, oc);
    if (out_b != nullptr) out_b[oc] = requantize(s[2] >> kScale, oc);
  }
}

#define TX_INSTANTIATE(B, M, C)                                                                           \
  template void gemm_packed_pair<B, M, C>(const GemmPackedDspParams&, const Requantization&, int32_t,          \
                                          const uint32_t*, int8_t*, int8_t*);
TX_PACKED_VARIANTS(TX_INSTANTIATE)
#undef TX_INSTANTIATE

}  // namespace tx::dsp
