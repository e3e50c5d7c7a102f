// DEPTHWISE_CONV_2D with 4- or 2-bit filters (kernels.h PackedWeights): the int8 kernel's loops, each weight
// unpacked where it is used.
#include "portable_loops.h"

namespace tx {

void depthwise_conv_packed_s8(const ConvParams& p, const int8_t* input, const PackedWeights& filter,
                              const int32_t* bias, int8_t* output) {
  portable::depthwise_conv(p, input, portable::SubByteWeights{filter}, bias, output);
}

void depthwise_conv_packed_in_place_s8(const ConvParams& p, int8_t* data, const PackedWeights& filter, const int32_t* bias, int8_t* plane) {
  portable::depthwise_conv_in_place(p, data, portable::SubByteWeights{filter}, bias, plane);
}

}  // namespace tx
