// The one kernel behind the index remaps (STRIDED_SLICE, SLICE, TRANSPOSE, REVERSE_V2, TILE, SPLIT, SPLIT_V,
// UNPACK, PACK, CONCATENATION, PAD's interior, SPACE_TO_DEPTH, DEPTH_TO_SPACE): an odometer over the outer
// axes, the innermost axis a contiguous run (copy_s8) where both strides are 1, else a strided loop.
#include "tinyexit/kernels.h"

namespace tx {

void copy_strided_s8(const StridedCopyParams& p, const int8_t* input, int8_t* output) {
  for (int32_t k = 0; k < p.dims; ++k) {
    if (p.count[k] <= 0) return;
  }
  const int32_t inner = p.dims - 1;
  const int32_t run = p.count[inner];
  const int32_t in_step = p.input_stride[inner], out_step = p.output_stride[inner];
  const bool contiguous = in_step == 1 && out_step == 1;
  int32_t index[kMaxCopyDims] = {};
  int32_t in = p.input_start, out = p.output_start;
  for (;;) {
    if (contiguous) {
      copy_s8(input + in, run, output + out);
    } else {
      const int8_t* src = input + in;
      int8_t* dst = output + out;
      for (int32_t i = 0; i < run; ++i) dst[i * out_step] = src[i * in_step];
    }
    int32_t k = inner - 1;
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
