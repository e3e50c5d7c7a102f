// The staged runner: run stage k, test its exit, stop or continue. The generated model (build directory)
// defines `tx::model()`; nothing here allocates.
#pragma once

#include <cstdint>

namespace tx {

constexpr int kMaxStages = 8;
constexpr int kMaxOutputs = 16;  // of one stage (codegen refuses more)

// The exit policies' Q15 scores (tinyexit/policy.py defines each; the two must agree bit for bit).
enum PolicyKind : int32_t { kMaxProb = 0, kMargin = 1, kEntropy = 2 };

struct ExitInfo {
  int32_t stage;           // the stage whose outputs hold these logits
  int32_t classes;
  const int8_t* logits;    // in the arena, valid after the stage ran
  const uint16_t* exp_lut; // LUT[d] = round(32768 * exp(-scale * d)), d = 0..255 (tinyexit/policy.py)
  int32_t threshold_q15;   // exit when score >= threshold; 32769 never; the final exit always takes
  bool final;
  PolicyKind kind;
  const uint32_t* entropy_lut;  // kEntropy: NL[d] (policy.py), else null
  const uint16_t* log2_q12;     // kEntropy: round(4096 * log2(1 + i / 256)), i = 0..255, else null
  int32_t ln_classes_q12;       // kEntropy: round(4096 * ln(classes))
};

struct TensorRef {  // an int8 tensor in the arena
  int8_t* data;
  int32_t size;
};

struct StageInfo {
  void (*run)(uint32_t* layer_cycles);  // layer_cycles: null, or room for this stage's layers
  int32_t first_layer, num_layers;
  const TensorRef* outputs;  // every output of the stage (the .tflite's order), valid after it ran
  int32_t num_outputs;
};

struct ModelInfo {
  const char* task;
  const uint8_t* sha256;  // of the manifest (or the .tflite), 32 bytes
  int32_t num_stages;
  const StageInfo* stages;
  int32_t num_exits;
  ExitInfo* exits;        // mutable: SET_POLICY changes thresholds at run time
  const TensorRef* inputs;  // stage 0's inputs (a plain model may have several), in the .tflite's order
  int32_t num_inputs;
  int32_t input_size;       // all inputs' bytes
  int32_t arena_size;
  int32_t num_layers;
  int64_t macs;           // whole model, all stages
};

const ModelInfo& model();

// Device->edge offload, per exit (SET_OFFLOAD; all off at reset): a sample this exit does not take and whose
// score is below `below_q15` stops here and its cut goes to the edge instead of the later stages running on the
// device (the final exit, which takes every sample, offloads those it scores below `below_q15`).
struct OffloadConfig {
  bool enabled;
  int32_t cut;             // -1: the model input; else the exit's stage: its features (outputs[0])
  int32_t below_q15;       // offload when the exit's score < this (32769: whenever the exit does not take it)
  uint8_t codec_kind;      // tx::codec::Kind
  int8_t codec_zero_point; // the cut tensor's zero point
  int8_t codec_shift;      // requantizing codecs: 0..8
  bool codec_signed;       // requantizing codecs: two's complement codes around the zero point
};

OffloadConfig* offload_configs();  // kMaxStages entries, indexed by exit

// Where an offloaded cut is encoded: the model input as the host sent it (the arena may have reused its
// bytes) and room for the encoded cut. An encoded cut not smaller than the raw input sends the raw input.
struct OffloadBuffers {
  const int8_t* raw_input;  // model().input_size bytes
  uint8_t* encoded;
  int32_t capacity;         // at least model().input_size
};

struct InferResult {
  int32_t exit_index, predicted_class, confidence_q15, stages_run;
  uint32_t stage_cycles[kMaxStages];  // the offloading stage's count includes the encoding
  const int8_t* output;   // the logits of the exit taken (offloaded: of the exit that was not confident)
  int32_t output_size;
  bool offloaded;         // stopped at exit_index (not confident, offload on): `sent` is for the edge
  int32_t cut;            // what was sent: -1 the model input, k stage k's features
  uint8_t codec_kind;     // how it was encoded (kRaw when the raw input replaced a larger encoding)
  int32_t cut_values;     // int8 values in the cut tensor
  const uint8_t* sent;    // the encoded bytes (in OffloadBuffers or the raw input)
  int32_t sent_size;
  uint32_t encode_cycles; // the encoding's share of stage_cycles[exit stage]
};

// Predicted class (lowest index among ties) and the exit's Q15 policy score, exactly as tinyexit/policy.py.
int32_t exit_score_q15(const ExitInfo& x, int32_t* predicted_class);

// Runs stages on model().inputs until an exit takes the sample, or (with `offload`) until an exit marked for
// offload is not confident of it. layer_cycles: null or num_layers entries.
void infer(InferResult* result, uint32_t* layer_cycles, const OffloadBuffers* offload = nullptr);

// After an infer() that offloaded, and nothing else ran: the device's own answer, running the stages after
// the cut (the edge did not answer). false when there is no such run. Stage counts include the first part.
bool resume(InferResult* result, uint32_t* layer_cycles);

}  // namespace tx
