// QEMU MPS2/MPS3 port (mps2-an386 Cortex-M4, mps2-an500 Cortex-M7, mps3-an547 Cortex-M55): CMSDK UART,
// SysTick as the counter, semihosting to exit and for the host's files (BATCH). Under `qemu -icount shift=0` one instruction takes 1 ns and
// SysTick runs at the board's SYSCLK (MPS2 25 MHz: 40 instructions per tick; AN547 32 MHz: 31.25), so
// cycles() reports instructions, not real core cycles. TX_SYSCLK_HZ comes from the build.
#include <cstdint>

#include "tinyexit/platform.h"

namespace {

struct Uart {
  volatile uint32_t data, state, ctrl, intstatus, bauddiv;
};
Uart* const uart = reinterpret_cast<Uart*>(TX_UART_BASE);

volatile uint32_t* const syst_csr = reinterpret_cast<volatile uint32_t*>(0xE000E010);
volatile uint32_t* const syst_rvr = reinterpret_cast<volatile uint32_t*>(0xE000E014);
volatile uint32_t* const syst_cvr = reinterpret_cast<volatile uint32_t*>(0xE000E018);
constexpr uint32_t kReload = 0xFFFFFF;
constexpr uint64_t kSysclkHz = TX_SYSCLK_HZ;
constexpr uint32_t kTicksPerMs = static_cast<uint32_t>(kSysclkHz / 1000);
volatile uint32_t wraps = 0;

uint32_t ticks() {
  uint32_t high, low;
  do {  // re-read if SysTick wrapped between the two reads
    high = wraps;
    low = kReload - *syst_cvr;
  } while (high != wraps);
  return high * (kReload + 1) + low;
}

// An Arm semihosting call (QEMU runs with -semihosting-config enable=on,target=native): r0 = operation,
// r1 = its argument block; the result comes back in r0.
int32_t semihost(uint32_t operation, const uint32_t* block) {
  register uint32_t r0 asm("r0") = operation;
  register const uint32_t* r1 asm("r1") = block;
  asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return static_cast<int32_t>(r0);
}
constexpr uint32_t kSysOpen = 0x01, kSysClose = 0x02, kSysWrite = 0x05, kSysRead = 0x06, kSysSeek = 0x0A;
constexpr uint32_t kModeReadBinary = 1, kModeWriteBinary = 5;  // fopen's "rb" and "wb"

uint32_t word(const void* pointer) { return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(pointer)); }

}  // namespace

extern "C" void systick_handler() { wraps = wraps + 1; }

namespace tx::platform {

void init(int, char**) {
  uart->bauddiv = 16;
  uart->ctrl = 3;  // TX and RX on
  *syst_rvr = kReload;
  *syst_cvr = 0;
  *syst_csr = 7;  // processor clock, interrupt on wrap, enabled
}

int read_byte(int32_t timeout_ms) {
  const uint32_t start = ticks();
  while (!(uart->state & 2)) {
    if (timeout_ms >= 0 && ticks() - start > static_cast<uint32_t>(timeout_ms) * kTicksPerMs) return -2;
  }
  return static_cast<int>(uart->data & 0xFF);
}

void write_bytes(const uint8_t* data, size_t size) {
  for (size_t i = 0; i < size; ++i) {
    while (uart->state & 1) {
    }
    uart->data = data[i];
  }
}

// ticks * (1e9 / SYSCLK) instructions, i.e. nanoseconds of -icount virtual time
uint32_t cycles() { return static_cast<uint32_t>(uint64_t{ticks()} * 1000000000u / kSysclkHz); }

// Restarting SysTick re-bases QEMU's timer on the current instruction, so the ticks that follow fall at
// the same instructions every run, whenever the request arrived over the serial link.
uint32_t cycles_aligned() {
  *syst_csr = 0;
  *syst_cvr = 0;  // a write clears the counter; it reloads on the next tick
  wraps = 0;
  *syst_csr = 7;
  while (*syst_cvr == 0) {
  }
  return cycles();
}
const char* cycle_unit() { return "instructions"; }

int32_t file_open(const char* name, size_t length, bool write) {
  const uint32_t block[3] = {word(name), write ? kModeWriteBinary : kModeReadBinary, static_cast<uint32_t>(length)};
  const int32_t handle = semihost(kSysOpen, block);
  return handle >= 0 ? handle : kFileFailed;
}

bool file_seek(int32_t handle, uint32_t offset) {
  const uint32_t block[2] = {static_cast<uint32_t>(handle), offset};
  return semihost(kSysSeek, block) == 0;
}

// SYS_READ and SYS_WRITE answer the number of bytes NOT transferred
bool file_read(int32_t handle, uint8_t* data, size_t size) {
  const uint32_t block[3] = {static_cast<uint32_t>(handle), word(data), static_cast<uint32_t>(size)};
  return semihost(kSysRead, block) == 0;
}

bool file_write(int32_t handle, const uint8_t* data, size_t size) {
  const uint32_t block[3] = {static_cast<uint32_t>(handle), word(data), static_cast<uint32_t>(size)};
  return semihost(kSysWrite, block) == 0;
}

void file_close(int32_t handle) {
  const uint32_t block[1] = {static_cast<uint32_t>(handle)};
  semihost(kSysClose, block);
}
const char* name() { return TX_PORT_NAME; }

[[noreturn]] void exit(int code) {
  // semihosting SYS_EXIT_EXTENDED: {ADP_Stopped_ApplicationExit, code}
  volatile uint32_t block[2] = {0x20026, static_cast<uint32_t>(code)};
  register uint32_t r0 asm("r0") = 0x20;
  register volatile uint32_t* r1 asm("r1") = block;
  asm volatile("bkpt 0xAB" : : "r"(r0), "r"(r1) : "memory");
  for (;;) {
  }
}

}  // namespace tx::platform
