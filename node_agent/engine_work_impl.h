// EngineWork on the agent's parts: each control call goes to the part that serves it (leases to
// the KV receiver, prefills to the KV sender, generate to the batch loop), a cancel to all three,
// and work for a request cancelled before it ran is refused when it runs.
//
// Thread: the engine thread owns it (every EngineWork call runs there).
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_set>

#include "node_agent/batch_loop.h"
#include "node_agent/engine_work.h"
#include "node_agent/kv_transfer/kv_receiver.h"
#include "node_agent/kv_transfer/kv_sender.h"
#include "node_agent/prefill_runner.h"

namespace kvferry::agent {

class EngineWorkImpl final : public EngineWork {
 public:
  EngineWorkImpl(BatchLoop& loop, kv_transfer::KvSender& sender, kv_transfer::KvReceiver& receiver,
                 const PrefillRunner& prefills, PrefillBacklog& backlog)
      : loop_(loop), sender_(sender), receiver_(receiver), prefills_(prefills), backlog_(backlog) {}

  Reply reserve(const wire::ReserveRequest& request) override;
  void prefill(wire::PrefillRequest request, std::shared_ptr<ReplyChannel> reply,
               std::shared_ptr<const StopFlag> stop) override;
  void decode(wire::DecodeRequest request, std::shared_ptr<Stream> stream) override;
  void generate(wire::GenerateRequest request, std::shared_ptr<Stream> stream,
                std::shared_ptr<const StopFlag> stop) override;
  void release(uint64_t lease_id, bool writer_done) override;
  void cancel(uint64_t request_id) override;
  void forgotten() override;
  bool idle() const override;
  NodeReport report(bool snapshot) override;

 private:
  // True (and forgotten) when a cancel named the request before its work ran.
  bool takeCancelled(uint64_t request_id) { return cancelled_.erase(request_id) > 0; }

  BatchLoop& loop_;
  kv_transfer::KvSender& sender_;
  kv_transfer::KvReceiver& receiver_;
  const PrefillRunner& prefills_;
  PrefillBacklog& backlog_;
  // Request ids cancelled before their work ran (a cancel may also name a request that already
  // ended): the newest kMaxCancelled, oldest forgotten first.
  static constexpr size_t kMaxCancelled = 4096;
  std::unordered_set<uint64_t> cancelled_;
  std::deque<uint64_t> cancelled_order_;
};

}  // namespace kvferry::agent
