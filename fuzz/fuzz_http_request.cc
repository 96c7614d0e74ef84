// libFuzzer target: an HTTP/1.1 request as kvferry's servers read one (Beast's parser with the
// server's header and body limits, common/http.h), then the control plane's authentication of
// it (common/control_auth.h): a malformed X-Kvferry-Auth must be refused, never crash.
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/control_auth.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace http = boost::beast::http;
  static auto auth =
      kvferry::control_auth::Authenticator::create("fuzz-secret-fuzz-secret-fuzz-secret!!").value();
  http::request_parser<http::string_body> parser;
  parser.body_limit(8 << 20);
  parser.header_limit(16 << 10);
  boost::beast::flat_buffer buffer;
  if (size > 0) {
    auto into = buffer.prepare(size);
    std::memcpy(into.data(), data, size);
    buffer.commit(size);
  }
  boost::beast::error_code ec;
  while (buffer.size() > 0 && !parser.is_done()) {
    const size_t used = parser.put(buffer.data(), ec);
    if (ec || used == 0) break;
    buffer.consume(used);
  }
  if (!ec && parser.is_header_done()) {
    const kvferry::Status verified = auth->verify(parser.get());
    if (verified.isOk()) std::abort();  // a forged MAC got through
  }
  return 0;
}
