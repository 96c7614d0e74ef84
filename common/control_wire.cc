#include "common/control_wire.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <span>

namespace kvferry::wire {
namespace json = boost::json;

namespace {

// Reads fields of one JSON object, remembering the first problem ("field: what").
class Reader {
 public:
  Reader(const json::object& object, std::string prefix, std::string* error)
      : object_(object), prefix_(std::move(prefix)), error_(error) {}

  template <typename T>
  void get(std::string_view key, T& out, bool required = true) {
    const json::value* v = object_.if_contains(key);
    if (v == nullptr || v->is_null()) {
      if (required) fail(key, "is missing");
      return;
    }
    read(key, *v, out);
  }

  template <typename T>
  void getOptional(std::string_view key, std::optional<T>& out) {
    const json::value* v = object_.if_contains(key);
    if (v == nullptr || v->is_null()) return;
    T value{};
    if (read(key, *v, value)) out = value;
  }

  template <typename T>
  void getList(std::string_view key, std::vector<T>& out, bool required = true) {
    const json::value* v = object_.if_contains(key);
    if (v == nullptr || v->is_null()) {
      if (required) fail(key, "is missing");
      return;
    }
    const json::array* array = v->if_array();
    if (array == nullptr) return fail(key, "must be an array");
    out.clear();
    out.reserve(array->size());
    for (const json::value& item : *array) {
      T value{};
      if (!read(key, item, value)) return;
      out.push_back(value);
    }
  }

  // An optional array of [a, b] pairs into out's elements' `first` and `second` members.
  template <typename T, typename A, typename B>
  void pairList(std::string_view key, std::vector<T>& out, A T::*first, B T::*second) {
    const json::value* v = object_.if_contains(key);
    if (v == nullptr || v->is_null()) return;
    const json::array* array = v->if_array();
    if (array == nullptr) return fail(key, "must be an array");
    out.clear();
    out.reserve(array->size());
    for (const json::value& item : *array) {
      const json::array* pair = item.if_array();
      if (pair == nullptr || pair->size() != 2) return fail(key, "must hold [a, b] pairs");
      T value{};
      if (!read(key, (*pair)[0], value.*first) || !read(key, (*pair)[1], value.*second)) return;
      out.push_back(value);
    }
  }

  // A nested object, read by `fn(Reader&)`.
  template <typename Fn>
  bool object(std::string_view key, Fn fn, bool required = true) {
    const json::value* v = object_.if_contains(key);
    if (v == nullptr || v->is_null()) {
      if (required) fail(key, "is missing");
      return false;
    }
    const json::object* o = v->if_object();
    if (o == nullptr) {
      fail(key, "must be an object");
      return false;
    }
    Reader inner(*o, prefix_ + std::string(key) + ".", error_);
    fn(inner);
    return true;
  }

  template <typename Fn>
  void objectList(std::string_view key, Fn fn) {
    const json::value* v = object_.if_contains(key);
    if (v == nullptr || v->is_null()) return;
    const json::array* array = v->if_array();
    if (array == nullptr) return fail(key, "must be an array");
    for (const json::value& item : *array) {
      const json::object* o = item.if_object();
      if (o == nullptr) return fail(key, "must hold objects");
      Reader inner(*o, prefix_ + std::string(key) + "[].", error_);
      fn(inner);
    }
  }

 private:
  void fail(std::string_view key, std::string_view what) {
    if (error_->empty()) *error_ = prefix_ + std::string(key) + " " + std::string(what);
  }

  template <typename T>
  bool read(std::string_view key, const json::value& v, T& out) {
    if constexpr (std::is_same_v<T, bool>) {
      if (!v.is_bool()) return fail(key, "must be a boolean"), false;
      out = v.get_bool();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!v.is_string()) return fail(key, "must be a string"), false;
      out = std::string(v.get_string());
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!v.is_number()) return fail(key, "must be a number"), false;
      // Finite in T too (a double past float's range would become infinity, which JSON cannot
      // carry back: found by fuzz/fuzz_control_wire).
      const double value = v.to_number<double>();
      if (!std::isfinite(value) || std::abs(value) > std::numeric_limits<T>::max()) {
        return fail(key, "must be a finite number in range"), false;
      }
      out = static_cast<T>(value);
    } else {
      static_assert(std::is_integral_v<T>);
      boost::system::error_code ec;
      T value = v.to_number<T>(ec);
      if (ec) return fail(key, "must be an integer in range"), false;
      out = value;
    }
    return true;
  }

