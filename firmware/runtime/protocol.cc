#include "tinyexit/protocol.h"

#include "tinyexit/platform.h"
#include "tinyexit/runtime.h"

// A port that paints its stack at start-up defines this (qemu_mps2/startup.cc); elsewhere: 0, unknown.
extern "C" __attribute__((weak)) uint32_t tx_stack_used_bytes() { return 0; }

// Files for BATCH: ports that have them (qemu_mps2, host) define these; boards get "unsupported".
namespace tx::platform {
__attribute__((weak)) int32_t file_open(const char*, size_t, bool) { return kFileUnsupported; }
__attribute__((weak)) bool file_seek(int32_t, uint32_t) { return false; }
__attribute__((weak)) bool file_read(int32_t, uint8_t*, size_t) { return false; }
__attribute__((weak)) bool file_write(int32_t, const uint8_t*, size_t) { return false; }
__attribute__((weak)) void file_close(int32_t) {}
}  // namespace tx::platform

namespace tx::protocol {
namespace {

constexpr int32_t kHeader = 4;  // version, command, length
constexpr int32_t kBatchRequestMax = 9 + 2 * 32;  // flags, first, count, two file names of up to 31 characters

constexpr int32_t max_of(int32_t a, int32_t b) { return a > b ? a : b; }

// One frame in, one frame out, sized by the generated model (TX_MAX_* come from the build): the receive
// buffer holds the largest legal request (INFER + input, or BATCH), the reply the largest answer (PROFILE)
// but the tensors, which go out from where they are. During BATCH, rx gathers result records into blocks
// once the request has been read.
alignas(4) uint8_t rx[kHeader + max_of(1 + TX_MAX_INPUT_BYTES, kBatchRequestMax) + 2];
alignas(4) uint8_t tx_buf[128 + kMaxStages * 4 + TX_MAX_OUTPUT_BYTES + TX_NUM_LAYERS * 4 + 2 * kMaxOutputs];
uint32_t layer_cycles[TX_NUM_LAYERS];
// An offloaded cut, encoded: one smaller than the raw input is sent, else the raw input (runtime.h).
alignas(4) uint8_t offload_buf[TX_MAX_INPUT_BYTES];

struct Writer {
  uint8_t* p;
  void u8(uint32_t v) { *p++ = static_cast<uint8_t>(v); }
  void u16(uint32_t v) { u8(v); u8(v >> 8); }
  void u32(uint32_t v) { u16(v); u16(v >> 16); }
  void u64(uint64_t v) { u32(static_cast<uint32_t>(v)); u32(static_cast<uint32_t>(v >> 32)); }
  void text(const char* s, int n) {
    for (int i = 0; i < n; ++i) u8(*s ? *s++ : 0);
  }
};

struct Part {
  const uint8_t* data;
  size_t size;
};

// One frame whose payload is the parts one after the other: tensors go out straight from the arena, so
// the reply buffer need not hold them.
void send_parts(uint8_t command, const Part* parts, int count) {
  size_t size = 0;
  for (int i = 0; i < count; ++i) size += parts[i].size;
  uint8_t head[5] = {kSync, kVersion, command, static_cast<uint8_t>(size), static_cast<uint8_t>(size >> 8)};
  uint16_t crc = crc16(head + 1, 4);
  for (int i = 0; i < count; ++i) crc = crc16(parts[i].data, parts[i].size, crc);
  const uint8_t tail[2] = {static_cast<uint8_t>(crc), static_cast<uint8_t>(crc >> 8)};
  platform::write_bytes(head, 5);
  for (int i = 0; i < count; ++i) {
    if (parts[i].size) platform::write_bytes(parts[i].data, parts[i].size);
  }
  platform::write_bytes(tail, 2);
}

void send(uint8_t command, const uint8_t* payload, size_t size) {
  const Part part{payload, size};
  send_parts(command, &part, 1);
}

void send_error(uint8_t command, ErrorCode code) {
  const uint8_t payload[2] = {command, code};
  send(kError, payload, 2);
}

void reply_info() {
  const ModelInfo& m = model();
  Writer w{tx_buf};
  w.u8(kVersion);
  w.text(m.task, 16);
  for (int i = 0; i < 32; ++i) w.u8(m.sha256[i]);
  w.u8(m.num_stages);
  w.u8(m.num_exits);
  w.u32(m.arena_size);
  w.u32(m.input_size);
  w.u16(m.num_layers);
  w.u64(m.macs);
  w.text(platform::name(), 16);
  w.text(platform::cycle_unit(), 16);
  w.u8(m.num_inputs);
  for (int32_t i = 0; i < m.num_inputs; ++i) w.u32(m.inputs[i].size);
  w.u8(m.stages[m.num_stages - 1].num_outputs);
  w.u32(tx_stack_used_bytes());
  send(kInfo | kReplyBit, tx_buf, w.p - tx_buf);
}

// The fields of an INFER (PROFILE) reply before its optional parts: INFER and BATCH records share them.
void write_result(Writer* w, const InferResult& r, bool with_output, bool profile) {
  w->u8(r.exit_index);
  w->u8(r.predicted_class);
  w->u16(r.confidence_q15);
  w->u8(r.stages_run);
  for (int32_t k = 0; k < r.stages_run; ++k) w->u32(r.stage_cycles[k]);
  w->u16(with_output ? r.output_size : 0);
  if (with_output) {
    for (int32_t i = 0; i < r.output_size; ++i) w->u8(static_cast<uint8_t>(r.output[i]));
  }
  if (profile) {
    w->u16(model().num_layers);
    for (int32_t i = 0; i < model().num_layers; ++i) w->u32(layer_cycles[i]);
  }
}

void reply_run(uint8_t command, uint8_t flags, bool resumed) {
  const ModelInfo& m = model();
  const bool with_output = flags & 1, all_outputs = flags & 2, may_offload = flags & 4;
  const bool profile = command == kProfile;
  if (profile) {
    for (int32_t i = 0; i < m.num_layers; ++i) layer_cycles[i] = 0;
  }
  InferResult r{};
  if (resumed) {
    if (!resume(&r, nullptr)) return send_error(command, kBadArgument);
  } else {
    // the raw input stays in rx: the arena may reuse the input tensor's bytes before an offload needs them
    const OffloadBuffers buffers{reinterpret_cast<const int8_t*>(rx + kHeader + 1), offload_buf, static_cast<int32_t>(sizeof(offload_buf))};
    infer(&r, profile ? layer_cycles : nullptr, may_offload ? &buffers : nullptr);
  }
  Writer w{tx_buf};
  write_result(&w, r, with_output, profile);
  // Fields accumulate in tx_buf; tensors go out straight from the arena or the encode buffer.
  Part parts[4 + 2 * kMaxOutputs];
  int count = 0;
  size_t total = 0;
  const uint8_t* mark = tx_buf;
  auto add = [&](const uint8_t* data, size_t n) { parts[count++] = {data, n}; total += n; };
  auto flush = [&]() { if (w.p > mark) add(mark, w.p - mark); mark = w.p; };
  if (all_outputs) {
    const StageInfo& last = m.stages[r.stages_run - 1];
    w.u8(last.num_outputs);
    for (int32_t i = 0; i < last.num_outputs; ++i) {
      w.u16(last.outputs[i].size);
      flush();
      add(reinterpret_cast<const uint8_t*>(last.outputs[i].data), last.outputs[i].size);
    }
  }
  w.u8(r.offloaded);
  if (r.offloaded) {
    w.u8(static_cast<uint8_t>(r.cut));
    w.u8(r.codec_kind);
    w.u32(r.cut_values);
    w.u32(r.encode_cycles);
    w.u16(r.sent_size);
    flush();
    add(r.sent, r.sent_size);
  }
  flush();
  if (total > 0xFFFF) return send_error(command, kBadArgument);
  send_parts(command | kReplyBit, parts, count);
}

void reply_infer(uint8_t command, const uint8_t* payload, uint32_t size) {
  const ModelInfo& m = model();
  if (size != 1 + static_cast<uint32_t>(m.input_size)) return send_error(command, kWrongInputSize);
  const uint8_t* in = payload + 1;
  for (int32_t k = 0; k < m.num_inputs; ++k) {
    for (int32_t i = 0; i < m.inputs[k].size; ++i) m.inputs[k].data[i] = static_cast<int8_t>(*in++);
  }
  reply_run(command, payload[0], false);
}

void reply_resume(const uint8_t* payload, uint32_t size) {
  if (size != 1 || payload[0] & ~3u) return send_error(kResume, kBadArgument);
  reply_run(kResume, payload[0], true);
}

// [exit, enabled, cut, codec, zero point, shift, codec flags, below u16] x n; everything validated before
// anything changes.
void reply_set_offload(const uint8_t* payload, uint32_t size) {
  constexpr uint32_t kEntry = 9;
  const ModelInfo& m = model();
  if (size == 0 || size % kEntry != 0) return send_error(kSetOffload, kBadArgument);
  for (uint32_t i = 0; i < size; i += kEntry) {
    const uint8_t* e = payload + i;
    const int32_t cut = static_cast<int8_t>(e[2]);
    const uint32_t below = e[7] | (e[8] << 8);
    if (e[0] >= m.num_exits || e[1] > 1 || e[3] > 3 || e[5] > 8 || e[6] > 1 || below > 32769) {
      return send_error(kSetOffload, kBadArgument);
    }
    const ExitInfo& x = m.exits[e[0]];  // the final exit can only send the input: no stage follows it
    if (e[1] && cut != -1 && (x.final || cut != x.stage)) return send_error(kSetOffload, kBadArgument);
  }
  OffloadConfig* configs = offload_configs();
  for (uint32_t i = 0; i < size; i += kEntry) {
    const uint8_t* e = payload + i;
    configs[e[0]] = {e[1] == 1, static_cast<int8_t>(e[2]), e[7] | (e[8] << 8), e[3], static_cast<int8_t>(e[4]),
                     static_cast<int8_t>(e[5]), e[6] == 1};
  }
  send(kSetOffload | kReplyBit, nullptr, 0);
}

void reply_set_policy(const uint8_t* payload, uint32_t size) {
  const ModelInfo& m = model();
  if (size == 0 || size % 3 != 0) return send_error(kSetPolicy, kBadArgument);
  for (uint32_t i = 0; i < size; i += 3) {  // validate everything before changing anything
    const uint32_t threshold = payload[i + 1] | (payload[i + 2] << 8);
    if (payload[i] >= m.num_exits || m.exits[payload[i]].final || threshold > 32769) {
      return send_error(kSetPolicy, kBadArgument);
    }
  }
  for (uint32_t i = 0; i < size; i += 3) {
    m.exits[payload[i]].threshold_q15 = payload[i + 1] | (payload[i + 2] << 8);
  }
  send(kSetPolicy | kReplyBit, nullptr, 0);
}

// BATCH: result records gathered in a buffer and written to the result file a block at a time.
struct BlockWriter {
  int32_t file;
  uint8_t* buffer;
  uint32_t capacity, used, total;
  bool ok;

