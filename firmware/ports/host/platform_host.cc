// Host port: the serial link is stdin/stdout, or a TCP connection on 127.0.0.1 with `--port P`
// (P = 0 picks a free port; the chosen one is printed as "PORT <n>" on stderr before accepting).
// Files for BATCH through stdio, relative to the working folder.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "tinyexit/platform.h"

namespace {
int in_fd = 0, out_fd = 1;
std::FILE* files[4] = {};  // BATCH opens two at a time
}

namespace tx::platform {

void init(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--port") != 0) continue;
    const int listener = socket(AF_INET, SOCK_STREAM, 0);
    const int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[i + 1])));
    socklen_t len = sizeof addr;
    if (bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(listener, 1) != 0 ||
        getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      std::fprintf(stderr, "cannot listen on 127.0.0.1:%s\n", argv[i + 1]);
      std::exit(2);
    }
    std::fprintf(stderr, "PORT %d\n", ntohs(addr.sin_port));
    std::fflush(stderr);
    const int conn = accept(listener, nullptr, nullptr);
    close(listener);
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    in_fd = out_fd = conn;
  }
}

int read_byte(int32_t timeout_ms) {
  pollfd p{in_fd, POLLIN, 0};
  const int ready = poll(&p, 1, timeout_ms);
  if (ready == 0) return -2;
  uint8_t b;
  return read(in_fd, &b, 1) == 1 ? b : -1;
}

void write_bytes(const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t n = write(out_fd, data, size);
    if (n <= 0) std::exit(0);  // the other side went away
    data += n;
    size -= static_cast<size_t>(n);
  }
}

uint32_t cycles() {
  using namespace std::chrono;
  return static_cast<uint32_t>(duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count());
}

uint32_t cycles_aligned() { return cycles(); }  // nanoseconds: nothing to align to

const char* cycle_unit() { return "host-ns"; }

int32_t file_open(const char* name, size_t, bool write) {
  for (int32_t i = 0; i < 4; ++i) {
    if (files[i] != nullptr) continue;
    files[i] = std::fopen(name, write ? "wb" : "rb");
    return files[i] != nullptr ? i : kFileFailed;
  }
  return kFileFailed;
}

bool file_seek(int32_t handle, uint32_t offset) { return std::fseek(files[handle], offset, SEEK_SET) == 0; }

bool file_read(int32_t handle, uint8_t* data, size_t size) {
  return std::fread(data, 1, size, files[handle]) == size;
}

bool file_write(int32_t handle, const uint8_t* data, size_t size) {
  return std::fwrite(data, 1, size, files[handle]) == size;
}

void file_close(int32_t handle) {
  std::fclose(files[handle]);
  files[handle] = nullptr;
}
const char* name() { return "host"; }
[[noreturn]] void exit(int code) { std::exit(code); }

}  // namespace tx::platform
