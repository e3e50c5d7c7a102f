#include "tinyexit/platform.h"
#include "tinyexit/runtime.h"

namespace tx {

int32_t confidence_q15(const int8_t* logits, int32_t classes, const uint16_t* exp_lut, int32_t* predicted_class) {
  int32_t top = logits[0], best = 0;
  for (int32_t i = 1; i < classes; ++i) {
    if (logits[i] > top) top = logits[i], best = i;
  }
  uint32_t sum = 0;
  for (int32_t i = 0; i < classes; ++i) sum += exp_lut[top - logits[i]];
  *predicted_class = best;
  return static_cast<int32_t>((uint32_t{1} << 30) / sum);  // sum >= 32768: LUT[0] is counted
}

void infer(InferResult* r, uint32_t* layer_cycles) {
  const ModelInfo& m = model();
  r->stages_run = 0;
  for (int32_t k = 0; k < m.num_stages; ++k) {
    const StageInfo& stage = m.stages[k];
    const uint32_t start = platform::cycles_aligned();
    stage.run(layer_cycles ? layer_cycles + stage.first_layer : nullptr);
    r->stage_cycles[k] = platform::cycles() - start;
    r->stages_run = k + 1;
    for (int32_t e = 0; e < m.num_exits; ++e) {
      const ExitInfo& x = m.exits[e];
      if (x.stage != k) continue;
      int32_t cls = 0;
      const int32_t conf = confidence_q15(x.logits, x.classes, x.exp_lut, &cls);
      if (x.final || conf >= x.threshold_q15) {
        r->exit_index = e;
        r->predicted_class = cls;
        r->confidence_q15 = conf;
        r->output = x.logits;
        r->output_size = x.classes;
        return;
      }
    }
  }
}

}  // namespace tx
