// TRANSPOSE_CONV, BATCH_MATMUL and the reductions MEAN, SUM, REDUCE_MAX (kernels/<op>_s8.cc). Included by
// kernels.h. Same bits as TFLite Micro's reference kernels.
#pragma once

#include <cstdint>

#include "tinyexit/kernels.h"  // Shape4

namespace tx {

struct TransposeConvParams {
  Shape4 input, filter, output;  // filter: [out_c, kh, kw, in_c]
  int32_t stride_h, stride_w;
  int32_t pad_h, pad_w;  // TFLite Micro's: computed as for a convolution from the output back to the input
  int32_t input_offset, output_offset;  // -input zero point, +output zero point
  const int32_t* multiplier;            // per output channel
  const int32_t* shift;
};

// Each output sums the products that land on it. TFLite Micro scatters every input's products into an int32
// buffer the size of the output instead; the sums are the same int32 values, so this needs no scratch.
// No activation clamp: TFLite Micro's int8 kernel ignores a fused activation.
void transpose_conv_s8(const TransposeConvParams& p, const int8_t* input, const int8_t* filter, const int32_t* bias,
                       int8_t* output);

// The DSP variant (kernels/dsp/transpose_conv_s8.cc) splits the outputs by phase: outputs with the same
// ((oy + pad_h) % stride_h, (ox + pad_w) % stride_w) take the same filter taps, from a window of consecutive
// input rows and columns, so each phase is a stride-1 CONV_2D with a flipped sub-filter, run on the DSP GEMM
// (gemm.h) pixel pair by pixel pair. Every phase needs a tap: kh >= stride_h and kw >= stride_w.
struct TransposeConvDspParams {
  const GemmDspParams* phases;  // [stride_h][stride_w]: the sub-filter of taps ky = ry + j * stride_h (j
                                // descending), likewise kx; k = taps * in_c; a stream or filter, bias, table
  int32_t fast_mode;            // kernels.h GemmDspParams::fast_mode, the same for every phase
};

namespace dsp {
// scratch: the GEMM's column buffer for the largest phase (4 * k_padded bytes, 4-byte aligned)
void transpose_conv_s8(const TransposeConvParams& p, const TransposeConvDspParams& d, const int8_t* input,
                       int8_t* output, void* scratch);
}  // namespace dsp

// out[b][i][j] = sum_k (lhs(b, i, k) + lhs_offset) * (rhs(b, k, j) + rhs_offset), requantized (one
// multiplier: BATCH_MATMUL is per-tensor, without activation). Element (i, k) of a batch's left matrix is at
// i * lhs_row_stride + k * lhs_depth_stride: the strides say whether it is stored transposed (adj_x); the
// right matrix likewise (adj_y).
struct BatchMatmulParams {
  int32_t batch[3];                          // the output's batch dimensions, outermost first (1 where absent)
  int32_t lhs_batch_stride[3], rhs_batch_stride[3];  // per batch dimension; 0 where that operand broadcasts
  int32_t rows, cols, depth;
  int32_t lhs_row_stride, lhs_depth_stride, rhs_depth_stride, rhs_col_stride;
  int32_t lhs_offset, rhs_offset, output_offset;  // -lhs zero point, -rhs zero point, +output zero point
  int32_t multiplier, shift;
};

void batch_matmul_s8(const BatchMatmulParams& p, const int8_t* lhs, const int8_t* rhs, int8_t* output);

// A reduction over any axes, the input seen as [d0, d1, d2, d3, d4] of which d1 and d3 are reduced (the code
// generator merges neighbouring axes and fills with 1s): the output is [d0, d2, d4], with or without the
// kept 1s (the same bytes).
struct ReduceParams {
  int32_t dims[5];
  int32_t input_zero_point, output_zero_point;
  // TFLite Micro's QuantizedMeanOrSum rescaling (input scale / output scale); for MEAN with the 1 / count
  // already folded in
  int32_t multiplier, shift;
};

void mean_s8(const ReduceParams& p, const int8_t* input, int8_t* output);
void sum_s8(const ReduceParams& p, const int8_t* input, int8_t* output);
void reduce_max_s8(const ReduceParams& p, const int8_t* input, int8_t* output);  // input and output quantized alike

}  // namespace tx
