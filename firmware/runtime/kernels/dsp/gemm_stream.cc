// gemm_stream.h's two-pixel streams: Thumb-2 assembly on cores with the DSP extension, the same steps in C++
// elsewhere (the six-pixel stream is gemm_stream6.cc).
#include "gemm_stream.h"

namespace tx::dsp {

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)

// Entry: r0 stream, r1 out (pixel a), r2 job. The job goes to the stack:
// [sp] cols, cols_end, out_end, b_offset, round_offset, min4, max4.
#define TX_STREAM_ENTER              \
  "push {r4-r11, lr}\n"              \
  "ldm r2, {r3-r9}\n"                \
  "add r5, r1\n" /* out_c -> where pixel a's outputs end */ \
  "push {r3-r9}\n"

// A channel pair starts: r8, r9 (pixel a, channels 0 and 1) and r10, r11 (pixel b) = the stream's biases;
// r12 = the column buffer.
#define TX_STREAM_PAIR_START         \
  "ldrd r8, r9, [r0], #8\n"          \
  "mov r10, r8\n"                    \
  "mov r11, r9\n"                    \
  "ldr r12, [sp]\n"

// 2 * acc in r8-r11 -> requantized (dsp.h requantize_fast), packed [a0, a1, b0, b1], clamped, stored (pixel
// b first: with b_offset 0 pixel a's store replaces it); loops to 2: until pixel a's outputs end.
#define TX_STREAM_PAIR_FINISH                                                         \
  "ldmia r0!, {r2, r3, r4, r5}\n" /* multiplier0, ~shift0, multiplier1, ~shift1 */    \
  "smmulr r8, r8, r2\n"                                                               \
  "smmulr r10, r10, r2\n"                                                             \
  "smmulr r9, r9, r4\n"                                                               \
  "smmulr r11, r11, r4\n"                                                             \
  "add r8, r8, r8, asr #31\n"                                                         \
  "add r10, r10, r10, asr #31\n"                                                      \
  "add r9, r9, r9, asr #31\n"                                                         \
  "add r11, r11, r11, asr #31\n"                                                      \
  "asr r8, r8, r3\n"                                                                  \
  "asr r10, r10, r3\n"                                                                \
  "asr r9, r9, r5\n"                                                                  \
  "asr r11, r11, r5\n"                                                                \
  "ldrd r6, r7, [sp, #16]\n" /* round_offset, min4 */                                 \
  "add r8, r8, r6\n"                                                                  \
  "add r9, r9, r6\n"                                                                  \
  "add r10, r10, r6\n"                                                                \
  "add r11, r11, r6\n"                                                                \
  "ssat r8, #8, r8, asr #1\n"                                                         \
  "ssat r9, #8, r9, asr #1\n"                                                         \
  "ssat r10, #8, r10, asr #1\n"                                                       \
  "ssat r11, #8, r11, asr #1\n"                                                       \
  "bfi r8, r9, #8, #8\n"                                                              \
  "bfi r8, r10, #16, #8\n"                                                            \
  "bfi r8, r11, #24, #8\n"                                                            \
  "ssub8 r2, r8, r7\n" /* max with the activation's lower bound */                    \
  "sel r8, r8, r7\n"                                                                  \
  "ldr r6, [sp, #24]\n"                                                               \
  "ssub8 r2, r6, r8\n" /* min with its upper bound */                                 \
  "sel r8, r8, r6\n"                                                                  \
  "ldr r3, [sp, #12]\n"                                                               \
  "lsr r4, r8, #16\n"                                                                 \
  "strh r4, [r1, r3]\n"                                                               \
  "strh r8, [r1], #2\n"                                                               \
  "ldr r3, [sp, #8]\n"                                                                \
  "cmp r1, r3\n"                                                                      \
  "bne 2b\n"                                                                          \
  "add sp, #28\n"                                                                     \
  "pop {r4-r11, pc}\n"

