// The DSP GEMM kernels' column gathering (conv_s8.cc, conv_packed_s8.cc, fully_connected*.cc): each output
// pixel's receptive field, widened to int16 with the input offset added, into one slot of the column buffer
// the GEMM reads: two slots (gemm.h, gemm_packed.h, the two-pixel streams: per group of 4 products, 2 words
// of pixel a then 2 of pixel b) or six (the six-pixel stream: 2 words of each pixel per group); the values
// doubled for the int8 streams (gemm_stream.h), whose requantization starts from 2 * acc.
//
// Order of the products (the code generator orders the filter the same way, ops/weights.py gemm_rows): the
// receptive field is cut into runs of bytes contiguous in the input (a filter row, or one tap when the filter
// is dilated horizontally; the whole vector for FULLY_CONNECTED), each read as whole words, one load each, and
// widened with SXTAB16 into two words: products 0, 2 and 1, 3 of the group. A run's last word may reach up to
// 3 bytes past its end: the filter has zero weights there, and the arena has room past its last tensor.
// Positions outside the input read the input zero point, which the offset turns into 0: what the reference's
// skipped taps contribute.
#pragma once

#include "gemm.h"

namespace tx::dsp {

// Widens words of 4 raw inputs into consecutive groups of one pixel's slot (kSlots slots, 2 words each per
// group; kDoubled: 2 * (input + offset)).
template <int32_t kSlots, bool kDoubled>
struct ColumnWriter {
  uint32_t* dst;
  uint32_t offset2;

  ColumnWriter(uint32_t* cols, int32_t pixel, uint32_t offset_pair) : dst(cols + pixel * 2), offset2(offset_pair) {}

  void word(uint32_t raw) {
    uint32_t even = sxtab16(offset2, raw), odd = sxtab16_ror8(offset2, raw);
    if (kDoubled) even = sadd16(even, even), odd = sadd16(odd, odd);
    dst[0] = even;
    dst[1] = odd;
    dst += 2 * kSlots;
  }

  void words(const int8_t* src, int32_t count) {
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
    if (kDoubled && count > 0) {  // the six-pixel stream's columns: written out, 5 or 7 instructions per word
      uint32_t raw, even, odd;
      if (offset2 == 0x00800080u) {
        // offset 128 (input zero point -128, the usual after a ReLU): input + 128 is the byte with its top
        // bit flipped, and one AND with a shifted operand takes two bytes, doubled
        const uint32_t mask = 0x01FE01FEu;
        uint32_t raw2;
        asm volatile(
            "tst %[n], #1\n"  // an odd word first, then two per pass
            "beq 2f\n"
            "ldr %[raw], [%[src]], #4\n"
            "eor %[raw], %[raw], #0x80808080\n"
            "and %[even], %[mask], %[raw], lsl #1\n"
            "and %[odd], %[mask], %[raw], lsr #7\n"
            "strd %[even], %[odd], [%[dst]], %[stride]\n"
            "subs %[n], %[n], #1\n"
            "beq 3f\n"
            "2:\n"
            "ldr %[raw], [%[src]], #4\n"
            "ldr %[raw2], [%[src]], #4\n"
            "eor %[raw], %[raw], #0x80808080\n"
            "eor %[raw2], %[raw2], #0x80808080\n"
            "and %[even], %[mask], %[raw], lsl #1\n"
            "and %[odd], %[mask], %[raw], lsr #7\n"
            "strd %[even], %[odd], [%[dst]], %[stride]\n"
            "and %[even], %[mask], %[raw2], lsl #1\n"
            "and %[odd], %[mask], %[raw2], lsr #7\n"
            "strd %[even], %[odd], [%[dst]], %[stride]\n"
            "subs %[n], %[n], #2\n"
            "bne 2b\n"
            "3:\n"
            : [raw] "=&r"(raw), [raw2] "=&r"(raw2), [even] "=&r"(even), [odd] "=&r"(odd), [src] "+r"(src),
              [dst] "+r"(dst), [n] "+r"(count)
            : [mask] "r"(mask), [stride] "i"(8 * kSlots)
            : "cc", "memory");
      } else {
        asm volatile(
            "1:\n"
            "ldr %[raw], [%[src]], #4\n"
            "sxtab16 %[even], %[off], %[raw]\n"
            "sxtab16 %[odd], %[off], %[raw], ror #8\n"
            "sadd16 %[even], %[even], %[even]\n"
            "sadd16 %[odd], %[odd], %[odd]\n"
            "strd %[even], %[odd], [%[dst]], %[stride]\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [raw] "=&r"(raw), [even] "=&r"(even), [odd] "=&r"(odd), [src] "+r"(src), [dst] "+r"(dst),
              [n] "+r"(count)
            : [off] "r"(offset2), [stride] "i"(8 * kSlots)
            : "cc", "memory");
      }
      return;
    }
#endif
    for (int32_t i = 0; i < count; ++i) word(load32(src + 4 * i));
  }