  const json::object& object_;
  std::string prefix_;
  std::string* error_;
};

template <typename T>
json::array arrayOf(const std::vector<T>& values) {
  json::array array;
  array.reserve(values.size());
  for (const T& v : values) array.emplace_back(v);
  return array;
}

json::value toJson(const KvLayout& l) {
  return {{"dtype", l.dtype},
          {"layers", l.layers},
          {"kv_heads", l.kv_heads},
          {"head_dim", l.head_dim},
          {"block_bytes", l.block_bytes}};
}
void read(Reader& r, KvLayout& l) {
  r.get("dtype", l.dtype);
  r.get("layers", l.layers);
  r.get("kv_heads", l.kv_heads);
  r.get("head_dim", l.head_dim);
  r.get("block_bytes", l.block_bytes);
}

json::value toJson(const PrefillModel& m) {
  return {{"fixed_s", m.fixed_s},
          {"per_token_s", m.per_token_s},
          {"per_token_squared_s", m.per_token_squared_s}};
}
void read(Reader& r, PrefillModel& m) {
  r.get("fixed_s", m.fixed_s);
  r.get("per_token_s", m.per_token_s);
  r.get("per_token_squared_s", m.per_token_squared_s);
}

json::value toJson(const Load& l) {
  return {{"queued_prefill_tokens", l.queued_prefill_tokens},
          {"queued_prefill_requests", l.queued_prefill_requests},
          {"active_decode_seqs", l.active_decode_seqs},
          {"free_kv_blocks", l.free_kv_blocks},
          {"total_kv_blocks", l.total_kv_blocks},
          {"active_leases", l.active_leases},
          {"leased_blocks", l.leased_blocks},
          {"cached_kv_blocks", l.cached_kv_blocks},
          {"kv_sequence", l.kv_sequence}};
}
void read(Reader& r, Load& l) {
  r.get("queued_prefill_tokens", l.queued_prefill_tokens);
  r.get("queued_prefill_requests", l.queued_prefill_requests);
  r.get("active_decode_seqs", l.active_decode_seqs);
  r.get("free_kv_blocks", l.free_kv_blocks);
  r.get("total_kv_blocks", l.total_kv_blocks);
  r.get("active_leases", l.active_leases);
  r.get("leased_blocks", l.leased_blocks);
  r.get("cached_kv_blocks", l.cached_kv_blocks, false);
  r.get("kv_sequence", l.kv_sequence, false);
}

json::value toJson(const KvEventBatchWire& b) {
  return {{"sequence", b.sequence}, {"stored", arrayOf(b.stored)}, {"evicted", arrayOf(b.evicted)}};
}
void read(Reader& r, KvEventBatchWire& b) {
  r.get("sequence", b.sequence);
  r.getList("stored", b.stored);
  r.getList("evicted", b.evicted);
}

json::value toJson(const Sampling& s) {
  json::object o{{"temperature", s.temperature}, {"top_p", s.top_p}, {"seed", s.seed}};
  // The logit processors travel only when they do something.
  if (s.repetition_penalty != 1) o["repetition_penalty"] = s.repetition_penalty;
  if (s.presence_penalty != 0) o["presence_penalty"] = s.presence_penalty;
  if (s.frequency_penalty != 0) o["frequency_penalty"] = s.frequency_penalty;
  if (!s.logit_bias.empty()) {
    json::array bias;
    for (const LogitBias& b : s.logit_bias) bias.push_back(json::array{b.token, b.bias});
    o["logit_bias"] = std::move(bias);
  }
  if (s.min_tokens != 0) o["min_tokens"] = s.min_tokens;
  if (s.answer_tokens != 0) o["answer_tokens"] = s.answer_tokens;
  if (s.logprobs) o["logprobs"] = *s.logprobs;
  return o;
}
void read(Reader& r, Sampling& s) {
  r.get("temperature", s.temperature);
  r.get("top_p", s.top_p);
  r.get("seed", s.seed);
  r.get("repetition_penalty", s.repetition_penalty, false);
  r.get("presence_penalty", s.presence_penalty, false);
  r.get("frequency_penalty", s.frequency_penalty, false);
  r.pairList("logit_bias", s.logit_bias, &LogitBias::token, &LogitBias::bias);
  r.get("min_tokens", s.min_tokens, false);
  r.get("answer_tokens", s.answer_tokens, false);
  r.getOptional("logprobs", s.logprobs);
}

