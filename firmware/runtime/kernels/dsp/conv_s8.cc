// CONV_2D, Cortex-M DSP path: each pair of output pixels gathers its receptive fields into an int16 column
// buffer (input offset added, padding left at 0, which is what the reference's skipped taps contribute),
// then one pass over the output channels does two pixels x two channels per SMLAD pair (gemm.h).
#include "column.h"

namespace tx::dsp {
namespace {

// The layer's pixels two at a time; one instantiation per requantization mode and activation.
template <int kMode, bool kClamp>
__attribute__((noinline)) void run(const ConvParams& p, const GemmDspParams& d, const Requantization& q,
                                   const int8_t* input, int8_t* output, uint32_t* cols) {
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
    gemm_pair<kMode, kClamp>(d, q, out_c, cols, out, pair ? out + out_c : nullptr);
  }
}

}  // namespace

void conv_s8(const ConvParams& p, const GemmDspParams& d, const int8_t* input, int8_t* output, void* scratch) {
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  with_requantizer(d.fast_mode, q, [&](auto mode, auto clamp) {
    run<decltype(mode)::value, decltype(clamp)::value>(p, d, q, input, output, static_cast<uint32_t*>(scratch));
  });
}

}  // namespace tx::dsp
