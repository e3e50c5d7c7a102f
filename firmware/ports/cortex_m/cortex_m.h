// Shared by the Cortex-M board ports (stm32l4, stm32h7, nrf52840, rp2040): the reset sequence, the DWT cycle
// counter and a millisecond timeout on top of any cycle counter. Header only, so each port folder stays the
// one list of .cc files the build globs.
#pragma once

#include <cstdint>

extern "C" {
extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
extern void (*__init_array_start[])(), (*__init_array_end[])();
extern uint32_t __vectors_start;
int main(int, char**);
}

namespace tx::cortex_m {

inline volatile uint32_t& reg(uint32_t address) { return *reinterpret_cast<volatile uint32_t*>(address); }

// Copy .data, zero .bss, point VTOR at our table (a bootloader may have run first), enable the FPU, run
// static constructors, call main.
[[noreturn]] inline void start() {
  for (uint32_t *src = &__data_load, *dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
  reg(0xE000ED08) = reinterpret_cast<uint32_t>(&__vectors_start);  // SCB->VTOR
#if defined(__ARM_FP)
  reg(0xE000ED88) |= 0xFu << 20;  // CPACR: CP10, CP11 full access
  asm volatile("dsb\n isb");
#endif
  for (auto f = __init_array_start; f < __init_array_end; ++f) (*f)();
  main(0, nullptr);
  for (;;) asm volatile("wfi");
}

[[noreturn]] inline void halt() {
  for (;;) asm volatile("wfi");
}

#if !defined(__ARM_ARCH_6M__)
// DWT CYCCNT (ARMv7-M and later): the core's own cycle counter. Cortex-M7 parts such as the STM32H7 keep
// the DWT locked until its lock access register is written; on the M4 that register is not there.
inline void dwt_enable(bool unlock = false) {
  reg(0xE000EDFC) |= 1u << 24;  // DEMCR.TRCENA
  if (unlock) reg(0xE0001FB0) = 0xC5ACCE55;  // DWT_LAR
  reg(0xE0001004) = 0;           // CYCCNT
  reg(0xE0001000) |= 1u;         // DWT_CTRL.CYCCNTENA
}
inline uint32_t dwt_cycles() { return reg(0xE0001004); }
#endif

// Waits for ready() at most timeout_ms (negative: forever) on a wrapping 32-bit cycle counter at clock_hz;
// elapsed time is accumulated per poll so long timeouts survive counter wraps. True if ready() came first.
template <typename Ready, typename Counter>
bool wait_until(Ready ready, int32_t timeout_ms, uint32_t clock_hz, Counter counter) {
  const uint64_t limit = static_cast<uint64_t>(timeout_ms) * (clock_hz / 1000u);
  uint64_t elapsed = 0;
  uint32_t last = counter();
  while (!ready()) {
    if (timeout_ms < 0) continue;
    const uint32_t now = counter();
    elapsed += now - last;
    last = now;
    if (elapsed > limit) return false;
  }
  return true;
}

}  // namespace tx::cortex_m

// The vector table's first 16 entries (stack, reset, core exceptions). Peripheral interrupts stay off, so
// no device-specific entries are needed.
#define TX_CORTEX_M_VECTORS(systick)                                                                           \
  extern "C" [[noreturn]] void reset_handler() { tx::cortex_m::start(); }                                     \
  extern "C" [[noreturn]] void fault_handler() { tx::cortex_m::halt(); }                                      \
  __attribute__((section(".vectors"), used)) static void (*const tx_vectors[16])() = {                       \
      reinterpret_cast<void (*)()>(&__stack_top), reset_handler, fault_handler, fault_handler, fault_handler, \
      fault_handler, fault_handler, nullptr, nullptr, nullptr, nullptr, fault_handler, fault_handler, nullptr, \
      fault_handler, systick}
