#include "rdma/factory.h"

#include <algorithm>

#include "rdma/fault/fault_transport.h"
#include "rdma/loopback/loopback_transport.h"
#include "rdma/striped/striped_transport.h"
#include "rdma/tcp/tcp_transport.h"
#ifdef KVFERRY_HAVE_VERBS
#include "rdma/verbs/verbs_transport.h"
#endif
#ifdef KVFERRY_HAVE_CUDA_IPC
#include "rdma/cuda_ipc/cuda_ipc_transport.h"
#endif

namespace kvferry::rdma {

namespace {

Result<std::unique_ptr<Transport>> makeBackend(const config::TransportConfig& config,
                                               std::shared_ptr<LoopbackFabric> fabric) {
  switch (config.kind) {
    case config::TransportKind::kTcp:
      return makeTcpTransport(config);
    case config::TransportKind::kLoopback:
      if (!fabric) fabric = std::make_shared<LoopbackFabric>();
      return std::unique_ptr<Transport>(
          std::make_unique<LoopbackTransport>(config, std::move(fabric)));
    case config::TransportKind::kVerbs:
#ifdef KVFERRY_HAVE_VERBS
      return makeVerbsTransport(config);
#else
      return unavailable(
          "transport.kind 'verbs': this build has no verbs backend (rdma-core's libibverbs-dev "
          "was not found when it was configured; scripts/install_deps.sh installs it)");
#endif
    case config::TransportKind::kCudaIpc:
#ifdef KVFERRY_HAVE_CUDA_IPC
      return makeCudaIpcTransport(config);
#else
      return unavailable(
          "transport.kind 'cuda_ipc': this build has no CUDA (nvcc was not found when it was "
          "configured)");
#endif
  }
  return invalidArgument("unknown transport kind");
}

// One backend per entry of transport.rails (striped when there are several), or one backend.
Result<std::unique_ptr<Transport>> makeRails(const config::TransportConfig& config,
                                             std::shared_ptr<LoopbackFabric> fabric) {
  if (config.rails.empty()) return makeBackend(config, std::move(fabric));
  // `auto` needs the GPU's PCI address, which only the agent knows (node_agent resolves it with
  // rdma/nic_topology.h); one that reaches here was not resolved.
  if (std::find(config.rails.begin(), config.rails.end(), config::kAutoRails) !=
      config.rails.end()) {
    if (config.kind != config::TransportKind::kVerbs) {
      return invalidArgument(
          "transport.rails: auto picks RDMA devices, so it is for transport.kind verbs only");
    }
    if (config.rails.size() > 1) {
      return invalidArgument("transport.rails: auto stands alone ([auto]), not beside names");
    }
    return invalidArgument("transport.rails: auto is resolved by the agent, which knows its GPU");
  }
  const bool striped = config.rails.size() > 1;
  std::vector<std::unique_ptr<Transport>> rails;
  for (size_t r = 0; r < config.rails.size(); ++r) {
    const std::string& rail = config.rails[r];
    config::TransportConfig c = config;
    c.rails.clear();
    if (config.kind == config::TransportKind::kVerbs) {
      c.verbs.devices = {rail};
    } else if (config.kind == config::TransportKind::kTcp) {
      c.listen_address = rail.find(':') == std::string::npos ? rail + ":0" : rail;
    } else {
      return invalidArgument("transport.rails: only tcp and verbs have NICs to stripe over");
    }
    if (striped) {  // room for a batch's slices on every rail, and for the op a cut adds
      c.queue_depth = railQueueDepth(config.queue_depth, config.rails.size());
      c.max_batch_ops = config.max_batch_ops + 2;
    }
    Result<std::unique_ptr<Transport>> made = makeBackend(c, fabric);
    if (!made.isOk()) {
      return made.status().withContext("transport.rails[" + std::to_string(r) + "] '" + rail + "'");
    }
    rails.push_back(std::move(made).value());
  }
  if (!striped) return std::move(rails.front());
  return makeStripedTransport(std::move(rails), config);
}

}  // namespace

Result<std::unique_ptr<Transport>> makeTransport(const config::TransportConfig& config,
                                                 std::shared_ptr<LoopbackFabric> fabric) {
  ASSIGN_OR_RETURN(std::unique_ptr<Transport> backend, makeRails(config, std::move(fabric)));
  if (!config.faults.any()) return backend;
  return wrapWithFaults(std::move(backend), config);
}

}  // namespace kvferry::rdma
