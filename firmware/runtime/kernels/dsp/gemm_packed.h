// The sub-byte counterpart of gemm.h: two output pixels against every output channel from 4- or 2-bit
// filters (kernels.h GemmPackedDspParams), unpacked into int16 pairs in registers with one AND each.
#pragma once

#include "gemm.h"

namespace tx::dsp {

// As gemm_pair, with kBits-bit filters (gemm_packed.cc).
template <int32_t kBits, int kMode, bool kClamp>
void gemm_packed_pair(const GemmPackedDspParams& d, const Requantization& q, int32_t out_c, const uint32_t* cols,
                      int8_t* out_a, int8_t* out_b);

// X(bits, mode, clamp) for every variant of the sub-byte kernels, to instantiate them all: the code generator
// calls the one a layer needs (kernels.h), and the linker drops the others (--gc-sections).
#define TX_PACKED_VARIANTS(X)                                                                               \
  X(4, 0, false) X(4, 0, true) X(4, 1, false) X(4, 1, true) X(4, 2, false) X(4, 2, true) X(4, 3, false)     \
  X(4, 3, true) X(2, 0, false) X(2, 0, true) X(2, 1, false) X(2, 1, true) X(2, 2, false) X(2, 2, true)      \
  X(2, 3, false) X(2, 3, true)

}  // namespace tx::dsp
