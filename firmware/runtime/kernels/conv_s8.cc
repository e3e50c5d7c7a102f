#include "portable_loops.h"

namespace tx {

void conv_s8(const ConvParams& p, const int8_t* input, const int8_t* filter, const int32_t* bias, int8_t* output) {
  portable::conv(p, input, portable::Int8Weights{filter}, bias, output);
}

void conv_in_place_s8(const ConvParams& p, int8_t* data, const int8_t* filter, const int32_t* bias, int8_t* pixel) {
  portable::pointwise_conv_in_place(p, data, portable::Int8Weights{filter}, bias, pixel);
}

}  // namespace tx
