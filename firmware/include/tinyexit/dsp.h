// The Cortex-M DSP instructions the optimised kernels (firmware/runtime/kernels/dsp/) are written in, and a
// plain C++ emulation of each for other targets, so the same kernels also run (and are tested, under the
// sanitizers) on the host. Both give the same bits by construction; the tests check it end to end.
#pragma once

#include <cstdint>

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

#include "tinyexit/quantization.h"

namespace tx::dsp {

#if defined(__ARM_FEATURE_DSP)

// [b0, b2] sign-extended to two int16 halves.
inline uint32_t sxtb16(uint32_t x) { return __sxtb16(x); }
// [b1, b3]: the rotation is part of the instruction (GCC 12's arm_acle.h has no __ror to express it).
inline uint32_t sxtb16_ror8(uint32_t x) {
  uint32_t r;
  asm("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}
inline uint32_t sadd16(uint32_t a, uint32_t b) { return __sadd16(a, b); }
// acc's halves + bytes 0, 2 of x sign-extended
inline uint32_t sxtab16(uint32_t acc, uint32_t x) { return __sxtab16(acc, x); }
// acc's halves + bytes 1, 3 of x sign-extended
inline uint32_t sxtab16_ror8(uint32_t acc, uint32_t x) {
  uint32_t r;
  asm("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(acc), "r"(x));
  return r;
}
// [b.lo | a.lo] and [b.hi | a.hi] (high half first): two halfwords into one word
inline uint32_t pkhbt16(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
inline uint32_t pkhtb16(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
// acc + a.lo * b.lo + a.hi * b.hi
inline int32_t smlad(uint32_t a, uint32_t b, int32_t acc) { return __smlad(a, b, acc); }
inline int32_t smlabb(uint32_t a, uint32_t b, int32_t acc) { return __smlabb(a, b, acc); }
inline int32_t smlatt(uint32_t a, uint32_t b, int32_t acc) { return __smlatt(a, b, acc); }
inline int32_t smlabt(uint32_t a, uint32_t b, int32_t acc) { return __smlabt(a, b, acc); }
inline int32_t smlatb(uint32_t a, uint32_t b, int32_t acc) { return __smlatb(a, b, acc); }
// (a * b + 2^31) >> 32
inline int32_t smmulr(int32_t a, int32_t b) {
  int32_t r;
  asm("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
// acc + (a * b + 2^31) >> 32
inline int32_t smmlar(int32_t a, int32_t b, int32_t acc) {
  int32_t r;
  asm("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
  return r;
}
// x saturated to int8, one instruction
inline int32_t ssat8(int32_t x) { return __ssat(x, 8); }
// Each signed byte of x clamped to [the same byte of lo4, the same byte of hi4]: SSUB8 sets the GE flags
// SEL reads, so each pair stays in one asm statement.
inline uint32_t max_s8x4(uint32_t x, uint32_t lo4) {
  uint32_t r, t;
  asm("ssub8 %1, %2, %3\n\tsel %0, %2, %3" : "=r"(r), "=&r"(t) : "r"(x), "r"(lo4));
  return r;
}
inline uint32_t min_s8x4(uint32_t x, uint32_t hi4) {
  uint32_t r, t;
  asm("ssub8 %1, %3, %2\n\tsel %0, %2, %3" : "=r"(r), "=&r"(t) : "r"(x), "r"(hi4));
  return r;
}
// x >> 1 saturated to int8, one instruction
inline int32_t ssat8_asr1(int32_t x) {
  int32_t r;
  asm("ssat %0, #8, %1, asr #1" : "=r"(r) : "r"(x));
  return r;
}

#else

inline int32_t lo16(uint32_t x) { return static_cast<int16_t>(x & 0xFFFF); }
inline int32_t hi16(uint32_t x) { return static_cast<int16_t>(x >> 16); }
inline uint32_t pack16(int32_t lo, int32_t hi) {
  return (static_cast<uint32_t>(lo) & 0xFFFF) | (static_cast<uint32_t>(hi) << 16);
}
inline uint32_t sxtb16(uint32_t x) {
  return pack16(static_cast<int8_t>(x & 0xFF), static_cast<int8_t>((x >> 16) & 0xFF));
}
inline uint32_t pkhbt16(uint32_t a, uint32_t b) { return (a & 0xFFFF) | (b << 16); }
inline uint32_t pkhtb16(uint32_t a, uint32_t b) { return (a >> 16) | (b & 0xFFFF0000u); }
inline uint32_t sxtb16_ror8(uint32_t x) { return sxtb16((x >> 8) | (x << 24)); }
inline uint32_t sadd16(uint32_t a, uint32_t b) { return pack16(lo16(a) + lo16(b), hi16(a) + hi16(b)); }
inline uint32_t sxtab16(uint32_t acc, uint32_t x) { return sadd16(acc, sxtb16(x)); }
inline uint32_t sxtab16_ror8(uint32_t acc, uint32_t x) { return sadd16(acc, sxtb16_ror8(x)); }
// The products and sums wrap like the instruction's 32-bit accumulator (unsigned arithmetic: no UB).
inline int32_t smlad(uint32_t a, uint32_t b, int32_t acc) {
  return static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(lo16(a) * lo16(b)) +
                              static_cast<uint32_t>(hi16(a) * hi16(b)));
}
inline int32_t smlabb(uint32_t a, uint32_t b, int32_t acc) {
  return static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(lo16(a) * lo16(b)));
}
inline int32_t smlatt(uint32_t a, uint32_t b, int32_t acc) {
  return static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(hi16(a) * hi16(b)));
}
inline int32_t smlabt(uint32_t a, uint32_t b, int32_t acc) {
  return static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(lo16(a) * hi16(b)));
}
inline int32_t smlatb(uint32_t a, uint32_t b, int32_t acc) {
  return static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(hi16(a) * lo16(b)));
}
inline int32_t smmulr(int32_t a, int32_t b) {
  return static_cast<int32_t>((static_cast<int64_t>(a) * b + (int64_t{1} << 31)) >> 32);
}
inline int32_t smmlar(int32_t a, int32_t b, int32_t acc) {
  return static_cast<int32_t>(static_cast<uint32_t>(acc) + static_cast<uint32_t>(smmulr(a, b)));
}
inline int32_t ssat8(int32_t x) { return x < -128 ? -128 : (x > 127 ? 127 : x); }
inline int32_t ssat8_asr1(int32_t x) { return ssat8(x >> 1); }
inline int32_t byte_s8(uint32_t x, int i) { return static_cast<int8_t>((x >> (8 * i)) & 0xFF); }
inline uint32_t max_s8x4(uint32_t x, uint32_t lo4) {
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const int32_t v = byte_s8(x, i) >= byte_s8(lo4, i) ? byte_s8(x, i) : byte_s8(lo4, i);
    r |= (static_cast<uint32_t>(v) & 0xFF) << (8 * i);
  }
  return r;
}
inline uint32_t min_s8x4(uint32_t x, uint32_t hi4) {
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const int32_t v = byte_s8(hi4, i) >= byte_s8(x, i) ? byte_s8(x, i) : byte_s8(hi4, i);
    r |= (static_cast<uint32_t>(v) & 0xFF) << (8 * i);
  }
  return r;
}

#endif

// Four int8 values (each already in range) as the bytes of one word, v0 lowest: 3 BFIs on Arm (GCC
// makes 8 instructions of the shifts and masks).
inline uint32_t pack_s8x4(int32_t v0, int32_t v1, int32_t v2, int32_t v3) {
#if defined(__ARM_ARCH_7EM__) || defined(__ARM_ARCH_8M_MAIN__) || defined(__ARM_ARCH_8_1M_MAIN__)
  uint32_t r = static_cast<uint32_t>(v0);
  asm("bfi %0, %1, #8, #8\n\tbfi %0, %2, #16, #8\n\tbfi %0, %3, #24, #8" : "+&r"(r) : "r"(v1), "r"(v2), "r"(v3));
  return r;
#else
  return (static_cast<uint32_t>(v0) & 0xFF) | ((static_cast<uint32_t>(v1) & 0xFF) << 8) |
         ((static_cast<uint32_t>(v2) & 0xFF) << 16) | (static_cast<uint32_t>(v3) << 24);
#endif
}
inline uint32_t splat_s8x4(int32_t v) { return (static_cast<uint32_t>(v) & 0xFF) * 0x01010101u; }

// Loads 4 bytes / 2 words from word-aligned memory without breaking strict aliasing.
inline uint32_t load32(const void* p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}
inline void store32(void* p, uint32_t v) { __builtin_memcpy(p, &v, 4); }
// The low 2 bytes of v (STRH; Cortex-M allows it unaligned).
inline void store16(void* p, uint32_t v) {
  const uint16_t h = static_cast<uint16_t>(v);
  __builtin_memcpy(p, &h, 2);
}

// TFLite's MultiplyByQuantizedMultiplier + output offset + int8 saturation, in 6 instructions, for the cases
// the code generator has proven safe (ConvDspParams::fast_requantize): shift <= -1 and |acc| < 2^30.
//  - saturating_rounding_doubling_high_mul(acc, m) == floor((acc * m + 2^30) / 2^31) for every sign (the
//    reference's sign-dependent nudge and truncating division agree with this floor), which is
//    smmulr(2 * acc, m); 2 * acc does not overflow because |acc| < 2^30.
//  - rounding_divide_by_pot(s, e) with ties away from zero == floor((s - [s < 0] + 2^(e-1)) / 2^e)
//    == ((t >> (e - 1)) + 1) >> 1 with t = s - [s < 0]; the offset is folded into the +1 as 1 + 2 * offset
//    and the final >> 1 is part of the saturating instruction.
// round_offset = 1 + 2 * output zero point; shift_minus_1 = -shift - 1 = ~shift >= 0.
inline int32_t requantize_fast(int32_t acc, int32_t multiplier, int32_t shift_minus_1, int32_t round_offset) {
  const int32_t s = smmulr(static_cast<int32_t>(static_cast<uint32_t>(acc) << 1), multiplier);
  const int32_t t = s + (s >> 31);
  return ssat8_asr1((t >> shift_minus_1) + round_offset);
}

// The same for channels that shift left (shift >= 0): MultiplyByQuantizedMultiplier is then
// saturating_rounding_doubling_high_mul(acc * 2^shift, m) alone, == smmulr(acc << (shift + 1), m) while
// |acc| * 2^(shift + 1) < 2^31 (the code generator proves it). left_shift_plus_1 = shift + 1.
inline int32_t requantize_fast_left(int32_t acc, int32_t multiplier, int32_t left_shift_plus_1,
                                    int32_t output_offset) {
  return ssat8(smmulr(static_cast<int32_t>(static_cast<uint32_t>(acc) << left_shift_plus_1), multiplier) + output_offset);
}

// The reference path for layers that are not provably safe for the fast one.
inline int32_t requantize_exact(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset) {
  const int32_t v = multiply_by_quantized_multiplier(acc, multiplier, shift) + output_offset;
  return v < -128 ? -128 : (v > 127 ? 127 : v);
}

}  // namespace tx::dsp
