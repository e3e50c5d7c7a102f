// depthwise_stream.h: Thumb-2 assembly on cores with the DSP extension, the same steps in C++ elsewhere.
#include "depthwise_stream.h"

namespace tx::dsp {

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)

// Registers: r0 stream, r1 out, r2 base, r4-r7 channels 0-3, r8 the offsets walked, r9-r12 scratch.
// [sp] round_offset, min4, max4 (then, for the sub-byte kernels, offsets and where the outputs end).

// 2 * acc of channels 0-3 in r4-r7 -> requantized (dsp.h requantize_fast), packed, clamped, stored; the next
// group's inputs are 4 bytes on. LOOP: back to 2: while outputs remain, then return.
#define TX_DW_FINISH(LOOP)                                                          \
  "ldmia r0!, {r8, r9, r10, r11}\n" /* multiplier, ~shift of channels 0, 1 */       \
  "smmulr r4, r4, r8\n"                                                             \
  "smmulr r5, r5, r10\n"                                                            \
  "add r4, r4, r4, asr #31\n"                                                       \
  "add r5, r5, r5, asr #31\n"                                                       \
  "asr r4, r4, r9\n"                                                                \
  "asr r5, r5, r11\n"                                                               \
  "ldmia r0!, {r8, r9, r10, r11}\n" /* channels 2, 3 */                             \
  "smmulr r6, r6, r8\n"                                                             \
  "smmulr r7, r7, r10\n"                                                            \
  "add r6, r6, r6, asr #31\n"                                                       \
  "add r7, r7, r7, asr #31\n"                                                       \
  "asr r6, r6, r9\n"                                                                \
  "asr r7, r7, r11\n"                                                               \
  "ldr r8, [sp]\n"                                                                  \
  "add r4, r4, r8\n"                                                                \
  "add r5, r5, r8\n"                                                                \
  "add r6, r6, r8\n"                                                                \
  "add r7, r7, r8\n"                                                                \
  "ssat r4, #8, r4, asr #1\n"                                                       \
  "ssat r5, #8, r5, asr #1\n"                                                       \
  "ssat r6, #8, r6, asr #1\n"                                                       \
  "ssat r7, #8, r7, asr #1\n"                                                       \
  "bfi r4, r5, #8, #8\n"                                                            \
  "bfi r4, r6, #16, #8\n"                                                           \
  "bfi r4, r7, #24, #8\n"                                                           \
  "ldrd r8, r9, [sp, #4]\n" /* min4, max4 */                                        \
  "ssub8 r10, r4, r8\n"                                                             \
  "sel r4, r4, r8\n"                                                                \
  "ssub8 r10, r9, r4\n"                                                             \
  "sel r4, r4, r9\n"                                                                \
  "str r4, [r1], #4\n"                                                              \
  "add r2, r2, #4\n" LOOP

// One tap: its 4 inputs through the offset table, widened (channels 0, 2 | 1, 3), times the weight pairs WEIGHTS
// puts in r10 (channels 0, 2) and r11 (1, 3).
#define TX_DW_TAP_WITH(WEIGHTS)                                                     \
  "ldr r9, [r8], #4\n"                                                              \
  "ldr r9, [r2, r9]\n" WEIGHTS                                                      \
  "sxtb16 r12, r9\n"                                                                \
  "sxtb16 r9, r9, ror #8\n"                                                         \
  "smlabb r4, r12, r10, r4\n"                                                       \
  "smlatt r6, r12, r10, r6\n"                                                       \
  "smlabb r5, r9, r11, r5\n"                                                        \
  "smlatt r7, r9, r11, r7\n"
#define TX_DW_TAP8 TX_DW_TAP_WITH("ldr r11, [r0], #4\n" "sxtb16 r10, r11\n" "sxtb16 r11, r11, ror #8\n")

