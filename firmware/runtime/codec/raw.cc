// kRaw: the int8 values as they are (the baseline every other codec is measured against).
#include "codec_internal.h"

namespace tx::codec {

int32_t encode_raw(const int8_t* data, int32_t n, uint8_t* out, int32_t capacity) {
  if (n > capacity) return -1;
  for (int32_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(data[i]);
  return n;
}

int32_t decode_raw(const uint8_t* in, int32_t size, int8_t* out, int32_t n) {
  if (n > size) return -1;
  for (int32_t i = 0; i < n; ++i) out[i] = static_cast<int8_t>(in[i]);
  return n;
}

}  // namespace tx::codec
