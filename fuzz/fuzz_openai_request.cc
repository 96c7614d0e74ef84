// libFuzzer target: an OpenAI request body, as /v1/completions or /v1/chat/completions decodes it
// (orchestrator/openai/request.h). The first byte picks the endpoint.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "orchestrator/openai/request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto endpoint = data[0] & 1 ? kvferry::openai::Endpoint::kChatCompletions
                                    : kvferry::openai::Endpoint::kCompletions;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  kvferry::openai::ParseResult parsed = kvferry::openai::parseRequest(endpoint, body);
  (void)parsed;
  return 0;
}
