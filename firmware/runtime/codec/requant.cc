// kRequant4 / kRequant2: each value's distance from the zero point, shifted right with rounding and
// clamped to 4 or 2 bits; decoding shifts back, so the edge gets int8 in the original quantization.
#include "codec_internal.h"

namespace tx::codec {

namespace {

// Packs count <= 8 / kBits codes of data[0, count) into one byte.
template <int kBits, bool kSigned>
inline uint8_t pack(const int8_t* data, int32_t count, int32_t offset, int shift) {
  constexpr int32_t lo = kSigned ? -(1 << (kBits - 1)) : 0;
  constexpr int32_t hi = kSigned ? (1 << (kBits - 1)) - 1 : (1 << kBits) - 1;
  constexpr uint32_t mask = (1u << kBits) - 1;
  uint32_t packed = 0;
  for (int32_t j = 0; j < count; ++j) {
    int32_t q = (data[j] + offset) >> shift;  // arithmetic shift: floor, so rounding half up
    q = q < lo ? lo : (q > hi ? hi : q);      // one USAT/SSAT on Cortex-M
    packed |= (static_cast<uint32_t>(q) & mask) << (j * kBits);
  }
  return static_cast<uint8_t>(packed);
}

template <int kBits, bool kSigned>
void encode_codes(const int8_t* data, int32_t n, int32_t offset, int shift, uint8_t* out) {
  constexpr int32_t per_byte = 8 / kBits;
  const int32_t whole = n / per_byte;
  // whole bytes with a constant count (the loop in pack unrolls), then the last, partial one
  for (int32_t b = 0; b < whole; ++b) out[b] = pack<kBits, kSigned>(data + b * per_byte, per_byte, offset, shift);
  const int32_t rest = n - whole * per_byte;
  if (rest > 0) out[whole] = pack<kBits, kSigned>(data + whole * per_byte, rest, offset, shift);
}

template <int kBits>
void unpack(const uint8_t* in, int32_t n, const int8_t* table, int8_t* out) {
  constexpr int32_t per_byte = 8 / kBits;
  constexpr uint32_t mask = (1u << kBits) - 1;
  const int32_t whole = n / per_byte;
  for (int32_t b = 0; b < whole; ++b, out += per_byte) {
    const uint32_t byte = in[b];
    for (int32_t j = 0; j < per_byte; ++j) out[j] = table[(byte >> (j * kBits)) & mask];
  }
  for (int32_t j = 0; j < n - whole * per_byte; ++j) out[j] = table[(in[whole] >> (j * kBits)) & mask];
}

}  // namespace

int32_t encode_requant(const Params& p, int bits, const int8_t* data, int32_t n, uint8_t* out, int32_t capacity) {
  const int32_t bytes = requant_bytes(bits, n);
  if (bytes > capacity) return -1;
  const int shift = p.shift;
  // (x - zp + round) >> shift with the subtraction and the rounding folded into one offset
  const int32_t offset = (shift > 0 ? 1 << (shift - 1) : 0) - p.zero_point;
  if (bits == 4) {
    if (p.signed_codes) encode_codes<4, true>(data, n, offset, shift, out);
    else encode_codes<4, false>(data, n, offset, shift, out);
  } else {
    if (p.signed_codes) encode_codes<2, true>(data, n, offset, shift, out);
    else encode_codes<2, false>(data, n, offset, shift, out);
  }
  return bytes;
}

int32_t decode_requant(const Params& p, int bits, const uint8_t* in, int32_t size, int8_t* out, int32_t n) {
  const int32_t bytes = requant_bytes(bits, n);
  if (bytes > size) return -1;
  // 2^bits possible codes: decode them once into a table, then every value is one lookup
  int8_t table[16];
  const int32_t codes = 1 << bits;
  for (int32_t c = 0; c < codes; ++c) {
    const int32_t q = p.signed_codes && c >= codes / 2 ? c - codes : c;
    const int32_t x = p.zero_point + q * (1 << p.shift);
    table[c] = static_cast<int8_t>(x < -128 ? -128 : (x > 127 ? 127 : x));
  }
  if (bits == 4) unpack<4>(in, n, table, out);
  else unpack<2>(in, n, table, out);
  return bytes;
}

}  // namespace tx::codec
