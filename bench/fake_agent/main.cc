// fake_agent: a node agent with zero compute, for measuring what the orchestrator itself costs
// (scripts/bench_orchestrator.sh). It is the agent's own control API (node_agent/control_api.h),
// membership (registration, heartbeats, leaving: node_agent/membership.h) and control-plane MAC
// in front of InstantWork (instant_work.h), which answers every call at once: the orchestrator
// cannot tell it from a real agent that computes infinitely fast. It also serves the same answers
// as an OpenAI endpoint, so a plain reverse proxy (nginx) can front "the same backend" and a
// client can reach it directly.
#include <prometheus/registry.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bench/fake_agent/instant_work.h"
#include "common/control_auth.h"
#include "common/coroutine_rules.h"
#include "common/http.h"
#include "common/logging.h"
#include "common/port_file.h"
#include "config/config.h"
#include "model/model_files.h"
#include "model/tokenizer.h"
#include "node_agent/control_api.h"
#include "node_agent/load_model.h"
#include "node_agent/membership.h"
#include "node_agent/metrics.h"
#include "orchestrator/openai/answer_renderer.h"
#include "orchestrator/openai/request.h"
#include "orchestrator/openai/response.h"

namespace {

using namespace kvferry;
namespace asio = boost::asio;

constexpr const char* kUsage = R"(usage: fake_agent --model PATH [flags]

A node agent that computes nothing: it registers with the orchestrator as a real agent does
(the model's identity, its KV layout, heartbeats, the cluster secret's MAC on every call) and
serves the agent's control API, but every call answers at once: /agent/generate and
/agent/decode stream as many tokens as the call asks for (max_new_tokens), drawn from a fixed
text, then finish "length"; /agent/prefill answers with a first token and writes no KV;
/agent/reserve grants a lease on blocks that hold nothing.

It also answers POST /v1/completions itself on --openai-address, streamed (SSE) or not, with
the same tokens rendered as the orchestrator renders them (max_tokens of them, default 16):
the backend a reverse proxy can front, or a client reach directly, to compare with the
orchestrator in front of the control API (scripts/bench_orchestrator.sh).

  --model PATH              the orchestrator's model (GGUF file or Hugging Face directory):
                            its identity and tokenizer; no weights are used
  --model-name NAME         the model id /v1/models names (default: the orchestrator's default,
                            the file name without .gguf or the directory's name)
  --orchestrator HOST:PORT  where to register (default 127.0.0.1:8000)
  --control-address HOST:PORT
                            the control API (default 127.0.0.1:0: any free port)
  --openai-address HOST:PORT
                            the OpenAI endpoint (default 127.0.0.1:0)
  --role ROLE               prefill | decode | both (default both)
  --kv-blocks N             the KV pool it reports, in blocks (default 1000000)
  --name NAME               how operators see this node in /v1/nodes
  --cluster-secret-file FILE
                            the cluster secret (the orchestrator's); without it, and without
                            KVFERRY_CLUSTER_SECRET_FILE, the control API is open
  --port-file FILE          write the control API's port to FILE once listening
  --openai-port-file FILE   write the OpenAI endpoint's port to FILE once listening
  --log-level LEVEL         trace | debug | info | warn | error | off (default info)
  --help                    this text

SIGTERM or SIGINT: the agent leaves the cluster and exits 0.
)";

// The text whose tokens every answer cycles through: plain words, so each token is a chunk of
// text on its own.
constexpr std::string_view kAnswerText =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park with her friends. One day, she saw a big red ball under a tree.";

// The orchestrator's default model id (orchestrator/served_model.cc): a GGUF file's name
// without its extension, a directory's name.
std::string defaultModelName(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && !p.has_filename()) p = p.parent_path();  // "dir/" → "dir"
  return p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}

int fail(const std::string& message) {
  std::fprintf(stderr, "fake_agent: %s\n", message.c_str());
  return 2;
}

// The OpenAI side: POST /v1/completions answered from the same token cycle as the control API,
// rendered by the orchestrator's own renderer, so a proxy in front of it moves the bytes the
// orchestrator would send, written as the orchestrator writes tokens that come together.
class OpenAiBackend {
 public:
  OpenAiBackend(asio::io_context& io, const bench::InstantWork& work,
                const model::Tokenizer& tokenizer, std::string model_name, std::string fingerprint)
      : work_(work),
        tokenizer_(tokenizer),
        model_name_(std::move(model_name)),
        fingerprint_(std::move(fingerprint)),
        server_(io, http::ServerOptions{}) {
    server_.route(
        http::Verb::post, "/v1/completions",
        [this](const http::Request& r, http::ResponseWriter& w) { return completions(r, w); });
    server_.route(http::Verb::get, "/v1/models",
                  [this](const http::Request&, http::ResponseWriter& w) { return models(w); });
  }

  Status listen(std::string_view address) { return server_.listen(address); }
  uint16_t port() const { return server_.port(); }
  void start() { server_.start(); }
  void stop() { server_.stop(); }

