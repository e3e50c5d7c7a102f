// kLossless for post-ReLU int8 maps, where most values equal the zero point: a zero map plus
// Rice-coded distances, in blocks of 64 values. Chosen by measurement on real cut tensors
// (bench/codecs.py): it reaches the maps' order-0 entropy within ~2% at a few instructions per value.
//
// Stream: byte 0 is the mode, then a bit stream (bits filled from each byte's least significant end):
//   mode 0: every value >= zero_point; u = x - zero_point
//   mode 1: some value < zero_point;   u = zigzag(x - zero_point) = 2d (d >= 0) or -2d - 1 (d < 0)
//   mode 2: stored: n raw bytes follow (when coding would not be smaller), so at most n + 1 bytes.
// Per block of L = min(64, values left) values:
//   1 bit  any value != zero_point; when 0 the block ends here
//   3 bits k (Rice parameter: smallest k with count << k >= sum(u - 1), at most 7)
//   L bits zero map, 1 where value != zero_point
//   per nonzero value, in order: Rice(u - 1, k) = (u - 1) >> k one bits, a zero bit, then the k low bits.
// The stream ends at the byte holding its last bit (padding bits are zero).
#include "codec_internal.h"

namespace tx::codec {

namespace {

constexpr int32_t kBlock = 64;
constexpr uint8_t kModeUnsigned = 0, kModeZigzag = 1, kModeStored = 2;

class BitWriter {
 public:
  BitWriter(uint8_t* out, int32_t limit) : out_(out), limit_(limit) {}
  // count <= 24
  void put(uint32_t value, int count) {
    acc_ |= value << nbits_;
    nbits_ += count;
    while (nbits_ >= 8) {
      if (pos_ >= limit_) { overflow_ = true; nbits_ = 0; acc_ = 0; return; }
      out_[pos_++] = static_cast<uint8_t>(acc_);
      acc_ >>= 8;
      nbits_ -= 8;
    }
  }
  // Returns the bytes written, or -1 when they exceed the limit.
  int32_t finish() {
    if (nbits_ > 0) {
      if (pos_ >= limit_) overflow_ = true;
      else out_[pos_++] = static_cast<uint8_t>(acc_);
    }
    return overflow_ ? -1 : pos_;
  }
  bool overflow() const { return overflow_; }

 private:
  uint8_t* out_;
  int32_t limit_;
  int32_t pos_ = 0;
  uint32_t acc_ = 0;
  int nbits_ = 0;
  bool overflow_ = false;
};

class BitReader {
 public:
  BitReader(const uint8_t* in, int32_t size) : in_(in), size_(size) {}
  // count <= 24; false when the stream ends first.
  bool get(int count, uint32_t* value) {
    refill();
    if (nbits_ < count) return false;
    *value = acc_ & ((1u << count) - 1);
    acc_ >>= count;
    nbits_ -= count;
    consumed_ += count;
    return true;
  }
  // Counts one bits up to and including the terminating zero bit; false when the stream ends first.
  bool unary(uint32_t* ones) {
    uint32_t total = 0;
    for (;;) {
      refill();
      if (nbits_ == 0) return false;
      const uint32_t run = acc_ == 0xFFFFFFFFu ? 32 : static_cast<uint32_t>(__builtin_ctz(~acc_));
      if (static_cast<int>(run) < nbits_) {
        total += run;
        acc_ = run == 31 ? 0 : acc_ >> (run + 1);
        nbits_ -= static_cast<int>(run) + 1;
        consumed_ += static_cast<int32_t>(run) + 1;
        *ones = total;
        return true;
      }
      total += static_cast<uint32_t>(nbits_);
      consumed_ += nbits_;
      acc_ = 0;
      nbits_ = 0;
      if (total > 1024) return false;  // no valid value needs this many
    }
  }
  // Bytes holding the bits read so far (read-ahead not counted).
  int32_t bytes_used() const { return (consumed_ + 7) / 8; }