// int8, r3 offsets and lr the outputs' end in registers: 11 instructions per tap and 4 channels, 36 per group
// (the sums doubled to 2 * acc before the requantization).
#define TX_DW_INT8(TAPS)                                                                                       \
  __attribute__((naked)) void depthwise_pixel8_##TAPS(const uint32_t*, int8_t*, intptr_t,                     \
                                                       const DepthwiseStreamJob&) {                            \
    asm volatile("push {r4-r11, lr}\n"                                                                         \
                 "ldm r3, {r3, r4, r5, r6, r7}\n" /* offsets, channels, round_offset, min4, max4 */            \
                 "add lr, r1, r4\n"                                                                            \
                 "push {r5, r6, r7}\n"                                                                         \
                 "2:\n"                                                                                        \
                 "ldmia r0!, {r4, r5, r6, r7}\n" /* the doubled biases */                                      \
                 "mov r8, r3\n"                                                                                \
                 ".rept " #TAPS "\n" TX_DW_TAP8 ".endr\n"                                                      \
                 "lsl r4, r4, #1\n"                                                                            \
                 "lsl r5, r5, #1\n"                                                                            \
                 "lsl r6, r6, #1\n"                                                                            \
                 "lsl r7, r7, #1\n"                                                                            \
                 TX_DW_FINISH("cmp r1, lr\n"                                                                   \
                              "bne 2b\n"                                                                       \
                              "add sp, #12\n"                                                                  \
                              "pop {r4-r11, pc}\n"));                                                          \
  }

// Sub-byte: r3 the filter word, lr the lane mask; a tap's two int16 weight pairs are cut out of r3 by one AND
// with a shifted register each (kernels.h): 10 instructions per tap, one load per word.
#define TX_DW_WORD "ldr r3, [r0], #4\n"
#define TX_DW_TAP(S0, S1) TX_DW_TAP_WITH("and r10, lr, r3, lsl #" #S0 "\n" "and r11, lr, r3, lsl #" #S1 "\n")
#define TX_DW_WORD4 TX_DW_WORD TX_DW_TAP(0, 4) TX_DW_TAP(8, 12)
#define TX_DW_WORD2 TX_DW_WORD TX_DW_TAP(0, 2) TX_DW_TAP(4, 6) TX_DW_TAP(8, 10) TX_DW_TAP(12, 14)

// The accumulators hold 2^(16 - bits) * acc: UNSCALE = 15 - bits makes them 2 * acc.
#define TX_DW_PACKED(NAME, MASK, UNSCALE, BODY)                                                                \
  __attribute__((naked)) void NAME(const uint32_t*, int8_t*, intptr_t, const DepthwiseStreamJob&) {           \
    asm volatile("push {r4-r11, lr}\n"                                                                         \
                 "ldm r3, {r3, r4, r5, r6, r7}\n"                                                              \
                 "add r4, r1, r4\n"                                                                            \
                 "push {r3, r4}\n"                /* [sp, #12] offsets, [sp, #16] the outputs' end */          \
                 "push {r5, r6, r7}\n"                                                                         \
                 "mov lr, #" #MASK "\n"                                                                        \
                 "2:\n"                                                                                        \
                 "ldmia r0!, {r4, r5, r6, r7}\n" /* the biases times 2^(16 - bits) */                          \
                 "ldr r8, [sp, #12]\n" BODY                                                                    \
                 "asr r4, r4, #" #UNSCALE "\n"                                                                 \
                 "asr r5, r5, #" #UNSCALE "\n"                                                                 \
                 "asr r6, r6, #" #UNSCALE "\n"                                                                 \
                 "asr r7, r7, #" #UNSCALE "\n"                                                                 \
                 TX_DW_FINISH("ldr r8, [sp, #16]\n"                                                            \
                              "cmp r1, r8\n"                                                                   \
                              "bne 2b\n"                                                                       \
                              "add sp, #20\n"                                                                  \
                              "pop {r4-r11, pc}\n"));                                                          \
  }