json::value toJson(const TokenLogprobs& l) {
  json::array top;
  for (const auto& [token, logprob] : l.top) top.push_back(json::array{token, logprob});
  return {{"logprob", l.logprob}, {"top", std::move(top)}};
}
void read(Reader& r, TokenLogprobs& l) {
  r.get("logprob", l.logprob);
  r.pairList("top", l.top, &std::pair<int32_t, float>::first, &std::pair<int32_t, float>::second);
}

json::value toJson(const TransferTarget& t) {
  return {{"node_id", t.node_id},
          {"transport_blob", t.transport_blob},
          {"slot", t.slot},
          {"block_ids", arrayOf(t.block_ids)},
          {"cached_blocks", t.cached_blocks},
          {"regions", arrayOf(t.regions)}};
}
void read(Reader& r, TransferTarget& t) {
  r.get("node_id", t.node_id);
  r.get("transport_blob", t.transport_blob);
  r.get("slot", t.slot);
  r.getList("block_ids", t.block_ids);
  r.get("cached_blocks", t.cached_blocks);
  r.getList("regions", t.regions);
}

// Per-message readers, selected by decode<T>.
void read(Reader& r, RegisterRequest& m) {
  r.get("name", m.name);
  r.get("role", m.role);
  r.get("control_address", m.control_address);
  r.get("model_fingerprint", m.model_fingerprint);
  r.get("tokenizer_hash", m.tokenizer_hash);
  r.get("hash_seed_id", m.hash_seed_id);
  r.get("block_tokens", m.block_tokens);
  r.object("kv_layout", [&](Reader& in) { read(in, m.kv_layout); });
  r.get("transport", m.transport);
  r.get("transport_blob", m.transport_blob);
  r.get("kv_blocks", m.kv_blocks);
  r.get("max_sequence_tokens", m.max_sequence_tokens);
  r.object(
      "prefill_model", [&](Reader& in) { read(in, m.prefill_model); }, false);
  r.get("device", m.device, false);
  r.get("device_memory_bytes", m.device_memory_bytes, false);
}
void read(Reader& r, RegisterResponse& m) {
  r.get("node_id", m.node_id);
  r.get("node_token", m.node_token);
  r.get("heartbeat_interval_ms", m.heartbeat_interval_ms);
  r.get("heartbeat_timeout_ms", m.heartbeat_timeout_ms);
}
void read(Reader& r, HeartbeatRequest& m) {
  r.get("node_id", m.node_id);
  r.get("node_token", m.node_token);
  r.object("load", [&](Reader& in) { read(in, m.load); });
  r.object(
      "prefill_model", [&](Reader& in) { read(in, m.prefill_model); }, false);
  r.objectList("kv_events", [&](Reader& in) { read(in, m.kv_events.emplace_back()); });
  r.object(
      "kv_snapshot", [&](Reader& in) { read(in, m.kv_snapshot.emplace()); }, false);
  r.get("draining", m.draining, false);
}
void read(Reader& r, HeartbeatResponse& m) { r.get("resync", m.resync, false); }
void read(Reader& r, LeaveRequest& m) {
  r.get("node_id", m.node_id);
  r.get("node_token", m.node_token);
}
void read(Reader& r, ReserveRequest& m) {
  r.get("request_id", m.request_id);
  r.getList("tokens", m.tokens);
  r.get("lease_ms", m.lease_ms);
}
void read(Reader& r, ReserveResponse& m) {
  r.get("lease_id", m.lease_id);
  r.get("slot", m.slot);
  r.getList("block_ids", m.block_ids);
  r.get("cached_blocks", m.cached_blocks);
  r.getList("regions", m.regions);
  r.get("kv_sequence", m.kv_sequence, false);
}
void read(Reader& r, PrefillRequest& m) {
  r.get("request_id", m.request_id);
  r.getList("tokens", m.tokens);
  r.object("sampling", [&](Reader& in) { read(in, m.sampling); });
  r.object("target", [&](Reader& in) { read(in, m.target); });
  r.get("rng_draws", m.rng_draws, false);
  r.getList("stop_tokens", m.stop_tokens, false);
}
void read(Reader& r, PrefillResponse& m) {
  r.get("first_token", m.first_token);
  r.get("cached_tokens", m.cached_tokens);
  r.get("rng_draws", m.rng_draws);
  r.get("prefill_ms", m.prefill_ms);
  r.get("transfer_ms", m.transfer_ms);
  r.get("transfer_bytes", m.transfer_bytes);
  r.object(
      "logprobs", [&](Reader& in) { read(in, m.logprobs.emplace()); }, false);
  r.getList("kv_checksums", m.kv_checksums, false);
}
void read(Reader& r, DecodeRequest& m) {
  r.get("request_id", m.request_id);
  r.get("lease_id", m.lease_id);
  r.get("first_token", m.first_token);
  r.object("sampling", [&](Reader& in) { read(in, m.sampling); });
  r.get("rng_draws", m.rng_draws);
  r.get("max_new_tokens", m.max_new_tokens);
  r.getList("stop_tokens", m.stop_tokens);
  r.getList("kv_checksums", m.kv_checksums, false);
}
void read(Reader& r, GenerateRequest& m) {
  r.get("request_id", m.request_id);
  r.getList("tokens", m.tokens);
  r.object("sampling", [&](Reader& in) { read(in, m.sampling); });
  r.get("max_new_tokens", m.max_new_tokens);
  r.getList("stop_tokens", m.stop_tokens);
  r.get("rng_draws", m.rng_draws, false);
}
void read(Reader& r, StreamLine& m) {
  r.getOptional("token", m.token);
  r.getOptional("cached_tokens", m.cached_tokens);
  r.object(
      "logprobs", [&](Reader& in) { read(in, m.logprobs.emplace()); }, false);
  r.get("finish", m.finish, false);
  r.get("message", m.message, false);
  r.get("code", m.code, false);
}
void read(Reader& r, IdRequest& m) { r.get("id", m.id); }
void read(Reader& r, ReleaseRequest& m) {
  r.get("id", m.id);
  r.get("writer_done", m.writer_done, false);
}
void read(Reader& r, AgentError& m) {
  r.object("error", [&](Reader& in) {
    in.get("message", m.message);
    in.get("code", m.code, false);
    in.get("writes_settled", m.writes_settled, false);
  });
}

}  // namespace

