// libFuzzer target: the YAML config loaders (config/config.h). The first byte picks the file
// kind; every error must be a Status, never a crash or an exception.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view yaml(reinterpret_cast<const char*>(data + 1), size - 1);
  using namespace kvferry::config;
  switch (data[0] % 4) {
    case 0:
      (void)parseNodeAgentConfig(yaml, "fuzz.yaml");
      break;
    case 1:
      (void)parseOrchestratorConfig(yaml, "fuzz.yaml");
      break;
    case 2:
      (void)parseTransferBenchConfig(yaml, "fuzz.yaml");
      break;
    default:
      (void)parseRouteSimConfig(yaml, "fuzz.yaml");
      break;
  }
  return 0;
}
