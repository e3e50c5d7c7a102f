// The two-pixel DSP GEMMs for layers whose requantization is the short right-shift one (fast_mode 1): everything
// a channel pair needs lies in one stream the code generator writes (GemmDspParams::stream,
// GemmPackedDspParams::stream), so one pointer walks it and the whole channel loop, products, requantization
// and stores, is one piece of assembly with every value in a register. (The six-pixel int8 stream of CONV_2D
// is tinyexit/dsp_streams.h's.)
#pragma once

#include "gemm.h"

namespace tx::dsp {

// Two output pixels against a channel pair at a time (gemm_stream.cc): FULLY_CONNECTED and TRANSPOSE_CONV
// with int8 weights (even channel count), and the sub-byte layers (gemm_packed.h's scheme). Stream, per
// channel pair: the two biases as the kernel starts from them; the pair's filter words (int8: GemmDspParams::
// filter's, the inputs doubled in the column buffer and the biases doubled; sub-byte: GemmPackedDspParams::
// filter's, the biases times 2^(16 - bits), the sums shifted back to 2 * acc, the code generator proving
// 2^(16 - bits) * |acc| < 2^31); multiplier0, ~shift0, multiplier1, ~shift1.
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
void gemm_stream_packed4(const uint32_t* stream, int8_t* out, const StreamJob& job);
void gemm_stream_packed2(const uint32_t* stream, int8_t* out, const StreamJob& job);

template <int32_t kBits>
inline void gemm_stream_bits(const uint32_t* stream, int8_t* out, const StreamJob& job) {
  if constexpr (kBits == 4) {
    gemm_stream_packed4(stream, out, job);
  } else {
    gemm_stream_packed2(stream, out, job);
  }
}

inline StreamJob stream_job(const uint32_t* cols, int32_t k_padded, int32_t out_c, int32_t output_offset,
                            int32_t act_min, int32_t act_max) {
  return {cols, cols + k_padded, out_c, out_c, 1 + 2 * output_offset, splat_s8x4(act_min), splat_s8x4(act_max)};
}

}  // namespace tx::dsp
