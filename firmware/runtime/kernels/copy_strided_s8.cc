// The one kernel behind the index remaps (STRIDED_SLICE, SLICE, TRANSPOSE, REVERSE_V2, TILE, SPLIT, SPLIT_V,
// UNPACK, PACK, CONCATENATION, PAD's interior, SPACE_TO_DEPTH, DEPTH_TO_SPACE). The two innermost axes are a
// plane of rows, each a contiguous run (copy_run_s8) where both strides are 1, else a strided loop; the
// outer axes, if any, are walked as an odometer (after simplification most copies have none).
#include "tinyexit/kernels.h"

namespace tx {

void copy_strided_s8(const StridedCopyParams& p, const int8_t* input, int8_t* output) {
  for (int32_t k = 0; k < p.dims; ++k) {
    if (p.count[k] <= 0) return;
  }
  const int32_t last = p.dims - 1;
  const int32_t run = p.count[last];
  const int32_t in_step = p.input_stride[last], out_step = p.output_stride[last];
  const bool contiguous = in_step == 1 && out_step == 1;
  const int32_t rows = last > 0 ? p.count[last - 1] : 1;
  const int32_t row_in = last > 0 ? p.input_stride[last - 1] : 0;
  const int32_t row_out = last > 0 ? p.output_stride[last - 1] : 0;
  int32_t index[kMaxCopyDims] = {};
  int32_t in = p.input_start, out = p.output_start;
  for (;;) {
    for (int32_t r = 0; r < rows; ++r) {
      const int8_t* src = input + (in + r * row_in);
      int8_t* dst = output + (out + r * row_out);
      if (contiguous) {
        copy_run_s8(src, run, dst);
      } else {
        for (int32_t i = 0; i < run; ++i) dst[i * out_step] = src[i * in_step];
      }
    }
    int32_t k = last - 2;
    for (; k >= 0; --k) {  // next index of the outer axes, innermost first
      in += p.input_stride[k];
      out += p.output_stride[k];
      if (++index[k] < p.count[k]) break;
      in -= p.input_stride[k] * p.count[k];
      out -= p.output_stride[k] * p.count[k];
      index[k] = 0;
    }
    if (k < 0) return;
  }
}

}  // namespace tx
