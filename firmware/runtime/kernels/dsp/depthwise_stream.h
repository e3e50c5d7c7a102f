// The DSP depthwise kernel's inner part for layers whose requantization is the short right-shift one
// (fast_mode 1) and whose filters have 3, 5 or 9 taps, the common case: one pixel's groups of 4 channels,
// each from one stream the code generator writes (DepthwiseDspParams::stream), products, requantization and
// store in one piece of assembly with every value in a register.
//
// Stream, per group of 4 channels: 2 * folded bias of channels 0..3; per tap the two words of
// DepthwiseDspParams::filter with every weight doubled; multiplier and ~shift of channels 0..3. The doubled
// weights give the accumulators 2 * acc, the operand dsp.h's requantize_fast starts from.
#pragma once

#include "gemm.h"

namespace tx::dsp {

struct DepthwiseStreamJob {  // read by the assembly: the field order is its layout
  const intptr_t* offsets;   // per tap, the byte offset of its 4 inputs from the group's base
  int32_t channels;          // a multiple of 4
  int32_t round_offset;      // 1 + 2 * output zero point
  uint32_t act_min4, act_max4;
};

// Runs one output pixel: `base` is the address of its top-left tap's channel 0 (only ever read through
// `offsets`, so it may lie outside the input on the border).
using DepthwiseStreamPixel = void (*)(const uint32_t* stream, int8_t* out, intptr_t base, const DepthwiseStreamJob& job);

// The pixel routine for a filter of `taps` taps (3, 5 or 9; nullptr for others).
DepthwiseStreamPixel depthwise_stream_pixel(int32_t taps);

}  // namespace tx::dsp
