#include "tinyexit/codec.h"
#include "tinyexit/platform.h"
#include "tinyexit/runtime.h"

namespace tx {

namespace {

constexpr int64_t kQ15 = 32768;
constexpr int64_t kLn2Q12 = 2839;  // round(4096 * ln 2)

int32_t floor_log2(uint32_t x) { return 31 - __builtin_clz(x); }

}  // namespace

int32_t exit_score_q15(const ExitInfo& x, int32_t* predicted_class) {
  const int8_t* logits = x.logits;
  int32_t top = logits[0], best = 0;
  for (int32_t i = 1; i < x.classes; ++i) {
    if (logits[i] > top) top = logits[i], best = i;
  }
  uint32_t sum = 0;  // >= 32768: LUT[0] is counted
  for (int32_t i = 0; i < x.classes; ++i) sum += x.exp_lut[top - logits[i]];
  *predicted_class = best;
  switch (x.kind) {
    case kMargin: {
      int32_t second = 255;  // distance from the top to the runner-up
      for (int32_t i = 0; i < x.classes; ++i) {
        if (i != best && top - logits[i] < second) second = top - logits[i];
      }
      return static_cast<int32_t>((static_cast<uint64_t>(kQ15 - x.exp_lut[second]) << 15) / sum);
    }
    case kEntropy: {
      uint64_t weighted = 0;
      for (int32_t i = 0; i < x.classes; ++i) weighted += x.entropy_lut[top - logits[i]];
      const int32_t e = floor_log2(sum);  // >= 15
      const int64_t ln_q12 = ((e - 15) * int64_t{4096} + x.log2_q12[(sum >> (e - 8)) & 255]) * kLn2Q12 / 4096;
      const int64_t h_q12 = ln_q12 + static_cast<int64_t>((weighted << 8) / sum);
      const int64_t score = kQ15 - h_q12 * kQ15 / x.ln_classes_q12;
      return static_cast<int32_t>(score > 0 ? score : 0);
    }
    default:
      return static_cast<int32_t>((uint32_t{1} << 30) / sum);
  }
}

namespace {

OffloadConfig offloads[kMaxStages];  // by exit; all off at reset
InferResult pending;                 // the last run, when it offloaded and nothing ran since
bool resumable = false;

int32_t min32(int32_t a, int32_t b) { return a < b ? a : b; }

int32_t encode(const OffloadConfig& c, const int8_t* data, int32_t n, uint8_t* out, int32_t capacity) {
  codec::Params p{static_cast<codec::Kind>(c.codec_kind), c.codec_zero_point, c.codec_shift, c.codec_signed};
  return codec::encode(p, data, n, out, capacity);  // -1: does not fit
}

// Encodes exit `e`'s cut for the edge; the raw input goes instead when the encoding is not smaller.
void encode_cut(const ModelInfo& m, const OffloadConfig& c, const OffloadBuffers& b, InferResult* r) {
  const uint32_t start = platform::cycles();
  r->offloaded = true;
  r->cut = -1;
  r->codec_kind = 0;
  r->cut_values = m.input_size;
  r->sent = reinterpret_cast<const uint8_t*>(b.raw_input);
  r->sent_size = m.input_size;
  if (c.cut >= 0 || c.codec_kind != 0) {
    const TensorRef* cut = c.cut >= 0 ? &m.stages[c.cut].outputs[0] : nullptr;
    const int8_t* data = cut ? cut->data : b.raw_input;
    const int32_t n = cut ? cut->size : m.input_size;
    const int32_t size = encode(c, data, n, b.encoded, min32(b.capacity, m.input_size - 1));
    if (size >= 0) {
      r->cut = c.cut;
      r->codec_kind = c.codec_kind;
      r->cut_values = n;
      r->sent = b.encoded;
      r->sent_size = size;
    }
  }
  r->encode_cycles = platform::cycles() - start;
}

// Stages from `first` on until an exit takes the sample or (with `offload`) one marked for offload is not
// confident of it.
void run_from(int32_t first, InferResult* r, uint32_t* layer_cycles, const OffloadBuffers* offload) {
  const ModelInfo& m = model();
  for (int32_t k = first; k < m.num_stages; ++k) {
    const StageInfo& stage = m.stages[k];
    const uint32_t start = platform::cycles_aligned();
    stage.run(layer_cycles ? layer_cycles + stage.first_layer : nullptr);
    int32_t taken = -1, tested = -1, cls = 0, conf = 0;
    for (int32_t e = 0; e < m.num_exits && taken < 0; ++e) {
      const ExitInfo& x = m.exits[e];
      if (x.stage != k) continue;
      tested = e;
      conf = exit_score_q15(x, &cls);
      if (x.final || conf >= x.threshold_q15) taken = e;
    }
    // an early exit offloads what it does not take; the final exit (which takes everything) what it scores low
    const bool open = taken < 0 || m.exits[taken].final;
    if (open && tested >= 0 && offload && offloads[tested].enabled && conf < offloads[tested].below_q15) {
      encode_cut(m, offloads[tested], *offload, r);
      taken = tested;
    }
    r->stage_cycles[k] = platform::cycles() - start;  // the exit test (and encoding) is part of the stage's cost
    r->stages_run = k + 1;
    if (taken >= 0) {
      const ExitInfo& x = m.exits[taken];
      r->exit_index = taken;
      r->predicted_class = cls;
      r->confidence_q15 = conf;
      r->output = x.logits;
      r->output_size = x.classes;
      return;
    }
  }
}

}  // namespace

OffloadConfig* offload_configs() { return offloads; }

void infer(InferResult* r, uint32_t* layer_cycles, const OffloadBuffers* offload) {
  r->stages_run = 0;
  r->offloaded = false;
  r->encode_cycles = 0;
  resumable = false;
  run_from(0, r, layer_cycles, offload);
  if (r->offloaded) {
    pending = *r;
    resumable = true;
  }
}

bool resume(InferResult* r, uint32_t* layer_cycles) {
  if (!resumable) return false;
  resumable = false;
  *r = pending;
  r->offloaded = false;
  run_from(pending.stages_run, r, layer_cycles, nullptr);
  return true;
}

}  // namespace tx
