#include "rdma/factory.h"

#include "rdma/fault/fault_transport.h"
#include "rdma/loopback/loopback_transport.h"
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

}  // namespace

Result<std::unique_ptr<Transport>> makeTransport(const config::TransportConfig& config,
                                                 std::shared_ptr<LoopbackFabric> fabric) {
  ASSIGN_OR_RETURN(std::unique_ptr<Transport> backend, makeBackend(config, std::move(fabric)));
  if (!config.faults.any()) return backend;
  return wrapWithFaults(std::move(backend), config);
}

}  // namespace kvferry::rdma
