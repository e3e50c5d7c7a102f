// The DSP GEMM kernels' column gathering (conv_s8.cc, conv_packed_s8.cc, fully_connected*.cc): each output
// pixel's receptive field, widened to int16 with the input offset added, into one slot of the two-pixel
// column buffer the GEMM reads (gemm.h).
//
// Order of the products (the code generator orders the filter the same way, ops.py gemm_filter): the
// receptive field is cut into runs of bytes contiguous in the input (a filter row, or one tap when the filter
// is dilated horizontally; the whole vector for FULLY_CONNECTED), each read as whole words, one load each, and
// widened with SXTB16 into the order 0, 2, 1, 3. A run's last word may reach up to 3 bytes past its end: the
// filter has zero weights there, and the arena has room past its last tensor. Positions outside the input
// read the input zero point, which the offset turns into 0: what the reference's skipped taps contribute.
#pragma once

#include "gemm.h"

namespace tx::dsp {

// Widens words of 4 raw inputs into consecutive groups of one pixel's slot.
struct ColumnWriter {
  uint32_t* dst;
  uint32_t offset2;

  ColumnWriter(uint32_t* cols, int32_t pixel, uint32_t offset_pair) : dst(cols + pixel * 2), offset2(offset_pair) {}

  void word(uint32_t raw) {
    dst[0] = sadd16(sxtb16(raw), offset2);
    dst[1] = sadd16(sxtb16_ror8(raw), offset2);
    dst += 4;
  }

  void words(const int8_t* src, int32_t count) {
    for (int32_t i = 0; i < count; ++i) word(load32(src + 4 * i));
  }

  void zeros(int32_t groups) {
    for (; groups > 0; --groups, dst += 4) dst[0] = dst[1] = 0;
  }
};

// One vector of `count` inputs (FULLY_CONNECTED: a single run) into slot `pixel`, then zeros up to k_padded.
inline void widen_vector(const int8_t* src, int32_t count, int32_t input_offset, int32_t k_padded, uint32_t* cols,
                         int32_t pixel) {
  ColumnWriter column(cols, pixel, offset_pair(input_offset));
  const int32_t words = (count + 3) >> 2;
  column.words(src, words);
  column.zeros(k_padded / 4 - words);
}

// Widens the FULLY_CONNECTED input rows two at a time into the column buffer and hands each pair to
// multiply(first row, whether there is a second): an odd count widens its last row twice, and the second
// copy's results are dropped.
template <typename Multiply>
inline void for_row_pairs(const FullyConnectedParams& p, int32_t k_padded, const int8_t* input, uint32_t* cols,
                          Multiply&& multiply) {
  for (int32_t first = 0; first < p.batches; first += 2) {
    const bool pair = first + 1 < p.batches;
    widen_vector(input + first * p.depth, p.depth, p.input_offset, k_padded, cols, 0);
    widen_vector(input + (pair ? first + 1 : first) * p.depth, p.depth, p.input_offset, k_padded, cols, 1);
    multiply(first, pair);
  }
}

// Gathers the columns of one CONV_2D layer's output pixels. Constructed once per layer: the per-pixel
// work is then an address and a bounds check, and pixels whose receptive field lies wholly inside the
// input (all but the border) take the straight path.
class Gatherer {
 public:
  Gatherer(const ConvParams& p, int32_t k_padded, const int8_t* input, uint32_t* cols)
      : p_(p), input_(reinterpret_cast<intptr_t>(input)), cols_(cols),
        run_taps_(p.dilation_w == 1 ? p.filter.w : 1), run_bytes_(run_taps_ * p.input.c),
        run_words_((run_bytes_ + 3) >> 2), runs_per_row_(p.filter.w / run_taps_),
        row_step_(p.dilation_h * p.input.w * p.input.c), run_step_(p.dilation_w * run_taps_ * p.input.c),
        y_last_(p.input.h - 1 - p.dilation_h * (p.filter.h - 1)), x_last_(p.input.w - 1 - p.dilation_w * (p.filter.w - 1)),
        tail_groups_(k_padded / 4 - p.filter.h * runs_per_row_ * run_words_), offset2_(offset_pair(p.input_offset)),
        zero_points_(splat_s8x4(-p.input_offset)) {}

