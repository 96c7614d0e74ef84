// Which RDMA devices are nearest a GPU on the PCIe tree, read from sysfs: what
// `transport.rails: [auto]` resolves to (the NIC nearest the GPU becomes rail 0, which matters
// most: a peer with one NIC is reached on rail 0, and ties go to lower rails). Plain C++: no verbs
// or CUDA headers, so it builds and is tested everywhere (a test passes a fake sysfs tree).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kvferry::rdma {

// A PCI bus id as sysfs names the device: lowercase, a 4-hex-digit domain ("0000:41:00.0").
// Accepts CUDA's form (cudaDeviceGetPCIBusId: "0000:41:00.0"), nvidia-smi's ("00000000:41:00.0")
// and one without a domain ("41:00.0"). INVALID_ARGUMENT for anything else.
Result<std::string> normalizePciBusId(std::string_view bus_id);

// Every RDMA device (the entries of <sysfs>/class/infiniband, as ibv_devices lists them), the one
// nearest GPU `gpu_pci_bus_id` first. Distance: the path components of the two PCI devices'
// canonical sysfs paths below their longest common prefix (same PCIe switch: small; another root
// complex: large); ties by name. A device without a PCI parent (software devices such as rxe may
// have no `device` link) sorts last. An empty bus id (no GPU): all by name. NOT_FOUND, naming the
// path, when the GPU's PCI device is not in sysfs or there is no RDMA device at all.
Result<std::vector<std::string>> rdmaDevicesNearest(std::string_view gpu_pci_bus_id,
                                                    const std::filesystem::path& sysfs = "/sys");

}  // namespace kvferry::rdma
