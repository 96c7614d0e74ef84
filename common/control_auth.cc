#include "common/control_auth.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "common/format.h"

namespace kvferry::control_auth {
namespace {

constexpr std::string_view kVersion = "v1";

int64_t nowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string hex(const unsigned char* bytes, size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (size_t i = 0; i < size; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

bool isLowerHex(std::string_view text, size_t size) {
  if (text.size() != size) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// "v1 ts=... nonce=... mac=..." → its three fields; false when malformed.
bool parseHeader(std::string_view value, std::string_view& ts, std::string_view& nonce,
                 std::string_view& mac) {
  const auto field = [&value](std::string_view name, std::string_view& out) {
    if (value.substr(0, name.size()) != name) return false;
    value.remove_prefix(name.size());
    const size_t end = value.find(' ');
    out = value.substr(0, end);
    value.remove_prefix(end == std::string_view::npos ? value.size() : end + 1);
    return !out.empty();
  };
  if (value.substr(0, kVersion.size() + 1) != "v1 ") return false;
  value.remove_prefix(kVersion.size() + 1);
  return field("ts=", ts) && field("nonce=", nonce) && field("mac=", mac) && value.empty();
}

// HMAC-SHA256 keyed with `secret`; null (after a log line) when OpenSSL cannot set it up.
std::shared_ptr<EVP_MAC_CTX> keyedHmac(const std::string& secret) {
  EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  EVP_MAC_CTX* ctx = hmac != nullptr ? EVP_MAC_CTX_new(hmac) : nullptr;
  EVP_MAC_free(hmac);  // the context holds its own reference
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_END};
  if (ctx == nullptr || EVP_MAC_init(ctx, reinterpret_cast<const unsigned char*>(secret.data()),
                                     secret.size(), params) != 1) {
    EVP_MAC_CTX_free(ctx);
    spdlog::error("control_auth: OpenSSL cannot set up HMAC-SHA256");
    return nullptr;
  }
  return std::shared_ptr<EVP_MAC_CTX>(ctx, EVP_MAC_CTX_free);
}

uint64_t randomNoncePrefix() {
  uint64_t prefix = 0;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&prefix), sizeof(prefix)) != 1) {
    // Without OpenSSL's randomness, the OS's: only uniqueness across restarts rests on it.
    spdlog::error("control_auth: OpenSSL RAND_bytes failed; nonces from std::random_device");
    std::random_device os;
    prefix = (uint64_t{os()} << 32) | os();
  }
  return prefix;
}

}  // namespace

Authenticator::Authenticator(std::string secret, Options options)
    : secret_(std::move(secret)),
      options_(options),
      keyed_(keyedHmac(secret_)),
      nonce_prefix_(randomNoncePrefix()) {}

Result<std::shared_ptr<Authenticator>> Authenticator::create(std::string secret, Options options) {
  if (secret.size() < kMinSecretBytes) {
    return invalidArgument("the cluster secret has " + std::to_string(secret.size()) +
                           " bytes; at least " + std::to_string(kMinSecretBytes) +
                           " are needed (scripts/make_secrets.sh makes one)");
  }
  return std::make_shared<Authenticator>(std::move(secret), options);
}

Result<std::shared_ptr<Authenticator>> Authenticator::fromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalidArgument("cluster secret file " + path + ": cannot be read");
  std::ostringstream contents;
  contents << in.rdbuf();
  struct stat info {};
  if (::stat(path.c_str(), &info) == 0 && (info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    spdlog::warn("cluster secret file {} can be read by other users (mode {:o}); chmod 600 it",
                 path, info.st_mode & 0777);
  }
  auto created = create(std::string(trimmed(contents.str())));
  if (!created.isOk()) return created.status().withContext("cluster secret file " + path);
  return created;
}

