// MAXIMUM, broadcasting, on the raw int8 values (as TFLite Micro; inputs and output share a quantization).
#include "broadcast.h"

namespace tx {

void maximum_s8(const Broadcast& shape, const int8_t* a, const int8_t* b, int8_t* output) {
  broadcast_loops(shape, a, b, output, [](int8_t x, int8_t y) { return x > y ? x : y; });
}

}  // namespace tx
