// Raspberry Pi Pico port (RP2040, Cortex-M0+ at 125 MHz, one core): the 12 MHz crystal and PLL_SYS for the
// clock; UART0 on GP0 (TX) / GP1 (RX), through a USB-serial adapter or a debug probe's UART (the Pico's USB
// socket is the RP2040's own USB controller, for which this port has no stack); the M0+ has no DWT cycle
// counter, so SysTick on the core clock, extended to 32 bits by its wrap interrupt, counts cycles.
// Register addresses from the RP2040 datasheet.
#include <cstdint>

#include "../cortex_m/cortex_m.h"
#include "tinyexit/platform.h"

static_assert(TX_CLOCK_HZ == 125000000, "PLL_SYS below makes 125 MHz; boards/pico.yaml must agree");

// Second-stage boot (the bootrom copies flash's first 256 bytes to SRAM, checks their CRC-32 and runs them):
// ask the bootrom to set up execute-in-place with plain 03h reads (its flash_enter_cmd_xip, found through
// its table lookup with code 'C','X'), then enter the application's vector table at 0x10000100. The last
// word is the CRC-32 (polynomial 0x04C11DB7, initial 0xFFFFFFFF, not reflected) of the 252 bytes before it;
// tests/test_boards.py recomputes it from the linked ELF.
asm(R"(
  .section .boot2, "ax"
  .syntax unified
  .thumb
  .balign 4
tx_boot2:
  movs r0, #0x14
  ldrh r0, [r0]         @ bootrom function table
  movs r2, #0x18
  ldrh r2, [r2]         @ bootrom table lookup
  ldr r1, =0x5843       @ 'C' | 'X' << 8: flash_enter_cmd_xip
  blx r2
  blx r0
  ldr r0, =0x10000100   @ the application's vector table
  ldr r1, =0xE000ED08   @ VTOR
  str r0, [r1]
  ldmia r0!, {r1, r2}
  msr msp, r1
  bx r2
  .ltorg
  .space 252 - (. - tx_boot2)
  .word 0xc5392de7
  .text
)");

