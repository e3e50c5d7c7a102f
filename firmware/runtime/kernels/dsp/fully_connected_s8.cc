// FULLY_CONNECTED, Cortex-M DSP path: the input rows are widened to int16 (offset added) two at a time and
// multiplied against the int8 weights, widened in registers (gemm.h; the two-pixel stream of gemm_stream.h
// where the layer has one).
#include "column.h"
#include "gemm_stream.h"

namespace tx::dsp {
namespace {

// The rows two at a time; one instantiation per requantization mode and activation.
template <int kMode, bool kClamp>
__attribute__((noinline)) void run(const FullyConnectedParams& p, const GemmDspParams& d, const Requantization& q,
                                   const int8_t* input, int8_t* output, uint32_t* cols) {
  for_row_pairs<false>(p, d.k_padded, input, cols, [&](int32_t first, bool pair) {
    int8_t* out = output + first * p.units;
    gemm_pair<kMode, kClamp>(d, q, p.units, cols, out, pair ? out + p.units : nullptr);
  });
}

// The same for layers with a stream (inputs doubled).
__attribute__((noinline)) void run_stream(const FullyConnectedParams& p, const GemmDspParams& d, const int8_t* input,
                                          int8_t* output, uint32_t* cols) {
  StreamJob job = stream_job(cols, d.k_padded, p.units, p.output_offset, p.act_min, p.act_max);
  for_row_pairs<true>(p, d.k_padded, input, cols, [&](int32_t first, bool pair) {
    if (!pair) job.b_offset = 0;
    gemm_stream(d.stream, output + first * p.units, job);
  });
}

}  // namespace

void fully_connected_s8(const FullyConnectedParams& p, const GemmDspParams& d, const int8_t* input,
                        int8_t* output, void* scratch) {
  if (d.stream != nullptr) return run_stream(p, d, input, output, static_cast<uint32_t*>(scratch));
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  with_requantizer(d.fast_mode, q, [&](auto mode, auto clamp) {
    run<decltype(mode)::value, decltype(clamp)::value>(p, d, q, input, output, static_cast<uint32_t*>(scratch));
  });
}

}  // namespace tx::dsp
