// Shared by the codec files: one function pair per codec, dispatched by codec.cc.
#pragma once

#include <cstdint>

#include "tinyexit/codec.h"

namespace tx::codec {

int32_t encode_raw(const int8_t* data, int32_t n, uint8_t* out, int32_t capacity);
int32_t decode_raw(const uint8_t* in, int32_t size, int8_t* out, int32_t n);

int32_t encode_lossless(int8_t zero_point, const int8_t* data, int32_t n, uint8_t* out, int32_t capacity);
int32_t decode_lossless(int8_t zero_point, const uint8_t* in, int32_t size, int8_t* out, int32_t n);
int32_t max_lossless_bytes(int32_t n);

// bits: 4 or 2.
int32_t encode_requant(const Params& p, int bits, const int8_t* data, int32_t n, uint8_t* out, int32_t capacity);
int32_t decode_requant(const Params& p, int bits, const uint8_t* in, int32_t size, int8_t* out, int32_t n);
inline int32_t requant_bytes(int bits, int32_t n) { return static_cast<int32_t>((int64_t{n} * bits + 7) / 8); }

}  // namespace tx::codec