  // The column of output pixel (b, oy, ox) into slot `pixel` (0 or 1) of the column buffer.
  void operator()(int32_t b, int32_t oy, int32_t ox, int32_t pixel) const {
    const int32_t y0 = oy * p_.stride_h - p_.pad_h, x0 = ox * p_.stride_w - p_.pad_w;
    // integer arithmetic: on the border this address lies outside the input and is not read itself
    const intptr_t origin = input_ + ((b * p_.input.h + y0) * p_.input.w + x0) * p_.input.c;
    if (y0 >= 0 && y0 <= y_last_ && x0 >= 0 && x0 <= x_last_) {
      inside(origin, pixel);
    } else {
      border(origin, y0, x0, pixel);
    }
  }

 private:
  void inside(intptr_t origin, int32_t pixel) const {
    // locals: the column stores could alias the members for all the compiler knows
    const int32_t rows = p_.filter.h, runs_per_row = runs_per_row_, run_words = run_words_;
    const int32_t row_step = row_step_, run_step = run_step_;
    ColumnWriter column(cols_, pixel, offset2_);
    for (int32_t ky = 0; ky < rows; ++ky, origin += row_step) {
      const int8_t* run = reinterpret_cast<const int8_t*>(origin);
      for (int32_t r = 0; r < runs_per_row; ++r, run += run_step) column.words(run, run_words);
    }
    column.zeros(tail_groups_);
  }

  // Out of line: rare, and it would crowd the registers of the common path.
  __attribute__((noinline)) void border(intptr_t origin, int32_t y0, int32_t x0, int32_t pixel) const {
    const int32_t in_c = p_.input.c;
    ColumnWriter column(cols_, pixel, offset2_);
    for (int32_t ky = 0; ky < p_.filter.h; ++ky, origin += row_step_) {
      const int32_t y = y0 + p_.dilation_h * ky;
      const bool row_inside = y >= 0 && y < p_.input.h;
      const int8_t* run = reinterpret_cast<const int8_t*>(origin);
      for (int32_t kx = 0; kx < p_.filter.w; kx += run_taps_, run += run_step_) {
        const int32_t x = x0 + p_.dilation_w * kx;
        // the run's bytes inside the input: [lo, hi)
        const int32_t first = x < 0 ? -x : 0, end = p_.input.w - x < run_taps_ ? p_.input.w - x : run_taps_;
        const int32_t lo = first * in_c, hi = row_inside && end > first ? end * in_c : lo;
        if (hi == lo) {
          column.zeros(run_words_);  // the widened zero point
        } else {
          for (int32_t i = 0; i < run_words_; ++i) column.word(word(run, 4 * i, lo, hi));
        }
      }
    }
    column.zeros(tail_groups_);
  }

  // Bytes [start, start + 4) of a run whose bytes [lo, hi) lie inside the input; the others read as zero points.
  uint32_t word(const int8_t* run, int32_t start, int32_t lo, int32_t hi) const {
    if (start >= lo && start + 4 <= hi) return load32(run + start);
    uint32_t word = zero_points_;
    for (int32_t i = 0; i < 4; ++i) {
      if (start + i >= lo && start + i < hi) {
        word = (word & ~(0xFFu << (8 * i))) | ((static_cast<uint32_t>(run[start + i]) & 0xFF) << (8 * i));
      }
    }
    return word;
  }

  const ConvParams& p_;
  intptr_t input_;
  uint32_t* cols_;
  int32_t run_taps_, run_bytes_, run_words_, runs_per_row_, row_step_, run_step_, y_last_, x_last_, tail_groups_;
  uint32_t offset2_, zero_points_;
};

// Gathers the layer's output pixels two at a time into the column buffer and hands each pair to
// multiply(first pixel, whether there is a second): an odd count leaves slot 1 with stale values whose
// results are dropped.
template <typename Multiply>
inline void for_pixel_pairs(const ConvParams& p, const Gatherer& gather, Multiply&& multiply) {
  const int32_t out_h = p.output.h, out_w = p.output.w;
  const int32_t pixels = p.output.n * out_h * out_w;
  int32_t b = 0, oy = 0, ox = 0;  // of pixel `first`
  for (int32_t first = 0; first < pixels; first += 2) {
    const bool pair = first + 1 < pixels;
    for (int32_t slot = 0; slot < (pair ? 2 : 1); ++slot) {
      gather(b, oy, ox, slot);
      if (++ox == out_w) ox = 0, oy = oy + 1 == out_h ? (++b, 0) : oy + 1;
    }
    multiply(first, pair);
  }
}

}  // namespace tx::dsp
