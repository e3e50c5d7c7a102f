// TRANSPOSE_CONV and BATCH_MATMUL (kernels/<op>_s8.cc). Included by kernels.h.
#pragma once

#include <cstdint>

namespace tx {

}  // namespace tx