 private:
  http::Task<void> models(http::ResponseWriter& writer) {
    const std::vector<openai::ModelInfo> list{{model_name_, 0, "kvferry"}};
    std::string body = openai::modelsResponse(list);
    co_await writer.sendJson(http::HttpStatus::ok, std::move(body));
  }

  http::Task<void> completions(const http::Request& request, http::ResponseWriter& writer) {
    openai::ParseResult parsed =
        openai::parseRequest(openai::Endpoint::kCompletions, request.body());
    if (const auto* error = std::get_if<openai::ApiError>(&parsed)) {
      std::string body = openai::errorJson(*error);
      co_await writer.sendJson(static_cast<http::HttpStatus>(error->http_status), std::move(body));
      co_return;
    }
    const openai::ApiRequest& api = std::get<openai::ApiRequest>(parsed);
    ++requests_;
    openai::AnswerSpec spec;
    spec.endpoint = openai::Endpoint::kCompletions;
    spec.stream = api.stream;
    spec.include_usage = api.include_usage;
    spec.id = openai::requestId(spec.endpoint, requests_, requests_);
    spec.created = static_cast<int64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count());
    spec.model = model_name_;
    spec.system_fingerprint = "kvferry-" + fingerprint_;
    // Not tokenized (nothing is computed here): one token per word and a BOS, which is what
    // benchmark_client's synthesized prompts encode to.
    spec.prompt_tokens = promptWords(api.prompt) + 1;
    spec.max_tokens = api.max_tokens.value_or(16);
    // After a token of text, as the orchestrator renders after the prompt: the first piece keeps
    // its leading space, so both paths send the same text.
    const model::TokenId context = work_.tokenAt(0);
    openai::AnswerRenderer answer(std::move(spec), tokenizer_, std::span(&context, 1));
    const uint32_t count = answer.spec().max_tokens;
    if (!api.stream) {
      for (uint32_t i = 0; i < count; ++i) answer.token(work_.tokenAt(i));
      std::string body = answer.finish("length");
      co_await writer.sendJson(http::HttpStatus::ok, std::move(body));
      co_return;
    }
    // Every token is ready at once, so the events go out in one write with the header, as the
    // agent's control API sends the lines its engine has queued.
    writer.beginStreamWithNextWrite(http::HttpStatus::ok, "text/event-stream");
    std::string events;
    for (uint32_t i = 0; i < count && answer.wantsMore(); ++i) {
      events += answer.token(work_.tokenAt(i));
    }
    events += answer.finish("length");
    co_await writer.endStream(events);
  }

  static uint32_t promptWords(std::string_view prompt) {
    uint32_t words = 0;
    bool in_word = false;
    for (char c : prompt) {
      const bool space = c == ' ' || c == '\n' || c == '\t';
      if (!space && !in_word) ++words;
      in_word = !space;
    }
    return words;
  }

  const bench::InstantWork& work_;
  const model::Tokenizer& tokenizer_;
  const std::string model_name_;
  const std::string fingerprint_;
  http::Server server_;
  uint64_t requests_ = 0;
};