 private:
  void refill() {
    while (nbits_ <= 24 && pos_ < size_) {
      acc_ |= static_cast<uint32_t>(in_[pos_++]) << nbits_;
      nbits_ += 8;
    }
  }
  const uint8_t* in_;
  int32_t size_;
  int32_t pos_ = 0;
  int32_t consumed_ = 0;
  uint32_t acc_ = 0;
  int nbits_ = 0;
};

inline uint32_t code_of(int32_t d, bool zigzag) {
  if (!zigzag) return static_cast<uint32_t>(d);
  return d >= 0 ? static_cast<uint32_t>(2 * d) : static_cast<uint32_t>(-2 * d - 1);
}

}  // namespace

int32_t max_lossless_bytes(int32_t n) { return n + 1; }

int32_t encode_lossless(int8_t zero_point, const int8_t* data, int32_t n, uint8_t* out, int32_t capacity) {
  if (capacity < 1) return -1;
  bool zigzag = false;
  for (int32_t i = 0; i < n; ++i) zigzag |= data[i] < zero_point;
  out[0] = zigzag ? kModeZigzag : kModeUnsigned;
  // Coding stops as soon as it would not beat storing (n bytes) or not fit.
  const int32_t limit = (capacity - 1 < n ? capacity - 1 : n);
  BitWriter bits(out + 1, limit);
  for (int32_t start = 0; start < n && !bits.overflow(); start += kBlock) {
    const int32_t length = n - start < kBlock ? n - start : kBlock;
    const int8_t* block = data + start;
    uint32_t count = 0, sum = 0;
    for (int32_t i = 0; i < length; ++i) {
      if (block[i] == zero_point) continue;
      ++count;
      sum += code_of(block[i] - zero_point, zigzag) - 1;
    }
    bits.put(count != 0, 1);
    if (count == 0) continue;
    int k = 0;
    while (k < 7 && (count << k) < sum) ++k;
    bits.put(static_cast<uint32_t>(k), 3);
    for (int32_t i = 0; i < length; i += 8) {
      uint32_t map = 0;
      const int32_t m = length - i < 8 ? length - i : 8;
      for (int32_t j = 0; j < m; ++j) map |= static_cast<uint32_t>(block[i + j] != zero_point) << j;
      bits.put(map, m);
    }
    for (int32_t i = 0; i < length; ++i) {
      if (block[i] == zero_point) continue;
      const uint32_t v = code_of(block[i] - zero_point, zigzag) - 1;
      uint32_t q = v >> k;
      for (; q >= 16; q -= 16) bits.put(0xFFFFu, 16);
      // q ones, the terminating zero, then the k low bits: at most 15 + 1 + 7 bits.
      bits.put(((1u << q) - 1) | ((v & ((1u << k) - 1)) << (q + 1)), static_cast<int>(q) + 1 + k);
    }
  }
  const int32_t coded = bits.finish();
  if (coded >= 0) return coded + 1;
  if (capacity < n + 1) return -1;  // storing does not fit either
  out[0] = kModeStored;
  for (int32_t i = 0; i < n; ++i) out[1 + i] = static_cast<uint8_t>(data[i]);
  return n + 1;
}

int32_t decode_lossless(int8_t zero_point, const uint8_t* in, int32_t size, int8_t* out, int32_t n) {
  if (size < 1) return -1;
  const uint8_t mode = in[0];
  if (mode == kModeStored) {
    if (size - 1 < n) return -1;
    for (int32_t i = 0; i < n; ++i) out[i] = static_cast<int8_t>(in[1 + i]);
    return n + 1;
  }
  if (mode != kModeUnsigned && mode != kModeZigzag) return -1;
  const bool zigzag = mode == kModeZigzag;
  BitReader bits(in + 1, size - 1);
  for (int32_t start = 0; start < n; start += kBlock) {
    const int32_t length = n - start < kBlock ? n - start : kBlock;
    int8_t* block = out + start;
    uint32_t any = 0, k = 0;
    if (!bits.get(1, &any)) return -1;
    if (!any) {
      for (int32_t i = 0; i < length; ++i) block[i] = zero_point;
      continue;
    }
    if (!bits.get(3, &k)) return -1;
    uint32_t count = 0;
    for (int32_t i = 0; i < length; i += 8) {
      const int32_t m = length - i < 8 ? length - i : 8;
      uint32_t map = 0;
      if (!bits.get(m, &map)) return -1;
      for (int32_t j = 0; j < m; ++j) {
        const bool nonzero = (map >> j) & 1;
        block[i + j] = nonzero ? 1 : 0;  // marks; values follow
        count += nonzero;
      }
    }
    if (count == 0) return -1;  // the flag promised a nonzero value
    for (int32_t i = 0; i < length; ++i) {
      if (block[i] == 0) { block[i] = zero_point; continue; }
      uint32_t q = 0, low = 0;
      if (!bits.unary(&q) || q > 511 || !bits.get(static_cast<int>(k), &low)) return -1;
      const uint32_t u = ((q << k) | low) + 1;
      const int32_t d = zigzag ? ((u & 1) ? -static_cast<int32_t>((u + 1) >> 1) : static_cast<int32_t>(u >> 1))
                               : static_cast<int32_t>(u);
      const int32_t x = zero_point + d;
      if (u > 511 || x < -128 || x > 127) return -1;
      block[i] = static_cast<int8_t>(x);
    }
  }
  return bits.bytes_used() + 1;
}

}  // namespace tx::codec