json::value toJson(const RegisterRequest& m) {
  return {{"name", m.name},
          {"role", m.role},
          {"control_address", m.control_address},
          {"model_fingerprint", m.model_fingerprint},
          {"tokenizer_hash", m.tokenizer_hash},
          {"hash_seed_id", m.hash_seed_id},
          {"block_tokens", m.block_tokens},
          {"kv_layout", toJson(m.kv_layout)},
          {"transport", m.transport},
          {"transport_blob", m.transport_blob},
          {"kv_blocks", m.kv_blocks},
          {"max_sequence_tokens", m.max_sequence_tokens},
          {"prefill_model", toJson(m.prefill_model)},
          {"device", m.device},
          {"device_memory_bytes", m.device_memory_bytes}};
}
json::value toJson(const RegisterResponse& m) {
  return {{"node_id", m.node_id},
          {"node_token", m.node_token},
          {"heartbeat_interval_ms", m.heartbeat_interval_ms},
          {"heartbeat_timeout_ms", m.heartbeat_timeout_ms}};
}
json::value toJson(const HeartbeatRequest& m) {
  json::array events;
  for (const auto& batch : m.kv_events) events.push_back(toJson(batch));
  json::object o{{"node_id", m.node_id},           {"node_token", m.node_token},
                 {"load", toJson(m.load)},         {"prefill_model", toJson(m.prefill_model)},
                 {"kv_events", std::move(events)}, {"draining", m.draining}};
  if (m.kv_snapshot) o["kv_snapshot"] = toJson(*m.kv_snapshot);
  return o;
}
json::value toJson(const HeartbeatResponse& m) { return {{"resync", m.resync}}; }
json::value toJson(const LeaveRequest& m) {
  return {{"node_id", m.node_id}, {"node_token", m.node_token}};
}
json::value toJson(const ReserveRequest& m) {
  return {{"request_id", m.request_id}, {"tokens", arrayOf(m.tokens)}, {"lease_ms", m.lease_ms}};
}
json::value toJson(const ReserveResponse& m) {
  return {{"lease_id", m.lease_id},
          {"slot", m.slot},
          {"block_ids", arrayOf(m.block_ids)},
          {"cached_blocks", m.cached_blocks},
          {"regions", arrayOf(m.regions)},
          {"kv_sequence", m.kv_sequence}};
}
json::value toJson(const PrefillRequest& m) {
  json::object o{{"request_id", m.request_id},
                 {"tokens", arrayOf(m.tokens)},
                 {"sampling", toJson(m.sampling)},
                 {"target", toJson(m.target)},
                 {"rng_draws", m.rng_draws}};
  if (!m.stop_tokens.empty()) o["stop_tokens"] = arrayOf(m.stop_tokens);
  return o;
}
json::value toJson(const PrefillResponse& m) {
  json::object o{{"first_token", m.first_token}, {"cached_tokens", m.cached_tokens},
                 {"rng_draws", m.rng_draws},     {"prefill_ms", m.prefill_ms},
                 {"transfer_ms", m.transfer_ms}, {"transfer_bytes", m.transfer_bytes}};
  if (m.logprobs) o["logprobs"] = toJson(*m.logprobs);
  if (!m.kv_checksums.empty()) o["kv_checksums"] = arrayOf(m.kv_checksums);
  return o;
}
json::value toJson(const DecodeRequest& m) {
  json::object o{{"request_id", m.request_id},
                 {"lease_id", m.lease_id},
                 {"first_token", m.first_token},
                 {"sampling", toJson(m.sampling)},
                 {"rng_draws", m.rng_draws},
                 {"max_new_tokens", m.max_new_tokens},
                 {"stop_tokens", arrayOf(m.stop_tokens)}};
  if (!m.kv_checksums.empty()) o["kv_checksums"] = arrayOf(m.kv_checksums);
  return o;
}
json::value toJson(const GenerateRequest& m) {
  return {{"request_id", m.request_id},
          {"tokens", arrayOf(m.tokens)},
          {"sampling", toJson(m.sampling)},
          {"max_new_tokens", m.max_new_tokens},
          {"stop_tokens", arrayOf(m.stop_tokens)},
          {"rng_draws", m.rng_draws}};
}
json::value toJson(const StreamLine& m) {
  json::object o;
  if (m.token) o["token"] = *m.token;
  if (m.cached_tokens) o["cached_tokens"] = *m.cached_tokens;
  if (m.logprobs) o["logprobs"] = toJson(*m.logprobs);
  if (!m.finish.empty()) o["finish"] = m.finish;
  if (!m.message.empty()) o["message"] = m.message;
  if (!m.code.empty()) o["code"] = m.code;
  return o;
}
json::value toJson(const IdRequest& m) { return {{"id", m.id}}; }
json::value toJson(const ReleaseRequest& m) {
  return {{"id", m.id}, {"writer_done", m.writer_done}};
}
json::value toJson(const AgentError& m) {
  json::object error{{"message", m.message}};
  if (!m.code.empty()) error["code"] = m.code;
  if (m.writes_settled) error["writes_settled"] = true;
  return {{"error", std::move(error)}};
}

