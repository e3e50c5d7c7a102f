// The port interface: everything the runtime needs from a host, an emulated or a real board.
// Each port (firmware/ports/<name>/) implements these functions once; the runtime never touches
// registers, files or the OS itself.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tx::platform {

// Bring up clocks, the serial link and the cycle counter. Called once, first thing in main(), with
// main's arguments (only the host port has any: `--port P`).
void init(int argc, char** argv);

// Read one byte from the serial link, waiting at most timeout_ms (negative: forever). Returns the byte,
// -1 when the link is closed for good (host: end of input), -2 on timeout.
int read_byte(int32_t timeout_ms);

// Write bytes to the serial link; returns when all are queued.
void write_bytes(const uint8_t* data, size_t size);

// Free-running 32-bit counter (wraps). Real cores: DWT CYCCNT (cycles). QEMU: SysTick under -icount,
// which counts instructions, not cycles. Host: a monotonic counter (not comparable across ports).
uint32_t cycles();

// cycles() read right after the counter's next tick: a measurement started with it begins in the same
// phase of a coarse counter every time, so deterministic code measures the same count every run.
uint32_t cycles_aligned();

// What cycles() counts, for reports: "cycles", "instructions" or "host-ticks".
const char* cycle_unit();

// A short name of the port/board, for INFO replies (e.g. "qemu-mps2-an386").
const char* name();

// Files on the machine that runs the firmware's host side, for batch runs (protocol BATCH): QEMU reaches the
// host's files through semihosting, the host port through stdio. Real boards have none: runtime/protocol.cc
// gives weak defaults that answer kFileUnsupported, so a board port implements nothing and the host falls
// back to one INFER per sample over the serial link.
constexpr int32_t kFileUnsupported = -2;  // this port has no files
constexpr int32_t kFileFailed = -1;       // the file could not be opened
// Opens a file named by `name` (`length` characters, NUL-terminated; relative to the host side's working
// folder) to read, or to write from empty. Returns a handle >= 0, kFileUnsupported or kFileFailed.
int32_t file_open(const char* name, size_t length, bool write);
// Moves a reading handle to byte `offset`; false on failure.
bool file_seek(int32_t handle, uint32_t offset);
// Reads exactly `size` bytes; false if the file ends first or on failure.
bool file_read(int32_t handle, uint8_t* data, size_t size);
// Writes all `size` bytes; false on failure.
bool file_write(int32_t handle, const uint8_t* data, size_t size);
void file_close(int32_t handle);

// End the program with an exit code (host: exit(); QEMU: semihosting SYS_EXIT_EXTENDED; boards: spin).
[[noreturn]] void exit(int code);

}  // namespace tx::platform
