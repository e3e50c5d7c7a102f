// DEPTHWISE_CONV_2D 3x3 at stride 1 through planes (kernels.h DepthwisePlaneParams): the layer's loop over
// groups of 4 channels, their plane copies, strips and channels; the strip routines and the written-out plane
// copy are tinyexit/dsp_streams.h's.
#include "gemm.h"

namespace tx::dsp {

namespace {

// The planes of `count` (1..4) consecutive channels (plane i at planes + i * plane_words words) for the strip
// whose plane columns start at input column x0: plane row r holds input row r - pad_h, column q input column
// x0 + q, the zero point where those lie outside the input. Four channels per load: SXTB16 splits them into
// channels 0, 2 and 1, 3, PKHBT/PKHTB pair columns. Only the input's rows are written (the rows around them
// are the caller's, once), and plane words wholly outside the input's columns only when `outside` is set.
// (dsp_streams.h depthwise_fill: the same written out for layers with one strip per row.)
void fill_planes(const ConvParams& p, const int8_t* input, int32_t count, int32_t x0, bool outside, uint32_t* planes,
                 int32_t plane_words) {
  const int32_t c = p.input.c, in_w = p.input.w;
  const uint32_t zero_points = splat_s8x4(-p.input_offset);
  const int32_t q_first = x0 < 0 ? -x0 : 0;
  const int32_t q_end = in_w - x0 < kPlaneColumns ? in_w - x0 : kPlaneColumns;
  intptr_t src = reinterpret_cast<intptr_t>(input) + x0 * c;  // integer: column x0 may lie before the input
  uint32_t* row = planes + p.pad_h * (kPlaneColumns / 2);
  uint32_t* const end = row + p.input.h * (kPlaneColumns / 2);
  const int32_t row_step = in_w * c;
  for (; row != end; src += row_step, row += kPlaneColumns / 2) {
    for (int32_t k = 0; k < kPlaneColumns / 2; ++k) {
      const int32_t q0 = 2 * k, q1 = q0 + 1;
      const bool in0 = q0 >= q_first && q0 < q_end, in1 = q1 >= q_first && q1 < q_end;
      if (!in0 && !in1 && !outside) continue;
      const auto column = [&](int32_t q) { return load32(reinterpret_cast<const int8_t*>(src + q * c)); };
      const uint32_t v0 = in0 ? column(q0) : zero_points, v1 = in1 ? column(q1) : zero_points;
      const uint32_t e0 = sxtb16(v0), e1 = sxtb16(v1), o0 = sxtb16_ror8(v0), o1 = sxtb16_ror8(v1);
      row[k] = pkhbt16(e0, e1);
      if (count > 1) row[plane_words + k] = pkhbt16(o0, o1);
      if (count > 2) row[2 * plane_words + k] = pkhtb16(e0, e1);
      if (count > 3) row[3 * plane_words + k] = pkhtb16(o0, o1);
    }
  }
}

}  // namespace

void depthwise_plane_s8(const ConvParams& p, const DepthwisePlaneParams& d, const int8_t* input, int8_t* output,
                        void* scratch) {
  const int32_t channels = p.input.c, out_w = p.output.w, rows = p.output.h + 2;
  const int32_t plane_words = rows * (kPlaneColumns / 2);
  uint32_t* planes = static_cast<uint32_t*>(scratch);
  const uint32_t zero_pairs = offset_pair(-p.input_offset);
  const bool one_strip = out_w <= 6;
  // In place (input == output) with one strip per row, a group of channels is in its planes before its outputs
  // overwrite it. With several strips per row (then the planner requires SAME padding, each output on its
  // input pixel) a strip's outputs overwrite the next strip's first input column: that strip's planes are
  // filled before, into a second bank (the planner gives such layers scratch for two).
  const bool ahead = !one_strip && input == output;
  uint32_t* bank = planes;
  uint32_t* next = planes + 4 * plane_words;
  // the zero point everywhere once: the rows around the input, and with one strip per row the columns too
  for (int32_t i = 0; i < (ahead ? 8 : 4) * plane_words; ++i) planes[i] = zero_pairs;
  DepthwiseStripJob job{};
  job.row_step = out_w * channels;
  for (int32_t group = 0; group < channels; group += 4) {
    const int32_t count = channels - group < 4 ? channels - group : 4;
    if (ahead) fill_planes(p, input + group, count, -p.pad_w, true, bank, plane_words);
    for (int32_t x = 0; x < out_w; x += 6) {
      const int32_t width = out_w - x < 6 ? out_w - x : 6;
      const int32_t x0 = x - p.pad_w;
      if (ahead) {
        if (x + 6 < out_w) fill_planes(p, input + group, count, x0 + 6, true, next, plane_words);
      } else if (d.fill != nullptr && count == 4) {  // its plane columns are the layer's (one strip per row)
        // integer arithmetic: the column before the input's first is never read
        const intptr_t src = reinterpret_cast<intptr_t>(input) + group + x0 * channels;
        d.fill(reinterpret_cast<const int8_t*>(src), planes + p.pad_h * (kPlaneColumns / 2), plane_words, p.input.h,
               p.input.w * channels);
      } else {
        fill_planes(p, input + group, count, x0, !one_strip, planes, plane_words);
      }
      for (int32_t i = 0; i < count; ++i) {
        const int32_t ch = group + i;
        job.taps = d.taps + 9 * ch;
        job.quant = d.quant + 3 * ch;
        int8_t* out = output + x * channels + ch;
        job.end = out + p.output.h * out_w * channels;
        const int16_t* plane = reinterpret_cast<const int16_t*>(bank + i * plane_words);
        (width == 6 ? d.strips : d.tail_strips)[d.variant[ch]](plane, out, job);
      }
      if (ahead) {
        uint32_t* const done = bank;
        bank = next;
        next = done;
      }
    }
  }
}

}  // namespace tx::dsp
