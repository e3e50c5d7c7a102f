// The DSP GEMM for layers whose requantization is the short right-shift one (fast_mode 1) and whose channel
// count is even, the common case: everything a channel pair needs lies in one stream the code generator
// writes (GemmDspParams::stream), so one pointer walks it and the whole channel loop, products,
// requantization and stores, is one piece of assembly with every value in a register.
//
// Stream, per channel pair: 2 * bias0, 2 * bias1; the k_padded filter words of gemm.h's layout with every
// weight doubled; multiplier0, ~shift0, multiplier1, ~shift1. The doubled weights give the accumulators
// 2 * acc directly, the operand dsp.h's requantize_fast starts from (|acc| < 2^30 is proven).
#pragma once

#include "gemm.h"

namespace tx::dsp {

struct StreamJob {            // read by the assembly: the field order is its layout
  const uint32_t* cols;       // the column buffer (two pixels), k_padded words
  const uint32_t* cols_end;
  int32_t out_c;              // even
  int32_t b_offset;           // pixel b's outputs minus pixel a's; 0 drops pixel b (a copy of a)
  int32_t round_offset;       // 1 + 2 * output zero point
  uint32_t act_min4, act_max4;
};

// Both pixels' outputs for every channel, pixel a's at out.
void gemm_stream(const uint32_t* stream, int8_t* out, const StreamJob& job);
// The same with 4- and 2-bit filters: the pair's filter words are its GemmPackedDspParams::filter words
// and its biases are 2^(16 - bits) times the layer's; the sums are shifted back to 2 * acc before the
// requantization (the code generator proves 2^(16 - bits) * |acc| < 2^31).
void gemm_stream_packed4(const uint32_t* stream, int8_t* out, const StreamJob& job);
void gemm_stream_packed2(const uint32_t* stream, int8_t* out, const StreamJob& job);

template <int32_t kBits>
inline void gemm_stream_bits(const uint32_t* stream, int8_t* out, const StreamJob& job) {
  if constexpr (kBits == 4) {
    gemm_stream_packed4(stream, out, job);
  } else if constexpr (kBits == 2) {
    gemm_stream_packed2(stream, out, job);
  } else {
    gemm_stream(stream, out, job);
  }
}

inline StreamJob stream_job(const uint32_t* cols, int32_t k_padded, int32_t out_c, int32_t output_offset,
                            int32_t act_min, int32_t act_max) {
  return {cols, cols + k_padded, out_c, out_c, 1 + 2 * output_offset, splat_s8x4(act_min), splat_s8x4(act_max)};
}

}  // namespace tx::dsp
