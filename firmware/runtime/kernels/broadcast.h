// The loops of the binary elementwise kernels over a Broadcast (kernels_elementwise.h): output values in
// order, op(a value, b value) each.
#pragma once

#include "tinyexit/kernels.h"

namespace tx {

// One innermost run of n outputs; its strides are 0 (one value repeated) or 1 (contiguous values). Not
// inlined into the outer loops, so the operator's constants stay in registers here; `op` is taken by value
// and should capture by value (int8 stores may alias anything reached through a reference).
template <typename Op>
[[gnu::noinline]] void broadcast_row(int32_t n, const int8_t* a, int32_t a_stride, const int8_t* b,
                                     int32_t b_stride, int8_t* output, Op op) {
  if (a_stride == 0) {
    const int8_t x = *a;
    for (int32_t i = 0; i < n; ++i) output[i] = op(x, b[i]);
  } else if (b_stride == 0) {
    const int8_t y = *b;
    for (int32_t i = 0; i < n; ++i) output[i] = op(a[i], y);
  } else {
    for (int32_t i = 0; i < n; ++i) output[i] = op(a[i], b[i]);
  }
}

template <typename Op>
inline void broadcast_loops(const Broadcast& s, const int8_t* a, const int8_t* b, int8_t* output, Op op) {
  const int32_t n = s.size[3];
  for (int32_t i0 = 0; i0 < s.size[0]; ++i0) {
    for (int32_t i1 = 0; i1 < s.size[1]; ++i1) {
      for (int32_t i2 = 0; i2 < s.size[2]; ++i2) {
        const int8_t* pa = a + i0 * s.a_stride[0] + i1 * s.a_stride[1] + i2 * s.a_stride[2];
        const int8_t* pb = b + i0 * s.b_stride[0] + i1 * s.b_stride[1] + i2 * s.b_stride[2];
        broadcast_row(n, pa, s.a_stride[3], pb, s.b_stride[3], output, op);
        output += n;
      }
    }
  }
}

}  // namespace tx
