// ESP32-S3-DevKitC-1 port (Xtensa LX7, core 0), kept small: it CANNOT be compiled on this project's machines
// (Espressif's xtensa-esp32s3-elf GCC is not packaged for Debian), so it has never been built or run.
// The image is loaded by the ROM bootloader straight into internal SRAM (esptool elf2image, written at flash
// offset 0): no flash cache set-up, no second-stage bootloader. UART0 stays as the ROM configured it (115200
// 8N1, through the board's USB-UART bridge); CCOUNT counts core cycles. The core stays at the ROM's clock:
// cycle counts of code in SRAM do not depend on it, and boards/esp32s3.yaml prices them at 240 MHz.
// Register addresses from the ESP32-S3 Technical Reference Manual.
#include <cstdint>

#include "tinyexit/platform.h"

extern "C" {
extern uint32_t __bss_start, __bss_end;
extern void (*__init_array_start[])(), (*__init_array_end[])();
int main(int, char**);
}

namespace {

volatile uint32_t& reg(uint32_t address) { return *reinterpret_cast<volatile uint32_t*>(address); }

constexpr uint32_t kUart0 = 0x60000000, kTimg0 = 0x6001F000, kRtcCntl = 0x60008000;
constexpr uint32_t kRomClockHz = 40000000;  // the ROM bootloader runs the core from the 40 MHz crystal
constexpr uint32_t kWdtKey = 0x50D83AA1, kSuperWdtKey = 0x8F1D312A;

// The ROM leaves the group-0 timer watchdog, the RTC watchdog and the super watchdog armed.
void watchdogs_off() {
  reg(kTimg0 + 0x64) = kWdtKey;      // TIMG0 WDTWPROTECT
  reg(kTimg0 + 0x48) = 0;            // WDTCONFIG0: off
  reg(kTimg0 + 0x64) = 0;
  reg(kRtcCntl + 0xB0) = kWdtKey;    // RTC_CNTL WDTWPROTECT
  reg(kRtcCntl + 0x98) = 0;          // WDTCONFIG0: off
  reg(kRtcCntl + 0xB0) = 0;
  reg(kRtcCntl + 0xB8) = kSuperWdtKey;  // SWD_WPROTECT
  reg(kRtcCntl + 0xB4) |= 1u << 30;     // SWD_CONF.SWD_DISABLE
  reg(kRtcCntl + 0xB8) = 0;
}

uint32_t ccount() {
  uint32_t c;
  asm volatile("rsr %0, ccount" : "=a"(c));
  return c;
}

}  // namespace

// Entry point named in the image header; the ROM's stack is kept.
extern "C" [[noreturn]] void call_start_cpu0() {
  for (uint32_t* p = &__bss_start; p < &__bss_end;) *p++ = 0;
  watchdogs_off();
  for (auto f = __init_array_start; f < __init_array_end; ++f) (*f)();
  main(0, nullptr);
  for (;;) {
  }
}

namespace tx::platform {

void init(int, char**) {}

int read_byte(int32_t timeout_ms) {
  const uint32_t start = ccount();
  const uint64_t limit = static_cast<uint64_t>(timeout_ms) * (kRomClockHz / 1000);  // < 2^32 for 100 s
  while (!(reg(kUart0 + 0x1C) & 0x3FF)) {  // STATUS.RXFIFO_CNT
    if (timeout_ms >= 0 && ccount() - start > limit) return -2;
  }
  return static_cast<int>(reg(kUart0 + 0x00) & 0xFF);
}

void write_bytes(const uint8_t* data, size_t size) {
  for (size_t i = 0; i < size; ++i) {
    while (((reg(kUart0 + 0x1C) >> 16) & 0x3FF) >= 127) {  // STATUS.TXFIFO_CNT: 128-byte FIFO full
    }
    reg(kUart0 + 0x00) = data[i];
  }
}

uint32_t cycles() { return ccount(); }
uint32_t cycles_aligned() { return ccount(); }
const char* cycle_unit() { return "cycles"; }
const char* name() { return TX_PORT_NAME; }
[[noreturn]] void exit(int) {
  for (;;) {
  }
}

}  // namespace tx::platform
