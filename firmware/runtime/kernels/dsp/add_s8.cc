// ADD, Cortex-M DSP path: each input's rescale and the output's requantization in a few instructions
// (dsp/elementwise.h) instead of three 64-bit MultiplyByQuantizedMultiplier. Same bits as ../add_s8.cc.
#include "elementwise.h"

namespace tx::dsp {

void add_s8(const AddParams& p, const int8_t* a, const int8_t* b, int8_t* output) {
  add_or_subtract<1>(p, a, b, output);
}

}  // namespace tx::dsp
