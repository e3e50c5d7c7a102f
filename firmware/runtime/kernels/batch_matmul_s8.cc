// BATCH_MATMUL as TFLite Micro's reference (int32 sums of offset products, one requantization, no
// activation); transposed operands (adj_x, adj_y) and broadcast batch dimensions are read through strides.
#include "tinyexit/kernels.h"
#include "tinyexit/quantization.h"

namespace tx {

void batch_matmul_s8(const BatchMatmulParams& p, const int8_t* lhs, const int8_t* rhs, int8_t* output) {
  for (int32_t b0 = 0; b0 < p.batch[0]; ++b0) {
    for (int32_t b1 = 0; b1 < p.batch[1]; ++b1) {
      for (int32_t b2 = 0; b2 < p.batch[2]; ++b2) {
        const int8_t* left = lhs + b0 * p.lhs_batch_stride[0] + b1 * p.lhs_batch_stride[1] + b2 * p.lhs_batch_stride[2];
        const int8_t* right = rhs + b0 * p.rhs_batch_stride[0] + b1 * p.rhs_batch_stride[1] + b2 * p.rhs_batch_stride[2];
        for (int32_t i = 0; i < p.rows; ++i) {
          const int8_t* row = left + i * p.lhs_row_stride;
          for (int32_t j = 0; j < p.cols; ++j) {
            const int8_t* col = right + j * p.rhs_col_stride;
            int32_t acc = 0;
            for (int32_t k = 0; k < p.depth; ++k) {
              acc += (row[k * p.lhs_depth_stride] + p.lhs_offset) * (col[k * p.rhs_depth_stride] + p.rhs_offset);
            }
            acc = multiply_by_quantized_multiplier(acc, p.multiplier, p.shift) + p.output_offset;
            *output++ = clamp_to_int8(acc, -128, 127);
          }
        }
      }
    }
  }
}

}  // namespace tx
