#include "rdma/factory.h"

#include "rdma/loopback/loopback_transport.h"
#include "rdma/tcp/tcp_transport.h"

namespace kvferry::rdma {

Result<std::unique_ptr<Transport>> makeTransport(const config::TransportConfig& config,
                                                 std::shared_ptr<LoopbackFabric> fabric) {
  switch (config.kind) {
    case config::TransportKind::kTcp:
      return makeTcpTransport(config);
    case config::TransportKind::kLoopback:
      if (!fabric) fabric = std::make_shared<LoopbackFabric>();
      return std::unique_ptr<Transport>(
          std::make_unique<LoopbackTransport>(config, std::move(fabric)));
    case config::TransportKind::kVerbs:
      return unavailable(
          "transport.kind 'verbs' is not available in this build yet (use 'tcp'); the RDMA "
          "verbs backend is tracked as its own work item");
  }
  return invalidArgument("unknown transport kind");
}

}  // namespace kvferry::rdma
