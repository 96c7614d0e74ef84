// Reading an OpenAI-style streamed response (Server-Sent Events) and measuring it.
//
// SseParser turns body lines into events: "data: <json>" lines accumulate until a blank line
// ends the event (SSE framing), "event: error" marks the next event as an error, lines starting
// with ':' are comments (keep-alives), "data: [DONE]" ends the stream. The JSON of a chunk is
// read for the generated text (completions: choices[0].text; chat: choices[0].delta.content, or
// delta.reasoning_content / delta.reasoning for reasoning models), finish_reason, usage
// (prompt_tokens, completion_tokens) and an {"error": ...} object, which vLLM, SGLang and
// kvferry send in place of a chunk when a stream fails.
//
// StreamMeasurement applies one request's events, with the time each line arrived, to the
// request's record: TTFT at the first chunk with non-empty text, one ITL gap per later such chunk,
// the text, usage, and the error kind. Both are pure (no clocks, no I/O) and single-threaded.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/benchmark_client/metrics.h"

namespace kvferry::bench {

struct SseEvent {
  enum class Kind {
    kChunk,      // a parsed JSON chunk (text may be empty: role, finish and usage chunks)
    kDone,       // data: [DONE]
    kError,      // an error object or an `event: error`
    kMalformed,  // data that is not a JSON object
  };
  Kind kind = Kind::kChunk;
  std::string text;
  std::string finish_reason;
  std::optional<uint32_t> prompt_tokens;
  std::optional<uint32_t> completion_tokens;
  std::string message;   // kError / kMalformed: what was wrong
  double arrived_s = 0;  // when the event's first data line arrived
};

class SseParser {
 public:
  // One line of the body without its '\n' (a trailing '\r' is dropped), and when it arrived.
  // Returns the event that the line completes, if any.
  std::optional<SseEvent> feedLine(std::string_view line, double arrived_s);
  // The body ended: an event still open (no blank line after it) is completed.
  std::optional<SseEvent> finish();

 private:
  std::optional<SseEvent> dispatch();

  std::string data_;
  bool has_data_ = false;
  bool error_event_ = false;
  double first_line_s_ = 0;
};

// Reads a chunk's JSON (exposed for tests).
SseEvent parseChunk(std::string_view json);

class StreamMeasurement {
 public:
  // sent_s: when the request was written (the origin of TTFT and E2E).
  explicit StreamMeasurement(double sent_s) : sent_s_(sent_s) {}

  // Returns false when the stream is over for us ([DONE], an error event, a malformed chunk).
  bool onLine(std::string_view line, double arrived_s);

  // The stream ended at end_s (the body ended or onLine said stop). `transport` is the
  // HTTP/transport outcome as classified by the caller: empty when the body was read cleanly.
  // Output tokens: usage.completion_tokens when the server sent it, else the tokenizer's count
  // of the text (when `count_tokens` is given), else the number of text chunks.
  RequestResult finish(
      double end_s, std::string_view transport_kind, std::string_view transport_detail,
      const std::function<std::optional<uint32_t>(std::string_view)>& count_tokens) &&;

 private:
  void apply(const SseEvent& event);

  double sent_s_;
  SseParser parser_;
  std::string text_;
  std::optional<double> first_s_;
  double last_s_ = 0;
  double done_s_ = 0;
  std::vector<double> itl_s_;
  uint32_t text_chunks_ = 0;
  std::optional<uint32_t> completion_tokens_;
  std::optional<uint32_t> prompt_tokens_;
  bool done_ = false;
  std::string error_kind_;
  std::string error_;
};

}  // namespace kvferry::bench
