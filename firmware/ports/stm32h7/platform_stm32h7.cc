// ST NUCLEO-H7A3ZI-Q port (STM32H7A3ZI, Cortex-M7): 280 MHz from PLL1(HSI 64 MHz) at VOS0, powered by the
// internal SMPS as the "-Q" board is wired; the serial link is USART3 on PD8/PD9, the ST-LINK's virtual COM
// port; DWT CYCCNT counts core cycles. Register addresses from RM0455 (STM32H7A3/7B3 reference manual).
// The caches stay off: counts then do not depend on what ran before.
#include <cstdint>

#include "../cortex_m/cortex_m.h"
#include "tinyexit/platform.h"

static_assert(TX_CLOCK_HZ == 280000000, "the clock set-up below makes 280 MHz; boards/nucleo-h7a3zi-q.yaml must agree");

namespace {

using tx::cortex_m::reg;

constexpr uint32_t kRcc = 0x58024400, kPwr = 0x58024800, kFlash = 0x52002000, kGpioD = 0x58020C00,
                   kUsart3 = 0x40004800;
constexpr uint32_t kHsiHz = 64000000;

void wait_set(uint32_t address, uint32_t bit) {
  while (!(reg(address) & bit)) {
  }
}

void clock_280mhz() {
  // Supply configuration (write-once after reset): direct SMPS, LDO off, as the -Q board is wired.
  reg(kPwr + 0x0C) = 1u << 2;
  wait_set(kPwr + 0x04, 1u << 13);                                      // CSR1.ACTVOSRDY
  reg(kPwr + 0x18) = (reg(kPwr + 0x18) & ~(3u << 14)) | (3u << 14);     // SRDCR.VOS = VOS0
  wait_set(kPwr + 0x18, 1u << 13);                                      // SRDCR.VOSRDY
  reg(kFlash + 0x00) = 6u | (3u << 4);                                  // 6 wait states, WRHIGHFREQ 3
  while ((reg(kFlash + 0x00) & 0xF) != 6) {
  }
  // Buses: CPU and AXI at 280 MHz, every APB at 140 MHz
  reg(kRcc + 0x18) = (4u << 4);               // CDCFGR1: CDCPRE /1, HPRE /1, CDPPRE /2
  reg(kRcc + 0x1C) = (4u << 4) | (4u << 8);   // CDCFGR2: CDPPRE1 /2, CDPPRE2 /2
  reg(kRcc + 0x20) = (4u << 4);               // SRDCFGR: SRDPPRE /2
  // PLL1: HSI / M(4) = 16 MHz reference (range 8-16 MHz), * N(35) = 560 MHz VCO (wide), / P(2) = 280 MHz
  reg(kRcc + 0x28) = 0u | (4u << 4);                         // PLLCKSELR: source HSI, DIVM1 4
  reg(kRcc + 0x2C) = (3u << 2) | (1u << 16);                 // PLLCFGR: PLL1RGE 8-16 MHz, DIVP1EN
  reg(kRcc + 0x30) = (35u - 1) | ((2u - 1) << 9) | ((2u - 1) << 16) | ((2u - 1) << 24);  // PLL1DIVR
  reg(kRcc + 0x00) |= 1u << 24;                              // PLL1ON
  wait_set(kRcc + 0x00, 1u << 25);                           // PLL1RDY
  reg(kRcc + 0x10) = (reg(kRcc + 0x10) & ~7u) | 3u;          // CFGR.SW = PLL1
  while (((reg(kRcc + 0x10) >> 3) & 7u) != 3u) {
  }
}

void usart3_on_pd8_pd9() {
  reg(kRcc + 0xE0) |= 1u << 3;                                      // AHB4ENR.GPIODEN
  reg(kRcc + 0xE8) |= 1u << 18;                                     // APB1LENR.USART3EN
  reg(kRcc + 0x54) = (reg(kRcc + 0x54) & ~7u) | 3u;                 // CDCCIP2R: USART3 kernel clock = HSI
  uint32_t moder = reg(kGpioD + 0x00);
  moder &= ~((3u << 16) | (3u << 18));
  reg(kGpioD + 0x00) = moder | (2u << 16) | (2u << 18);             // PD8, PD9 alternate function
  reg(kGpioD + 0x24) = (reg(kGpioD + 0x24) & ~0xFFu) | 0x77u;       // AFRH: AF7 on PD8, PD9
  reg(kUsart3 + 0x0C) = (kHsiHz + TX_BAUD / 2) / TX_BAUD;           // BRR, oversampling by 16
  reg(kUsart3 + 0x00) = (1u << 0) | (1u << 2) | (1u << 3);          // UE, RE, TE
}

uint32_t counter() { return tx::cortex_m::dwt_cycles(); }

}  // namespace

extern "C" void systick_handler() {}
TX_CORTEX_M_VECTORS(systick_handler);

namespace tx::platform {

void init(int, char**) {
  clock_280mhz();
  usart3_on_pd8_pd9();
  cortex_m::dwt_enable(/*unlock=*/true);
}

int read_byte(int32_t timeout_ms) {
  reg(kUsart3 + 0x20) = 1u << 3;  // ICR.ORECF
  const bool ready = cortex_m::wait_until([] { return (reg(kUsart3 + 0x1C) & (1u << 5)) != 0; }, timeout_ms,
                                          TX_CLOCK_HZ, counter);
  return ready ? static_cast<int>(reg(kUsart3 + 0x24) & 0xFF) : -2;
}

void write_bytes(const uint8_t* data, size_t size) {
  for (size_t i = 0; i < size; ++i) {
    while (!(reg(kUsart3 + 0x1C) & (1u << 7))) {  // TXE (TX FIFO not full)
    }
    reg(kUsart3 + 0x28) = data[i];
  }
}

uint32_t cycles() { return counter(); }
uint32_t cycles_aligned() { return counter(); }
const char* cycle_unit() { return "cycles"; }
const char* name() { return TX_PORT_NAME; }
[[noreturn]] void exit(int) { cortex_m::halt(); }

}  // namespace tx::platform