// Tells the orchestrator this node leaves, then stops serving and the io_context.
http::Task<void> leaveAndStop(asio::io_context& io, agent::Membership& membership,
                              agent::ControlApi& control, OpenAiBackend& backend) {
  co_await membership.leave();
  control.stop();
  backend.stop();
  io.stop();
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path;
  std::string openai_address = "127.0.0.1:0";
  std::string secret_flag;
  std::string port_file;
  std::string openai_port_file;
  std::string name;
  std::string model_name;
  const std::map<std::string_view, std::string*> plain_flags{
      {"--model", &model_path},
      {"--openai-address", &openai_address},
      {"--model-name", &model_name},
      {"--name", &name},
      {"--cluster-secret-file", &secret_flag},
      {"--port-file", &port_file},
      {"--openai-port-file", &openai_port_file}};
  // The rest become keys of the agent's config, validated by its parser as the agent's own
  // flags are: section → key → value (addresses quoted), with this binary's defaults.
  struct ConfigKey {
    std::string section;
    std::string key;
    bool quoted = false;
  };
  const std::map<std::string_view, ConfigKey> config_flags{
      {"--orchestrator", {"agent", "orchestrator_address", true}},
      {"--control-address", {"agent", "control_address", true}},
      {"--role", {"agent", "role"}},
      {"--kv-blocks", {"engine", "kv_blocks"}},
      {"--log-level", {"logging", "level"}}};
  std::map<std::string, std::map<std::string, std::string>> yaml{
      {"agent", {{"role", "both"}, {"control_address", "\"127.0.0.1:0\""}}},
      {"engine", {{"kv_blocks", "1000000"}}}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) return fail(arg + " needs a value (see --help)");
    const std::string value = argv[++i];
    if (auto it = plain_flags.find(arg); it != plain_flags.end()) {
      *it->second = value;
    } else if (auto key = config_flags.find(arg); key != config_flags.end()) {
      const ConfigKey& k = key->second;
      yaml[k.section][k.key] = k.quoted ? "\"" + value + "\"" : value;
    } else {
      return fail("unknown flag " + arg + " (see --help)");
    }
  }
  if (model_path.empty()) return fail("no model: pass --model (the orchestrator's)");
  std::string yaml_text;
  for (const auto& [section, keys] : yaml) {
    yaml_text += section + ":\n";
    for (const auto& [key, value] : keys) yaml_text += "  " + key + ": " + value + "\n";
  }
  Result<config::NodeAgentConfig> parsed = config::parseNodeAgentConfig(yaml_text, "flags");
  if (!parsed.isOk()) return fail(parsed.status().message());
  config::NodeAgentConfig config = *parsed;
  config.model.path = model_path;
  config.name = name;
  config.cluster_secret_file = control_auth::secretFilePath(secret_flag, "");
  setupLogging("fake_agent", config.logging.level);

  Result<model::ModelFiles> files = model::ModelFiles::open(model_path);
  if (!files.isOk()) return fail(files.status().toString());
  Result<agent::ModelIdentity> identity = agent::modelIdentity(*files, config.model.hash_seed);
  if (!identity.isOk()) return fail(identity.status().toString());
  Result<std::unique_ptr<model::Tokenizer>> tokenizer = model::makeTokenizer(files->vocabulary());
  if (!tokenizer.isOk()) return fail(tokenizer.status().toString());
  model::EncodeOptions plain;
  plain.add_bos = false;
  Result<std::vector<model::TokenId>> cycle = (*tokenizer)->encode(kAnswerText, plain);
  if (!cycle.isOk() || cycle->empty()) return fail("cannot tokenize the answer text");
  const model::LlamaParams& params = files->params();
  engine::KvGeometry geometry;
  geometry.layers = params.block_count;
  geometry.block_tokens = config.model.block_tokens;
  geometry.kv_heads = params.head_count_kv;
  geometry.head_dim = params.headDim();
  geometry.num_blocks = config.kv_blocks;
  const uint32_t max_sequence_tokens = params.context_length;
  Result<http::tcp::endpoint> orchestrator =
      http::parseEndpoint(config.orchestrator_address, "--orchestrator");
  if (!orchestrator.isOk()) return fail(orchestrator.status().message());
  Result<std::shared_ptr<control_auth::Authenticator>> auth = control_auth::fromFileOrOpen(
      config.cluster_secret_file, "this fake agent's control API takes calls from anyone");
  if (!auth.isOk()) return fail(auth.status().toString());

  // Everything runs on this one thread, the "engine" included: nothing computes.
  asio::io_context io;
  prometheus::Registry registry;
  agent::AgentMetrics metrics(registry, config::nodeRoleName(config.role));
  agent::PrefillBacklog backlog;  // what the control API adds, InstantWork takes at once
  bench::InstantWork work(std::move(cycle).value(), geometry, backlog);
  http::ClientPool client(io);
  if (*auth != nullptr) client.signRequests([a = *auth](http::Request& r) { a->sign(r); });
  agent::Membership membership(io, client, *orchestrator,
                               std::chrono::milliseconds(config.register_timeout_ms), work,
                               io.get_executor());
  agent::ControlApi control(
      io, config.role, work, io.get_executor(), backlog, metrics, registry,
      [&membership] { return membership.nodeId(); }, *auth);
  OpenAiBackend backend(io, work, **tokenizer,
                        model_name.empty() ? defaultModelName(model_path) : model_name,
                        identity->model_fingerprint);
  if (Status s = control.listen(config.control_address); !s.isOk()) return fail(s.toString());
  if (Status s = backend.listen(openai_address); !s.isOk()) return fail(s.toString());
  for (const auto& [file, port] :
       {std::pair{port_file, control.port()}, std::pair{openai_port_file, backend.port()}}) {
    if (file.empty()) continue;
    if (Status s = writePortFile(file, port); !s.isOk()) return fail(s.toString());
  }
  std::fprintf(stderr, "fake_agent: control API on port %u, OpenAI endpoint on port %u\n",
               static_cast<unsigned>(control.port()), static_cast<unsigned>(backend.port()));

  int exit_code = 0;
  bool stopping = false;
  auto stop = [&] {
    if (stopping) return;
    stopping = true;
    control.drain();
    membership.drain();
    asio::co_spawn(io, leaveAndStop(io, membership, control, backend), asio::detached);
  };
  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (!ec) stop();
  });
  control.start();
  backend.start();
  wire::RegisterRequest registration =
      agent::registrationOf(config, *identity, control.port(), geometry, max_sequence_tokens, "tcp",
                            wire::base64Encode(std::vector<uint8_t>{'f', 'a', 'k', 'e'}));
  membership.start(std::move(registration), [&](const Status& s) {
    std::fprintf(stderr, "fake_agent: %s\n", s.toString().c_str());
    exit_code = 1;
    stop();
  });
  io.run();
  return exit_code;
}
