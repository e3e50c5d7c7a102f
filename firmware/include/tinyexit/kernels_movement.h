// Operators that move bytes (kernels/<op>_s8.cc): reshapes, slices, transposes, tiles, splits, packs,
// concatenations, pads, space/depth rearrangements, nearest-neighbour resizes. The code generator plans each
// TFLite operator as fills and strided copies (tinyexit/codegen/ops/movement.py); only resizing, whose index
// map is not affine, has its own kernel. Values are copied as they are, as TFLite Micro does (no
// requantization). Included by kernels.h.
#pragma once

#include <cstdint>

namespace tx {

constexpr int32_t kMaxCopyDims = 8;

// output[output_start + sum(i[k] * output_stride[k])] = input[input_start + sum(i[k] * input_stride[k])]
// for every index i with 0 <= i[k] < count[k]; axis dims - 1 innermost. Strides count elements and may be
// negative (reversed slices) or zero (repeats).
struct StridedCopyParams {
  int32_t dims;  // 1..kMaxCopyDims
  int32_t count[kMaxCopyDims];
  int32_t input_stride[kMaxCopyDims];
  int32_t output_stride[kMaxCopyDims];
  int32_t input_start, output_start;
};

struct ResizeNearestParams {  // NHWC; the output row and column of each output pixel chosen at generation time
  int32_t batches, input_batch_size, output_height, output_width, depth;
  const int32_t* row_offsets;     // output_height: input offset of the source row (in_y * in_w * depth)
  const int32_t* column_offsets;  // output_width: in_x * depth
};

void copy_s8(const int8_t* input, int32_t size, int8_t* output);  // one contiguous run (RESHAPE & co)

// A run inside a remap: short ones byte by byte here (calling memcpy costs ~20 instructions on a
// Cortex-M4, a byte ~4), long ones through copy_s8.
inline void copy_run_s8(const int8_t* input, int32_t size, int8_t* output) {
  if (size >= 16) {
    copy_s8(input, size, output);
    return;
  }
  for (int32_t i = 0; i < size; ++i) output[i] = input[i];
}

void copy_strided_s8(const StridedCopyParams& p, const int8_t* input, int8_t* output);
void fill_s8(int8_t value, int32_t size, int8_t* output);  // PAD's border
void resize_nearest_neighbor_s8(const ResizeNearestParams& p, const int8_t* input, int8_t* output);

}  // namespace tx
