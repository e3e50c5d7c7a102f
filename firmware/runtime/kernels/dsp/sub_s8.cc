// SUB, Cortex-M DSP path: dsp/add_s8.cc with the second input's rescaled value subtracted. Same bits as
// ../sub_s8.cc.
#include "elementwise.h"

namespace tx::dsp {

void sub_s8(const AddParams& p, const int8_t* a, const int8_t* b, int8_t* output) {
  add_or_subtract<-1>(p, a, b, output);
}

}  // namespace tx::dsp
