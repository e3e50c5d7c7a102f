// FULLY_CONNECTED with 4- or 2-bit weights, Cortex-M DSP path: rows widened two at a time as in
// fully_connected_s8.cc, multiplied with the sub-byte GEMM (gemm_packed.h).
#include "gemm_packed.h"

namespace tx::dsp {
namespace {

void widen_input_row(const FullyConnectedParams& p, const GemmPackedDspParams& d, const int8_t* row,
                     uint32_t* cols, int32_t slot) {
  if (d.grouped) {
    widen_grouped(row, p.depth, offset_pair(p.input_offset), cols, 0, slot);
    zero_groups(d.k_padded / 4 - p.depth / 4, cols, p.depth / 4, slot);
    return;
  }
  for (int32_t k = 0; k < d.k_padded; ++k) put(cols, k, slot, k < p.depth ? row[k] + p.input_offset : 0);
}

}  // namespace

void fully_connected_packed_s8(const FullyConnectedParams& p, const GemmPackedDspParams& d, const int8_t* input,
                               int8_t* output, void* scratch) {
  uint32_t* cols = static_cast<uint32_t*>(scratch);
  const Requantization q{p.multiplier, p.shift, p.output_offset, p.act_min, p.act_max};
  for (int32_t first = 0; first < p.batches; first += 2) {
    const bool pair = first + 1 < p.batches;
    widen_input_row(p, d, input + first * p.depth, cols, 0);
    widen_input_row(p, d, input + (pair ? first + 1 : first) * p.depth, cols, 1);
    int8_t* out = output + first * p.units;
    gemm_packed_pair(d, q, p.units, cols, out, pair ? out + p.units : nullptr);
  }
}

}  // namespace tx::dsp
