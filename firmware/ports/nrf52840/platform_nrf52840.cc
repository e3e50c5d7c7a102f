// Arduino Nano 33 BLE port (nRF52840, Cortex-M4F at 64 MHz): the crystal oscillator for an accurate baud
// rate; UART0 on the header's TX/RX pins (P1.03 / P1.10, a USB-serial adapter is needed: the board's USB
// socket is the nRF52840's own USB controller, for which this port has no stack); DWT CYCCNT counts core
// cycles. Register addresses from the nRF52840 Product Specification v1.7.
#include <cstdint>

#include "../cortex_m/cortex_m.h"
#include "tinyexit/platform.h"

static_assert(TX_CLOCK_HZ == 64000000, "the nRF52840 core runs at 64 MHz; boards/nano33ble.yaml must agree");
static_assert(TX_BAUD == 115200, "the BAUDRATE register value below is for 115200 baud");

namespace {

using tx::cortex_m::reg;

constexpr uint32_t kClock = 0x40000000, kUart0 = 0x40002000;
constexpr uint32_t kPinTx = (1u << 5) | 3u, kPinRx = (1u << 5) | 10u;  // P1.03 (D1/TX), P1.10 (D0/RX)

uint32_t counter() { return tx::cortex_m::dwt_cycles(); }

}  // namespace

extern "C" void systick_handler() {}
TX_CORTEX_M_VECTORS(systick_handler);

namespace tx::platform {

void init(int, char**) {
  reg(kClock + 0x100) = 0;           // EVENTS_HFCLKSTARTED
  reg(kClock + 0x000) = 1;           // TASKS_HFCLKSTART: 64 MHz crystal
  while (!reg(kClock + 0x100)) {
  }
  reg(kUart0 + 0x50C) = kPinTx;      // PSEL.TXD
  reg(kUart0 + 0x514) = kPinRx;      // PSEL.RXD
  reg(kUart0 + 0x524) = 0x01D7E000;  // BAUDRATE: 115200
  reg(kUart0 + 0x56C) = 0;           // CONFIG: 8N1, no flow control
  reg(kUart0 + 0x500) = 4;           // ENABLE: UART
  reg(kUart0 + 0x108) = 0;           // EVENTS_RXDRDY
  reg(kUart0 + 0x000) = 1;           // TASKS_STARTRX
  reg(kUart0 + 0x008) = 1;           // TASKS_STARTTX
  cortex_m::dwt_enable();
}

int read_byte(int32_t timeout_ms) {
  const bool ready = cortex_m::wait_until([] { return reg(kUart0 + 0x108) != 0; }, timeout_ms, TX_CLOCK_HZ, counter);
  if (!ready) return -2;
  reg(kUart0 + 0x108) = 0;  // clear the event before reading RXD, so a byte arriving meanwhile raises it again
  return static_cast<int>(reg(kUart0 + 0x518) & 0xFF);
}

void write_bytes(const uint8_t* data, size_t size) {
  for (size_t i = 0; i < size; ++i) {
    reg(kUart0 + 0x11C) = 0;  // EVENTS_TXDRDY
    reg(kUart0 + 0x51C) = data[i];
    while (!reg(kUart0 + 0x11C)) {
    }
  }
}

uint32_t cycles() { return counter(); }
uint32_t cycles_aligned() { return counter(); }
const char* cycle_unit() { return "cycles"; }
const char* name() { return TX_PORT_NAME; }
[[noreturn]] void exit(int) { cortex_m::halt(); }

}  // namespace tx::platform
