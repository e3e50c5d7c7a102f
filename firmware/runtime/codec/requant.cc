// kRequant4 / kRequant2: each value's distance from the zero point, shifted right with rounding and
// clamped to 4 or 2 bits; decoding shifts back, so the edge gets int8 in the original quantization.
#include "codec_internal.h"

namespace tx::codec {

int32_t encode_requant(const Params& p, int bits, const int8_t* data, int32_t n, uint8_t* out, int32_t capacity) {
  const int32_t bytes = requant_bytes(bits, n);
  if (bytes > capacity) return -1;
  const int32_t shift = p.shift;
  const int32_t round = shift > 0 ? 1 << (shift - 1) : 0;
  const int32_t lo = p.signed_codes ? -(1 << (bits - 1)) : 0;
  const int32_t hi = p.signed_codes ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  const uint32_t mask = (1u << bits) - 1;
  const int per_byte = 8 / bits;
  for (int32_t b = 0; b < bytes; ++b) {
    uint32_t packed = 0;
    for (int j = 0; j < per_byte; ++j) {
      const int32_t i = b * per_byte + j;
      if (i >= n) break;
      int32_t q = (data[i] - p.zero_point + round) >> shift;  // arithmetic shift: floor, so round half up
      q = q < lo ? lo : (q > hi ? hi : q);
      packed |= (static_cast<uint32_t>(q) & mask) << (j * bits);
    }
    out[b] = static_cast<uint8_t>(packed);
  }
  return bytes;
}

int32_t decode_requant(const Params& p, int bits, const uint8_t* in, int32_t size, int8_t* out, int32_t n) {
  const int32_t bytes = requant_bytes(bits, n);
  if (bytes > size) return -1;
  const uint32_t mask = (1u << bits) - 1;
  const int per_byte = 8 / bits;
  for (int32_t i = 0; i < n; ++i) {
    int32_t q = static_cast<int32_t>((in[i / per_byte] >> ((i % per_byte) * bits)) & mask);
    if (p.signed_codes && q >= (1 << (bits - 1))) q -= 1 << bits;
    const int32_t x = p.zero_point + q * (1 << p.shift);
    out[i] = static_cast<int8_t>(x < -128 ? -128 : (x > 127 ? 127 : x));
  }
  return bytes;
}

}  // namespace tx::codec
