// Shared by the DSP CONV_2D and FULLY_CONNECTED kernels: two output pixels at a time against every output
// channel, two channels at a time, from int16 operands (inputs widened with their offset added, filters
// widened at generation time), so one SMLAD does two multiply-accumulates and each loaded word is used twice.
#pragma once

#include <cstdint>

#include "tinyexit/dsp.h"
#include "tinyexit/kernels.h"

namespace tx::dsp {

struct Requantization {
  const int32_t* multiplier;
  const int32_t* shift;
  int32_t output_offset, act_min, act_max;
};

template <bool kFast, bool kClamp>
inline int8_t requantize(int32_t acc, const Requantization& q, int32_t channel) {
  int32_t v;
  if (kFast) {
    v = requantize_fast(acc, q.multiplier[channel], -q.shift[channel] - 1, 1 + 2 * q.output_offset);
  } else {
    v = requantize_exact(acc, q.multiplier[channel], q.shift[channel], q.output_offset);
  }
  if (kClamp) v = v < q.act_min ? q.act_min : (v > q.act_max ? q.act_max : v);
  return static_cast<int8_t>(v);
}

// For each channel pair j: sums[4j..4j+3] = bias + products of (pixel a, channel 2j), (a, 2j + 1),
// (b, 2j), (b, 2j + 1), from one column buffer (k_padded int16 per pixel) and the pairs' filters (gemm.cc).
void dot_pairs(const uint32_t* cols, const uint32_t* cols_end, const uint32_t* w, const int32_t* bias,
               int32_t pairs, int32_t* sums);

// cols: per group of 4 products, 2 words of pixel a then 2 words of pixel b; sums: 4 per channel pair.
// kPair false: pixel b is a copy of a (odd pixel count) and its results are dropped.
template <bool kFast, bool kClamp, bool kPair>
void gemm_pair(const GemmDspParams& d, const Requantization& q, int32_t out_c, const uint32_t* cols,
               int32_t* sums, int8_t* out_a, int8_t* out_b) {
  const int32_t pairs = (out_c + 1) / 2;
  dot_pairs(cols, cols + d.k_padded, d.filter, d.bias, pairs, sums);
  const Requantization r = q;  // locals: the int8 stores below may alias anything the compiler cannot see
  for (int32_t oc = 0; oc < out_c; ++oc) {
    const int32_t* s = sums + (oc >> 1) * 4 + (oc & 1);
    out_a[oc] = requantize<kFast, kClamp>(s[0], r, oc);
    if (kPair) out_b[oc] = requantize<kFast, kClamp>(s[2], r, oc);
  }
}

// Widens `count` int8 values (count % 4 == 0) with `offset` added into slot `pixel` (0 or 1) of the
// interleaved column buffer, starting at group `group`; each group of 4 is stored in the order 0, 2, 1, 3.
inline void widen_grouped(const int8_t* src, int32_t count, uint32_t offset2, uint32_t* cols, int32_t group,
                          int32_t pixel) {
  uint32_t* dst = cols + group * 4 + pixel * 2;
  for (int32_t i = 0; i < count; i += 4, dst += 4) {
    const uint32_t v = load32(src + i);
    dst[0] = sadd16(sxtb16(v), offset2);
    dst[1] = sadd16(sxtb16_ror8(v), offset2);
  }
}

inline void zero_groups(int32_t groups, uint32_t* cols, int32_t group, int32_t pixel) {
  uint32_t* dst = cols + group * 4 + pixel * 2;
  for (int32_t i = 0; i < groups; ++i, dst += 4) dst[0] = dst[1] = 0;
}

// One value at product index k (natural order) into slot `pixel`.
inline void put(uint32_t* cols, int32_t k, int32_t pixel, int32_t value) {
  const int16_t v = static_cast<int16_t>(value);
  __builtin_memcpy(reinterpret_cast<int16_t*>(cols) + (k >> 2) * 8 + pixel * 4 + (k & 3), &v, 2);
}

inline uint32_t offset_pair(int32_t offset) {
  return (static_cast<uint32_t>(offset) & 0xFFFF) | (static_cast<uint32_t>(offset) << 16);
}

}  // namespace tx::dsp
