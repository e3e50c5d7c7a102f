// CONV_2D, Cortex-M DSP path: each pair of output pixels gathers its receptive fields into an int16 column
// buffer (input offset added, padding left at 0, which is what the reference's skipped taps contribute),
// then one pass over the output channels does two pixels x two channels per SMLAD pair (gemm.h).
#include "column.h"
#include "gemm_stream.h"

namespace tx::dsp {
namespace {

// One instantiation per requantization mode and activation.
template <int kMode, bool kClamp>
__attribute__((noinline)) void run(const ConvParams& p, const GemmDspParams& d, const Requantization& q,
                                   const int8_t* input, int8_t* output, uint32_t* cols) {
  const int32_t out_c = p.output.c;
  for_pixel_pairs(p, Gatherer(p, d.k_padded, input, cols), [&](int32_t first, bool pair) {
    int8_t* out = output + first * out_c;
    gemm_pair<kMode, kClamp>(d, q, out_c, cols, out, pair ? out + out_c : nullptr);
  });
}

// Layers with a stream (gemm_stream.h).
__attribute__((noinline)) void run_stream(const ConvParams& p, const GemmDspParams& d, const int8_t* input,
                                          int8_t* output, uint32_t* cols) {
  StreamJob job = stream_job(cols, d.k_padded, p.output.c, p.output_offset, p.act_min, p.act_max);
  for_pixel_pairs(p, Gatherer(p, d.k_padded, input, cols), [&](int32_t first, bool pair) {
    if (!pair) job.b_offset = 0;
    gemm_stream(d.stream, output + first * p.output.c, job);
  });
}

}  // namespace

void conv_s8(const ConvParams& p, const GemmDspParams& d, const int8_t* input, int8_t* output, void* scratch) {
  if (d.stream != nullptr) return run_stream(p, d, input, output, static_cast<uint32_t*>(scratch));
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  with_requantizer(d.fast_mode, q, [&](auto mode, auto clamp) {
    run<decltype(mode)::value, decltype(clamp)::value>(p, d, q, input, output, static_cast<uint32_t*>(scratch));
  });
}

}  // namespace tx::dsp
