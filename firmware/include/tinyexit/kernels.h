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

struct GemmDspParams {    // CONV_2D and FULLY_CONNECTED as a product of int16 matrices
  int32_t k;              // products per output: kh * kw * in_c (conv) or depth (fully connected)
  int32_t k_padded;       // k rounded up to a multiple of 8 (the inner loop takes 8 at a time)
  const int32_t* fast_requant;  // see DepthwiseDspParams
  const uint32_t* filter; // int16 pairs (low half first): [out_c rounded up to even / 2][k_padded / 4]
                          // [2 channels][4 values], in the order of dsp/column.h
  const int32_t* bias;    // out_c rounded up to even (zeros where the model has none)
  int32_t fast_mode;      // see DepthwiseDspParams
  // fast_mode 1 and an even out_c: bias, filter and requantization in one stream (dsp/gemm_stream.h), and
  // filter, bias and fast_requant nullptr; else nullptr
  const uint32_t* stream;
};

struct DepthwiseDspParams {  // depth multiplier 1, in_c % 4 == 0, kh * kw <= 64
  // Where dsp.h's short requantizations are exact for every input (proven at generation time), per channel
  // [multiplier, ~shift] (fast_mode 1: every channel shifts right, |accumulator| < 2^30), [multiplier,
  // shift + 1] (fast_mode 2: every channel shifts left, |accumulator| * 2^(shift + 1) < 2^31), or either
  // with left shifts as [multiplier, ~(shift + 1)] (fast_mode 3: both kinds, told apart by the sign);
  // nullptr and fast_mode 0: the reference requantization
  const int32_t* fast_requant;
  const uint32_t* filter; // int16 pairs: [in_c / 4][kh * kw][c0, c2 | c1, c3]
  const int32_t* bias;    // in_c values: bias + input_offset * (sum of the channel's weights)
  const int8_t* padding;  // in_c copies of the input zero point: what taps outside the input read
  int32_t fast_mode;      // the hot fields above keep their offsets
  // fast_mode 1 and 3, 5 or 9 taps: biases, filter and requantization in one stream
  // (dsp/depthwise_stream.h), and filter, bias and fast_requant nullptr; else nullptr
  const uint32_t* stream;
};

// Sub-byte filters for the DSP kernels. Each 32-bit word holds 16 / bits of the int16-pair words the int8
// layout above would hold (GemmDspParams::filter, DepthwiseDspParams::filter, in that order): pair-word j
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
  const uint32_t* stream;  // as GemmDspParams::stream, with this layout's filter words (dsp/gemm_stream.h)
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
void fully_connected_s8(const FullyConnectedParams& p, const GemmDspParams& d, const int8_t* input,
                        int8_t* output, void* scratch);
void depthwise_conv_s8(const ConvParams& p, const DepthwiseDspParams& d, const int8_t* input, int8_t* output);
void avg_pool_s8(const PoolParams& p, const int8_t* input, int8_t* output);  // channels % 4 == 0
}  // namespace dsp

}  // namespace tx

#include "tinyexit/kernels_elementwise.h"
#include "tinyexit/kernels_matmul.h"
#include "tinyexit/kernels_movement.h"