template <typename T>
std::string encode(const T& message) {
  return json::serialize(toJson(message));
}

namespace {

template <typename T>
Result<T> decodeJson(std::string_view text) {
  boost::system::error_code ec;
  json::value root = json::parse(text, ec);
  if (ec) return invalidArgument("malformed JSON: " + ec.message());
  const json::object* object = root.if_object();
  if (object == nullptr) return invalidArgument("the body must be a JSON object");
  T message{};
  std::string error;
  Reader reader(*object, "", &error);
  read(reader, message);
  if (!error.empty()) return invalidArgument(error);
  return message;
}

// A StreamLine with only a token (and a first line's cached_tokens).
bool plainTokenLine(const StreamLine& m) {
  return m.token && !m.logprobs && m.finish.empty() && m.message.empty() && m.code.empty();
}

// `text` starts with a JSON unsigned integer (digits, no leading zero) no larger than `max`: it is
// taken off `text` into `out`.
bool takeUnsigned(std::string_view& text, uint64_t max, uint64_t& out) {
  size_t n = 0;
  out = 0;
  while (n < text.size() && n < 11 && text[n] >= '0' && text[n] <= '9') {
    out = out * 10 + static_cast<uint64_t>(text[n] - '0');
    ++n;
  }
  if (n == 0 || n == 11 || (n > 1 && text[0] == '0') || out > max) return false;
  text.remove_prefix(n);
  return true;
}

// {"token":N} or {"token":N,"cached_tokens":M} exactly, with N and M in range; nullopt for
// anything else (the general decoder then decides).
std::optional<StreamLine> tokenLine(std::string_view text) {
  constexpr std::string_view kToken = R"({"token":)";
  constexpr std::string_view kCached = R"(,"cached_tokens":)";
  if (!text.starts_with(kToken)) return std::nullopt;
  text.remove_prefix(kToken.size());
  uint64_t token = 0;
  if (!takeUnsigned(text, static_cast<uint64_t>(std::numeric_limits<int32_t>::max()), token)) {
    return std::nullopt;
  }
  StreamLine line;
  line.token = static_cast<int32_t>(token);
  if (text.starts_with(kCached)) {
    text.remove_prefix(kCached.size());
    uint64_t cached = 0;
    if (!takeUnsigned(text, std::numeric_limits<uint32_t>::max(), cached)) return std::nullopt;
    line.cached_tokens = static_cast<uint32_t>(cached);
  }
  if (text != "}") return std::nullopt;
  return line;
}

}  // namespace

