// Elementwise arithmetic and activations (kernels/<op>_s8.cc): MUL, SUB, MAXIMUM/MINIMUM, LOGISTIC, TANH,
// HARD_SWISH, RELU/RELU6/LEAKY_RELU, PRELU, QUANTIZE. Included by kernels.h.
#pragma once

#include <cstdint>

namespace tx {

}  // namespace tx
