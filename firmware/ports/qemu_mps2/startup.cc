// Reset and vector table for Cortex-M under QEMU: copy .data, zero .bss, enable the FPU, run static
// constructors, call main. No heap: nothing here or in the runtime allocates.
#include <cstdint>

extern "C" {
extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top, __stack_size;
extern void (*__init_array_start[])(), (*__init_array_end[])();
int main(int, char**);
void systick_handler();
[[noreturn]] void reset_handler();
[[noreturn]] void fault_handler() {
  for (;;) {
  }
}

constexpr uint32_t kStackPaint = 0x5AC3A55Cu;

uint32_t* stack_bottom() {
  return &__stack_top - reinterpret_cast<uintptr_t>(&__stack_size) / sizeof(uint32_t);
}

// The stack's high-water mark: bytes below the top that no longer hold the start-up paint (protocol INFO).
uint32_t tx_stack_used_bytes() {
  const uint32_t* p = stack_bottom();
  while (p < &__stack_top && *p == kStackPaint) ++p;
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(&__stack_top) - reinterpret_cast<uintptr_t>(p));
}

void reset_handler() {
  // paint the stack below this frame (64 bytes of margin) so the high-water mark can be read back later
  uint32_t* sp;
  asm volatile("mov %0, sp" : "=r"(sp));
  for (volatile uint32_t* p = stack_bottom(); p < sp - 16;) *p++ = kStackPaint;
  for (uint32_t *src = &__data_load, *dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
#if defined(__ARM_FP)
  *reinterpret_cast<volatile uint32_t*>(0xE000ED88) |= 0xFu << 20;  // CPACR: CP10, CP11 full access
  asm volatile("dsb\n isb");
#endif
  for (auto f = __init_array_start; f < __init_array_end; ++f) (*f)();
  main(0, nullptr);
  for (;;) {
  }
}

// Minimal stubs so newlib pieces pulled in by the C++ runtime link without a heap or an OS.
void* __dso_handle = nullptr;
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])() = {
    reinterpret_cast<void (*)()>(&__stack_top), reset_handler, fault_handler, fault_handler, fault_handler,
    fault_handler, fault_handler, nullptr, nullptr, nullptr, nullptr, fault_handler, fault_handler, nullptr,
    fault_handler, systick_handler};
