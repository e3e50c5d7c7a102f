// The portable CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED loops (TFLite Micro's reference order and
// rounding), shared by the int8 kernels and the 4- and 2-bit ones: `weight(i)` is the filter's i-th value in
// TFLite's layout, a byte load or kernels.h packed_weight().
#pragma once

#include "tinyexit/kernels.h"
#include "tinyexit/quantization.h"

namespace tx::portable {

// The bias, TFLite's requantization and the activation's clamp.
template <typename Params>
inline int8_t requantize(const Params& p, int32_t acc, const int32_t* bias, int32_t channel) {
  if (bias) acc += bias[channel];
  acc = multiply_by_quantized_multiplier(acc, p.multiplier[channel], p.shift[channel]) + p.output_offset;
  return clamp_to_int8(acc, p.act_min, p.act_max);
}

template <typename Weight>
inline void conv(const ConvParams& p, const int8_t* input, Weight weight, const int32_t* bias, int8_t* output) {
  const int32_t in_h = p.input.h, in_w = p.input.w, in_c = p.input.c;
  const int32_t k_h = p.filter.h, k_w = p.filter.w;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t oy = 0; oy < p.output.h; ++oy) {
      const int32_t y0 = oy * p.stride_h - p.pad_h;
      for (int32_t ox = 0; ox < p.output.w; ++ox) {
        const int32_t x0 = ox * p.stride_w - p.pad_w;
        for (int32_t oc = 0; oc < p.output.c; ++oc) {
          int32_t acc = 0;
          for (int32_t ky = 0; ky < k_h; ++ky) {
            const int32_t y = y0 + p.dilation_h * ky;
            if (y < 0 || y >= in_h) continue;
            for (int32_t kx = 0; kx < k_w; ++kx) {
              const int32_t x = x0 + p.dilation_w * kx;
              if (x < 0 || x >= in_w) continue;
              const int8_t* in = input + ((b * in_h + y) * in_w + x) * in_c;
              const int32_t f = ((oc * k_h + ky) * k_w + kx) * in_c;
              for (int32_t ic = 0; ic < in_c; ++ic) acc += weight(f + ic) * (in[ic] + p.input_offset);
            }
          }
          output[((b * p.output.h + oy) * p.output.w + ox) * p.output.c + oc] = requantize(p, acc, bias, oc);
        }
      }
    }
  }
}

template <typename Weight>
inline void depthwise_conv(const ConvParams& p, const int8_t* input, Weight weight, const int32_t* bias,
                           int8_t* output) {
  const int32_t in_h = p.input.h, in_w = p.input.w, in_c = p.input.c, out_c = p.output.c;
  const int32_t k_h = p.filter.h, k_w = p.filter.w;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t oy = 0; oy < p.output.h; ++oy) {
      const int32_t y0 = oy * p.stride_h - p.pad_h;
      for (int32_t ox = 0; ox < p.output.w; ++ox) {
        const int32_t x0 = ox * p.stride_w - p.pad_w;
        for (int32_t ic = 0; ic < in_c; ++ic) {
          for (int32_t m = 0; m < p.depth_multiplier; ++m) {
            const int32_t oc = ic * p.depth_multiplier + m;
            int32_t acc = 0;
            for (int32_t ky = 0; ky < k_h; ++ky) {
              const int32_t y = y0 + p.dilation_h * ky;
              if (y < 0 || y >= in_h) continue;
              for (int32_t kx = 0; kx < k_w; ++kx) {
                const int32_t x = x0 + p.dilation_w * kx;
                if (x < 0 || x >= in_w) continue;
                acc += weight((ky * k_w + kx) * out_c + oc) *
                       (input[((b * in_h + y) * in_w + x) * in_c + ic] + p.input_offset);
              }
            }
            output[((b * p.output.h + oy) * p.output.w + ox) * out_c + oc] = requantize(p, acc, bias, oc);
          }
        }
      }
    }
  }
}