  void put(const uint8_t* data, uint32_t size) {
    while (size > 0) {
      if (used == capacity) flush();
      const uint32_t n = size < capacity - used ? size : capacity - used;
      for (uint32_t i = 0; i < n; ++i) buffer[used + i] = data[i];
      used += n;
      total += n;
      data += n;
      size -= n;
    }
  }
  void flush() {
    if (used > 0 && ok) ok = platform::file_write(file, buffer, used);
    used = 0;
  }
};

// Reads one sample's inputs (every input, one after the other, as INFER takes them) straight into the arena.
bool read_sample(int32_t file) {
  const ModelInfo& m = model();
  for (int32_t k = 0; k < m.num_inputs; ++k) {
    if (!platform::file_read(file, reinterpret_cast<uint8_t*>(m.inputs[k].data), m.inputs[k].size)) return false;
  }
  return true;
}

// One sample exactly as reply_infer runs it (same call, same timed region), its reply payload as a record:
// size u32, then the INFER (PROFILE) reply's bytes.
void batch_sample(uint8_t flags, BlockWriter* out) {
  const ModelInfo& m = model();
  const bool with_output = flags & 1, all_outputs = flags & 2, profile = flags & 8;
  if (profile) {
    for (int32_t i = 0; i < m.num_layers; ++i) layer_cycles[i] = 0;
  }
  InferResult r{};
  infer(&r, profile ? layer_cycles : nullptr);
  Writer w{tx_buf + 4};
  write_result(&w, r, with_output, profile);
  const StageInfo& last = m.stages[r.stages_run - 1];
  if (all_outputs) w.u8(last.num_outputs);
  uint32_t size = static_cast<uint32_t>(w.p - tx_buf) - 4 + 1;  // + offloaded u8, below
  if (all_outputs) {
    for (int32_t i = 0; i < last.num_outputs; ++i) size += 2 + last.outputs[i].size;
  }
  Writer head{tx_buf};
  head.u32(size);
  out->put(tx_buf, static_cast<uint32_t>(w.p - tx_buf));
  if (all_outputs) {
    for (int32_t i = 0; i < last.num_outputs; ++i) {
      const uint8_t field[2] = {static_cast<uint8_t>(last.outputs[i].size), static_cast<uint8_t>(last.outputs[i].size >> 8)};
      out->put(field, 2);
      out->put(reinterpret_cast<const uint8_t*>(last.outputs[i].data), static_cast<uint32_t>(last.outputs[i].size));
    }
  }
  const uint8_t offloaded = r.offloaded;  // always 0: a batch never offloads
  out->put(&offloaded, 1);
}

// Length of the NUL-terminated file name at `text` within `size` bytes; -1 unless it is a plain name in the
// host side's working folder (letters, digits, '_', '-', '.'; not starting with '.'), so BATCH cannot reach
// any other file.
int32_t name_length(const uint8_t* text, uint32_t size) {
  for (uint32_t i = 0; i < size; ++i) {
    const uint8_t c = text[i];
    if (c == 0) return i > 0 && text[0] != '.' ? static_cast<int32_t>(i) : -1;
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                       c == '-' || c == '.';
    if (!plain) return -1;
  }
  return -1;
}

// Kept out of serve() (noinline, small frame) so a batch run's stack stays as shallow as INFER's.
__attribute__((noinline)) void reply_batch(const uint8_t* payload, uint32_t size) {
  const ModelInfo& m = model();
  if (size < 9) return send_error(kBatch, kBadArgument);
  const uint8_t flags = payload[0];
  const uint32_t first = payload[1] | (payload[2] << 8) | (payload[3] << 16) | (static_cast<uint32_t>(payload[4]) << 24);
  const uint32_t count = payload[5] | (payload[6] << 8) | (payload[7] << 16) | (static_cast<uint32_t>(payload[8]) << 24);
  const char* in_name = reinterpret_cast<const char*>(payload + 9);
  const int32_t in_length = name_length(payload + 9, size - 9);
  if (in_length < 0 || (flags & ~0x0Bu)) return send_error(kBatch, kBadArgument);  // bits 0, 1, 3
  const char* out_name = in_name + in_length + 1;
  const int32_t out_length = name_length(payload + 10 + in_length, size - 10 - in_length);
  if (out_length < 0) return send_error(kBatch, kBadArgument);
  const int32_t in = platform::file_open(in_name, in_length, false);
  if (in == platform::kFileUnsupported) return send_error(kBatch, kUnsupported);
  if (in < 0) return send_error(kBatch, kFileError);
  const int32_t out = platform::file_open(out_name, out_length, true);
  if (out < 0 || !platform::file_seek(in, first * static_cast<uint32_t>(m.input_size))) {
    platform::file_close(in);
    if (out >= 0) platform::file_close(out);
    return send_error(kBatch, kFileError);
  }
  // the names are no longer needed: rx (the request) becomes the block buffer
  BlockWriter writer{out, rx, sizeof(rx), 0, 0, true};
  uint32_t done = 0;
  while (done < count && writer.ok && read_sample(in)) {
    batch_sample(flags, &writer);
    ++done;
  }
  writer.flush();
  platform::file_close(in);
  platform::file_close(out);
  if (done < count || !writer.ok) return send_error(kBatch, kFileError);
  Writer w{tx_buf};
  w.u32(done);
  w.u32(writer.total);
  send(kBatch | kReplyBit, tx_buf, w.p - tx_buf);
}

// Reads `n` bytes of a frame into `dst`; false (after replying) if the link stalls or closes.
bool read_exact(uint8_t* dst, uint32_t n, uint8_t command, bool* closed) {
  for (uint32_t i = 0; i < n; ++i) {
    const int b = platform::read_byte(kByteTimeoutMs);
    if (b < 0) {
      *closed = b == -1;
      send_error(command, kTruncated);
      return false;
    }
    dst[i] = static_cast<uint8_t>(b);
  }
  return true;
}

}  // namespace

uint16_t crc16(const uint8_t* data, size_t size, uint16_t crc) {
  for (size_t i = 0; i < size; ++i) {
    crc ^= static_cast<uint16_t>(data[i]) << 8;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
  }
  return crc;
}

void serve() {
  bool closed = false;
  while (!closed) {
    const int first = platform::read_byte(-1);
    if (first == -1) return;
    if (first != kSync) continue;  // resynchronise on the next sync byte
    if (!read_exact(rx, kHeader, 0, &closed)) continue;
    const uint8_t version = rx[0], command = rx[1];
    const uint32_t size = rx[2] | (rx[3] << 8);
    if (size > sizeof(rx) - kHeader - 2) {
      send_error(command, kOversized);
      continue;
    }
    if (!read_exact(rx + kHeader, size + 2, command, &closed)) continue;
    const uint16_t got = rx[kHeader + size] | (rx[kHeader + size + 1] << 8);
    if (crc16(rx, kHeader + size) != got) {
      send_error(command, kBadChecksum);
      continue;
    }
    if (version != kVersion) {
      send_error(command, kBadVersion);
      continue;
    }
    const uint8_t* payload = rx + kHeader;
    switch (command) {
      case kInfo: reply_info(); break;
      case kInfer:
      case kProfile: reply_infer(command, payload, size); break;
      case kSetPolicy: reply_set_policy(payload, size); break;
      case kSetOffload: reply_set_offload(payload, size); break;
      case kResume: reply_resume(payload, size); break;
      case kBatch: reply_batch(payload, size); break;
      default: send_error(command, kUnknownCommand);
    }
  }
}

}  // namespace tx::protocol
