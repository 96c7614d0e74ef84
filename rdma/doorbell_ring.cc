#include "rdma/doorbell_ring.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <thread>

#include "rdma/endpoint_blob.h"

namespace kvferry::rdma {

// Shared between the two processes: the sender writes `imm` and `head`, the receiver `tail`.
struct DoorbellRing {
  alignas(64) std::atomic<uint64_t> head;
  alignas(64) std::atomic<uint64_t> tail;
  alignas(64) uint32_t imm[kDoorbellRingEntries];
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "the ring's counters cross processes");

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kHelloMagic = 0x6b766462;  // "kvdb"
constexpr uint32_t kHelloVersion = 1;
constexpr unsigned kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
// How long an accepted connection may take to send its hello before it is dropped.
constexpr auto kHelloTimeout = std::chrono::seconds(5);
// How often the receiver looks for senders that closed (a poll(2) over their sockets).
constexpr auto kCloseCheckInterval = std::chrono::milliseconds(1);

struct Hello {
  uint32_t magic = kHelloMagic;
  uint32_t version = kHelloVersion;
  uint64_t receiver_id = 0;
  uint64_t sender_id = 0;
  uint64_t ring_bytes = sizeof(DoorbellRing);
};

// One message of `bytes` at `data`, with room for one descriptor (SCM_RIGHTS).
struct FdMessage {
  FdMessage(void* data, size_t bytes) : io{data, bytes} {
    header.msg_iov = &io;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof(control);
  }
  FdMessage(const FdMessage&) = delete;
  FdMessage& operator=(const FdMessage&) = delete;

  iovec io;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr header{};
};

sockaddr_un abstractAddress(const std::string& name, socklen_t& length) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  // Abstract: a leading NUL, then the name (not NUL-terminated); gone with the socket.
  const size_t n = std::min(name.size(), sizeof(address.sun_path) - 1);
  std::memcpy(address.sun_path + 1, name.data(), n);
  length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  return address;
}