// In place (the planner gives output and input one buffer, `data`): CONV_2D with a 1x1 filter at stride 1
// without padding. Each pixel's inputs are copied to `pixel` (in_c bytes) before its outputs overwrite them;
// pixels run forward when out_c <= in_c (a pixel's outputs reach no later pixel's inputs) and backward when
// out_c > in_c (they reach no earlier one's).
template <typename Weight>
inline void pointwise_conv_in_place(const ConvParams& p, int8_t* data, Weight weight, const int32_t* bias,
                                    int8_t* pixel) {
  const int32_t in_c = p.input.c, out_c = p.output.c;
  const int32_t pixels = p.output.n * p.output.h * p.output.w;
  const bool backward = out_c > in_c;
  for (int32_t i = 0; i < pixels; ++i) {
    const int32_t at = backward ? pixels - 1 - i : i;
    for (int32_t ic = 0; ic < in_c; ++ic) pixel[ic] = data[at * in_c + ic];
    for (int32_t oc = 0; oc < out_c; ++oc) {
      int32_t acc = 0;
      for (int32_t ic = 0; ic < in_c; ++ic) acc += weight(oc * in_c + ic) * (pixel[ic] + p.input_offset);
      data[at * out_c + oc] = requantize(p, acc, bias, oc);
    }
  }
}

// In place: DEPTHWISE_CONV_2D with depth multiplier 1 and an output no larger than its input (any filter,
// stride, dilation, padding). Each channel's plane is copied to `plane` (input h x w bytes) before that
// channel's outputs overwrite it: output channel c lands on input channel c's bytes alone, at pixels not
// after the same batch's end, so the other channels and later batches stay untouched.
template <typename Weight>
inline void depthwise_conv_in_place(const ConvParams& p, int8_t* data, Weight weight, const int32_t* bias,
                                    int8_t* plane) {
  const int32_t in_h = p.input.h, in_w = p.input.w, c = p.input.c;
  const int32_t k_h = p.filter.h, k_w = p.filter.w;
  for (int32_t b = 0; b < p.output.n; ++b) {
    for (int32_t ch = 0; ch < c; ++ch) {
      const int8_t* in = data + b * in_h * in_w * c + ch;
      for (int32_t i = 0; i < in_h * in_w; ++i) plane[i] = in[i * c];
      for (int32_t oy = 0; oy < p.output.h; ++oy) {
        const int32_t y0 = oy * p.stride_h - p.pad_h;
        for (int32_t ox = 0; ox < p.output.w; ++ox) {
          const int32_t x0 = ox * p.stride_w - p.pad_w;
          int32_t acc = 0;
          for (int32_t ky = 0; ky < k_h; ++ky) {
            const int32_t y = y0 + p.dilation_h * ky;
            if (y < 0 || y >= in_h) continue;
            for (int32_t kx = 0; kx < k_w; ++kx) {
              const int32_t x = x0 + p.dilation_w * kx;
              if (x < 0 || x >= in_w) continue;
              acc += weight((ky * k_w + kx) * c + ch) * (plane[y * in_w + x] + p.input_offset);
            }
          }
          data[((b * p.output.h + oy) * p.output.w + ox) * c + ch] = requantize(p, acc, bias, ch);
        }
      }
    }
  }
}

template <typename Weight>
inline void fully_connected(const FullyConnectedParams& p, const int8_t* input, Weight weight, const int32_t* bias,
                            int8_t* output) {
  for (int32_t b = 0; b < p.batches; ++b) {
    const int8_t* in = input + b * p.depth;
    for (int32_t u = 0; u < p.units; ++u) {
      const int32_t f = u * p.depth;
      int32_t acc = 0;
      for (int32_t d = 0; d < p.depth; ++d) acc += weight(f + d) * (in[d] + p.input_offset);
      output[b * p.units + u] = requantize(p, acc, bias, u);
    }
  }
}

// The weight accessors.
struct Int8Weights {
  const int8_t* data;
  int32_t operator()(int32_t i) const { return data[i]; }
};

struct SubByteWeights {
  const PackedWeights& packed;
  int32_t operator()(int32_t i) const { return packed_weight(packed, i); }
};

}  // namespace tx::portable
