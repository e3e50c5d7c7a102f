// TRANSPOSE_CONV, Cortex-M DSP path. Output (oy, ox) of phase (ry, rx) = ((oy + pad_h) % stride_h,
// (ox + pad_w) % stride_w) sums taps ky = ry + j * stride_h over input rows m - j (m = (oy + pad_h) / stride_h),
// likewise across: a window of th x tw consecutive inputs ending at (m, n), which a stride-1 CONV_2D with the
// flipped sub-filter and padding (th - 1, tw - 1) reads at its output (m, n). Each phase runs as that CONV_2D's
// DSP GEMM (column.h's Gatherer, gemm.h's pair kernel or the stream), its pixels in pairs.
#include "column.h"
#include "gemm_stream.h"

namespace tx::dsp {
namespace {

// First and last (inclusive) m = (o + pad) / stride over the outputs o in [0, size) of phase r.
inline void phase_range(int32_t r, int32_t pad, int32_t stride, int32_t size, int32_t& first, int32_t& last) {
  const int32_t lowest = pad - r;  // o >= 0  <=>  m * stride >= pad - r
  first = lowest <= 0 ? 0 : (lowest + stride - 1) / stride;
  last = (size - 1 + pad - r) / stride;
}

// Calls multiply(out_a, out_b) for the phase's output pixels two at a time after gathering their columns;
// out_b nullptr: an odd last pixel (slot 1 stale, its results dropped).
template <bool kDoubled, typename Multiply>
void for_phase_pairs(const TransposeConvParams& p, int32_t ry, int32_t rx, const Gatherer<2, kDoubled>& gather,
                     int8_t* output,
                     Multiply&& multiply) {
  int32_t m0, m1, n0, n1;
  phase_range(ry, p.pad_h, p.stride_h, p.output.h, m0, m1);
  phase_range(rx, p.pad_w, p.stride_w, p.output.w, n0, n1);
  const int32_t out_c = p.output.c;
  int8_t* pending = nullptr;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t m = m0; m <= m1; ++m) {
      int8_t* row = output + (b * p.output.h + m * p.stride_h + ry - p.pad_h) * p.output.w * out_c;
      for (int32_t n = n0; n <= n1; ++n) {
        int8_t* out = row + (n * p.stride_w + rx - p.pad_w) * out_c;
        gather(b, m, n, pending != nullptr ? 1 : 0);
        if (pending != nullptr) {
          multiply(pending, out);
          pending = nullptr;
        } else {
          pending = out;
        }
      }
    }
  }
  if (pending != nullptr) multiply(pending, nullptr);
}

// The stride-1 CONV_2D whose receptive fields are phase (ry, rx)'s windows (what the Gatherer reads).
ConvParams phase_conv(const TransposeConvParams& p, int32_t ry, int32_t rx) {
  const int32_t th = (p.filter.h - ry + p.stride_h - 1) / p.stride_h;
  const int32_t tw = (p.filter.w - rx + p.stride_w - 1) / p.stride_w;
  ConvParams c{};
  c.input = p.input;
  c.filter = {p.output.c, th, tw, p.input.c};
  c.output = p.output;
  c.stride_h = c.stride_w = c.dilation_h = c.dilation_w = c.depth_multiplier = 1;
  c.pad_h = th - 1;
  c.pad_w = tw - 1;
  c.input_offset = p.input_offset;
  return c;
}

template <int kMode, bool kClamp>
__attribute__((noinline)) void run(const TransposeConvParams& p, const TransposeConvDspParams& d,
                                   const Requantization& q, const int8_t* input, int8_t* output, uint32_t* cols) {
  for (int32_t ry = 0; ry < p.stride_h; ++ry) {
    for (int32_t rx = 0; rx < p.stride_w; ++rx) {
      const GemmDspParams& g = d.phases[ry * p.stride_w + rx];
      const ConvParams c = phase_conv(p, ry, rx);
      for_phase_pairs(p, ry, rx, Gatherer<>(c, g.k_padded, input, cols), output, [&](int8_t* out_a, int8_t* out_b) {
        gemm_pair<kMode, kClamp>(g, q, p.output.c, cols, out_a, out_b);
      });
    }
  }
}

// Layers with streams (gemm_stream.h): fast_mode 1 and an even channel count.
__attribute__((noinline)) void run_stream(const TransposeConvParams& p, const TransposeConvDspParams& d,
                                          const int8_t* input, int8_t* output, uint32_t* cols) {
  for (int32_t ry = 0; ry < p.stride_h; ++ry) {
    for (int32_t rx = 0; rx < p.stride_w; ++rx) {
      const GemmDspParams& g = d.phases[ry * p.stride_w + rx];
      const ConvParams c = phase_conv(p, ry, rx);
      StreamJob job = stream_job(cols, g.k_padded, p.output.c, p.output_offset, -128, 127);
      // the stream's inputs doubled (gemm_stream.h)
      for_phase_pairs(p, ry, rx, Gatherer<2, true>(c, g.k_padded, input, cols), output,
                      [&](int8_t* out_a, int8_t* out_b) {
        job.b_offset = out_b != nullptr ? static_cast<int32_t>(out_b - out_a) : 0;
        gemm_stream(g.stream, out_a, job);
      });
    }
  }
}

}  // namespace

void transpose_conv_s8(const TransposeConvParams& p, const TransposeConvDspParams& d, const int8_t* input,
                       int8_t* output, void* scratch) {
  uint32_t* cols = static_cast<uint32_t*>(scratch);
  if (d.phases[0].stream != nullptr) return run_stream(p, d, input, output, cols);
  // no activation clamp: TFLite Micro's int8 TRANSPOSE_CONV ignores a fused activation
  const Requantization q{p.multiplier, p.shift, p.output_offset, -128, 127};
  with_requantizer(d.fast_mode, q, [&](auto mode, auto clamp) {
    run<decltype(mode)::value, decltype(clamp)::value>(p, d, q, input, output, cols);
  });
}

}  // namespace tx::dsp
