// FULLY_CONNECTED with 4- or 2-bit weights (kernels.h PackedWeights), unpacked where they are used.
#include "tinyexit/kernels.h"
#include "tinyexit/quantization.h"

namespace tx {

void fully_connected_packed_s8(const FullyConnectedParams& p, const int8_t* input, const PackedWeights& filter,
                               const int32_t* bias, int8_t* output) {
  for (int32_t b = 0; b < p.batches; ++b) {
    const int8_t* in = input + b * p.depth;
    for (int32_t u = 0; u < p.units; ++u) {
      const int32_t f = u * p.depth;
      int32_t acc = 0;
      for (int32_t d = 0; d < p.depth; ++d) acc += packed_weight(filter, f + d) * (in[d] + p.input_offset);
      if (bias) acc += bias[u];
      acc = multiply_by_quantized_multiplier(acc, p.multiplier[u], p.shift[u]) + p.output_offset;
      output[b * p.units + u] = clamp_to_int8(acc, p.act_min, p.act_max);
    }
  }
}

}  // namespace tx
