// RESIZE_NEAREST_NEIGHBOR: each output pixel copies the depth values of the input pixel the code generator
// chose with TFLite Micro's index arithmetic (align_corners, half_pixel_centers), given as row and column
// offsets.
#include "tinyexit/kernels.h"

namespace tx {

void resize_nearest_neighbor_s8(const ResizeNearestParams& p, const int8_t* input, int8_t* output) {
  for (int32_t b = 0; b < p.batches; ++b) {
    const int8_t* image = input + b * p.input_batch_size;
    for (int32_t y = 0; y < p.output_height; ++y) {
      const int8_t* row = image + p.row_offsets[y];
      for (int32_t x = 0; x < p.output_width; ++x) {
        copy_run_s8(row + p.column_offsets[x], p.depth, output);
        output += p.depth;
      }
    }
  }
}

}  // namespace tx