namespace {

using tx::cortex_m::reg;

constexpr uint32_t kResets = 0x4000C000, kClocks = 0x40008000, kXosc = 0x40024000, kPllSys = 0x40028000,
                   kIoBank0 = 0x40014000, kUart0 = 0x40034000;
constexpr uint32_t kAliasSet = 0x2000, kAliasClear = 0x3000;  // atomic bit set / clear register aliases
constexpr uint32_t kResetIoBank0 = 1u << 5, kResetPadsBank0 = 1u << 8, kResetPllSys = 1u << 12,
                   kResetUart0 = 1u << 22;

void unreset(uint32_t bits) {
  reg(kResets + kAliasClear) = bits;
  while ((reg(kResets + 0x8) & bits) != bits) {
  }
}

void clock_125mhz() {
  reg(kXosc + 0x0C) = 47;                          // STARTUP delay: ~1 ms at 12 MHz, in units of 256 cycles
  reg(kXosc + 0x00) = (0xFABu << 12) | 0xAA0u;     // ENABLE, 1-15 MHz range
  while (!(reg(kXosc + 0x04) & (1u << 31))) {      // STABLE
  }
  reg(kClocks + 0x30) = 2;                         // clk_ref = XOSC
  while (reg(kClocks + 0x38) != (1u << 2)) {
  }
  reg(kClocks + 0x3C) = 0;                         // clk_sys = clk_ref while PLL_SYS is set up
  while (reg(kClocks + 0x44) != 1u) {
  }
  reg(kResets + kAliasSet) = kResetPllSys;
  unreset(kResetPllSys);
  // 12 MHz / 1 * 125 = 1500 MHz VCO, / 6 / 2 = 125 MHz
  reg(kPllSys + 0x0) = 1;                          // REFDIV
  reg(kPllSys + 0x8) = 125;                        // FBDIV_INT
  reg(kPllSys + 0x4 + kAliasClear) = (1u << 0) | (1u << 5);  // power up the PLL and its VCO
  while (!(reg(kPllSys + 0x0) & (1u << 31))) {     // LOCK
  }
  reg(kPllSys + 0xC) = (6u << 16) | (2u << 12);    // POSTDIV1, POSTDIV2
  reg(kPllSys + 0x4 + kAliasClear) = 1u << 3;      // power up the post dividers
  reg(kClocks + 0x3C) = 0u << 5;                   // aux source: PLL_SYS
  reg(kClocks + 0x3C) = (0u << 5) | 1u;            // clk_sys = aux
  while (reg(kClocks + 0x44) != 2u) {
  }
  reg(kClocks + 0x48) = 1u << 11;                  // clk_peri on, from clk_sys
}

void uart0_on_gp0_gp1() {
  unreset(kResetIoBank0 | kResetPadsBank0 | kResetUart0);
  reg(kIoBank0 + 0x04) = 2;                        // GPIO0 function: UART0 TX
  reg(kIoBank0 + 0x0C) = 2;                        // GPIO1 function: UART0 RX
  // PL011 divisor = clk_peri / (16 * baud) with 6 fractional bits, i.e. 64 * divisor = 4 * clk_peri / baud;
  // LCR_H must be written after it
  constexpr uint32_t kDiv64 = static_cast<uint32_t>((4ull * TX_CLOCK_HZ + TX_BAUD / 2) / TX_BAUD);
  reg(kUart0 + 0x24) = kDiv64 >> 6;                // IBRD
  reg(kUart0 + 0x28) = kDiv64 & 0x3F;              // FBRD
  reg(kUart0 + 0x2C) = (3u << 5) | (1u << 4);      // 8 bits, FIFOs on
  reg(kUart0 + 0x30) = (1u << 0) | (1u << 8) | (1u << 9);  // UARTEN, TXE, RXE
}

constexpr uint32_t kSysTickCsr = 0xE000E010, kSysTickRvr = 0xE000E014, kSysTickCvr = 0xE000E018,
                   kIcsr = 0xE000ED04, kReload = 0xFFFFFF;
volatile uint32_t wraps = 0;

uint32_t counter() {
  asm volatile("cpsid i" ::: "memory");
  uint32_t high = wraps;
  uint32_t low = kReload - reg(kSysTickCvr);
  if (reg(kIcsr) & (1u << 26)) {  // PENDSTSET: wrapped, handler not run yet; re-read after the wrap
    low = kReload - reg(kSysTickCvr);
    high += 1;
  }
  asm volatile("cpsie i" ::: "memory");
  return high * (kReload + 1) + low;
}

}  // namespace

extern "C" void systick_handler() { wraps = wraps + 1; }
TX_CORTEX_M_VECTORS(systick_handler);

namespace tx::platform {

void init(int, char**) {
  clock_125mhz();
  uart0_on_gp0_gp1();
  reg(kSysTickRvr) = kReload;
  reg(kSysTickCvr) = 0;
  reg(kSysTickCsr) = 7;  // core clock, interrupt on wrap, enabled
}

int read_byte(int32_t timeout_ms) {
  const bool ready = cortex_m::wait_until([] { return !(reg(kUart0 + 0x18) & (1u << 4)); }, timeout_ms,  // RXFE
                                          TX_CLOCK_HZ, counter);
  return ready ? static_cast<int>(reg(kUart0 + 0x00) & 0xFF) : -2;
}

void write_bytes(const uint8_t* data, size_t size) {
  for (size_t i = 0; i < size; ++i) {
    while (reg(kUart0 + 0x18) & (1u << 5)) {  // TXFF
    }
    reg(kUart0 + 0x00) = data[i];
  }
}

uint32_t cycles() { return counter(); }
uint32_t cycles_aligned() { return counter(); }
const char* cycle_unit() { return "cycles"; }
const char* name() { return TX_PORT_NAME; }
[[noreturn]] void exit(int) { cortex_m::halt(); }

}  // namespace tx::platform
