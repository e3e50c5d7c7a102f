// Operators that move bytes (kernels/<op>_s8.cc): slices, transposes, resizes, splits, packs. Included by
// kernels.h.
#pragma once

#include <cstdint>

namespace tx {

}  // namespace tx
