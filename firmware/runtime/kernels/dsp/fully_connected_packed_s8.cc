// FULLY_CONNECTED with 4- or 2-bit weights, Cortex-M DSP path: rows widened two at a time as in
// fully_connected_s8.cc, multiplied with the sub-byte GEMM (gemm_packed.h).
#include "column.h"
#include "gemm_packed.h"
#include "gemm_stream.h"

namespace tx::dsp {

template <int32_t kBits, int kMode, bool kClamp>
void fully_connected_packed_s8(const FullyConnectedParams& p, const GemmPackedDspParams& d, const int8_t* input,
                               int8_t* output, void* scratch) {
  uint32_t* cols = static_cast<uint32_t*>(scratch);
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  const bool streamed = kMode == kRightShiftRequant && d.stream != nullptr;
  StreamJob job = stream_job(cols, d.k_padded, p.units, p.output_offset, p.act_min, p.act_max);
  for_row_pairs<false>(p, d.k_padded, input, cols, [&](int32_t first, bool pair) {
    int8_t* out = output + first * p.units;
    if (streamed) {
      if (!pair) job.b_offset = 0;
      gemm_stream_bits<kBits>(d.stream, out, job);
    } else {
      gemm_packed_pair<kBits, kMode, kClamp>(d, q, p.units, cols, out, pair ? out + p.units : nullptr);
    }
  });
}

#define TX_INSTANTIATE(B, M, C)                                                                 \
  template void fully_connected_packed_s8<B, M, C>(const FullyConnectedParams&, const GemmPackedDspParams&, \
                                                   const int8_t*, int8_t*, void*);
TX_PACKED_VARIANTS(TX_INSTANTIATE)
#undef TX_INSTANTIATE

}  // namespace tx::dsp
