// Serial protocol, version 3: the same bytes on host, QEMU and boards.
//
// Frame:  0xA5 | version (1) | command (1) | length (u16 LE) | payload (length) | crc16 (u16 LE)
// crc16 is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) over version, command, length and payload.
// A reply carries the request's command | 0x80; an error reply has command 0x7F and payload
// [request command, error code]. After any error the receiver scans for the next 0xA5.
//
// Requests and replies (all integers little endian):
//   INFO (0x01)       -> version u8, task char[16], model sha256[32], stages u8, exits u8, arena u32,
//                        input size u32, layers u16, MACs u64, port char[16], cycle unit char[16],
//                        inputs u8, input size u32 x inputs, outputs of the last stage u8,
//                        stack used u32 (high-water mark in bytes since reset; 0: the port does not measure it)
//   INFER (0x02)      flags u8 (bit 0: return the exit's logits; bit 1: every output of the last stage run;
//                     bit 2: may offload, see SET_OFFLOAD), input bytes (every input, one after the other)
//                     -> exit u8, class u8, confidence_q15 u16, stages run u8, cycles u32 x stages run,
//                        output size u16, output bytes (bit 0), then (bit 1) outputs u8, [size u16, bytes] x
//                        outputs, then offloaded u8 (0/1) and when 1: cut i8 (-1: the model input, k: stage k's
//                        features), codec u8 (tx::codec::Kind), cut values u32, encode cycles u32 (included in
//                        the stage's cycles), size u16, encoded bytes; a reply that would not fit a frame gets
//                        error 7 (bad argument). Offloaded: exit, class and confidence are the exit that was not
//                        confident; the raw input is sent (cut -1, codec 0) when the encoded cut is not smaller.
//   SET_POLICY (0x03) [exit u8, threshold_q15 u16] x n -> empty
//   PROFILE (0x04)    like INFER -> the INFER reply, then layers u16, cycles u32 x layers (0 if not run)
//                     (the layers come right after the output bytes of bit 0)
//   SET_OFFLOAD (0x06) [exit u8, enabled u8, cut i8, codec u8, zero point i8, shift u8, codec flags u8 (bit 0:
//                     signed codes), below_q15 u16] x n -> empty. Per exit (all off at reset): an INFER with flag
//                     bit 2 whose sample this exit does not take (the final exit: takes, as it takes all) and scores
//                     below below_q15 (32769: always) stops there and replies with the encoded cut (the exit's stage
//                     features, cut = its stage, or the model input, cut = -1; the final exit: only -1) instead of
//                     running on.
//   RESUME (0x07)     flags u8 (bits 0, 1 as INFER) -> the INFER reply of the same sample, running the stages
//                     after the cut (the edge did not answer); only right after an offloaded INFER, else error 7
//   BATCH (0x05)      flags u8 (bits 0, 1 as INFER; bit 3: PROFILE every sample; bit 2, offload, is not for
//                     batches), first u32, count u32, input file name, result file name (each NUL-terminated;
//                     plain names in the host side's working folder: letters, digits, _ - . and not starting
//                     with .) -> samples run u32, result bytes u32.
//                     Runs `count` samples exactly as INFER (PROFILE) runs one, reading them from the input
//                     file (samples of input-size bytes, as INFER takes them, from sample `first` on) and
//                     writing to the result file, emptied first, one record per sample: size u32, then the
//                     INFER (PROFILE) reply's payload. The files are the host side's (QEMU: semihosting;
//                     host build: stdio); ports without files answer error 8 (unsupported), a file that
//                     cannot be opened, read or written error 9. Firmware without BATCH answers error 3
//                     (unknown command) and the host runs one INFER per sample.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tx::protocol {

constexpr uint8_t kSync = 0xA5;
constexpr uint8_t kVersion = 3;  // 2: several inputs and outputs (INFO, INFER bit 1); 3: offload
constexpr uint8_t kReplyBit = 0x80;
constexpr uint8_t kError = 0x7F;
constexpr int32_t kByteTimeoutMs = 200;  // a frame that stalls this long is truncated

enum Command : uint8_t {
  kInfo = 0x01, kInfer = 0x02, kSetPolicy = 0x03, kProfile = 0x04, kBatch = 0x05, kSetOffload = 0x06, kResume = 0x07,
};
enum ErrorCode : uint8_t {
  kBadChecksum = 1, kOversized = 2, kUnknownCommand = 3, kWrongInputSize = 4, kBadVersion = 5,
  kTruncated = 6, kBadArgument = 7, kUnsupported = 8, kFileError = 9,
};

uint16_t crc16(const uint8_t* data, size_t size, uint16_t crc = 0xFFFF);

// Serves requests until the link closes (host) or forever (devices).
void serve();

}  // namespace tx::protocol
