#include "rdma/nic_topology.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <optional>
#include <system_error>

namespace kvferry::rdma {
namespace {

namespace fs = std::filesystem;

// Name order with digit runs compared as numbers, so mlx5_2 comes before mlx5_10 on hosts with
// many NICs.
bool nameLess(const std::string& a, const std::string& b) {
  size_t i = 0;
  size_t j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) &&
        std::isdigit(static_cast<unsigned char>(b[j]))) {
      size_t i_end = i;
      size_t j_end = j;
      while (i_end < a.size() && std::isdigit(static_cast<unsigned char>(a[i_end]))) ++i_end;
      while (j_end < b.size() && std::isdigit(static_cast<unsigned char>(b[j_end]))) ++j_end;
      // Leading zeros aside, a longer run is the larger number.
      std::string_view x = std::string_view(a).substr(i, i_end - i);
      std::string_view y = std::string_view(b).substr(j, j_end - j);
      x.remove_prefix(std::min(x.find_first_not_of('0'), x.size()));
      y.remove_prefix(std::min(y.find_first_not_of('0'), y.size()));
      if (x.size() != y.size()) return x.size() < y.size();
      if (x != y) return x < y;
      i = i_end;
      j = j_end;
      continue;
    }
    if (a[i] != b[j]) return a[i] < b[j];
    ++i;
    ++j;
  }
  if (a.size() - i != b.size() - j) return a.size() - i < b.size() - j;
  return a < b;  // equal but for leading zeros: any fixed order
}

// PCIe hops between two devices: the components of both canonical paths below their longest
// common prefix.
size_t pathDistance(const fs::path& a, const fs::path& b) {
  const std::vector<fs::path> x(a.begin(), a.end());
  const std::vector<fs::path> y(b.begin(), b.end());
  size_t common = 0;
  while (common < x.size() && common < y.size() && x[common] == y[common]) ++common;
  return (x.size() - common) + (y.size() - common);
}

}  // namespace

Result<std::string> normalizePciBusId(std::string_view bus_id) {
  const auto bad = [&] {
    return invalidArgument("PCI bus id '" + std::string(bus_id) +
                           "' is not [domain:]bus:device.function in hex");
  };
  std::string id;
  for (char c : bus_id) id += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // bus:device.function is 7 characters ("41:00.0"); what precedes it is the domain.
  if (id.size() < 7) return bad();
  const std::string_view tail = std::string_view(id).substr(id.size() - 7);
  if (tail[2] != ':' || tail[5] != '.') return bad();
  for (size_t k : {0u, 1u, 3u, 4u, 6u}) {
    if (!std::isxdigit(static_cast<unsigned char>(tail[k]))) return bad();
  }
  std::string_view domain = std::string_view(id).substr(0, id.size() - 7);
  if (!domain.empty()) {
    if (domain.back() != ':') return bad();
    domain.remove_suffix(1);
    if (domain.empty()) return bad();
    for (char c : domain) {
      if (!std::isxdigit(static_cast<unsigned char>(c))) return bad();
    }
  }
  // sysfs prints the domain as %04x: nvidia-smi's 8 digits lose their leading zeros, short ones
  // gain them; a domain past 16 bits (VMD) keeps all its digits.
  while (domain.size() > 4 && domain.front() == '0') domain.remove_prefix(1);
  return std::string(4 - std::min<size_t>(domain.size(), 4), '0') + std::string(domain) + ":" +
         std::string(tail);
}

Result<std::vector<std::string>> rdmaDevicesNearest(std::string_view gpu_pci_bus_id,
                                                    const fs::path& sysfs) {
  std::optional<fs::path> gpu;
  if (!gpu_pci_bus_id.empty()) {
    ASSIGN_OR_RETURN(const std::string id, normalizePciBusId(gpu_pci_bus_id));
    const fs::path link = sysfs / "bus" / "pci" / "devices" / id;
    std::error_code ec;
    fs::path resolved = fs::canonical(link, ec);
    if (ec) {
      return notFound("the GPU's PCI device " + id + " is not in sysfs: " + link.string() + ": " +
                      ec.message());
    }
    gpu = std::move(resolved);
  }

  const fs::path class_dir = sysfs / "class" / "infiniband";
  struct Device {
    std::string name;
    size_t distance;  // max: no PCI parent
  };
  std::vector<Device> devices;
  std::error_code ec;
  fs::directory_iterator it(class_dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    Device device{it->path().filename().string(), std::numeric_limits<size_t>::max()};
    if (gpu) {
      // Software devices (rxe, siw) may have no `device` link, or one that leads nowhere PCI.
      std::error_code link_ec;
      const fs::path pci = fs::canonical(it->path() / "device", link_ec);
      if (!link_ec) device.distance = pathDistance(*gpu, pci);
    }
    devices.push_back(std::move(device));
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return ioError("reading " + class_dir.string(), ec.value());
  }
  if (devices.empty()) {
    return notFound("no RDMA device on this host: " + class_dir.string() + " lists none");
  }

  std::sort(devices.begin(), devices.end(), [](const Device& a, const Device& b) {
    if (a.distance != b.distance) return a.distance < b.distance;
    return nameLess(a.name, b.name);
  });
  std::vector<std::string> names;
  names.reserve(devices.size());
  for (Device& device : devices) names.push_back(std::move(device.name));
  return names;
}

}  // namespace kvferry::rdma
