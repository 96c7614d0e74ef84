// The control plane's authentication (DESIGN.md §3, docs/control_plane.md "Authentication"):
// every call between the orchestrator and the agents carries an HMAC-SHA256, keyed by the
// cluster secret, over its method, target, body, a timestamp and a nonce that never repeats:
//
//   X-Kvferry-Auth: v1 ts=<unix ms> nonce=<32 hex> mac=<64 hex>
//
// The receiver recomputes the MAC (constant-time comparison), refuses a timestamp more than
// `window` away from its clock and a nonce it has seen inside the window (a replayed call).
//
// Why a MAC and not mutual TLS: one secret file is the whole set-up (the cluster scripts make
// and copy it), no certificates to issue, rotate or expire; the control plane's connections stay
// plain Beast streams with no handshake cost. What it does not give: confidentiality — prompts
// and answers between orchestrator and agents travel in clear, as on any plain-HTTP control
// plane; run the cluster on a private network, or put it behind a TLS tunnel (docs say so).
//
// Thread-safety: sign() is const and safe from any thread; verify() locks the nonce cache.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "common/http.h"
#include "common/status.h"

struct evp_mac_ctx_st;  // OpenSSL's EVP_MAC_CTX

namespace kvferry::control_auth {

inline constexpr char kHeader[] = "X-Kvferry-Auth";
// The environment variable naming the secret file when neither a flag nor the config does.
inline constexpr char kSecretFileEnv[] = "KVFERRY_CLUSTER_SECRET_FILE";
inline constexpr size_t kMinSecretBytes = 32;

class Authenticator {
 public:
  struct Options {
    std::chrono::milliseconds window{60000};  // accepted clock difference, each way
    // The replay cache's bound, about 80 bytes a nonce (20 MiB): 4,000 control calls a second
    // for the whole window. Beyond it the oldest are forgotten and anything as old is refused.
    size_t max_remembered_nonces = 1 << 18;
  };

  // `secret`: at least kMinSecretBytes bytes (INVALID_ARGUMENT otherwise, without the secret).
  static Result<std::shared_ptr<Authenticator>> create(std::string secret, Options options);
  static Result<std::shared_ptr<Authenticator>> create(std::string secret) {
    return create(std::move(secret), Options{});
  }
  // The secret from a file: its contents, surrounding whitespace trimmed. The error names the
  // file and what is wrong (missing, unreadable, too short), never its contents.
  static Result<std::shared_ptr<Authenticator>> fromFile(const std::string& path);

  // Adds the X-Kvferry-Auth header to a request whose method, target and body are final.
  void sign(http::Request& request) const;
  // OK, or UNAUTHENTICATED saying why (no header, malformed, stale, replayed, wrong MAC).
  Status verify(const http::Request& request);

  // Whether `authorization` is "Bearer <the cluster secret>": how an operator reads the
  // control plane's pages (the orchestrator's /v1/nodes) with curl. Constant time.
  bool isSecretBearer(std::string_view authorization) const;

  // The header value for these fields at `unix_ms` with `nonce_hex` (tests build forgeries and
  // replays with it).
  std::string headerValue(http::Verb verb, std::string_view target, std::string_view body,
                          int64_t unix_ms, std::string_view nonce_hex) const;

  // Keys HMAC-SHA256 with `secret` once (mac() fails, saying so, if OpenSSL cannot).
  Authenticator(std::string secret, Options options);

 private:
  std::string mac(http::Verb verb, std::string_view target, std::string_view body,
                  std::string_view ts, std::string_view nonce_hex) const;
  // A nonce's 128 bits.
  struct Nonce {
    uint64_t high = 0, low = 0;
    bool operator==(const Nonce&) const = default;
  };
  struct NonceHash {
    size_t operator()(const Nonce& n) const { return n.high ^ (n.low * 0x9E3779B97F4A7C15ull); }
  };
  // False when `nonce` was seen inside the window (or is older than what the cache still knows).
  bool remember(Nonce nonce, int64_t unix_ms, int64_t now_ms);

  const std::string secret_;
  const Options options_;
  // HMAC-SHA256 keyed with the secret, set up once: each MAC restarts it with the same key,
  // without the provider lookup and key set-up a fresh context costs. Null when OpenSSL could not.
  // One MAC at a time (keyed_mutex_).
  std::shared_ptr<evp_mac_ctx_st> keyed_;
  mutable std::mutex keyed_mutex_;
  // The nonces sign() uses: 64 random bits drawn at creation, then a count. They never repeat,
  // which is all a nonce must do here (a replay is refused by its nonce; the MAC, not the nonce,
  // is what only the secret's holders can make), and cost no random draw per call.
  const uint64_t nonce_prefix_;
  mutable std::atomic<uint64_t> nonce_count_{0};
  std::mutex mutex_;
  std::unordered_set<Nonce, NonceHash> nonces_;
  std::deque<std::pair<int64_t, Nonce>> nonce_order_;  // (timestamp, nonce), oldest first
  int64_t floor_ms_ = 0;  // requests older than this are refused: their nonces were forgotten
};

// `handler`, answering 401 in errorBody's shape (with a log line, at most one a second) unless
// the request verifies or, with kClusterAndOperator, carries the secret as a Bearer token.
// `auth` null: `handler` itself (an open control plane).
enum class Callers { kCluster, kClusterAndOperator };
http::Handler guard(std::shared_ptr<Authenticator> auth, http::Handler handler,
                    Callers callers = Callers::kCluster);

// fromFile(path); or, for an empty path, null (an open control plane) after a warning that says
// where a secret would come from and `consequence`.
Result<std::shared_ptr<Authenticator>> fromFileOrOpen(const std::string& path,
                                                      std::string_view consequence);

// The secret file a binary uses: `flag` if set, else `config_value`, else the environment's
// KVFERRY_CLUSTER_SECRET_FILE; "" when none (the control plane is then open).
std::string secretFilePath(const std::string& flag, const std::string& config_value);

}  // namespace kvferry::control_auth