std::string Authenticator::mac(http::Verb verb, std::string_view target, std::string_view body,
                               std::string_view ts, std::string_view nonce_hex) const {
  // The body goes in whole, after the fields, each field ended by '\n' (none may hold one: the
  // method and target come from a parsed request line, ts and nonce are digits and hex).
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  size_t out_size = 0;
  // The keyed context itself, restarted with its key (no copy of the context per MAC).
  std::lock_guard lock(keyed_mutex_);
  EVP_MAC_CTX* ctx = keyed_.get();
  bool ok = ctx != nullptr && EVP_MAC_init(ctx, nullptr, 0, nullptr) == 1;
  const auto update = [&](std::string_view part) {
    ok = ok &&
         EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(part.data()), part.size()) == 1;
  };
  update(kVersion);
  update("\n");
  update(http::beast::http::to_string(verb));
  update("\n");
  update(target);
  update("\n");
  update(ts);
  update("\n");
  update(nonce_hex);
  update("\n");
  update(body);
  ok = ok && EVP_MAC_final(ctx, out.data(), &out_size, out.size()) == 1;
  // A failure here is OpenSSL's own (no HMAC or SHA-256 in the library): an empty MAC never
  // matches, so every call is refused and the logs say why.
  if (!ok) {
    spdlog::error("control_auth: OpenSSL could not compute HMAC-SHA256");
    return {};
  }
  return hex(out.data(), out_size);
}

std::string Authenticator::headerValue(http::Verb verb, std::string_view target,
                                       std::string_view body, int64_t unix_ms,
                                       std::string_view nonce_hex) const {
  const std::string ts = std::to_string(unix_ms);
  return std::string(kVersion) + " ts=" + ts + " nonce=" + std::string(nonce_hex) +
         " mac=" + mac(verb, target, body, ts, nonce_hex);
}

void Authenticator::sign(http::Request& request) const {
  const uint64_t count = nonce_count_.fetch_add(1, std::memory_order_relaxed);
  std::array<unsigned char, 16> nonce{};
  for (int i = 0; i < 8; ++i) {
    nonce[i] = static_cast<unsigned char>(nonce_prefix_ >> (56 - 8 * i));
    nonce[8 + i] = static_cast<unsigned char>(count >> (56 - 8 * i));
  }
  request.set(kHeader, headerValue(request.method(), request.target(), request.body(), nowUnixMs(),
                                   hex(nonce.data(), nonce.size())));
}

bool Authenticator::isSecretBearer(std::string_view authorization) const {
  const std::string_view token = bearerToken(authorization);
  return token.size() == secret_.size() &&
         CRYPTO_memcmp(token.data(), secret_.data(), secret_.size()) == 0;
}

Status Authenticator::verify(const http::Request& request) {
  const auto found = request.find(kHeader);
  if (found == request.end()) return Status(StatusCode::kUnauthenticated, "no X-Kvferry-Auth");
  std::string_view ts, nonce, presented;
  if (!parseHeader(found->value(), ts, nonce, presented) || !isLowerHex(nonce, 32) ||
      !isLowerHex(presented, 64) || ts.size() > 15 ||
      ts.find_first_not_of("0123456789") != std::string_view::npos) {
    return Status(StatusCode::kUnauthenticated, "malformed X-Kvferry-Auth");
  }
  const std::string expected = mac(request.method(), request.target(), request.body(), ts, nonce);
  if (expected.size() != presented.size() ||
      CRYPTO_memcmp(expected.data(), presented.data(), expected.size()) != 0) {
    return Status(StatusCode::kUnauthenticated, "wrong MAC (another cluster's secret?)");
  }
  const int64_t unix_ms = std::stoll(std::string(ts));
  const int64_t now_ms = nowUnixMs();
  if (std::llabs(now_ms - unix_ms) > options_.window.count()) {
    return Status(StatusCode::kUnauthenticated,
                  "timestamp " + std::to_string((unix_ms - now_ms) / 1000) +
                      " s away from this host's clock (more than the " +
                      std::to_string(options_.window.count() / 1000) +
                      " s allowed: are the clocks synchronised?)");
  }
  const auto half = [](std::string_view hex16) {
    uint64_t value = 0;
    for (char c : hex16)
      value = (value << 4) | static_cast<uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
    return value;
  };
  if (!remember(Nonce{half(nonce.substr(0, 16)), half(nonce.substr(16))}, unix_ms, now_ms)) {
    return Status(StatusCode::kUnauthenticated, "replayed request (nonce seen before)");
  }
  return Status::ok();
}