template <typename T>
Result<T> decode(std::string_view text) {
  return decodeJson<T>(text);
}

template <>
std::string encode<StreamLine>(const StreamLine& message) {
  if (!plainTokenLine(message)) return json::serialize(toJson(message));
  std::string out = R"({"token":)" + std::to_string(*message.token);
  if (message.cached_tokens) out += R"(,"cached_tokens":)" + std::to_string(*message.cached_tokens);
  out += '}';
  return out;
}

template <>
Result<StreamLine> decode<StreamLine>(std::string_view text) {
  if (std::optional<StreamLine> line = tokenLine(text)) return std::move(*line);
  return decodeJson<StreamLine>(text);
}

#define KVF_WIRE_MESSAGE(T)                 \
  template std::string encode<T>(const T&); \
  template Result<T> decode<T>(std::string_view);
KVF_WIRE_MESSAGE(RegisterRequest)
KVF_WIRE_MESSAGE(RegisterResponse)
KVF_WIRE_MESSAGE(HeartbeatRequest)
KVF_WIRE_MESSAGE(HeartbeatResponse)
KVF_WIRE_MESSAGE(LeaveRequest)
KVF_WIRE_MESSAGE(ReserveRequest)
KVF_WIRE_MESSAGE(ReserveResponse)
KVF_WIRE_MESSAGE(PrefillRequest)
KVF_WIRE_MESSAGE(PrefillResponse)
KVF_WIRE_MESSAGE(DecodeRequest)
KVF_WIRE_MESSAGE(GenerateRequest)
KVF_WIRE_MESSAGE(IdRequest)
KVF_WIRE_MESSAGE(ReleaseRequest)
KVF_WIRE_MESSAGE(AgentError)
#undef KVF_WIRE_MESSAGE

namespace {
constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64Encode(std::span<const uint8_t> bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t n = uint32_t{bytes[i]} << 16;
    if (i + 1 < bytes.size()) n |= uint32_t{bytes[i + 1]} << 8;
    if (i + 2 < bytes.size()) n |= bytes[i + 2];
    out.push_back(kBase64[(n >> 18) & 63]);
    out.push_back(kBase64[(n >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? kBase64[(n >> 6) & 63] : '=');
    out.push_back(i + 2 < bytes.size() ? kBase64[n & 63] : '=');
  }
  return out;
}

Result<std::vector<uint8_t>> base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return invalidArgument("base64 length is not a multiple of 4");
  std::vector<uint8_t> out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    uint32_t n = 0;
    int pad = 0;
    for (size_t j = 0; j < 4; ++j) {
      char c = text[i + j];
      uint32_t v = 0;
      if (c == '=' && i + 4 == text.size() && j >= 2) {
        ++pad;
      } else if (pad > 0) {
        return invalidArgument("base64 padding in the middle");
      } else if (const char* p = std::strchr(kBase64, c); p != nullptr && c != '\0') {
        v = static_cast<uint32_t>(p - kBase64);
      } else {
        return invalidArgument("invalid base64 character at offset " + std::to_string(i + j));
      }
      n = (n << 6) | v;
    }
    out.push_back(static_cast<uint8_t>(n >> 16));
    if (pad < 2) out.push_back(static_cast<uint8_t>(n >> 8));
    if (pad < 1) out.push_back(static_cast<uint8_t>(n));
  }
  return out;
}

}  // namespace kvferry::wire
