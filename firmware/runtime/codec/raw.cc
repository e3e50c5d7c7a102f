// kRaw: the int8 values as they are (the baseline every other codec is measured against).
#include <cstring>

#include "codec_internal.h"

namespace tx::codec {

int32_t encode_raw(const int8_t* data, int32_t n, uint8_t* out, int32_t capacity) {
  if (n > capacity) return -1;
  if (n > 0) std::memcpy(out, data, static_cast<size_t>(n));  // data may be null when n == 0
  return n;
}

int32_t decode_raw(const uint8_t* in, int32_t size, int8_t* out, int32_t n) {
  if (n > size) return -1;
  if (n > 0) std::memcpy(out, in, static_cast<size_t>(n));
  return n;
}

}  // namespace tx::codec
