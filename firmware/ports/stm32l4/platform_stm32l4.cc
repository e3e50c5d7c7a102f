// ST NUCLEO-L4R5ZI port (STM32L4R5ZI, Cortex-M4F): 120 MHz from PLL(HSI16) in Range 1 boost mode; the serial
// link is LPUART1 on PG7/PG8, which the board wires to the ST-LINK's virtual COM port; DWT CYCCNT counts
// core cycles. Register addresses from RM0432 (STM32L4+ reference manual).
#include <cstdint>

#include "../cortex_m/cortex_m.h"
#include "tinyexit/platform.h"

static_assert(TX_CLOCK_HZ == 120000000, "the clock set-up below makes 120 MHz; boards/nucleo-l4r5zi.yaml must agree");

namespace {

using tx::cortex_m::reg;

constexpr uint32_t kRcc = 0x40021000, kPwr = 0x40007000, kFlash = 0x40022000, kGpioG = 0x48001800,
                   kLpuart1 = 0x40008000;
constexpr uint32_t kHsiHz = 16000000;

void clock_120mhz() {
  reg(kRcc + 0x58) |= 1u << 28;                     // APB1ENR1.PWREN
  reg(kPwr + 0x80) &= ~(1u << 8);                   // CR5.R1MODE = 0: Range 1 boost, needed above 80 MHz
  reg(kFlash + 0x00) = 5u | (1u << 8) | (1u << 9) | (1u << 10);  // 5 wait states, prefetch, I and D cache
  while ((reg(kFlash + 0x00) & 0xF) != 5) {
  }
  reg(kRcc + 0x00) |= 1u << 8;  // HSION
  while (!(reg(kRcc + 0x00) & (1u << 10))) {
  }
  // PLL: HSI16 / M(1) * N(15) = 240 MHz VCO, / R(2) = 120 MHz
  reg(kRcc + 0x0C) = 2u | (0u << 4) | (15u << 8) | (1u << 24);
  reg(kRcc + 0x00) |= 1u << 24;  // PLLON
  while (!(reg(kRcc + 0x00) & (1u << 25))) {
  }
  // Going above 80 MHz: AHB /2 first, switch, then /1 after at least 1 us (RM0432 clock switch procedure)
  reg(kRcc + 0x08) = (reg(kRcc + 0x08) & ~0xF0u) | (0x8u << 4);
  reg(kRcc + 0x08) = (reg(kRcc + 0x08) & ~0x3u) | 3u;  // SW = PLL
  while (((reg(kRcc + 0x08) >> 2) & 3u) != 3u) {
  }
  for (volatile int i = 0; i < 200; ++i) {
  }
  reg(kRcc + 0x08) &= ~0xF0u;
}

void lpuart1_on_pg7_pg8() {
  reg(kPwr + 0x04) |= 1u << 9;                      // CR2.IOSV: port G[15:2] is powered from VDDIO2
  reg(kRcc + 0x4C) |= 1u << 6;                      // AHB2ENR.GPIOGEN
  reg(kRcc + 0x5C) |= 1u << 0;                      // APB1ENR2.LPUART1EN
  reg(kRcc + 0x88) = (reg(kRcc + 0x88) & ~(3u << 10)) | (2u << 10);  // LPUART1 kernel clock = HSI16
  uint32_t moder = reg(kGpioG + 0x00);
  moder &= ~((3u << 14) | (3u << 16));
  reg(kGpioG + 0x00) = moder | (2u << 14) | (2u << 16);              // PG7, PG8 alternate function
  reg(kGpioG + 0x20) = (reg(kGpioG + 0x20) & ~(0xFu << 28)) | (8u << 28);  // AFRL7 = AF8
  reg(kGpioG + 0x24) = (reg(kGpioG + 0x24) & ~0xFu) | 8u;                  // AFRH8 = AF8
  reg(kLpuart1 + 0x0C) = static_cast<uint32_t>((256ull * kHsiHz + TX_BAUD / 2) / TX_BAUD);  // BRR
  reg(kLpuart1 + 0x00) = (1u << 0) | (1u << 2) | (1u << 3);                       // UE, RE, TE
}

uint32_t counter() { return tx::cortex_m::dwt_cycles(); }

}  // namespace

extern "C" void systick_handler() {}
TX_CORTEX_M_VECTORS(systick_handler);

namespace tx::platform {

void init(int, char**) {
  clock_120mhz();
  lpuart1_on_pg7_pg8();
  cortex_m::dwt_enable();
}

int read_byte(int32_t timeout_ms) {
  reg(kLpuart1 + 0x20) = 1u << 3;  // ICR.ORECF: an overrun must not stall reception
  const bool ready = cortex_m::wait_until([] { return (reg(kLpuart1 + 0x1C) & (1u << 5)) != 0; }, timeout_ms,
                                          TX_CLOCK_HZ, counter);
  return ready ? static_cast<int>(reg(kLpuart1 + 0x24) & 0xFF) : -2;
}

void write_bytes(const uint8_t* data, size_t size) {
  for (size_t i = 0; i < size; ++i) {
    while (!(reg(kLpuart1 + 0x1C) & (1u << 7))) {  // TXE
    }
    reg(kLpuart1 + 0x28) = data[i];
  }
}

uint32_t cycles() { return counter(); }
uint32_t cycles_aligned() { return counter(); }  // a real cycle counter: nothing to align to
const char* cycle_unit() { return "cycles"; }
const char* name() { return TX_PORT_NAME; }
[[noreturn]] void exit(int) { cortex_m::halt(); }

}  // namespace tx::platform
