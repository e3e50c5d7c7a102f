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

void infer(InferResult* r, uint32_t* layer_cycles) {
  const ModelInfo& m = model();
  r->stages_run = 0;
  for (int32_t k = 0; k < m.num_stages; ++k) {
    const StageInfo& stage = m.stages[k];
    const uint32_t start = platform::cycles_aligned();
    stage.run(layer_cycles ? layer_cycles + stage.first_layer : nullptr);
    int32_t taken = -1, cls = 0, conf = 0;
    for (int32_t e = 0; e < m.num_exits && taken < 0; ++e) {
      const ExitInfo& x = m.exits[e];
      if (x.stage != k) continue;
      conf = exit_score_q15(x, &cls);
      if (x.final || conf >= x.threshold_q15) taken = e;
    }
    r->stage_cycles[k] = platform::cycles() - start;  // the exit test is part of the stage's cost
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

}  // namespace tx
