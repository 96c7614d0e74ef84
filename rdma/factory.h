// The one place a concrete transport backend is chosen, from the config.
#pragma once

#include <memory>

#include "config/config.h"
#include "rdma/transport.h"

namespace kvferry::rdma {

class LoopbackFabric;

// `fabric` is used by the loopback backend only (endpoints on one fabric reach each other);
// when null, a loopback transport gets a fabric of its own.
Result<std::unique_ptr<Transport>> makeTransport(const config::TransportConfig& config,
                                                 std::shared_ptr<LoopbackFabric> fabric = nullptr);

}  // namespace kvferry::rdma