// int8: per group of 4 products one LDM of both pixels' inputs, per channel a weight word widened by two
// SXTB16 and 4 SMLADs: 30 instructions per 8 products of both pixels and channels, then 37.
#define TX_STREAM_CHANNEL(A, B)     \
  "ldr r6, [r0], #4\n"              \
  "sxtb16 r7, r6\n"                 \
  "sxtb16 r6, r6, ror #8\n"         \
  "smlad " A ", r2, r7, " A "\n"    \
  "smlad " B ", r4, r7, " B "\n"    \
  "smlad " A ", r3, r6, " A "\n"    \
  "smlad " B ", r5, r6, " B "\n"

__attribute__((naked)) void gemm_stream(const uint32_t* /*stream*/, int8_t* /*out*/, const StreamJob& /*job*/) {
  asm volatile(
      TX_STREAM_ENTER
      "ldr lr, [sp, #4]\n"                 // cols_end
      "2:\n" TX_STREAM_PAIR_START
      "1:\n"
      ".rept 2\n"
      "ldmia r12!, {r2, r3, r4, r5}\n"     // 4 products of pixel a (r2, r3) and of pixel b (r4, r5)
      TX_STREAM_CHANNEL("r8", "r10") TX_STREAM_CHANNEL("r9", "r11")
      ".endr\n"
      "cmp r12, lr\n"
      "bne 1b\n"
      TX_STREAM_PAIR_FINISH);
}

// Sub-byte: one group of 4 products against both channels' pair-words cut out of r6 (kernels.h: the lane
// mask in lr, the field shifts S0..S3) into r7.
#define TX_STREAM_PACKED_GROUP(S0, S1, S2, S3) \
  "ldmia r12!, {r2, r3, r4, r5}\n"             \
  "and r7, lr, r6, lsl #" #S0 "\n"             \
  "smlad r8, r2, r7, r8\n"                     \
  "smlad r10, r4, r7, r10\n"                   \
  "and r7, lr, r6, lsl #" #S1 "\n"             \
  "smlad r8, r3, r7, r8\n"                     \
  "smlad r10, r5, r7, r10\n"                   \
  "and r7, lr, r6, lsl #" #S2 "\n"             \
  "smlad r9, r2, r7, r9\n"                     \
  "smlad r11, r4, r7, r11\n"                   \
  "and r7, lr, r6, lsl #" #S3 "\n"             \
  "smlad r9, r3, r7, r9\n"                     \
  "smlad r11, r5, r7, r11\n"

// The accumulators hold 2^(16 - bits) * acc: one shift makes them 2 * acc.
#define TX_STREAM_PACKED_UNSCALE(S) \
  "asr r8, r8, #" #S "\n"           \
  "asr r9, r9, #" #S "\n"           \
  "asr r10, r10, #" #S "\n"         \
  "asr r11, r11, #" #S "\n"

__attribute__((naked)) void gemm_stream_packed4(const uint32_t*, int8_t*, const StreamJob&) {
  asm volatile(
      TX_STREAM_ENTER
      "mov lr, #0xF000F000\n"
      "2:\n" TX_STREAM_PAIR_START
      "1:\n"
      "ldr r6, [r0], #4\n" TX_STREAM_PACKED_GROUP(0, 4, 8, 12)
      "ldr r6, [r0], #4\n" TX_STREAM_PACKED_GROUP(0, 4, 8, 12)
      "ldr r7, [sp, #4]\n"
      "cmp r12, r7\n"
      "bne 1b\n"
      TX_STREAM_PACKED_UNSCALE(11)
      TX_STREAM_PAIR_FINISH);
}

__attribute__((naked)) void gemm_stream_packed2(const uint32_t*, int8_t*, const StreamJob&) {
  asm volatile(
      TX_STREAM_ENTER
      "mov lr, #0xC000C000\n"
      "2:\n" TX_STREAM_PAIR_START
      "1:\n"
      "ldr r6, [r0], #4\n" TX_STREAM_PACKED_GROUP(0, 2, 4, 6) TX_STREAM_PACKED_GROUP(8, 10, 12, 14)
      "ldr r7, [sp, #4]\n"
      "cmp r12, r7\n"
      "bne 1b\n"
      TX_STREAM_PACKED_UNSCALE(13)
      TX_STREAM_PAIR_FINISH);
}

