// CONV_2D with 4- or 2-bit filters, Cortex-M DSP path: the int8 DSP kernel's scheme (conv_s8.cc: each pair
// of output pixels gathered into the int16 column buffer, padding left at 0) with the sub-byte GEMM
// (gemm_packed.h).
#include "column.h"
#include "gemm_packed.h"
#include "gemm_stream.h"

namespace tx::dsp {

template <int32_t kBits, int kMode, bool kClamp>
void conv_packed_s8(const ConvParams& p, const GemmPackedDspParams& d, const int8_t* input, int8_t* output,
                    void* scratch) {
  uint32_t* cols = static_cast<uint32_t*>(scratch);
  const int32_t out_c = p.output.c;
  const Gatherer<2, false> gather(p, d.k_padded, input, cols);
  if (kMode == kRightShiftRequant && d.stream != nullptr) {
    StreamJob job = stream_job(cols, d.k_padded, out_c, p.output_offset, p.act_min, p.act_max);
    for_pixel_pairs(p, gather, [&](int32_t first, bool pair) {
      job.b_offset = pair ? out_c : 0;  // a short block may come first (in place, backward)
      gemm_stream_bits<kBits>(d.stream, output + first * out_c, job);
    });
    return;
  }
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  for_pixel_pairs(p, gather, [&](int32_t first, bool pair) {
    int8_t* out = output + first * out_c;
    gemm_packed_pair<kBits, kMode, kClamp>(d, q, out_c, cols, out, pair ? out + out_c : nullptr);
  });
}

#define TX_INSTANTIATE(B, M, C) \
  template void conv_packed_s8<B, M, C>(const ConvParams&, const GemmPackedDspParams&, const int8_t*, int8_t*, void*);
TX_PACKED_VARIANTS(TX_INSTANTIATE)
#undef TX_INSTANTIATE

}  // namespace tx::dsp
