// int8 kernels, one per file in firmware/runtime/kernels/<op>_s8.cc. Each takes a parameter struct that
// the code generator fills at generation time (shapes, padding, requantization), and plain pointers:
// the caller owns every buffer. Results equal TFLite Micro's reference kernels bit for bit.
#pragma once

#include <cstdint>

namespace tx {

struct Shape4 {  // NHWC
  int32_t n, h, w, c;
};

struct ConvParams {
  Shape4 input, filter, output;  // filter: [out_c, kh, kw, in_c] for conv, [1, kh, kw, out_c] depthwise
  int32_t stride_h, stride_w, dilation_h, dilation_w, pad_h, pad_w;
  int32_t depth_multiplier;  // depthwise only
  int32_t input_offset, output_offset;  // -input zero point, +output zero point
  int32_t act_min, act_max;
  const int32_t* multiplier;  // per output channel
  const int32_t* shift;
};

struct FullyConnectedParams {
  int32_t batches, depth, units;
  int32_t input_offset, output_offset, act_min, act_max;
  const int32_t* multiplier;  // per unit (per-tensor quantization repeats one value)
  const int32_t* shift;
};

struct PoolParams {
  Shape4 input, output;
  int32_t filter_h, filter_w, stride_h, stride_w, pad_h, pad_w, act_min, act_max;
};

void conv_s8(const ConvParams& p, const int8_t* input, const int8_t* filter, const int32_t* bias, int8_t* output);
void depthwise_conv_s8(const ConvParams& p, const int8_t* input, const int8_t* filter, const int32_t* bias,
                       int8_t* output);
void fully_connected_s8(const FullyConnectedParams& p, const int8_t* input, const int8_t* filter,
                        const int32_t* bias, int8_t* output);
void avg_pool_s8(const PoolParams& p, const int8_t* input, int8_t* output);
void max_pool_s8(const PoolParams& p, const int8_t* input, int8_t* output);

// In place (the memory planner gives input and output one buffer, `data`; results as above). conv_in_place_s8:
// a 1x1 filter at stride 1 without padding, any channel counts; `pixel`: input.c bytes of scratch.
// depthwise_conv_in_place_s8: depth multiplier 1, output no larger than the input; `plane`: input h x w bytes.
void conv_in_place_s8(const ConvParams& p, int8_t* data, const int8_t* filter, const int32_t* bias, int8_t* pixel);
void depthwise_conv_in_place_s8(const ConvParams& p, int8_t* data, const int8_t* filter, const int32_t* bias,
                                int8_t* plane);

// Sub-byte weights (kernels/<op>_packed_s8.cc): the int8 kernels above with filters of 4 or 2 bits per
// value, packed in the int8 tensor's own order: value i sits in byte i / (8 / bits), at bit
// bits * (i % (8 / bits)) (lowest bits first, as TFLite's INT4), two's complement. Same bits as the int8
// kernel given the unpacked values.
struct PackedWeights {
  const uint8_t* data;
  int32_t bits;  // 4 or 2
};

// Value i of packed weights, sign-extended.
inline int32_t packed_weight(const PackedWeights& w, int32_t i) {
  if (w.bits == 4) {
    const uint32_t byte = w.data[i >> 1];
    return static_cast<int8_t>(byte << (4 - 4 * (i & 1))) >> 4;
  }
  const uint32_t byte = w.data[i >> 2];
  return static_cast<int8_t>(byte << (6 - 2 * (i & 3))) >> 6;
}

void conv_packed_s8(const ConvParams& p, const int8_t* input, const PackedWeights& filter, const int32_t* bias,
                    int8_t* output);
void depthwise_conv_packed_s8(const ConvParams& p, const int8_t* input, const PackedWeights& filter,
                              const int32_t* bias, int8_t* output);
void fully_connected_packed_s8(const FullyConnectedParams& p, const int8_t* input, const PackedWeights& filter,
                               const int32_t* bias, int8_t* output);
void conv_packed_in_place_s8(const ConvParams& p, int8_t* data, const PackedWeights& filter, const int32_t* bias,
                             int8_t* pixel);
void depthwise_conv_packed_in_place_s8(const ConvParams& p, int8_t* data, const PackedWeights& filter,
                                       const int32_t* bias, int8_t* plane);

// The Cortex-M DSP variants (kernels/dsp/<op>_s8.cc, namespace tx::dsp; SMLAD/SXTB16, emulated in C++ off
// Arm) take the portable parameters plus what the code generator prepares for them. Same bits as above.
// The generated model uses them when TX_DSP_KERNELS is 1 (default: on cores with the DSP extension).
#ifndef TX_DSP_KERNELS
#if defined(__ARM_FEATURE_DSP)
#define TX_DSP_KERNELS 1
#else
#define TX_DSP_KERNELS 0
#endif
#endif

namespace dsp {
struct Stream6Job;
struct DepthwiseStripJob;
}

// One run of channels of the six-pixel stream that share a shift (tinyexit/dsp_streams.h gemm_stream6).
struct Stream6Segment {
  void (*run)(const uint32_t* stream, const dsp::Stream6Job& job);  // gemm_stream6<k_padded / 4, shift, out_c>
  int32_t channels;
  int32_t rounding;  // (1 + 2 * output zero point) << (shift - 1)
};

struct GemmDspParams {    // CONV_2D and FULLY_CONNECTED as a GEMM over int16 inputs and int8 weights
  int32_t k;              // products per output: kh * kw * in_c (conv) or depth (fully connected)
  int32_t k_padded;       // products per output in the kernels' order (dsp/column.h: runs padded to whole
                          // words), rounded up to a multiple of 8 (filter, two-pixel stream) or 4 (six-pixel)
  const int32_t* fast_requant;  // see DepthwiseDspParams
  const uint32_t* filter; // int8, per channel pair (out_c rounded up to even) and group of 4 products: channel
                          // 0's 4 weights then channel 1's, byte j of a word = product j of the group;
                          // widened in registers (SXTB16 gives products 0, 2 and, rotated, 1, 3)
  const int32_t* bias;    // out_c rounded up to even (zeros where the model has none)
  int32_t fast_mode;      // see DepthwiseDspParams
  // fast_mode 1: bias, filter and requantization in one stream, and filter, bias and fast_requant nullptr.
  // With an even out_c, the two-pixel stream (dsp/gemm_stream.h); CONV_2D without activation clamp with at
  // least 6 output pixels, the six-pixel stream (tinyexit/dsp_streams.h, called through conv_stream_s8), its
  // channels ordered by shift into segments. nullptr otherwise
  const uint32_t* stream;
  // Six-pixel stream only:
  const Stream6Segment* segments;
  int32_t segment_count;
  // the bytes of a copy of the input with its padding written out, which follows the columns in the scratch
  // (the receptive fields then all lie inside it); 0: none
  int32_t padded_bytes;
};

struct DepthwiseDspParams {  // depth multiplier 1, in_c % 4 == 0, kh * kw <= 64
  // Where dsp.h's short requantizations are exact for every input (proven at generation time), per channel
  // [multiplier, ~shift] (fast_mode 1: every channel shifts right, |accumulator| < 2^30), [multiplier,
  // shift + 1] (fast_mode 2: every channel shifts left, |accumulator| * 2^(shift + 1) < 2^31), or either
  // with left shifts as [multiplier, ~(shift + 1)] (fast_mode 3: both kinds, told apart by the sign);
  // nullptr and fast_mode 0: the reference requantization
  const int32_t* fast_requant;
  const uint32_t* filter; // int8: [in_c / 4][kh * kw] words, the 4 channels' weights in order (widened in
                          // registers as the inputs are: SXTB16 gives channels 0, 2 and, rotated, 1, 3)
  const int32_t* bias;    // in_c values: bias + input_offset * (sum of the channel's weights)
  const int8_t* padding;  // in_c copies of the input zero point: what taps outside the input read
  int32_t fast_mode;      // the hot fields above keep their offsets
  // fast_mode 1 and 3, 5 or 9 taps: biases, filter and requantization in one stream
  // (dsp/depthwise_stream.h), and filter, bias and fast_requant nullptr; else nullptr
  const uint32_t* stream;
};

// DEPTHWISE_CONV_2D 3x3, stride 1, dilation 1, depth multiplier 1, fast_mode 1 (shifts of 1 to 31, (1 + 2 *
// output zero point) << (shift - 1) below 2^30) and no activation clamp: one channel at a time through a plane
// of int16, the output rows in strips of up to 6 (tinyexit/dsp_streams.h depthwise_strip, depthwise_fill).
using DepthwiseStripFn = void (*)(const int16_t* plane, int8_t* out, const dsp::DepthwiseStripJob& job);
using DepthwiseFillFn = void (*)(const int8_t* src, uint32_t* planes, int32_t plane_words, int32_t rows,
                                 int32_t row_step);

struct DepthwisePlaneParams {
  const int8_t* taps;       // [channels][9]: each channel's 3x3 filter, row-major
  const int32_t* quant;     // [channels][3]: 2 * (bias + input_offset * sum of the filter), multiplier,
                            // (1 + 2 * output zero point) << (shift - 1)
  const uint8_t* variant;   // [channels]: the index of the channel's routine in strips and tail_strips
  const DepthwiseStripFn* strips;       // depthwise_strip<6, shift, channels> by variant (nullptr: out_w < 6)
  const DepthwiseStripFn* tail_strips;  // the last out_w % 6 outputs of a row (nullptr: out_w % 6 == 0)
  // out_w <= 6 and channels % 4 == 0: depthwise_fill<pad_w, pad_w + in_w, channels>, which copies 4
  // channels' input rows into their planes; else nullptr (the kernel's own loop)
  DepthwiseFillFn fill;
};

// Sub-byte filters for the DSP kernels. Each 32-bit word holds 16 / bits int16-pair words, in this order:
// GEMM, per channel pair and group of 4 products, [channel 0's products 0, 2 | its 1, 3 | channel 1's 0, 2 |
// its 1, 3]; depthwise, per group of 4 channels and tap, [channels 0, 2 | 1, 3] (low half first). Pair-word j
// has its low half in field 16 / bits - 1 - j and its high half in field 32 / bits - 1 - j (fields of
// `bits` bits, field 0 lowest). `(word << (bits * j)) & mask` (mask 0xF000F000 or 0xC000C000) is then
// pair-word j times 2^(16 - bits) in one instruction; the accumulators start at the bias times 2^(16 - bits)
// and are shifted back exactly: the code generator proves 2^(16 - bits) * (largest |accumulator|) < 2^31
// (else it emits the portable packed kernel).
struct GemmPackedDspParams {
  int32_t k, k_padded;  // as GemmDspParams
  int32_t bits;          // 4: 2 words per channel pair and 8 products; 2: 1 word
  const int32_t* fast_requant;
  const uint32_t* filter;
  const int32_t* bias;   // out_c rounded up to even, times 2^(16 - bits)
  int32_t fast_mode;
  // fast_mode 1 and an even out_c: per channel pair 2^(16 - bits) * bias0, bias1, the pair's filter words,
  // multiplier0, ~shift0, multiplier1, ~shift1 (dsp/gemm_stream.h); else nullptr
  const uint32_t* stream;
};

struct DepthwisePackedDspParams {  // as DepthwiseDspParams; taps padded with zero weights to a whole word
  int32_t bits;          // 4: one word per 2 taps and 4 channels; 2: per 4 taps
  const int32_t* fast_requant;
  const uint32_t* filter;  // [in_c / 4][padded taps * bits / 16]
  const int32_t* bias;     // as DepthwiseDspParams, times 2^(16 - bits)
  const int8_t* padding;
  int32_t fast_mode;
  const uint32_t* stream;  // as DepthwiseDspParams::stream, with this layout's filter words (dsp/depthwise_stream.h)
};

namespace dsp {
// The sub-byte kernels are templates on what the code generator knows (weight bits, fast_mode, whether the
// activation clamps below int8's range, unrolled tap count 3, 5, 9 or 0 for any): a firmware links only the
// variants its model calls. (The params' bits and fast_mode fields repeat the template arguments.)
template <int32_t kBits, int kMode, bool kClamp>
void conv_packed_s8(const ConvParams& p, const GemmPackedDspParams& d, const int8_t* input, int8_t* output,
                    void* scratch);
template <int32_t kBits, int kMode, bool kClamp>
void fully_connected_packed_s8(const FullyConnectedParams& p, const GemmPackedDspParams& d, const int8_t* input,
                               int8_t* output, void* scratch);
template <int32_t kBits, int32_t kTaps, int kMode, bool kClamp>
void depthwise_conv_packed_s8(const ConvParams& p, const DepthwisePackedDspParams& d, const int8_t* input,
                              int8_t* output);
// scratch: 4 * k_padded bytes, 4-byte aligned (two pixels' widened inputs; sized by the code generator)
void conv_s8(const ConvParams& p, const GemmDspParams& d, const int8_t* input, int8_t* output, void* scratch);
// Layers on the six-pixel stream: scratch 12 * k_padded bytes (six pixels' columns) + padded_bytes + (when the
// pixel count is not a multiple of 6) 6 * out_c bytes for the last pixels' outputs
void conv_stream_s8(const ConvParams& p, const GemmDspParams& d, const int8_t* input, int8_t* output, void* scratch);
void fully_connected_s8(const FullyConnectedParams& p, const GemmDspParams& d, const int8_t* input,
                        int8_t* output, void* scratch);
void depthwise_conv_s8(const ConvParams& p, const DepthwiseDspParams& d, const int8_t* input, int8_t* output);
// scratch: 64 * (output height + 2) bytes, 4-byte aligned (four channels' planes)
void depthwise_plane_s8(const ConvParams& p, const DepthwisePlaneParams& d, const int8_t* input, int8_t* output,
                        void* scratch);

void avg_pool_s8(const PoolParams& p, const int8_t* input, int8_t* output);  // channels % 4 == 0
}  // namespace dsp

}  // namespace tx

#include "tinyexit/dsp_streams.h"  // the DSP stream routines the generated model instantiates
#include "tinyexit/kernels_elementwise.h"
#include "tinyexit/kernels_matmul.h"
#include "tinyexit/kernels_movement.h"
