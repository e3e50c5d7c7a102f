// CONV_2D, Cortex-M DSP path: output pixels gather their receptive fields into an int16 column buffer (input
// offset added, padding left at 0, which is what the reference's skipped taps contribute), then one pass over
// the output channels multiplies them with the int8 filter widened in registers: six pixels against one
// channel at a time (conv_stream_s8) or two pixels against two channels (the two-pixel stream of
// gemm_stream.h, or gemm.h).
#include "column.h"
#include "gemm_stream.h"

namespace tx::dsp {
namespace {

// One instantiation per requantization mode and activation.
template <int kMode, bool kClamp>
__attribute__((noinline)) void run(const ConvParams& p, const GemmDspParams& d, const Requantization& q,
                                   const int8_t* input, int8_t* output, uint32_t* cols) {
  const int32_t out_c = p.output.c;
  for_pixel_pairs(p, Gatherer<2, false>(p, d.k_padded, input, cols), [&](int32_t first, bool pair) {
    int8_t* out = output + first * out_c;
    gemm_pair<kMode, kClamp>(d, q, out_c, cols, out, pair ? out + out_c : nullptr);
  });
}

// Layers with a two-pixel stream (gemm_stream.h; inputs doubled).
__attribute__((noinline)) void run_stream(const ConvParams& p, const GemmDspParams& d, const int8_t* input,
                                          int8_t* output, uint32_t* cols) {
  const int32_t out_c = p.output.c;
  StreamJob job = stream_job(cols, d.k_padded, out_c, p.output_offset, p.act_min, p.act_max);
  for_pixel_pairs(p, Gatherer<2, true>(p, d.k_padded, input, cols), [&](int32_t first, bool pair) {
    job.b_offset = pair ? out_c : 0;  // a short block may come first (in place, backward)
    gemm_stream(d.stream, output + first * out_c, job);
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

void conv_stream_s8(const ConvParams& layer, const GemmDspParams& d, const int8_t* input, int8_t* output,
                    void* scratch) {
  uint32_t* cols = static_cast<uint32_t*>(scratch);
  int8_t* const after_cols = reinterpret_cast<int8_t*>(cols + 3 * d.k_padded);
  const ConvParams p = d.padded_bytes != 0 ? padded_input(layer, input, after_cols) : layer;
  if (d.padded_bytes != 0) input = after_cols;
  int8_t* const staging = after_cols + d.padded_bytes;  // the last pixels' outputs when fewer than 6
  const int32_t out_c = p.output.c;
  Stream6Job job{cols, nullptr, 0};
  for_pixel_blocks(p, Gatherer<6, true>(p, d.k_padded, input, cols), [&](int32_t first, int32_t count) {
    job.out = count == 6 ? output + first * out_c : staging;
    const uint32_t* stream = d.stream;
    for (int32_t i = 0; i < d.segment_count; ++i) {
      const Stream6Segment& segment = d.segments[i];
      job.rounding = segment.rounding;
      segment.run(stream, job);
      stream += segment.channels * (d.k_padded / 4 + 3);
    }
    if (count < 6) __builtin_memcpy(output + first * out_c, staging, count * out_c);
  });
}

}  // namespace tx::dsp