  void zeros(int32_t groups) {
    for (; groups > 0; --groups, dst += 2 * kSlots) dst[0] = dst[1] = 0;
  }
};

// One vector of `count` inputs (FULLY_CONNECTED: a single run) into slot `pixel` of a two-slot buffer, then
// zeros up to k_padded.
template <bool kDoubled>
inline void widen_vector(const int8_t* src, int32_t count, int32_t input_offset, int32_t k_padded, uint32_t* cols,
                         int32_t pixel) {
  ColumnWriter<2, kDoubled> column(cols, pixel, offset_pair(input_offset));
  const int32_t words = (count + 3) >> 2;
  column.words(src, words);
  column.zeros(k_padded / 4 - words);
}

// Widens the FULLY_CONNECTED input rows two at a time into the column buffer (doubled for the int8 stream)
// and hands each pair to multiply(first row, whether there is a second): an odd count widens its last row
// twice, and the second copy's results are dropped.
template <bool kDoubled, typename Multiply>
inline void for_row_pairs(const FullyConnectedParams& p, int32_t k_padded, const int8_t* input, uint32_t* cols,
                          Multiply&& multiply) {
  for (int32_t first = 0; first < p.batches; first += 2) {
    const bool pair = first + 1 < p.batches;
    widen_vector<kDoubled>(input + first * p.depth, p.depth, p.input_offset, k_padded, cols, 0);
    widen_vector<kDoubled>(input + (pair ? first + 1 : first) * p.depth, p.depth, p.input_offset, k_padded, cols, 1);
    multiply(first, pair);
  }
}

// Gathers the columns of one CONV_2D layer's output pixels into a column buffer of kSlots slots. Constructed
// once per layer: the per-pixel work is then an address and a bounds check, and pixels whose receptive field
// lies wholly inside the input (all but the border) take the straight path.
template <int32_t kSlots = 2, bool kDoubled = false>
class Gatherer {
 public:
  using Writer = ColumnWriter<kSlots, kDoubled>;

  Gatherer(const ConvParams& p, int32_t k_padded, const int8_t* input, uint32_t* cols)
      : p_(p), input_(reinterpret_cast<intptr_t>(input)), cols_(cols),
        run_taps_(p.dilation_w == 1 ? p.filter.w : 1), run_bytes_(run_taps_ * p.input.c),
        run_words_((run_bytes_ + 3) >> 2), runs_per_row_(p.filter.w / run_taps_),
        row_step_(p.dilation_h * p.input.w * p.input.c), run_step_(p.dilation_w * run_taps_ * p.input.c),
        y_last_(p.input.h - 1 - p.dilation_h * (p.filter.h - 1)), x_last_(p.input.w - 1 - p.dilation_w * (p.filter.w - 1)),
        tail_groups_(k_padded / 4 - p.filter.h * runs_per_row_ * run_words_), offset2_(offset_pair(p.input_offset)),
        zero_points_(splat_s8x4(-p.input_offset)),
        pointwise_(p.filter.h == 1 && p.filter.w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
                   p.pad_w == 0 && p.input.h == p.output.h && p.input.w == p.output.w) {}

  // A 1x1 filter at stride 1 without padding: output pixel i reads input pixel i alone.
  bool pointwise() const { return pointwise_; }
  void pointwise_column(int32_t pixel_index, int32_t slot) const {
    Writer column(cols_, slot, offset2_);
    column.words(reinterpret_cast<const int8_t*>(input_) + pixel_index * p_.input.c, run_words_);
    column.zeros(tail_groups_);
  }

  // The column of output pixel (b, oy, ox) into slot `pixel` of the column buffer.
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
    Writer column(cols_, pixel, offset2_);
#if defined(__ARM_FEATURE_DSP) && defined(__thumb2__)
    if (kDoubled && runs_per_row == 1) {  // the six-pixel stream's columns, one run per filter row: written out
      uint32_t* dst = column.dst;
      const int8_t* run = reinterpret_cast<const int8_t*>(origin);
      const int32_t next_row = row_step - 4 * run_words;
      uint32_t raw, even, odd;
      int32_t words, rows_left = rows;
      asm volatile(
          "1:\n"
          "mov %[n], %[words]\n"
          "2:\n"
          "ldr %[raw], [%[src]], #4\n"
          "sxtab16 %[even], %[off], %[raw]\n"
          "sxtab16 %[odd], %[off], %[raw], ror #8\n"
          "sadd16 %[even], %[even], %[even]\n"
          "sadd16 %[odd], %[odd], %[odd]\n"
          "strd %[even], %[odd], [%[dst]], %[stride]\n"
          "subs %[n], %[n], #1\n"
          "bne 2b\n"
          "add %[src], %[src], %[next]\n"
          "subs %[rows], %[rows], #1\n"
          "bne 1b\n"
          : [raw] "=&r"(raw), [even] "=&r"(even), [odd] "=&r"(odd), [n] "=&r"(words), [src] "+r"(run),
            [dst] "+r"(dst), [rows] "+r"(rows_left)
          : [words] "r"(run_words), [next] "r"(next_row), [off] "r"(offset2_), [stride] "i"(8 * kSlots)
          : "cc", "memory");
      column.dst = dst;
      column.zeros(tail_groups_);
      return;
    }
#endif
    for (int32_t ky = 0; ky < rows; ++ky, origin += row_step) {
      const int8_t* run = reinterpret_cast<const int8_t*>(origin);
      for (int32_t r = 0; r < runs_per_row; ++r, run += run_step) column.words(run, run_words);
    }
    column.zeros(tail_groups_);
  }

