// Dispatch on Params::kind; each codec lives in its own file.
#include "codec_internal.h"

namespace tx::codec {

namespace {
bool valid(const Params& p) {
  if (p.kind == kRequant4 || p.kind == kRequant2) return p.shift >= 0 && p.shift <= 8;
  return p.kind == kRaw || p.kind == kLossless;
}
}  // namespace

int32_t max_encoded_bytes(const Params& p, int32_t n) {
  if (!valid(p) || n < 0) return -1;
  switch (p.kind) {
    case kLossless: return max_lossless_bytes(n);
    case kRequant4: return requant_bytes(4, n);
    case kRequant2: return requant_bytes(2, n);
    default: return n;
  }
}

int32_t encode(const Params& p, const int8_t* data, int32_t n, uint8_t* out, int32_t capacity) {
  if (!valid(p) || n < 0 || capacity < 0) return -1;
  switch (p.kind) {
    case kLossless: return encode_lossless(p.zero_point, data, n, out, capacity);
    case kRequant4: return encode_requant(p, 4, data, n, out, capacity);
    case kRequant2: return encode_requant(p, 2, data, n, out, capacity);
    default: return encode_raw(data, n, out, capacity);
  }
}

int32_t decode(const Params& p, const uint8_t* in, int32_t size, int8_t* out, int32_t n) {
  if (!valid(p) || n < 0 || size < 0) return -1;
  switch (p.kind) {
    case kLossless: return decode_lossless(p.zero_point, in, size, out, n);
    case kRequant4: return decode_requant(p, 4, in, size, out, n);
    case kRequant2: return decode_requant(p, 2, in, size, out, n);
    default: return decode_raw(in, size, out, n);
  }
}

}  // namespace tx::codec
