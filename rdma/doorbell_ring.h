// Doorbells between processes of one host through shared memory: how the cuda_ipc backend's
// target learns that a batch has landed (DESIGN.md §4) without a network round trip per batch.
//
// The receiver (a target endpoint) listens on an abstract unix socket whose name travels in its
// endpoint blob. A sender (an initiator that connected to the blob) makes a ring in a sealed
// memfd, connects, and hands the ring over with SCM_RIGHTS together with the receiver's
// endpoint id (proof that it holds the blob, as a tcp or verbs connection must name it) and its
// own. From then on ringing is two stores into shared memory (the immediate, then the ring's
// head) and the receiver's progress thread reads them: single producer, single consumer, one
// ring per sender, in order.
//
// The socket stays open for the pair's life and is how each side learns of the other's end: a
// sender that closes or dies is dropped by the receiver (after its last doorbells are read); a
// receiver that closes or dies is seen by receiverAlive(). Nothing is left behind: the memfd and
// the abstract name go with the processes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

// Doorbells a sender may ring ahead of the receiver's reading.
inline constexpr uint64_t kDoorbellRingEntries = 4096;

struct DoorbellRing;  // the shared layout, in doorbell_ring.cc

class DoorbellSender {
 public:
  // Hands a fresh ring to the receiver listening on `socket_name`. UNAVAILABLE when nothing
  // listens there or the receiver refuses (a wrong `receiver_id`) or does not answer in time.
  static Result<std::unique_ptr<DoorbellSender>> connect(const std::string& socket_name,
                                                         uint64_t receiver_id, uint64_t sender_id,
                                                         std::chrono::milliseconds timeout);
  ~DoorbellSender();
  DoorbellSender(const DoorbellSender&) = delete;
  DoorbellSender& operator=(const DoorbellSender&) = delete;

  // Rings with `imm`; false while the ring is full (the receiver is kDoorbellRingEntries behind).
  bool ring(uint32_t imm);
  // False once the receiver has closed its end or died. Does not block (one poll(2)).
  bool receiverAlive() const;

 private:
  DoorbellSender(int socket, DoorbellRing* ring) : socket_(socket), ring_(ring) {}
  int socket_;
  DoorbellRing* ring_;
};

class DoorbellReceiver {
 public:
  static Result<std::unique_ptr<DoorbellReceiver>> listen(uint64_t receiver_id);
  ~DoorbellReceiver();
  DoorbellReceiver(const DoorbellReceiver&) = delete;
  DoorbellReceiver& operator=(const DoorbellReceiver&) = delete;

  // The abstract socket's name (without the leading NUL), for the endpoint blob.
  const std::string& socketName() const { return name_; }

  // Admits senders that connected, moves up to out.size() doorbells into `out` (each sender's in
  // order, named by its id), and drops senders that are gone once their ring is read. Never
  // blocks; call it from one thread.
  size_t poll(std::span<ImmediateEvent> out);

  // Senders admitted and not yet gone.
  size_t senders() const { return senders_.size(); }

 private:
  struct Sender {
    int socket = -1;
    uint64_t id = 0;
    DoorbellRing* ring = nullptr;  // null until its hello is read
    std::chrono::steady_clock::time_point hello_deadline;
    bool gone = false;
  };

  DoorbellReceiver(int socket, uint64_t id, std::string name)
      : socket_(socket), id_(id), name_(std::move(name)) {}
  void accept();
  bool readHello(Sender& sender);
  void checkClosed();
  static void close(Sender& sender);

  int socket_;
  uint64_t id_;
  std::string name_;
  std::vector<Sender> pending_;  // connected, hello not yet read
  std::vector<Sender> senders_;
  std::chrono::steady_clock::time_point next_close_check_{};
};

}  // namespace kvferry::rdma