  // Out of line: rare, and it would crowd the registers of the common path.
  __attribute__((noinline)) void border(intptr_t origin, int32_t y0, int32_t x0, int32_t pixel) const {
    const int32_t in_c = p_.input.c;
    Writer column(cols_, pixel, offset2_);
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
  bool pointwise_;
};

// A copy of the input with its padding written out as the zero point, so that every receptive field lies
// inside it (the Gatherer's straight path; the code generator asks for it, GemmDspParams::padded_bytes, where
// it is small). Returns the parameters the Gatherer reads it with; `padded` must hold padded_bytes.
inline ConvParams padded_input(const ConvParams& p, const int8_t* input, int8_t* padded) {
  ConvParams q = p;
  q.input.h = (p.output.h - 1) * p.stride_h + (p.filter.h - 1) * p.dilation_h + 1;
  q.input.w = (p.output.w - 1) * p.stride_w + (p.filter.w - 1) * p.dilation_w + 1;
  q.pad_h = q.pad_w = 0;
  const int32_t c = p.input.c, row_bytes = q.input.w * c;
  const uint32_t zero_points = splat_s8x4(-p.input_offset);
  const int32_t total = p.input.n * q.input.h * row_bytes;
  for (int32_t i = 0; i < total + 4; i += 4) store32(padded + i, zero_points);  // + the reads past the end
  for (int32_t b = 0; b < p.input.n; ++b) {
    for (int32_t y = 0; y < p.input.h; ++y) {
      const int32_t row = y + p.pad_h;
      if (row >= q.input.h) break;
      // the input row's columns that the receptive fields reach
      const int32_t first = p.pad_w, count = p.input.w < q.input.w - p.pad_w ? p.input.w : q.input.w - p.pad_w;
      __builtin_memcpy(padded + ((b * q.input.h + row) * q.input.w + first) * c,
                       input + (b * p.input.h + y) * p.input.w * c, count * c);
    }
  }
  return q;
}

// Gathers the layer's output pixels kSlots at a time into the column buffer and hands each block to
// multiply(first pixel, pixels in the block): a short last block leaves its other slots with stale values
// whose results the caller drops. Each block is gathered whole before its outputs are written, so a 1x1
// layer may run in place (input and output one buffer): blocks in order when out_c <= in_c, and in reverse
// order when out_c > in_c (a block's outputs then reach only the inputs of blocks already done).
template <int32_t kSlots, bool kDoubled, typename Multiply>
inline void for_pixel_blocks(const ConvParams& p, const Gatherer<kSlots, kDoubled>& gather, Multiply&& multiply) {
  const int32_t out_h = p.output.h, out_w = p.output.w;
  const int32_t pixels = p.output.n * out_h * out_w;
  if (gather.pointwise()) {
    const bool backward = p.output.c > p.input.c;
    const int32_t last = (pixels - 1) / kSlots * kSlots;
    for (int32_t i = 0; i < pixels; i += kSlots) {
      const int32_t first = backward ? last - i : i;
      const int32_t count = pixels - first < kSlots ? pixels - first : kSlots;
      for (int32_t slot = 0; slot < count; ++slot) gather.pointwise_column(first + slot, slot);
      multiply(first, count);
    }
    return;
  }
  int32_t b = 0, oy = 0, ox = 0;  // of pixel `first`
  for (int32_t first = 0; first < pixels; first += kSlots) {
    const int32_t count = pixels - first < kSlots ? pixels - first : kSlots;
    for (int32_t slot = 0; slot < count; ++slot) {
      gather(b, oy, ox, slot);
      if (++ox == out_w) ox = 0, oy = oy + 1 == out_h ? (++b, 0) : oy + 1;
    }
    multiply(first, count);
  }
}

// Two at a time for the two-slot GEMMs: multiply(first pixel, whether there is a second).
template <bool kDoubled, typename Multiply>
inline void for_pixel_pairs(const ConvParams& p, const Gatherer<2, kDoubled>& gather, Multiply&& multiply) {
  for_pixel_blocks(p, gather, [&](int32_t first, int32_t count) { multiply(first, count == 2); });
}

}  // namespace tx::dsp