bool Authenticator::remember(Nonce nonce, int64_t unix_ms, int64_t now_ms) {
  std::lock_guard lock(mutex_);
  // Forget what fell out of the window: a replay of it is refused by its timestamp.
  while (!nonce_order_.empty() && nonce_order_.front().first < now_ms - options_.window.count()) {
    nonces_.erase(nonce_order_.front().second);
    nonce_order_.pop_front();
  }
  if (unix_ms < floor_ms_) return false;
  if (!nonces_.insert(nonce).second) return false;
  // Kept in arrival order, which is timestamp order up to the senders' clock differences; the
  // expiry above is approximate by that much, and the floor below keeps it safe.
  nonce_order_.emplace_back(unix_ms, nonce);
  if (nonce_order_.size() > options_.max_remembered_nonces) {
    floor_ms_ = std::max(floor_ms_, nonce_order_.front().first + 1);
    nonces_.erase(nonce_order_.front().second);
    nonce_order_.pop_front();
  }
  return true;
}

namespace {

// The guard's body: a free coroutine, so its frame copies what it needs (coroutine_rules.h, 4).
http::Task<void> guarded(std::shared_ptr<Authenticator> auth,
                         std::shared_ptr<const http::Handler> handler, Callers callers,
                         const http::Request& request, http::ResponseWriter& writer) {
  const bool operator_call = callers == Callers::kClusterAndOperator &&
                             auth->isSecretBearer(request[http::beast::http::field::authorization]);
  const Status verified = operator_call ? Status::ok() : auth->verify(request);
  if (verified.isOk()) {
    co_await (*handler)(request, writer);
    co_return;
  }
  // At most one line a second, so a flood of forged calls cannot flood the log.
  static std::atomic<int64_t> last_log_ms{0};
  const int64_t now_ms = nowUnixMs();
  int64_t last = last_log_ms.load();
  if (now_ms - last >= 1000 && last_log_ms.compare_exchange_strong(last, now_ms)) {
    spdlog::warn("refused a control call to {}: {}", std::string_view(request.target()),
                 verified.message());
  }
  std::string body = http::errorBody("unauthenticated control call: " + verified.message());
  co_await writer.send(http::HttpStatus::unauthorized, "application/json", std::move(body));
}

}  // namespace

http::Handler guard(std::shared_ptr<Authenticator> auth, http::Handler handler, Callers callers) {
  if (auth == nullptr) return handler;
  auto shared_handler = std::make_shared<const http::Handler>(std::move(handler));
  return [auth = std::move(auth), shared_handler, callers](const http::Request& request,
                                                           http::ResponseWriter& writer) {
    return guarded(auth, shared_handler, callers, request, writer);
  };
}

Result<std::shared_ptr<Authenticator>> fromFileOrOpen(const std::string& path,
                                                      std::string_view consequence) {
  if (!path.empty()) return Authenticator::fromFile(path);
  spdlog::warn("no cluster secret (auth.cluster_secret_file, --cluster-secret-file, {}): {}",
               kSecretFileEnv, consequence);
  return std::shared_ptr<Authenticator>();
}

std::string secretFilePath(const std::string& flag, const std::string& config_value) {
  if (!flag.empty()) return flag;
  if (!config_value.empty()) return config_value;
  const char* env = std::getenv(kSecretFileEnv);
  return env != nullptr ? env : "";
}

}  // namespace kvferry::control_auth
