// CONV_2D with 4- or 2-bit filters, Cortex-M DSP path: the int8 DSP kernel's scheme (conv_s8.cc: each pair
// of output pixels gathered into the int16 column buffer, padding left at 0) with the sub-byte GEMM
// (gemm_packed.h).
#include "column.h"
#include "gemm_packed.h"

namespace tx::dsp {

void conv_packed_s8(const ConvParams& p, const GemmPackedDspParams& d, const int8_t* input, int8_t* output,
                    void* scratch) {
  uint32_t* cols = static_cast<uint32_t*>(scratch);
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  const int32_t out_h = p.output.h, out_w = p.output.w, out_c = p.output.c;
  const int32_t pixels = p.output.n * out_h * out_w;
  for (int32_t first = 0; first < pixels; first += 2) {
    const bool pair = first + 1 < pixels;
    for (int32_t slot = 0; slot < 2; ++slot) {
      const int32_t i = pair ? first + slot : first;
      gather(p, d, input, i / (out_h * out_w), (i / out_w) % out_h, i % out_w, cols, slot);
    }
    int8_t* out = output + first * out_c;
    gemm_packed_pair(d, q, out_c, cols, out, pair ? out + out_c : nullptr);
  }
}

}  // namespace tx::dsp
