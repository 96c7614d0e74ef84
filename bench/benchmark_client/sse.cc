#include "bench/benchmark_client/sse.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <utility>

namespace kvferry::bench {
namespace {

std::optional<uint32_t> readCount(const boost::json::object& object, std::string_view key) {
  const boost::json::value* value = object.if_contains(key);
  if (value == nullptr) return std::nullopt;
  if (value->is_uint64() && value->get_uint64() <= UINT32_MAX) {
    return static_cast<uint32_t>(value->get_uint64());
  }
  if (value->is_int64() && value->get_int64() >= 0 && value->get_int64() <= UINT32_MAX) {
    return static_cast<uint32_t>(value->get_int64());
  }
  return std::nullopt;
}

const boost::json::string* readString(const boost::json::object& object, std::string_view key) {
  const boost::json::value* value = object.if_contains(key);
  return value != nullptr && value->is_string() ? &value->get_string() : nullptr;
}

std::string clip(std::string_view text) {
  constexpr size_t kMax = 200;
  return text.size() <= kMax ? std::string(text) : std::string(text.substr(0, kMax)) + "…";
}

std::string errorMessage(const boost::json::value& error) {
  if (error.is_string()) return std::string(error.get_string());
  if (error.is_object()) {
    if (const boost::json::string* message = readString(error.get_object(), "message")) {
      return std::string(*message);
    }
  }
  return clip(boost::json::serialize(error));
}

}  // namespace

SseEvent parseChunk(std::string_view json) {
  SseEvent event;
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(json, ec);
  if (ec || !value.is_object()) {
    event.kind = SseEvent::Kind::kMalformed;
    event.message = "malformed chunk: " + clip(json);
    return event;
  }
  const boost::json::object& object = value.get_object();
  // {"error": {...}} (OpenAI, vLLM, SGLang, kvferry) or vLLM's older {"object": "error", ...}.
  if (const boost::json::value* error = object.if_contains("error");
      error != nullptr && !error->is_null()) {
    event.kind = SseEvent::Kind::kError;
    event.message = errorMessage(*error);
    return event;
  }
  if (const boost::json::string* type = readString(object, "object"); type && *type == "error") {
    event.kind = SseEvent::Kind::kError;
    event.message = errorMessage(value);
    return event;
  }
  if (const boost::json::value* choices = object.if_contains("choices");
      choices != nullptr && choices->is_array() && !choices->get_array().empty() &&
      choices->get_array()[0].is_object()) {
    const boost::json::object& choice = choices->get_array()[0].get_object();
    if (const boost::json::string* text = readString(choice, "text")) {
      event.text = std::string(*text);
    } else if (const boost::json::value* delta = choice.if_contains("delta");
               delta != nullptr && delta->is_object()) {
      for (std::string_view key : {"content", "reasoning_content", "reasoning"}) {
        if (const boost::json::string* piece = readString(delta->get_object(), key);
            piece != nullptr && !piece->empty()) {
          event.text = std::string(*piece);
          break;
        }
      }
    }
    if (const boost::json::string* finish = readString(choice, "finish_reason")) {
      event.finish_reason = std::string(*finish);
    }
  }
  if (const boost::json::value* usage = object.if_contains("usage");
      usage != nullptr && usage->is_object()) {
    event.prompt_tokens = readCount(usage->get_object(), "prompt_tokens");
    event.completion_tokens = readCount(usage->get_object(), "completion_tokens");
  }
  return event;
}

std::optional<SseEvent> SseParser::feedLine(std::string_view line, double arrived_s) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return dispatch();
  if (line.front() == ':') return std::nullopt;  // a comment: keep-alive
  const size_t colon = line.find(':');
  const std::string_view field = line.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) {
      data_ += '\n';
    } else {
      first_line_s_ = arrived_s;
    }
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    error_event_ = value == "error";
  }
  return std::nullopt;  // id, retry and unknown fields are ignored, as SSE says
}

std::optional<SseEvent> SseParser::finish() { return dispatch(); }

std::optional<SseEvent> SseParser::dispatch() {
  if (!has_data_) {
    error_event_ = false;
    return std::nullopt;
  }
  SseEvent event;
  if (error_event_) {
    event.kind = SseEvent::Kind::kError;
    SseEvent parsed = parseChunk(data_);
    event.message = parsed.kind == SseEvent::Kind::kError ? parsed.message : clip(data_);
  } else if (data_ == "[DONE]") {
    event.kind = SseEvent::Kind::kDone;
  } else {
    event = parseChunk(data_);
  }
  event.arrived_s = first_line_s_;
  data_.clear();
  has_data_ = false;
  error_event_ = false;
  return event;
}

bool StreamMeasurement::onLine(std::string_view line, double arrived_s) {
  if (std::optional<SseEvent> event = parser_.feedLine(line, arrived_s)) apply(*event);
  return !done_ && error_kind_.empty();
}

void StreamMeasurement::apply(const SseEvent& event) {
  if (done_ || !error_kind_.empty()) return;  // nothing after the end counts
  switch (event.kind) {
    case SseEvent::Kind::kChunk:
      if (!event.text.empty()) {
        if (!first_s_) {
          first_s_ = event.arrived_s;
        } else {
          itl_s_.push_back(event.arrived_s - last_s_);
        }
        last_s_ = event.arrived_s;
        text_ += event.text;
        ++text_chunks_;
      }
      if (event.completion_tokens) completion_tokens_ = event.completion_tokens;
      if (event.prompt_tokens) prompt_tokens_ = event.prompt_tokens;
      break;
    case SseEvent::Kind::kDone:
      done_ = true;
      done_s_ = event.arrived_s;
      break;
    case SseEvent::Kind::kError:
    case SseEvent::Kind::kMalformed:
      error_kind_ = std::string(kErrorStream);
      error_ = event.message;
      break;
  }
}

RequestResult StreamMeasurement::finish(
    double end_s, std::string_view transport_kind, std::string_view transport_detail,
    const std::function<std::optional<uint32_t>(std::string_view)>& count_tokens) && {
  if (std::optional<SseEvent> event = parser_.finish()) apply(*event);
  RequestResult r;
  r.start_s = sent_s_;
  const double stop_s = done_ ? done_s_ : end_s;
  r.e2el_s = stop_s - sent_s_;
  r.ttft_s = first_s_ ? *first_s_ - sent_s_ : r.e2el_s;
  r.itl_s = std::move(itl_s_);
  if (completion_tokens_) {
    r.output_tokens = *completion_tokens_;
  } else if (std::optional<uint32_t> counted = count_tokens ? count_tokens(text_) : std::nullopt) {
    r.output_tokens = *counted;
  } else {
    r.output_tokens = text_chunks_;
  }
  r.text = std::move(text_);
  r.server_prompt_tokens = prompt_tokens_;
  if (!error_kind_.empty()) {  // what the server said wins over how the connection ended
    r.error_kind = std::move(error_kind_);
    r.error = std::move(error_);
  } else if (!transport_kind.empty()) {
    r.error_kind = std::string(transport_kind);
    r.error = std::string(transport_detail);
  } else if (!done_) {
    r.error_kind = std::string(kErrorIncomplete);
    r.error = "the stream ended without data: [DONE]";
  }
  r.success = r.error_kind.empty();
  return r;
}

}  // namespace kvferry::bench
