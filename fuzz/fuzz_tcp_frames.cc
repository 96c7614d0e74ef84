// libFuzzer target: the tcp transfer backend's receive path (rdma/tcp/tcp_connection.cc) as a
// peer on the network reaches it. A real target transport listens on 127.0.0.1 with one host
// region between two guard zones; each input is sent on a fresh connection (after a valid hello
// when the first byte's bit 0 is set, so the fuzzer starts past it), then the write side is
// closed and everything the target answers is read until it closes the connection.
//
// Besides ASan and UBSan, the oracles are the transport's promises: no byte outside the
// registered region is written (the guards stay intact) or read (no guard bytes come back in a
// reply), and the target closes a connection whose peer has closed within seconds (no hang).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/logging.h"
#include "rdma/endpoint_blob.h"
#include "rdma/factory.h"
#include "rdma/tcp/tcp_wire.h"

namespace {

using namespace kvferry;
using namespace kvferry::rdma;

constexpr size_t kGuardBytes = 4096;
constexpr size_t kRegionBytes = 64 * 1024;
constexpr std::string_view kGuardWord = "OUTSIDE!";  // the guards hold it over and over
constexpr int kCloseTimeoutMs = 5000;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_tcp_frames: %s\n", what);
  std::abort();
}

struct Target {
  std::unique_ptr<Transport> transport;
  std::vector<uint8_t> memory;  // guard, region, guard
  uint64_t endpoint_id = 0;
  sockaddr_in address{};
  std::string guard_run;  // two guard words: what an out-of-bounds read would send back

  Target() : memory(kGuardBytes + kRegionBytes + kGuardBytes) {
    setupLogging("fuzz_tcp_frames", LogLevel::kOff);  // protocol errors are the point
    config::TransportConfig c;
    c.kind = config::TransportKind::kTcp;
    c.listen_address = "127.0.0.1:0";
    c.connect_retries = 0;
    Result<std::unique_ptr<Transport>> made = makeTransport(c);
    if (!made.isOk()) fail("cannot start the tcp transport");
    transport = std::move(made).value();
    for (size_t i = 0; i < memory.size(); ++i) memory[i] = kGuardWord[i % kGuardWord.size()];
    if (!transport->registerRegion(region(), kRegionBytes, MemoryKind::host()).isOk()) {
      fail("cannot register the region");
    }
    Result<EndpointBlob> blob = transport->localBlob();
    Result<EndpointInfo> info = blob.isOk() ? decodeEndpoint(*blob) : blob.status();
    if (!info.isOk()) fail("cannot read the target's endpoint");
    endpoint_id = info->endpoint_id;
    const std::string text(info->address.begin(), info->address.end());
    const size_t colon = text.rfind(':');
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(std::stoi(text.substr(colon + 1))));
    inet_pton(AF_INET, text.substr(0, colon).c_str(), &address.sin_addr);
    guard_run = std::string(kGuardWord) + std::string(kGuardWord);
  }

  uint8_t* region() { return memory.data() + kGuardBytes; }

  bool guardsIntact() const {
    for (size_t i = 0; i < memory.size(); ++i) {
      if (i == kGuardBytes) i += kRegionBytes;
      if (memory[i] != static_cast<uint8_t>(kGuardWord[i % kGuardWord.size()])) return false;
    }
    return true;
  }
};

// A fresh connection to the target. The fuzzer makes thousands a second and each leaves its
// 4-tuple a minute in TIME_WAIT (this side closes first), which ran a CI run out of ephemeral
// ports; so each comes from another source address of 127/8, cycling over 64,516 of them. A
// failed connect is retried for a second before it counts.
int connectToTarget(const sockaddr_in& address) {
  static uint32_t next_source = 0;
  for (int attempt = 0;; ++attempt) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) fail("socket");
    const uint32_t n = next_source++ % (254 * 254);
    sockaddr_in source{};
    source.sin_family = AF_INET;
    source.sin_addr.s_addr =
        htonl((127u << 24) | (1u << 16) | ((1 + n / 254) << 8) | (1 + n % 254));
    if (bind(fd, reinterpret_cast<const sockaddr*>(&source), sizeof source) == 0 &&
        connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) {
      return fd;
    }
    const int error = errno;
    close(fd);
    if (attempt == 100) {
      std::fprintf(stderr, "fuzz_tcp_frames: connect: %s\n", std::strerror(error));
      fail("cannot connect to the target");
    }
    usleep(10000);
  }
}

void sendAll(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return;  // the target closed first: what it got is what it judged
    data += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Target target;
  if (size == 0) return 0;
  std::memset(target.region(), 0, kRegionBytes);

  const int fd = connectToTarget(target.address);
  if (data[0] & 1) {
    wire::FrameHeader hello;
    hello.opcode = wire::Opcode::kHello;
    hello.region = wire::kProtocolVersion;
    hello.request_id = 0x1234;
    hello.offset = target.endpoint_id;
    sendAll(fd, reinterpret_cast<const uint8_t*>(&hello), sizeof hello);
  }
  // The target answers while it reads: a reader beside the sender keeps its replies flowing (a
  // read request for the whole region would otherwise fill both socket buffers).
  std::string replies;
  std::array<char, 65536> buffer;
  const auto drain = [&](int timeout_ms) {  // false: the target closed the connection
    pollfd p{fd, POLLIN, 0};
    while (poll(&p, 1, timeout_ms) > 0) {
      const ssize_t n = recv(fd, buffer.data(), buffer.size(), 0);
      if (n <= 0) return false;
      replies.append(buffer.data(), static_cast<size_t>(n));
      timeout_ms = 0;
    }
    return true;
  };
  for (size_t sent = 1; sent < size;) {
    const size_t piece = std::min<size_t>(size - sent, 16384);
    sendAll(fd, data + sent, piece);
    sent += piece;
    if (!drain(0)) break;
  }
  shutdown(fd, SHUT_WR);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kCloseTimeoutMs);
  while (drain(100)) {
    if (std::chrono::steady_clock::now() > deadline) {
      fail("the target kept a closed peer's connection open");
    }
  }
  close(fd);

  std::vector<ImmediateEvent> events(64);
  while (target.transport->pollImmediates(events, std::chrono::microseconds(0)) > 0) {
  }
  if (!target.guardsIntact()) fail("a peer's bytes landed outside the registered region");
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (input.find(kGuardWord) == std::string_view::npos &&
      replies.find(target.guard_run) != std::string::npos) {
    fail("a reply carried bytes from outside the registered region");
  }
  return 0;
}
