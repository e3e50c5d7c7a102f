// FULLY_CONNECTED with 4- or 2-bit weights (kernels.h PackedWeights), unpacked where they are used.
#include "portable_loops.h"

namespace tx {

void fully_connected_packed_s8(const FullyConnectedParams& p, const int8_t* input, const PackedWeights& filter,
                               const int32_t* bias, int8_t* output) {
  portable::fully_connected(p, input, portable::SubByteWeights{filter}, bias, output);
}

}  // namespace tx
