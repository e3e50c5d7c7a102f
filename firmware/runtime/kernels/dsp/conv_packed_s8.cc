// CONV_2D with 4- or 2-bit filters, Cortex-M DSP path: the int8 DSP kernel's scheme (conv_s8.cc: each pair
// of output pixels gathered into the int16 column buffer, padding left at 0) with the sub-byte GEMM
// (gemm_packed.h).
#include "column.h"
#include "gemm_packed.h"

namespace tx::dsp {

template <int32_t kBits, int kMode, bool kClamp>
void conv_packed_s8(const ConvParams& p, const GemmPackedDspParams& d, const int8_t* input, int8_t* output,
                    void* scratch) {
  uint32_t* cols = static_cast<uint32_t*>(scratch);
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  const Gatherer gather(p, d.k_padded, input, cols);
  const int32_t out_h = p.output.h, out_w = p.output.w, out_c = p.output.c;
  const int32_t pixels = p.output.n * out_h * out_w;
  int32_t b = 0, oy = 0, ox = 0;  // of pixel `first`
  for (int32_t first = 0; first < pixels; first += 2) {
    const bool pair = first + 1 < pixels;  // else (odd count) slot 1 keeps stale values whose results are dropped
    for (int32_t slot = 0; slot < (pair ? 2 : 1); ++slot) {
      gather(b, oy, ox, slot);
      if (++ox == out_w) ox = 0, oy = oy + 1 == out_h ? (++b, 0) : oy + 1;
    }
    int8_t* out = output + first * out_c;
    gemm_packed_pair<kBits, kMode, kClamp>(d, q, out_c, cols, out, pair ? out + out_c : nullptr);
  }
}

#define TX_INSTANTIATE(B, M, C) \
  template void conv_packed_s8<B, M, C>(const ConvParams&, const GemmPackedDspParams&, const int8_t*, int8_t*, void*);
TX_PACKED_VARIANTS(TX_INSTANTIATE)
#undef TX_INSTANTIATE

}  // namespace tx::dsp
