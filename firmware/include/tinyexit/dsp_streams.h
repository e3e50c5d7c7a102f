// The DSP kernels' innermost routines as templates on what the code generator knows about a layer (group
// count, shift, channel stride, strip width): the generated model names the instantiations it needs (through
// the parameter structs of kernels.h) and compiles only those, each with its constants as immediates. Thumb-2
// assembly on cores with the DSP extension, the same steps in C++ elsewhere (tested on the host).
//
// Each assembly routine saves and restores the registers it uses itself (push/pop inside the statement), so it
// sits in an ordinary inline function: the compiler only hands it its pointers (in registers it does not
// clobber), which it moves to r0-r2.
#pragma once

#include <cstdint>

#include "tinyexit/dsp.h"

namespace tx::dsp {

// ---------------------------------------------------------------------------------------------------------
// The six-pixel int8 GEMM stream (CONV_2D, kernels.h GemmDspParams::segments): six output pixels against one
// channel at a time. Per group of 4 products one int8 weight word is widened with two SXTB16 and used by 12
// SMLADs, the six pixels' inputs coming in three LDMs from the column buffer (dsp/column.h: per group 2 words
// per pixel, inputs doubled so the accumulators hold the 2 * acc the requantization starts from).
//
// Stream, per channel: its first weight word, 2 * bias, its other kGroups - 1 weight words (byte j of a word =
// product j of the group, in column.h's order), multiplier, 2 * (channel index) + 1 on the segment's last
// channel. A segment holds channels of one shift (kE); the job gives their rounding offset (1 + 2 * output
// zero point) << (kE - 1). Requantization: dsp.h requantize_fast with the offset added by SMMLAR before the
// shift (exact: a multiple of 2^(kE - 1)) and the sign of the accumulator in place of the product's (they
// differ only where the product rounds to 0, which both send to the zero point): SMMLAR, ADD, SSAT.
struct Stream6Job {      // read by the assembly: the field order is its layout
  const uint32_t* cols;  // the column buffer
  int8_t* out;           // slot 0's output for channel 0; slot i's is i * kStride further
  int32_t rounding;      // the segment's rounding offset
};

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
// Registers: r0 stream, r1 column buffer (then outputs), r2 odd weights (products 1, 3), r3 even (0, 2), r4-r9
// the six pixels' accumulators, r10-r12 and lr one LDM of two pixels' inputs. [sp] cols, out, rounding.
#define TX_S6_PIXELS(A, B, FIRST_A, FIRST_B)  \
  "ldmia r1!, {r10, r11, r12, lr}\n"          \
  "smlad " A ", r10, r3, " FIRST_A "\n"       \
  "smlad " A ", r11, r2, " A "\n"             \
  "smlad " B ", r12, r3, " FIRST_B "\n"       \
  "smlad " B ", lr, r2, " B "\n"
#define TX_S6_REQUANTIZE(R) \
  "smmlar r2, " R ", r10, r12\n" "add " R ", r2, " R ", asr #31\n" "ssat " R ", #8, " R ", asr %[shift]\n"
#endif

// Every channel of the segment for the job's six pixels: 18 instructions per group of 4 products, 32 besides.
template <int32_t kGroups, int32_t kE, int32_t kStride>
inline void gemm_stream6(const uint32_t* stream, const Stream6Job& job) {
  static_assert(kGroups >= 1 && kE >= 1 && kE <= 31 && kStride > 0 && 5 * kStride <= 4095, "immediates");
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  asm volatile(
      "push {r4-r11, lr}\n"
      "mov r0, %[stream]\n"
      "ldm %[job], {r2, r3, r12}\n"
      "push {r2, r3, r12}\n"
      "1:\n"
      "ldr r1, [sp]\n"
      "ldmia r0!, {r2, r9}\n"  // the first weight word and the bias, the first SMLADs' addend
      "sxtb16 r3, r2\n"
      "sxtb16 r2, r2, ror #8\n"
      TX_S6_PIXELS("r4", "r5", "r9", "r9") TX_S6_PIXELS("r6", "r7", "r9", "r9") TX_S6_PIXELS("r8", "r9", "r9", "r9")
      ".rept %c[groups] - 1\n"
      "ldr r2, [r0], #4\n"
      "sxtb16 r3, r2\n"
      "sxtb16 r2, r2, ror #8\n"
      TX_S6_PIXELS("r4", "r5", "r4", "r5") TX_S6_PIXELS("r6", "r7", "r6", "r7") TX_S6_PIXELS("r8", "r9", "r8", "r9")
      ".endr\n"
      "ldmia r0!, {r10, r11}\n"  // multiplier, 2 * channel (+ 1 on the last)
      "ldr r12, [sp, #8]\n"
      TX_S6_REQUANTIZE("r4") TX_S6_REQUANTIZE("r5") TX_S6_REQUANTIZE("r6")
      TX_S6_REQUANTIZE("r7") TX_S6_REQUANTIZE("r8") TX_S6_REQUANTIZE("r9")
      "ldr r1, [sp, #4]\n"
      "add r1, r1, r11, lsr #1\n"
      "strb r4, [r1]\n"
      "strb r5, [r1, %[s1]]\n"
      "strb r6, [r1, %[s2]]\n"
      "strb r7, [r1, %[s3]]\n"
      "strb r8, [r1, %[s4]]\n"
      "strb r9, [r1, %[s5]]\n"
      "tst r11, #1\n"
      "beq 1b\n"
      "add sp, #12\n"
      "pop {r4-r11, lr}\n"
      :
      : [stream] "r"(stream), [job] "r"(&job), [groups] "i"(kGroups), [shift] "i"(kE), [s1] "i"(kStride), [s2] "i"(2 * kStride), [s3] "i"(3 * kStride),
        [s4] "i"(4 * kStride), [s5] "i"(5 * kStride)
      : "r0", "r1", "r2", "r3", "r12", "cc", "memory");
#else
  for (;;) {
    int32_t acc[6];
    const uint32_t first = stream[0];
    for (int32_t& a : acc) a = static_cast<int32_t>(stream[1]);
    stream += 2;
    const uint32_t* c = job.cols;
    for (int32_t g = 0; g < kGroups; ++g, c += 12) {
      const uint32_t raw = g == 0 ? first : *stream++;
      const uint32_t even = sxtb16(raw), odd = sxtb16_ror8(raw);
      for (int32_t i = 0; i < 6; ++i) acc[i] = smlad(c[2 * i + 1], odd, smlad(c[2 * i], even, acc[i]));
    }
    const int32_t multiplier = static_cast<int32_t>(stream[0]), code = static_cast<int32_t>(stream[1]);
    stream += 2;
    int8_t* out = job.out + (code >> 1);
    for (int32_t i = 0; i < 6; ++i) {
      const int32_t t = smmlar(acc[i], multiplier, job.rounding) + (acc[i] >> 31);
      out[i * kStride] = static_cast<int8_t>(ssat8(t >> kE));
    }
    if (code & 1) return;
  }
#endif
}

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
#undef TX_S6_PIXELS
#undef TX_S6_REQUANTIZE
#endif

// ---------------------------------------------------------------------------------------------------------
// DEPTHWISE_CONV_2D 3x3 at stride 1 (kernels.h DepthwisePlaneParams), one channel at a time: the channel's
// input is copied into a plane of int16 values with its zero point around it (the input offset is folded into
// the bias), so two horizontally adjacent taps are one word and SMLAD does two products per instruction; each
// output row is computed in strips of up to 6 outputs (8 plane columns: the plane is 16 bytes wide).
//
// Per output row and strip of kB outputs, kernel row r: the strip's plane row as 4 words P0..P3 (P_k holds
// columns 2k, 2k + 1), and the weight words A = [w(r,1) | w(r,0)], B = [w(r,2) | w(r,1)] (doubled). Output 2k
// takes SMLAD(P_k, A) + SMLABT(P_k+1, B), output 2k + 1 takes SMLATB(P_k, A) + SMLAD(P_k+1, B): 9 products in
// 6 instructions. Requantization as the GEMM stream's, the shift kE an immediate.
constexpr int32_t kPlaneColumns = 8;  // int16 per plane row

struct DepthwiseStripJob {  // read by the assembly: the field order is its layout
  const int8_t* taps;       // the channel's 3x3 filter, row-major
  const int32_t* quant;     // 2 * (bias + input_offset * sum of the channel's weights), multiplier,
                            // (1 + 2 * output zero point) << (kE - 1)
  int32_t row_step;         // from an output row's first output to the next row's
  int8_t* end;              // the first output of the row after the last
};

// The weight words A_r, B_r of kernel row r from its 3 weights w0, w1, w2, doubled.
inline void strip_weights(const int8_t* taps, uint32_t* words) {
  for (int32_t r = 0; r < 3; ++r) {
    const uint32_t w0 = static_cast<uint32_t>(2 * taps[3 * r]) & 0xFFFF;
    const uint32_t w1 = static_cast<uint32_t>(2 * taps[3 * r + 1]) & 0xFFFF;
    const uint32_t w2 = static_cast<uint32_t>(2 * taps[3 * r + 2]) & 0xFFFF;
    words[2 * r] = w0 | (w1 << 16);
    words[2 * r + 1] = w1 | (w2 << 16);
  }
}

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
// Registers: r0 plane, r1 out, r2/r3 the row's weight words (then multiplier and rounding offset), r4-r9 the
// accumulators of outputs 0-5, r10-r12 and lr the plane row's words P0-P3; r9 the end of the output when the
// strip has fewer than 6 outputs. [sp] A0, B0, A1, B1, A2, B2, 2 * bias, multiplier, rounding offset, row
// step, end. A kernel row's weight words from its 3 bytes, the first 3 of RAW (E scratch):
#define TX_DW_WEIGHTS(RAW, A, B, E)        \
  "sxtb16 " E ", " RAW "\n"                \
  "sxtb16 " RAW ", " RAW ", ror #8\n"      \
  "pkhtb " B ", " E ", " RAW "\n"          \
  "pkhbt " A ", " E ", " RAW ", lsl #16\n" \
  "sadd16 " A ", " A ", " A "\n"           \
  "sadd16 " B ", " B ", " B "\n"
// The same from the last 3 bytes of RAW (the filter's last row: no read past it).
#define TX_DW_WEIGHTS_HIGH(RAW, A, B, E)           \
  "sxtb16 " E ", " RAW "\n"                        \
  "sxtb16 " RAW ", " RAW ", ror #8\n"              \
  "pkhtb " B ", " RAW ", " E ", asr #16\n"         \
  "pkhtb " A ", " E ", " RAW "\n"                  \
  "sadd16 " A ", " A ", " A "\n"                   \
  "sadd16 " B ", " B ", " B "\n"
// Output j on one kernel row, adding to X (the bias on row 0):
#define TX_DW_EVEN(A, P, Q, X) "smlad " A ", " P ", r2, " X "\n" "smlabt " A ", " Q ", r3, " A "\n"
#define TX_DW_ODD(A, P, Q, X) "smlatb " A ", " P ", r2, " X "\n" "smlad " A ", " Q ", r3, " A "\n"
#define TX_DW_OUT(J, X)                                                    \
  ".if " #J " < %c[width]\n"                                               \
  ".if " #J " == 0\n" TX_DW_EVEN("r4", "r10", "r11", X) ".endif\n"         \
  ".if " #J " == 1\n" TX_DW_ODD("r5", "r10", "r11", X) ".endif\n"          \
  ".if " #J " == 2\n" TX_DW_EVEN("r6", "r11", "r12", X) ".endif\n"         \
  ".if " #J " == 3\n" TX_DW_ODD("r7", "r11", "r12", X) ".endif\n"          \
  ".if " #J " == 4\n" TX_DW_EVEN("r8", "r12", "lr", X) ".endif\n"          \
  ".if " #J " == 5\n" TX_DW_ODD("r9", "r12", "lr", X) ".endif\n"           \
  ".endif\n"
// A kernel row for every output; on row 0 the bias sits in output kB - 1's accumulator (set by the caller of
// the macro), which the others add to before it gets its own products.
#define TX_DW_ROW(X0, X1, X2, X3, X4, X5) \
  TX_DW_OUT(0, X0) TX_DW_OUT(1, X1) TX_DW_OUT(2, X2) TX_DW_OUT(3, X3) TX_DW_OUT(4, X4) TX_DW_OUT(5, X5)
#define TX_DW_RQ(A, J)                                                                                   \
  ".if " #J " < %c[width]\n"                                                                             \
  "smmlar r10, " A ", r2, r3\n" "add " A ", r10, " A ", asr #31\n" "ssat " A ", #8, " A ", asr %[shift]\n" \
  ".endif\n"
#define TX_DW_STORE(A, J) ".if " #J " < %c[width]\n" "strb " A ", [r1, #" #J " * %c[step]]\n" ".endif\n"
#endif

// Every output row of one channel's strip; plane: the plane row of output row 0's top taps, at the strip's
// first column. Per row 12 instructions per kernel row, 3 per output to requantize, kB stores, 8 besides.
template <int32_t kB, int32_t kE, int32_t kStep>
inline void depthwise_strip(const int16_t* plane, int8_t* out, const DepthwiseStripJob& job) {
  static_assert(kB >= 1 && kB <= 6 && kE >= 1 && kE <= 31 && (kB - 1) * kStep <= 4095, "immediates");
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  asm volatile(
      "push {r4-r11, lr}\n"
      "mov r0, %[plane]\n"
      "mov r1, %[out]\n"
      "ldm %[job], {r8, r9, r11, r12}\n"  // taps, quant, row step, end
      "ldr r2, [r8]\n"
      "ldr r4, [r8, #3]\n"
      "ldr r6, [r8, #5]\n"
      TX_DW_WEIGHTS("r2", "r2", "r3", "r10") TX_DW_WEIGHTS("r4", "r4", "r5", "r10")
      TX_DW_WEIGHTS_HIGH("r6", "r6", "r7", "r10")
      "ldm r9, {r8, r9, r10}\n"
      "push {r2-r12}\n"
      ".if %c[width] < 6\n" "ldr r9, [sp, #40]\n" ".endif\n"  // the end, kept in r9 where it is free
      "1:\n"
      ".if %c[width] == 1\n" "ldr r4, [sp, #24]\n" ".endif\n"
      ".if %c[width] == 2\n" "ldr r5, [sp, #24]\n" ".endif\n"
      ".if %c[width] == 3\n" "ldr r6, [sp, #24]\n" ".endif\n"
      ".if %c[width] == 4\n" "ldr r7, [sp, #24]\n" ".endif\n"
      ".if %c[width] == 5\n" "ldr r8, [sp, #24]\n" ".endif\n"
      ".if %c[width] == 6\n" "ldr r9, [sp, #24]\n" ".endif\n"
      "ldmia r0!, {r10, r11, r12, lr}\n"
      "ldrd r2, r3, [sp, #0]\n"
      // row 0: every output but the last adds to the bias in the last one's accumulator
      ".if %c[width] == 1\n" TX_DW_ROW("r4", "", "", "", "", "") ".endif\n"
      ".if %c[width] == 2\n" TX_DW_ROW("r5", "r5", "", "", "", "") ".endif\n"
      ".if %c[width] == 3\n" TX_DW_ROW("r6", "r6", "r6", "", "", "") ".endif\n"
      ".if %c[width] == 4\n" TX_DW_ROW("r7", "r7", "r7", "r7", "", "") ".endif\n"
      ".if %c[width] == 5\n" TX_DW_ROW("r8", "r8", "r8", "r8", "r8", "") ".endif\n"
      ".if %c[width] == 6\n" TX_DW_ROW("r9", "r9", "r9", "r9", "r9", "r9") ".endif\n"
      "ldmia r0!, {r10, r11, r12, lr}\n"
      "ldrd r2, r3, [sp, #8]\n" TX_DW_ROW("r4", "r5", "r6", "r7", "r8", "r9")
      "ldmia r0, {r10, r11, r12, lr}\n"
      "ldrd r2, r3, [sp, #16]\n" TX_DW_ROW("r4", "r5", "r6", "r7", "r8", "r9")
      "sub r0, r0, #16\n"
      "ldrd r2, r3, [sp, #28]\n"
      TX_DW_RQ("r4", 0) TX_DW_RQ("r5", 1) TX_DW_RQ("r6", 2) TX_DW_RQ("r7", 3) TX_DW_RQ("r8", 4) TX_DW_RQ("r9", 5)
      TX_DW_STORE("r4", 0) TX_DW_STORE("r5", 1) TX_DW_STORE("r6", 2) TX_DW_STORE("r7", 3) TX_DW_STORE("r8", 4)
      TX_DW_STORE("r9", 5)
      "ldr r12, [sp, #36]\n"
      "add r1, r1, r12\n"
      ".if %c[width] < 6\n"
      "cmp r1, r9\n"
      ".else\n"
      "ldr r12, [sp, #40]\n"
      "cmp r1, r12\n"
      ".endif\n"
      "bne 1b\n"
      "add sp, #44\n"
      "pop {r4-r11, lr}\n"
      :
      : [plane] "r"(plane), [out] "r"(out), [job] "r"(&job), [width] "i"(kB), [shift] "i"(kE), [step] "i"(kStep)
      : "r0", "r1", "r2", "r3", "r12", "cc", "memory");
#else
  uint32_t weights[6];
  strip_weights(job.taps, weights);
  const int32_t bias2 = job.quant[0], multiplier = job.quant[1], rounding = job.quant[2];
  for (; out != job.end; plane += kPlaneColumns, out += job.row_step) {
    int32_t acc[6];
    for (int32_t j = 0; j < kB; ++j) acc[j] = bias2;
    for (int32_t r = 0; r < 3; ++r) {
      const int16_t* p = plane + r * kPlaneColumns;
      const uint32_t a = weights[2 * r], b = weights[2 * r + 1];
      for (int32_t j = 0; j < kB; ++j) {
        const uint32_t lo = load32(p + 2 * (j / 2)), hi = load32(p + 2 * (j / 2 + 1));
        acc[j] = j % 2 == 0 ? smlabt(hi, b, smlad(lo, a, acc[j])) : smlad(hi, b, smlatb(lo, a, acc[j]));
      }
    }
    for (int32_t j = 0; j < kB; ++j) {
      const int32_t t = smmlar(acc[j], multiplier, rounding) + (acc[j] >> 31);
      out[j * kStep] = static_cast<int8_t>(ssat8(t >> kE));
    }
  }
#endif
}

#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
#undef TX_DW_WEIGHTS
#undef TX_DW_WEIGHTS_HIGH
#undef TX_DW_EVEN
#undef TX_DW_ODD
#undef TX_DW_OUT
#undef TX_DW_ROW
#undef TX_DW_RQ
#undef TX_DW_STORE
#endif

// Four channels' planes for a layer with one strip per row (plane i at p0 + i * plane_words words, row 0 of the
// input at p0): plane columns [kFirst, kEnd) from the input, column q of a row at src + q * kStep, the other
// columns left as they are (the zero point, written once). Per plane word (columns 2k, 2k + 1) one or two
// loads, SXTB16 into channels 0, 2 | 1, 3, PKHBT/PKHTB into the four channels' words and four stores, or for a
// word with one column inside, four halfword stores beside the zero point. src: column 0 of input row 0
// (integer arithmetic: it may lie before the input, never read).
template <int32_t kFirst, int32_t kEnd, int32_t kStep>
inline void depthwise_fill(const int8_t* src, uint32_t* p0, int32_t plane_words, int32_t rows, int32_t row_step) {
  static_assert(kFirst >= 0 && kEnd <= kPlaneColumns && kFirst < kEnd && (kEnd - 1) * kStep <= 4095, "immediates");
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
  uint32_t* p1 = p0 + plane_words;
  uint32_t* p2 = p1 + plane_words;
  uint32_t* p3 = p2 + plane_words;
  const int8_t* const end = src + rows * row_step;
  uint32_t a, b, c, d, e;
  asm volatile(
      "1:\n"
      ".irp k, 0, 1, 2, 3\n"
      ".if (2 * \\k >= %c[first]) && (2 * \\k + 1 < %c[last])\n"  // both columns inside
      "ldr %[a], [%[s], #2 * \\k * %c[step]]\n"
      "ldr %[b], [%[s], #(2 * \\k + 1) * %c[step]]\n"
      "sxtb16 %[c], %[a]\n"
      "sxtb16 %[a], %[a], ror #8\n"
      "sxtb16 %[d], %[b]\n"
      "sxtb16 %[b], %[b], ror #8\n"
      "pkhbt %[e], %[c], %[d], lsl #16\n"
      "str %[e], [%[p0], #4 * \\k]\n"
      "pkhtb %[c], %[d], %[c], asr #16\n"
      "str %[c], [%[p2], #4 * \\k]\n"
      "pkhbt %[d], %[a], %[b], lsl #16\n"
      "str %[d], [%[p1], #4 * \\k]\n"
      "pkhtb %[a], %[b], %[a], asr #16\n"
      "str %[a], [%[p3], #4 * \\k]\n"
      ".elseif (2 * \\k >= %c[first]) && (2 * \\k < %c[last])\n"  // column 2k alone (2k + 1 after the input)
      "ldr %[a], [%[s], #2 * \\k * %c[step]]\n"
      "sxtb16 %[c], %[a]\n"
      "sxtb16 %[a], %[a], ror #8\n"
      "strh %[c], [%[p0], #4 * \\k]\n"
      "lsr %[c], %[c], #16\n"
      "strh %[c], [%[p2], #4 * \\k]\n"
      "strh %[a], [%[p1], #4 * \\k]\n"
      "lsr %[a], %[a], #16\n"
      "strh %[a], [%[p3], #4 * \\k]\n"
      ".elseif (2 * \\k + 1 >= %c[first]) && (2 * \\k + 1 < %c[last])\n"  // column 2k + 1 alone (2k before)
      "ldr %[b], [%[s], #(2 * \\k + 1) * %c[step]]\n"
      "sxtb16 %[d], %[b]\n"
      "sxtb16 %[b], %[b], ror #8\n"
      "strh %[d], [%[p0], #4 * \\k + 2]\n"
      "lsr %[d], %[d], #16\n"
      "strh %[d], [%[p2], #4 * \\k + 2]\n"
      "strh %[b], [%[p1], #4 * \\k + 2]\n"
      "lsr %[b], %[b], #16\n"
      "strh %[b], [%[p3], #4 * \\k + 2]\n"
      ".endif\n"
      ".endr\n"
      "add %[s], %[s], %[rs]\n"
      "add %[p0], %[p0], #16\n"
      "add %[p1], %[p1], #16\n"
      "add %[p2], %[p2], #16\n"
      "add %[p3], %[p3], #16\n"
      "cmp %[s], %[end]\n"
      "bne 1b\n"
      : [s] "+r"(src), [p0] "+r"(p0), [p1] "+r"(p1), [p2] "+r"(p2), [p3] "+r"(p3), [a] "=&r"(a), [b] "=&r"(b),
        [c] "=&r"(c), [d] "=&r"(d), [e] "=&r"(e)
      : [end] "r"(end), [rs] "r"(row_step), [first] "i"(kFirst), [last] "i"(kEnd), [step] "i"(kStep)
      : "cc", "memory");
#else
  const intptr_t base = reinterpret_cast<intptr_t>(src);
  for (int32_t y = 0; y < rows; ++y, p0 += kPlaneColumns / 2) {
    for (int32_t q = kFirst; q < kEnd; ++q) {  // halfword q of each plane's row
      const uint32_t v = load32(reinterpret_cast<const int8_t*>(base + y * row_step + q * kStep));
      const uint32_t even = sxtb16(v), odd = sxtb16_ror8(v);
      const uint16_t lanes[4] = {static_cast<uint16_t>(even), static_cast<uint16_t>(odd),
                                 static_cast<uint16_t>(even >> 16), static_cast<uint16_t>(odd >> 16)};
      for (int32_t i = 0; i < 4; ++i) {
        __builtin_memcpy(reinterpret_cast<char*>(p0 + i * plane_words) + 2 * q, &lanes[i], 2);
      }
    }
  }
#endif
}

}  // namespace tx::dsp