#else

namespace {

// The products of one channel pair, the stream's biases first; returns where its requantization starts.
// kBits 8: per group the int8 words of channels 0 and 1 (widened here); 4, 2: packed as kernels.h describes,
// each pair-word then 2^(16 - kBits) times the weights, and the sums shifted back to 2 * acc.
template <int32_t kBits>
const uint32_t* pair_sums(const uint32_t* stream, const StreamJob& job, int32_t* sums) {
  int32_t a0 = static_cast<int32_t>(stream[0]), a1 = static_cast<int32_t>(stream[1]), b0 = a0, b1 = a1;
  stream += 2;
  constexpr uint32_t mask = kBits == 4 ? 0xF000F000u : 0xC000C000u;
  constexpr int32_t per_word = 16 / kBits;  // pair-words per stream word (sub-byte)
  int32_t field = 0;
  auto next = [&]() {  // the next pair-word
    const uint32_t w = (stream[0] << (kBits * field)) & mask;
    if (++field == per_word) field = 0, ++stream;
    return w;
  };
  for (const uint32_t* c = job.cols; c != job.cols_end; c += 4) {
    uint32_t w0, w1, w2, w3;
    if (kBits == 8) {
      w0 = sxtb16(stream[0]), w1 = sxtb16_ror8(stream[0]), w2 = sxtb16(stream[1]), w3 = sxtb16_ror8(stream[1]);
      stream += 2;
    } else {
      w0 = next(), w1 = next(), w2 = next(), w3 = next();
    }
    a0 = smlad(c[0], w0, a0);
    b0 = smlad(c[2], w0, b0);
    a0 = smlad(c[1], w1, a0);
    b0 = smlad(c[3], w1, b0);
    a1 = smlad(c[0], w2, a1);
    b1 = smlad(c[2], w2, b1);
    a1 = smlad(c[1], w3, a1);
    b1 = smlad(c[3], w3, b1);
  }
  constexpr int32_t unscale = kBits == 8 ? 0 : 15 - kBits;
  sums[0] = a0 >> unscale, sums[1] = a1 >> unscale, sums[2] = b0 >> unscale, sums[3] = b1 >> unscale;
  return stream;
}

template <int32_t kBits>
void run(const uint32_t* stream, int8_t* out, const StreamJob& job) {
  const int8_t* const end = out + job.out_c;
  for (; out != end; out += 2) {
    int32_t s[4];
    stream = pair_sums<kBits>(stream, job, s);
    // requantize_fast with the doubling already in the sums
    auto requantize = [&](int32_t acc2, int32_t m, int32_t e) {
      const int32_t t = smmulr(acc2, m);
      return ssat8_asr1(((t + (t >> 31)) >> e) + job.round_offset);
    };
    const int32_t m0 = static_cast<int32_t>(stream[0]), e0 = static_cast<int32_t>(stream[1]);
    const int32_t m1 = static_cast<int32_t>(stream[2]), e1 = static_cast<int32_t>(stream[3]);
    stream += 4;
    const uint32_t packed = min_s8x4(max_s8x4(pack_s8x4(requantize(s[0], m0, e0), requantize(s[1], m1, e1),
                                                        requantize(s[2], m0, e0), requantize(s[3], m1, e1)),
                                              job.act_min4),
                                     job.act_max4);
    store16(out + job.b_offset, packed >> 16);
    store16(out, packed);
  }
}

}  // namespace

void gemm_stream(const uint32_t* stream, int8_t* out, const StreamJob& job) { run<8>(stream, out, job); }
void gemm_stream_packed4(const uint32_t* stream, int8_t* out, const StreamJob& job) { run<4>(stream, out, job); }
void gemm_stream_packed2(const uint32_t* stream, int8_t* out, const StreamJob& job) { run<2>(stream, out, job); }

#endif

}  // namespace tx::dsp
