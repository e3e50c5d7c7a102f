#include "tinyexit/protocol.h"

#include "tinyexit/platform.h"
#include "tinyexit/runtime.h"

// A port that paints its stack at start-up defines this (qemu_mps2/startup.cc); elsewhere: 0, unknown.
extern "C" __attribute__((weak)) uint32_t tx_stack_used_bytes() { return 0; }

namespace tx::protocol {
namespace {

constexpr int32_t kHeader = 4;  // version, command, length

// One frame in, one frame out, sized by the generated model (TX_MAX_* come from the build): the receive
// buffer holds the largest legal request (INFER + input), the reply the largest answer (PROFILE) but the
// tensors, which go out from where they are.
alignas(4) uint8_t rx[kHeader + 1 + TX_MAX_INPUT_BYTES + 2];
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
  w.u8(r.exit_index);
  w.u8(r.predicted_class);
  w.u16(r.confidence_q15);
  w.u8(r.stages_run);
  for (int32_t k = 0; k < r.stages_run; ++k) w.u32(r.stage_cycles[k]);
  w.u16(with_output ? r.output_size : 0);
  if (with_output) {
    for (int32_t i = 0; i < r.output_size; ++i) w.u8(static_cast<uint8_t>(r.output[i]));
  }
  if (profile) {
    w.u16(m.num_layers);
    for (int32_t i = 0; i < m.num_layers; ++i) w.u32(layer_cycles[i]);
  }
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

// [exit, enabled, cut, codec, zero point, shift, codec flags] x n; everything validated before anything changes.
void reply_set_offload(const uint8_t* payload, uint32_t size) {
  constexpr uint32_t kEntry = 7;
  const ModelInfo& m = model();
  if (size == 0 || size % kEntry != 0) return send_error(kSetOffload, kBadArgument);
  for (uint32_t i = 0; i < size; i += kEntry) {
    const uint8_t* e = payload + i;
    const int32_t cut = static_cast<int8_t>(e[2]);
    if (e[0] >= m.num_exits || e[1] > 1 || e[3] > 3 || e[5] > 8 || e[6] > 1) {
      return send_error(kSetOffload, kBadArgument);
    }
    const ExitInfo& x = m.exits[e[0]];
    if (e[1] && (x.final || (cut != -1 && cut != x.stage))) return send_error(kSetOffload, kBadArgument);
  }
  OffloadConfig* configs = offload_configs();
  for (uint32_t i = 0; i < size; i += kEntry) {
    const uint8_t* e = payload + i;
    configs[e[0]] = {e[1] == 1, static_cast<int8_t>(e[2]), e[3], static_cast<int8_t>(e[4]),
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
      default: send_error(command, kUnknownCommand);
    }
  }
}

}  // namespace tx::protocol
