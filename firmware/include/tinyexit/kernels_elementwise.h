// Elementwise arithmetic and activations (kernels/<op>_s8.cc). Included by kernels.h.
//
// Binary operators (ADD, SUB, MUL, MAXIMUM, MINIMUM, PRELU) broadcast as TFLite does; either operand may be
// a constant array. Unary int8 -> int8 activations (LOGISTIC, TANH, HARD_SWISH, RELU, RELU6, LEAKY_RELU,
// QUANTIZE) depend on one input value only: the code generator evaluates TFLite Micro's integer arithmetic for
// all 256 values and lookup_s8 maps the tensor through that table.
#pragma once

#include <cstdint>

namespace tx {

// The output of a binary operator as 4 nested loops, outermost first, each input advancing by its own
// stride per step of each loop (in elements; 0 where it is broadcast). The code generator drops dimensions
// of size 1 and merges neighbours that broadcast alike, so the innermost strides are 0 or 1.
struct Broadcast {
  int32_t size[4];
  int32_t a_stride[4];
  int32_t b_stride[4];
};

struct AddParams {  // ADD and SUB: both inputs rescaled to twice the larger input scale with 20 bits of headroom
  Broadcast shape;
  int32_t left_shift;
  int32_t input1_offset, input1_multiplier, input1_shift;
  int32_t input2_offset, input2_multiplier, input2_shift;
  int32_t output_offset, output_multiplier, output_shift, act_min, act_max;
};

struct MulParams {
  Broadcast shape;
  int32_t input1_offset, input2_offset, output_offset;
  int32_t output_multiplier, output_shift, act_min, act_max;
};

struct PreluParams {  // b is alpha; x >= 0 is rescaled by the identity multiplier, x < 0 times alpha by the other
  Broadcast shape;
  int32_t input_offset, alpha_offset, output_offset;
  int32_t identity_multiplier, identity_shift, alpha_multiplier, alpha_shift;
};

struct SoftmaxParams {
  int32_t rows, depth, input_multiplier, input_left_shift, diff_min;
};

void add_s8(const AddParams& p, const int8_t* a, const int8_t* b, int8_t* output);
void sub_s8(const AddParams& p, const int8_t* a, const int8_t* b, int8_t* output);
void mul_s8(const MulParams& p, const int8_t* a, const int8_t* b, int8_t* output);
// Raw values compared: TFLite Micro does not rescale (the converter gives inputs and output one quantization).
void maximum_s8(const Broadcast& shape, const int8_t* a, const int8_t* b, int8_t* output);
void minimum_s8(const Broadcast& shape, const int8_t* a, const int8_t* b, int8_t* output);
void prelu_s8(const PreluParams& p, const int8_t* input, const int8_t* alpha, int8_t* output);
// output[i] = table[input[i]'s bit pattern as 0..255] (so table[128] is the answer for -128).
void lookup_s8(const int8_t* table, int32_t size, const int8_t* input, int8_t* output);
// Output quantization is TFLite's fixed one for int8 softmax: scale 1/256, zero point -128.
void softmax_s8(const SoftmaxParams& p, const int8_t* input, int8_t* output);

// Cortex-M DSP variants (kernels/dsp/<op>_s8.cc, SMMULR; emulated off Arm), same parameters and bits, used
// where dsp.h's short requantizations are exact: ADD and SUB when the output multiplier shifts right, MUL
// when its shift is at most 14.
namespace dsp {
void add_s8(const AddParams& p, const int8_t* a, const int8_t* b, int8_t* output);
void sub_s8(const AddParams& p, const int8_t* a, const int8_t* b, int8_t* output);
void mul_s8(const MulParams& p, const int8_t* a, const int8_t* b, int8_t* output);
}  // namespace dsp

}  // namespace tx
