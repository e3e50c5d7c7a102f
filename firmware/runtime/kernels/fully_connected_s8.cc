#include "portable_loops.h"

namespace tx {

void fully_connected_s8(const FullyConnectedParams& p, const int8_t* input, const int8_t* filter,
                        const int32_t* bias, int8_t* output) {
  portable::fully_connected(p, input, portable::Int8Weights{filter}, bias, output);
}

}  // namespace tx