TX_DW_INT8(3)
TX_DW_INT8(5)
TX_DW_INT8(9)
TX_DW_PACKED(depthwise_pixel4_3, 0xF000F000, 11, TX_DW_WORD4 TX_DW_WORD TX_DW_TAP(0, 4))
TX_DW_PACKED(depthwise_pixel4_5, 0xF000F000, 11, TX_DW_WORD4 TX_DW_WORD4 TX_DW_WORD TX_DW_TAP(0, 4))
TX_DW_PACKED(depthwise_pixel4_9, 0xF000F000, 11, TX_DW_WORD4 TX_DW_WORD4 TX_DW_WORD4 TX_DW_WORD4 TX_DW_WORD TX_DW_TAP(0, 4))
TX_DW_PACKED(depthwise_pixel2_3, 0xC000C000, 13, TX_DW_WORD TX_DW_TAP(0, 2) TX_DW_TAP(4, 6) TX_DW_TAP(8, 10))
TX_DW_PACKED(depthwise_pixel2_5, 0xC000C000, 13, TX_DW_WORD2 TX_DW_WORD TX_DW_TAP(0, 2))
TX_DW_PACKED(depthwise_pixel2_9, 0xC000C000, 13, TX_DW_WORD2 TX_DW_WORD2 TX_DW_WORD TX_DW_TAP(0, 2))

#else

namespace {

// kBits 8: per tap the two words of DepthwiseDspParams::filter, doubled; 4, 2: the packed words of
// DepthwisePackedDspParams::filter (tap u of a word: its even pair in field 2u from the top, its odd pair in
// 2u + 1), each pair-word then 2^(16 - kBits) times the weights, and the sums shifted back to 2 * acc.
template <int32_t kBits, int32_t kTaps>
void pixel(const uint32_t* stream, int8_t* out, intptr_t base, const DepthwiseStreamJob& job) {
  constexpr uint32_t mask = kBits == 4 ? 0xF000F000u : 0xC000C000u;
  constexpr int32_t taps_per_word = 8 / kBits;  // sub-byte
  const int8_t* const end = out + job.channels;
  for (; out != end; out += 4, base += 4) {
    int32_t acc[4];
    for (int i = 0; i < 4; ++i) acc[i] = static_cast<int32_t>(stream[i]);
    stream += 4;
    for (int32_t t = 0; t < kTaps; ++t) {
      uint32_t w_even, w_odd;
      if (kBits == 8) {
        w_even = sxtb16(stream[0]), w_odd = sxtb16_ror8(stream[0]);
        stream += 1;
      } else {
        const int32_t u = t % taps_per_word;
        w_even = (stream[0] << (2 * kBits * u)) & mask;
        w_odd = (stream[0] << (2 * kBits * u + kBits)) & mask;
        if (u == taps_per_word - 1 || t == kTaps - 1) ++stream;
      }
      const uint32_t v = load32(reinterpret_cast<const int8_t*>(base + job.offsets[t]));
      const uint32_t even = sxtb16(v), odd = sxtb16_ror8(v);
      acc[0] = smlabb(even, w_even, acc[0]);
      acc[2] = smlatt(even, w_even, acc[2]);
      acc[1] = smlabb(odd, w_odd, acc[1]);
      acc[3] = smlatt(odd, w_odd, acc[3]);
    }
    int32_t v[4];
    for (int i = 0; i < 4; ++i) {  // requantize_fast with the doubling already in the accumulator
      const int32_t acc2 = kBits == 8 ? static_cast<int32_t>(static_cast<uint32_t>(acc[i]) << 1) : acc[i] >> (15 - kBits);
      const int32_t s = smmulr(acc2, static_cast<int32_t>(stream[2 * i]));
      v[i] = ssat8_asr1(((s + (s >> 31)) >> static_cast<int32_t>(stream[2 * i + 1])) + job.round_offset);
    }
    stream += 8;
    store32(out, min_s8x4(max_s8x4(pack_s8x4(v[0], v[1], v[2], v[3]), job.act_min4), job.act_max4));
  }
}

}  // namespace

#define TX_DW_PIXEL(BITS, TAPS)                                                                   \
  void depthwise_pixel##BITS##_##TAPS(const uint32_t* stream, int8_t* out, intptr_t base,         \
                                      const DepthwiseStreamJob& job) {                            \
    pixel<BITS, TAPS>(stream, out, base, job);                                                    \
  }
TX_DW_PIXEL(8, 3) TX_DW_PIXEL(8, 5) TX_DW_PIXEL(8, 9)
TX_DW_PIXEL(4, 3) TX_DW_PIXEL(4, 5) TX_DW_PIXEL(4, 9)
TX_DW_PIXEL(2, 3) TX_DW_PIXEL(2, 5) TX_DW_PIXEL(2, 9)
#undef TX_DW_PIXEL

#endif

}  // namespace tx::dsp