DoorbellRing* mapRing(int fd) {
  void* mapped = ::mmap(nullptr, sizeof(DoorbellRing), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  return mapped == MAP_FAILED ? nullptr : static_cast<DoorbellRing*>(mapped);
}

// True when `socket` has been closed by its peer (or failed); never blocks.
bool peerClosed(int socket) {
  pollfd p{socket, POLLIN, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  // Neither side writes after the hello's answer: readable means an end of stream.
  return (p.revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

}  // namespace

Result<std::unique_ptr<DoorbellSender>> DoorbellSender::connect(const std::string& socket_name,
                                                                uint64_t receiver_id,
                                                                uint64_t sender_id,
                                                                std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const int memfd = ::memfd_create("kvferry-doorbell", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd < 0) return ioError("memfd_create", errno);
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } memfd_closer{memfd};  // the receiver keeps its own copy; the mapping keeps ours
  if (::ftruncate(memfd, sizeof(DoorbellRing)) != 0) return ioError("ftruncate", errno);
  // Sealed so that neither side can shrink it under the other's mapping (a SIGBUS).
  if (::fcntl(memfd, F_ADD_SEALS, kSeals) != 0) return ioError("fcntl(F_ADD_SEALS)", errno);
  DoorbellRing* ring = mapRing(memfd);
  if (ring == nullptr) return ioError("mmap", errno);
  // From here the sender owns the ring and closes the socket: one owner for both.
  const int sock = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (sock < 0) {
    const int e = errno;
    ::munmap(ring, sizeof(DoorbellRing));
    return ioError("socket(AF_UNIX)", e);
  }
  std::unique_ptr<DoorbellSender> sender(new DoorbellSender(sock, ring));
  const std::string where = "the doorbell socket '@" + socket_name + "'";

  socklen_t length = 0;
  const sockaddr_un address = abstractAddress(socket_name, length);
  while (::connect(sock, reinterpret_cast<const sockaddr*>(&address), length) != 0) {
    // A full backlog answers EAGAIN on a non-blocking unix socket: try again until the deadline.
    if (errno != EAGAIN || Clock::now() >= deadline) {
      return unavailable("cannot connect to " + where + ": " + std::strerror(errno) +
                         " (is the target endpoint's process alive, on this host and in this "
                         "network namespace?)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  Hello hello;
  hello.receiver_id = receiver_id;
  hello.sender_id = sender_id;
  FdMessage message(&hello, sizeof(hello));
  cmsghdr* cmsg = CMSG_FIRSTHDR(&message.header);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &memfd, sizeof(int));
  if (::sendmsg(sock, &message.header, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(hello))) {
    return unavailable("cannot send the ring to " + where + ": " + std::strerror(errno));
  }

  // The receiver answers one byte once it has mapped the ring, or closes on a bad hello.
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{sock, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      return unavailable(where + " did not take the ring within " +
                         std::to_string(timeout.count()) + " ms");
    }
    char answer = 0;
    const ssize_t got = ::recv(sock, &answer, 1, 0);
    if (got == 1 && answer == 'K') return sender;
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    return unavailable(where +
                       " refused the ring (an endpoint id that is not its own: the blob is "
                       "stale or from another endpoint)");
  }
}

DoorbellSender::~DoorbellSender() {
  ::close(socket_);
  ::munmap(ring_, sizeof(DoorbellRing));
}

bool DoorbellSender::ring(uint32_t imm) {
  const uint64_t head = ring_->head.load(std::memory_order_relaxed);  // only we write it
  if (head - ring_->tail.load(std::memory_order_acquire) >= kDoorbellRingEntries) return false;
  ring_->imm[head % kDoorbellRingEntries] = imm;
  ring_->head.store(head + 1, std::memory_order_release);
  return true;
}

bool DoorbellSender::receiverAlive() const { return !peerClosed(socket_); }

Result<std::unique_ptr<DoorbellReceiver>> DoorbellReceiver::listen(uint64_t receiver_id) {
  const int sock = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (sock < 0) return ioError("socket(AF_UNIX)", errno);
  // The name is random and public (abstract names are listed in /proc/net/unix); the endpoint
  // id a sender must present is the secret, and it is not in the name.
  char name[48];
  std::snprintf(name, sizeof(name), "kvferry-doorbell-%d-%016llx", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(newEndpointId()));
  socklen_t length = 0;
  const sockaddr_un address = abstractAddress(name, length);
  if (::bind(sock, reinterpret_cast<const sockaddr*>(&address), length) != 0 ||
      ::listen(sock, 128) != 0) {
    const int e = errno;
    ::close(sock);
    return ioError("bind/listen on the abstract unix socket '@" + std::string(name) + "'", e);
  }
  return std::unique_ptr<DoorbellReceiver>(new DoorbellReceiver(sock, receiver_id, name));
}

DoorbellReceiver::~DoorbellReceiver() {
  ::close(socket_);
  for (Sender& s : pending_) close(s);
  for (Sender& s : senders_) close(s);
}

void DoorbellReceiver::close(Sender& sender) {
  if (sender.ring != nullptr) ::munmap(sender.ring, sizeof(DoorbellRing));
  if (sender.socket >= 0) ::close(sender.socket);
  sender.ring = nullptr;
  sender.socket = -1;
}

void DoorbellReceiver::accept() {
  while (true) {
    const int sock = ::accept4(socket_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (sock < 0) return;  // EAGAIN: none waiting (other errors: try again on the next poll)
    Sender sender;
    sender.socket = sock;
    sender.hello_deadline = Clock::now() + kHelloTimeout;
    pending_.push_back(sender);
  }
}

// True when the hello was read (the sender admitted, or refused and closed); false while it
// has not arrived.
bool DoorbellReceiver::readHello(Sender& sender) {
  Hello hello;
  FdMessage message(&hello, sizeof(hello));
  const ssize_t got = ::recvmsg(sender.socket, &message.header, MSG_CMSG_CLOEXEC);
  if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
    if (Clock::now() < sender.hello_deadline) return false;
    close(sender);
    return true;
  }
  int memfd = -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&message.header); c != nullptr;
       c = CMSG_NXTHDR(&message.header, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int))) {
      std::memcpy(&memfd, CMSG_DATA(c), sizeof(int));
    }
  }
  struct stat st {};
  const bool valid = got == static_cast<ssize_t>(sizeof(hello)) &&
                     (message.header.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) == 0 &&
                     hello.magic == kHelloMagic && hello.version == kHelloVersion &&
                     hello.receiver_id == id_ && hello.ring_bytes == sizeof(DoorbellRing) &&
                     memfd >= 0 && ::fstat(memfd, &st) == 0 &&
                     static_cast<uint64_t>(st.st_size) == sizeof(DoorbellRing) &&
                     (::fcntl(memfd, F_GET_SEALS) & (F_SEAL_SHRINK | F_SEAL_SEAL)) ==
                         (F_SEAL_SHRINK | F_SEAL_SEAL);
  if (valid) sender.ring = mapRing(memfd);
  if (memfd >= 0) ::close(memfd);
  const char ok = 'K';
  if (sender.ring == nullptr || ::send(sender.socket, &ok, 1, MSG_NOSIGNAL) != 1) {
    close(sender);  // the sender sees its connection closed: refused
    return true;
  }
  sender.id = hello.sender_id;
  senders_.push_back(sender);
  return true;
}

void DoorbellReceiver::checkClosed() {
  for (Sender& s : senders_) {
    if (!s.gone && peerClosed(s.socket)) s.gone = true;
  }
}

size_t DoorbellReceiver::poll(std::span<ImmediateEvent> out) {
  accept();
  std::erase_if(pending_, [this](Sender& s) { return readHello(s); });
  const auto now = Clock::now();
  if (now >= next_close_check_) {
    checkClosed();
    next_close_check_ = now + kCloseCheckInterval;
  }
  size_t n = 0;
  for (Sender& s : senders_) {
    const uint64_t head = s.ring->head.load(std::memory_order_acquire);
    uint64_t tail = s.ring->tail.load(std::memory_order_relaxed);  // only we write it
    if (head - tail > kDoorbellRingEntries) {
      close(s);  // a head no well-behaved sender writes: stop reading it
      continue;
    }
    for (; tail != head && n < out.size(); ++tail) {
      out[n++] = ImmediateEvent{s.id, s.ring->imm[tail % kDoorbellRingEntries]};
    }
    s.ring->tail.store(tail, std::memory_order_release);
    // A sender that is gone is dropped once the doorbells it rang before closing are read.
    if (s.gone && tail == head) close(s);
  }
  std::erase_if(senders_, [](const Sender& s) { return s.socket < 0; });
  return n;
}

}  // namespace kvferry::rdma
