// depthwise_stream.h: Thumb-2 assembly on cores with the DSP extension, the same steps in C++ elsewhere.
#include "depthwise_stream.h"

namespace tx::dsp {
namespace {

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)

// r0 stream, r1 out, r2 base, r3 job. Per group of 4 channels: 9 instructions per tap, then 32 for the
// biases, requantization, packing, clamping and the store.
#define TX_DEPTHWISE_STREAM(TAPS)                                                                              \
  __attribute__((naked)) void pixel##TAPS(const uint32_t*, int8_t*, intptr_t, const DepthwiseStreamJob&) {      \
    asm volatile(                                                                                              \
        "push {r4-r11, lr}\n"                                                                                  \
        "ldm r3, {r3, r4, r5, r6, r7}\n" /* offsets, channels, round_offset, min4, max4 */                     \
        "add lr, r1, r4\n"               /* where the pixel's outputs end */                                   \
        "push {r5, r6, r7}\n"                                                                                  \
        "2:\n"                                                                                                 \
        "ldmia r0!, {r4, r5, r6, r7}\n"  /* channels 0, 1, 2, 3 start at their doubled biases */               \
        "mov r8, r3\n"                                                                                         \
        ".rept " #TAPS "\n"                                                                                    \
        "ldr r9, [r8], #4\n"                                                                                   \
        "ldr r9, [r2, r9]\n"             /* the tap's 4 inputs */                                              \
        "ldrd r10, r11, [r0], #8\n"      /* weights of channels 0, 2 | 1, 3 */                                  \
        "sxtb16 r12, r9\n"                                                                                     \
        "sxtb16 r9, r9, ror #8\n"                                                                              \
        "smlabb r4, r12, r10, r4\n"                                                                            \
        "smlatt r6, r12, r10, r6\n"                                                                            \
        "smlabb r5, r9, r11, r5\n"                                                                             \
        "smlatt r7, r9, r11, r7\n"                                                                             \
        ".endr\n"                                                                                              \
        "ldmia r0!, {r8, r9, r10, r11}\n" /* multiplier, ~shift of channels 0, 1 */                             \
        "smmulr r4, r4, r8\n"                                                                                  \
        "smmulr r5, r5, r10\n"                                                                                 \
        "add r4, r4, r4, asr #31\n"                                                                            \
        "add r5, r5, r5, asr #31\n"                                                                            \
        "asr r4, r4, r9\n"                                                                                     \
        "asr r5, r5, r11\n"                                                                                    \
        "ldmia r0!, {r8, r9, r10, r11}\n" /* channels 2, 3 */                                                   \
        "smmulr r6, r6, r8\n"                                                                                  \
        "smmulr r7, r7, r10\n"                                                                                 \
        "add r6, r6, r6, asr #31\n"                                                                            \
        "add r7, r7, r7, asr #31\n"                                                                            \
        "asr r6, r6, r9\n"                                                                                     \
        "asr r7, r7, r11\n"                                                                                    \
        "ldr r8, [sp]\n"                                                                                       \
        "add r4, r4, r8\n"                                                                                     \
        "add r5, r5, r8\n"                                                                                     \
        "add r6, r6, r8\n"                                                                                     \
        "add r7, r7, r8\n"                                                                                     \
        "ssat r4, #8, r4, asr #1\n"                                                                            \
        "ssat r5, #8, r5, asr #1\n"                                                                            \
        "ssat r6, #8, r6, asr #1\n"                                                                            \
        "ssat r7, #8, r7, asr #1\n"                                                                            \
        "bfi r4, r5, #8, #8\n"                                                                                 \
        "bfi r4, r6, #16, #8\n"                                                                                \
        "bfi r4, r7, #24, #8\n"                                                                                \
        "ldrd r8, r9, [sp, #4]\n"        /* min4, max4 */                                                      \
        "ssub8 r10, r4, r8\n"                                                                                  \
        "sel r4, r4, r8\n"                                                                                     \
        "ssub8 r10, r9, r4\n"                                                                                  \
        "sel r4, r4, r9\n"                                                                                     \
        "str r4, [r1], #4\n"                                                                                   \
        "add r2, r2, #4\n"                                                                                     \
        "cmp r1, lr\n"                                                                                         \
        "bne 2b\n"                                                                                             \
        "add sp, #12\n"                                                                                        \
        "pop {r4-r11, pc}\n");                                                                                 \
  }

TX_DEPTHWISE_STREAM(3)
TX_DEPTHWISE_STREAM(5)
TX_DEPTHWISE_STREAM(9)

#else

template <int32_t kTaps>
void pixel(const uint32_t* stream, int8_t* out, intptr_t base, const DepthwiseStreamJob& job) {
  const int8_t* const end = out + job.channels;
  for (; out != end; out += 4, base += 4) {
    int32_t acc[4];
    for (int i = 0; i < 4; ++i) acc[i] = static_cast<int32_t>(stream[i]);
    stream += 4;
    for (int32_t t = 0; t < kTaps; ++t, stream += 2) {
      const uint32_t v = load32(reinterpret_cast<const int8_t*>(base + job.offsets[t]));
      const uint32_t even = sxtb16(v), odd = sxtb16_ror8(v);
      acc[0] = smlabb(even, stream[0], acc[0]);
      acc[2] = smlatt(even, stream[0], acc[2]);
      acc[1] = smlabb(odd, stream[1], acc[1]);
      acc[3] = smlatt(odd, stream[1], acc[3]);
    }
    int32_t v[4];
    for (int i = 0; i < 4; ++i) {  // requantize_fast with the doubling already in the accumulator
      const int32_t s = smmulr(acc[i], static_cast<int32_t>(stream[2 * i]));
      v[i] = ssat8_asr1(((s + (s >> 31)) >> static_cast<int32_t>(stream[2 * i + 1])) + job.round_offset);
    }
    stream += 8;
    store32(out, min_s8x4(max_s8x4(pack_s8x4(v[0], v[1], v[2], v[3]), job.act_min4), job.act_max4));
  }
}

constexpr DepthwiseStreamPixel pixel3 = pixel<3>, pixel5 = pixel<5>, pixel9 = pixel<9>;

#endif

}  // namespace

DepthwiseStreamPixel depthwise_stream_pixel(int32_t taps) {
  switch (taps) {
    case 3: return pixel3;
    case 5: return pixel5;
    case 9: return pixel9;
    default: return nullptr;
  }
}

}  // namespace tx::dsp
