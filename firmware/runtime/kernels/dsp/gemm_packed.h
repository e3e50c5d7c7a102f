// The sub-byte counterpart of gemm.h: two output pixels against every output channel from 4- or 2-bit
// filters (kernels.h GemmPackedDspParams), unpacked into int16 pairs in registers with one AND each.
#pragma once

#include "gemm.h"

namespace tx::dsp {

template <int kMode, bool kClamp>
void gemm_packed_pair(const GemmPackedDspParams& d, const Requantization& q, int32_t out_c, const uint32_t* cols,
                      int8_t* out_a, int8_t* out_b);

inline void gemm_packed_pair(const GemmPackedDspParams& d, const Requantization& q, int32_t out_c,
                             const uint32_t* cols, int8_t* out_a, int8_t* out_b) {
  with_requantizer(d.fast_mode, q, [&](auto mode, auto clamp) {
    gemm_packed_pair<decltype(mode)::value, decltype(clamp)::value>(d, q, out_c, cols, out_a, out_b);
  });
}

}  // namespace tx::dsp
