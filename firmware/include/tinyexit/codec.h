// Feature codecs for the device->edge cascade: a device that is not confident at an exit sends the cut
// tensor (int8, with the tensor's zero point) to the edge. Integer only, no heap; the Python twin
// tinyexit/edge/codec.py writes and reads byte-identical streams.
//
// Streams carry no header: the receiver knows Params and n (from the manifest's offload section).
//   kRaw       n bytes, the int8 values as they are.
//   kLossless  self-delimiting, exact; tuned for post-ReLU maps where most values equal zero_point
//              (format in runtime/codec/lossless.cc). Never more than max_encoded_bytes().
//   kRequant4  ceil(n / 2) bytes, two 4-bit codes per byte, first value in the low nibble.
//   kRequant2  ceil(n / 4) bytes, four 2-bit codes per byte, first value in the low bits.
// Requantization (shift chosen at calibration, 0..8), with d = x - zero_point:
//   unsigned codes (default; post-ReLU maps, d >= 0):  q = clamp((d + r) >> shift, 0, 2^bits - 1)
//   signed codes (signed_codes = true):                 q = clamp((d + r) >> shift, -2^(bits-1), 2^(bits-1) - 1)
//   with r = 2^(shift-1) (round half up; r = 0 when shift == 0); decoding gives
//   x' = clamp(zero_point + (q << shift), -128, 127), in the tensor's original quantization, so
//   zero_point decodes exactly to zero_point.
#pragma once

#include <cstdint>

namespace tx::codec {

enum Kind : uint8_t { kRaw = 0, kLossless = 1, kRequant4 = 2, kRequant2 = 3 };

struct Params {
  Kind kind;
  int8_t zero_point;
  int8_t shift;               // requantization only: 0..8
  bool signed_codes = false;  // requantization only: codes two's complement around zero_point
};

// Encodes n int8 values into out (capacity bytes); returns bytes written, or -1 when it would not fit
// (or Params are invalid).
int32_t encode(const Params& p, const int8_t* data, int32_t n, uint8_t* out, int32_t capacity);

// Decodes into n int8 values; returns bytes consumed or -1 on malformed input (never reads past size).
int32_t decode(const Params& p, const uint8_t* in, int32_t size, int8_t* out, int32_t n);

// The largest stream encode() can write for n values (size the transmit buffer with it); -1 on
// invalid Params.
int32_t max_encoded_bytes(const Params& p, int32_t n);

}  // namespace tx::codec
