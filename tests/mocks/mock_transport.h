// A gmock Transport (rdma/transport.h). delegateTo() forwards every call to a real backend (the
// loopback, usually) unless a test says otherwise, so a test overrides only what it wants to
// fail: a refused post, a connect that hangs or fails.
#pragma once

#include <gmock/gmock.h>

#include "rdma/transport.h"

namespace kvferry::testing {

class MockTransport : public rdma::Transport {
 public:
  MOCK_METHOD(std::string_view, name, (), (const, override));
  MOCK_METHOD(rdma::Capabilities, capabilities, (), (const, override));
  MOCK_METHOD(Result<rdma::RegionId>, registerRegion,
              (void* base, size_t bytes, rdma::MemoryKind kind), (override));
  MOCK_METHOD(Status, deregisterRegion, (rdma::RegionId region), (override));
  MOCK_METHOD(Result<rdma::EndpointBlob>, localBlob, (), (const, override));
  MOCK_METHOD(Result<rdma::PeerId>, connect, (const rdma::EndpointBlob& peer_blob), (override));
  MOCK_METHOD(Status, disconnect, (rdma::PeerId peer), (override));
  MOCK_METHOD(Status, postWrite,
              (rdma::PeerId peer, std::span<const rdma::TransferOp> ops,
               std::optional<uint32_t> imm, uint64_t cookie),
              (override));
  MOCK_METHOD(Status, postRead,
              (rdma::PeerId peer, std::span<const rdma::TransferOp> ops, uint64_t cookie),
              (override));
  MOCK_METHOD(size_t, pollCompletions,
              (std::span<rdma::Completion> out, std::chrono::microseconds wait), (override));
  MOCK_METHOD(size_t, pollImmediates,
              (std::span<rdma::ImmediateEvent> out, std::chrono::microseconds wait), (override));

  // Every call not otherwise expected goes to `real`, which must outlive this mock.
  void delegateTo(rdma::Transport& real) {
    using ::testing::_;
    ON_CALL(*this, name()).WillByDefault([&real] { return real.name(); });
    ON_CALL(*this, capabilities()).WillByDefault([&real] { return real.capabilities(); });
    ON_CALL(*this, registerRegion(_, _, _))
        .WillByDefault([&real](void* base, size_t bytes, rdma::MemoryKind kind) {
          return real.registerRegion(base, bytes, kind);
        });
    ON_CALL(*this, deregisterRegion(_)).WillByDefault([&real](rdma::RegionId region) {
      return real.deregisterRegion(region);
    });
    ON_CALL(*this, localBlob()).WillByDefault([&real] { return real.localBlob(); });
    ON_CALL(*this, connect(_)).WillByDefault([&real](const rdma::EndpointBlob& blob) {
      return real.connect(blob);
    });
    ON_CALL(*this, disconnect(_)).WillByDefault([&real](rdma::PeerId peer) {
      return real.disconnect(peer);
    });
    ON_CALL(*this, postWrite(_, _, _, _))
        .WillByDefault([&real](rdma::PeerId peer, std::span<const rdma::TransferOp> ops,
                               std::optional<uint32_t> imm,
                               uint64_t cookie) { return real.postWrite(peer, ops, imm, cookie); });
    ON_CALL(*this, postRead(_, _, _))
        .WillByDefault([&real](rdma::PeerId peer, std::span<const rdma::TransferOp> ops,
                               uint64_t cookie) { return real.postRead(peer, ops, cookie); });
    ON_CALL(*this, pollCompletions(_, _))
        .WillByDefault([&real](std::span<rdma::Completion> out, std::chrono::microseconds wait) {
          return real.pollCompletions(out, wait);
        });
    ON_CALL(*this, pollImmediates(_, _))
        .WillByDefault(
            [&real](std::span<rdma::ImmediateEvent> out, std::chrono::microseconds wait) {
              return real.pollImmediates(out, wait);
            });
  }
};

}  // namespace kvferry::testing
