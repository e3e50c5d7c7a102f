// kLossless for post-ReLU int8 maps, where most values equal the zero point: a zero map plus
// Rice-coded distances, in blocks of 64 values. Chosen by measurement on real cut tensors
// (bench/codecs.py): it reaches the maps' order-0 entropy (within ~1%, per-block parameters sometimes beat
// it), beats zlib -9 and lz4 and ties zstd -19, at ~27 instructions per byte to encode on qemu-m4.
//
// Stream: byte 0 is the mode, then a bit stream (bits filled from each byte's least significant end):
//   mode 0: every value >= zero_point; u = x - zero_point
//   mode 1: some value < zero_point;   u = zigzag(x - zero_point) = 2d (d >= 0) or -2d - 1 (d < 0)
//   mode 2: stored: n raw bytes follow (when coding would not be smaller), so at most n + 1 bytes.
// Per block of L = min(64, values left) values:
//   1 bit  any value != zero_point; when 0 the block ends here
//   3 bits k (Rice parameter: smallest k with count << (k + 1) >= sum(u - 1), at most 7; within 0.1% of the
//          best k on the KWS maps, where the JPEG-LS rule count << k >= sum cost 5.6% more Rice bits)
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
  // count <= 16: the accumulator holds < 16 bits between calls, so it never overflows 32 bits
  void put(uint32_t value, int count) {
    acc_ |= value << nbits_;
    nbits_ += count;
    if (nbits_ < 16) return;
    if (pos_ + 2 > limit_) { overflow_ = true; pos_ = limit_; nbits_ = 0; acc_ = 0; return; }
    out_[pos_] = static_cast<uint8_t>(acc_);
    out_[pos_ + 1] = static_cast<uint8_t>(acc_ >> 8);
    pos_ += 2;
    acc_ >>= 16;
    nbits_ -= 16;
  }
  // Returns the bytes written, or -1 when they exceed the limit.
  int32_t finish() {
    for (; nbits_ > 0 && !overflow_; nbits_ -= 8, acc_ >>= 8) {
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
  // One Rice code with parameter k: (ones << k) | low bits. Fast path: the whole code is in the accumulator.
  bool rice(int k, uint32_t* value) {
    refill();
    const uint32_t run = acc_ == 0xFFFFFFFFu ? 32 : static_cast<uint32_t>(__builtin_ctz(~acc_));
    const int length = static_cast<int>(run) + 1 + k;
    if (length <= nbits_) {
      // k > 0 implies run + 1 <= 31 (length <= 32), so the shift is defined
      *value = (run << k) | (k > 0 ? (acc_ >> (run + 1)) & ((1u << k) - 1) : 0);
      acc_ = length == 32 ? 0 : acc_ >> length;
      nbits_ -= length;
      consumed_ += length;
      return true;
    }
    uint32_t ones = 0, low = 0;
    if (!unary(&ones) || ones > 511 || !get(k, &low)) return false;
    *value = (ones << k) | low;
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

namespace {

inline int popcount(uint32_t x) {
  x = x - ((x >> 1) & 0x55555555u);
  x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
  return static_cast<int>((((x + (x >> 4)) & 0x0F0F0F0Fu) * 0x01010101u) >> 24);
}

// One block: the zero map (two words) and sum(u - 1) in one pass, then the Rice codes of the nonzero values
// found from the map's set bits.
#if defined(__ARM_FEATURE_DSP)
// The first pass over a whole block of unsigned codes, four values per word: USUB8 on the values biased to
// unsigned gives the four distances and, in its GE flags, whether each is >= 0; a second USUB8 from zero
// flags the distances equal to 0; SEL turns flags into byte masks (each flag-setter and its SEL share one
// asm statement: the compiler does not know SEL reads them). USADA8 adds the four distances to the sum, and
// a multiply gathers the four nonzero flags (bits 0, 8, 16, 24) into bits 28..31. Same results as the
// portable loop; false when a value lies below the zero point.
inline bool scan_block_dsp(const int8_t* block, int8_t zero_point, uint32_t map[2], uint32_t* sum) {
  const uint32_t bias = 0x80808080u, ones = 0xFFFFFFFFu, zero = 0;
  const uint32_t zero4 = (static_cast<uint32_t>(static_cast<uint8_t>(zero_point)) ^ 0x80u) * 0x01010101u;
  uint32_t at_or_above = ones, total = *sum;
  for (int half = 0; half < 2; ++half) {
    uint32_t word = 0;
    for (int group = 0; group < 8; ++group) {
      uint32_t x;
      __builtin_memcpy(&x, block + half * 32 + group * 4, 4);
      uint32_t d, ge, nonzero;
      asm("usub8 %0, %3, %4\n\tsel %1, %5, %6\n\tusub8 %2, %6, %0\n\tsel %2, %6, %5"
          : "=&r"(d), "=&r"(ge), "=&r"(nonzero)
          : "r"(x ^ bias), "r"(zero4), "r"(ones), "r"(zero));
      asm("usada8 %0, %1, %2, %0" : "+r"(total) : "r"(d), "r"(zero));
      at_or_above &= ge;
      word |= (((nonzero & 0x01010101u) * 0x10204080u) >> 28) << (group * 4);
    }
    map[half] = word;
  }
  *sum = total;
  return at_or_above == ones;
}
#endif

// Returns false (nothing written) when a value lies below the zero point and kZigzag is off.
template <bool kZigzag>
bool encode_block(const int8_t* block, int32_t length, int8_t zero_point, BitWriter& bits) {
  uint32_t map[2] = {0, 0};
  uint32_t sum = 0;
  bool scanned = false;
#if defined(__ARM_FEATURE_DSP)
  if (!kZigzag && length == kBlock) {
    if (!scan_block_dsp(block, zero_point, map, &sum)) return false;
    scanned = true;
  }
#endif
  for (int32_t half = 0; !scanned && half * 32 < length; ++half) {
    const int32_t end = length < (half + 1) * 32 ? length : (half + 1) * 32;
    uint32_t word = 0, bit = 1;
    int32_t below = 0;
    for (int32_t i = half * 32; i < end; ++i, bit <<= 1) {
      const int32_t d = block[i] - zero_point;
      if (d != 0) word |= bit;
      below |= d;  // negative when some d < 0
      sum += code_of(d, kZigzag);  // 0 for the zero point
    }
    if (!kZigzag && below < 0) return false;
    map[half] = word;
  }
  const uint32_t count = static_cast<uint32_t>(popcount(map[0]) + popcount(map[1]));
  bits.put(count != 0, 1);
  if (count == 0) return true;
  sum -= count;  // codes of nonzero values are >= 1; Rice codes u - 1
  int k = 0;
  while (k < 7 && (count << (k + 1)) < sum) ++k;
  bits.put(static_cast<uint32_t>(k), 3);
  for (int32_t i = 0; i < length; i += 16) {
    const int m = length - i < 16 ? static_cast<int>(length - i) : 16;
    bits.put((map[i >> 5] >> (i & 31)) & ((1u << m) - 1), m);
  }
  const uint32_t low_mask = (1u << k) - 1;
  for (int word = 0; word < 2; ++word) {
    for (uint32_t rest = map[word]; rest != 0; rest &= rest - 1) {
      const int32_t i = word * 32 + __builtin_ctz(rest);
      const uint32_t v = code_of(block[i] - zero_point, kZigzag) - 1;
      uint32_t q = v >> k;
      if (q + 1 + k <= 16) {  // the usual case: q ones, the terminating zero and the k low bits in one put
        bits.put(((1u << q) - 1) | ((v & low_mask) << (q + 1)), static_cast<int>(q) + 1 + k);
        continue;
      }
      for (; q >= 15; q -= 15) bits.put(0x7FFFu, 15);
      bits.put((1u << q) - 1, static_cast<int>(q) + 1);
      bits.put(v & low_mask, k);
    }
  }
  return true;
}

}  // namespace

int32_t encode_lossless(int8_t zero_point, const int8_t* data, int32_t n, uint8_t* out, int32_t capacity) {
  if (capacity < 1) return -1;
  // Coding stops as soon as it would not beat storing (n bytes) or not fit.
  const int32_t limit = (capacity - 1 < n ? capacity - 1 : n);
  // Post-ReLU maps never go below the zero point: code them unsigned in one pass; on the first value
  // below it, start again with zigzag codes.
  bool zigzag = false;
  BitWriter unsigned_bits(out + 1, limit);
  for (int32_t start = 0; start < n && !unsigned_bits.overflow(); start += kBlock) {
    const int32_t length = n - start < kBlock ? n - start : kBlock;
    if (!encode_block<false>(data + start, length, zero_point, unsigned_bits)) {
      zigzag = true;
      break;
    }
  }
  if (!zigzag && unsigned_bits.overflow()) {  // stopped early: the mode still depends on every value
    for (int32_t i = 0; i < n && !zigzag; ++i) zigzag = data[i] < zero_point;
  }
  BitWriter zigzag_bits(out + 1, limit);
  for (int32_t start = 0; zigzag && start < n && !zigzag_bits.overflow(); start += kBlock) {
    const int32_t length = n - start < kBlock ? n - start : kBlock;
    encode_block<true>(data + start, length, zero_point, zigzag_bits);
  }
  out[0] = zigzag ? kModeZigzag : kModeUnsigned;
  const int32_t coded = zigzag ? zigzag_bits.finish() : unsigned_bits.finish();
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
    uint32_t map[2] = {0, 0};
    for (int32_t i = 0; i < length; i += 16) {
      const int m = length - i < 16 ? static_cast<int>(length - i) : 16;
      uint32_t part = 0;
      if (!bits.get(m, &part)) return -1;
      map[i >> 5] |= part << (i & 31);
    }
    if ((map[0] | map[1]) == 0) return -1;  // the flag promised a nonzero value
    for (int32_t i = 0; i < length; ++i) block[i] = zero_point;
    for (int word = 0; word < 2; ++word) {
      for (uint32_t rest = map[word]; rest != 0; rest &= rest - 1) {
        const int32_t i = word * 32 + __builtin_ctz(rest);
        uint32_t v = 0;
        if (!bits.rice(static_cast<int>(k), &v)) return -1;
        const uint32_t u = v + 1;
        const int32_t d = zigzag ? ((u & 1) ? -static_cast<int32_t>((u + 1) >> 1) : static_cast<int32_t>(u >> 1))
                                 : static_cast<int32_t>(u);
        const int32_t x = zero_point + d;
        if (u > 511 || x < -128 || x > 127) return -1;
        block[i] = static_cast<int8_t>(x);
      }
    }
  }
  return bits.bytes_used() + 1;
}

}  // namespace tx::codec
