// The unary int8 activations (LOGISTIC, TANH, HARD_SWISH, RELU, RELU6, LEAKY_RELU, QUANTIZE) as a table of
// their 256 answers, computed by the code generator with TFLite Micro's integer arithmetic.
#include "tinyexit/kernels.h"

namespace tx {

void lookup_s8(const int8_t* table, int32_t size, const int8_t* input, int8_t* output) {
  const uint8_t* index = reinterpret_cast<const uint8_t*>(input);
  int32_t i = 0;
  for (; i + 4 <= size; i += 4) {  // four independent loads in flight
    const int8_t v0 = table[index[i]], v1 = table[index[i + 1]], v2 = table[index[i + 2]], v3 = table[index[i + 3]];
    output[i] = v0;
    output[i + 1] = v1;
    output[i + 2] = v2;
    output[i + 3] = v3;
  }
  for (; i < size; ++i) output[i] = table[index[i]];
}

}  // namespace tx
