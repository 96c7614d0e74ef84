#include "node_agent/engine/logit_processor.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "common/format.h"

namespace kvferry::engine {
namespace {

Status checkToken(model::TokenId token, uint32_t vocab_size, std::string_view what) {
  if (token >= 0 && static_cast<uint32_t>(token) < vocab_size) return Status::ok();
  return invalidArgument(std::string(what) + " token " + std::to_string(token) +
                         " is outside the vocabulary of " + std::to_string(vocab_size));
}

}  // namespace

Status validateLogitParams(const LogitParams& params, uint32_t vocab_size) {
  if (!(params.repetition_penalty > 0.0f && params.repetition_penalty <= 2.0f)) {
    return invalidArgument("repetition_penalty " + shortNumber(params.repetition_penalty) +
                           " must be in (0, 2]");
  }
  for (float penalty : {params.presence_penalty, params.frequency_penalty}) {
    if (!(penalty >= -2.0f && penalty <= 2.0f)) {
      return invalidArgument("presence and frequency penalties must be in [-2, 2], got " +
                             shortNumber(penalty));
    }
  }
  for (const auto& [token, bias] : params.logit_bias) {
    RETURN_IF_ERROR(checkToken(token, vocab_size, "logit_bias"));
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return invalidArgument("logit_bias " + shortNumber(bias) + " must be in [-100, 100]");
    }
  }
  for (model::TokenId token : params.stop_tokens) {
    RETURN_IF_ERROR(checkToken(token, vocab_size, "stop"));
  }
  if (params.logprobs && *params.logprobs > std::min(kMaxLogprobs, vocab_size)) {
    return invalidArgument("logprobs " + std::to_string(*params.logprobs) + " is more than " +
                           std::to_string(std::min(kMaxLogprobs, vocab_size)));
  }
  return Status::ok();
}

void computeLogprobs(std::span<const float> logits, model::TokenId chosen, uint32_t top,
                     TokenLogprobs& out) {
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float logit : logits) sum += std::exp(static_cast<double>(logit - max_logit));
  const double log_total = static_cast<double>(max_logit) + std::log(sum);
  const auto logprob = [&](float logit) {
    return std::max(kMinLogprob, static_cast<float>(static_cast<double>(logit) - log_total));
  };
  out.logprob = logprob(logits[static_cast<size_t>(chosen)]);

  // The `top` largest by insertion into a short sorted list: O(vocab × top), top ≤ 20.
  out.top.clear();
  const size_t n = std::min<size_t>(top, logits.size());
  if (n == 0) return;
  const auto before = [](const std::pair<model::TokenId, float>& a,
                         const std::pair<model::TokenId, float>& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  };
  for (size_t token = 0; token < logits.size(); ++token) {
    const std::pair<model::TokenId, float> entry{static_cast<model::TokenId>(token), logits[token]};
    if (out.top.size() == n && !before(entry, out.top.back())) continue;
    if (out.top.size() == n) out.top.pop_back();
    out.top.insert(std::upper_bound(out.top.begin(), out.top.end(), entry, before), entry);
  }
  for (auto& [token, value] : out.top) value = logprob(value);
}

LogitProcessor::LogitProcessor(LogitParams params, std::span<const model::TokenId> context,
                               uint32_t answer_tokens)
    : params_(std::move(params)) {
  const size_t answer_from = context.size() - std::min<size_t>(answer_tokens, context.size());
  if (params_.repetition_penalty != 1.0f) seen_.insert(context.begin(), context.end());
  for (size_t i = answer_from; i < context.size(); ++i) accept(context[i]);
}

bool LogitProcessor::changesLogits() const {
  return params_.repetition_penalty != 1.0f || params_.presence_penalty != 0.0f ||
         params_.frequency_penalty != 0.0f || !params_.logit_bias.empty() ||
         (answer_tokens_ < params_.min_tokens && !params_.stop_tokens.empty());
}

void LogitProcessor::apply(std::span<float> logits) const {
  const float repetition = params_.repetition_penalty;
  if (repetition != 1.0f) {
    for (model::TokenId token : seen_) {
      float& logit = logits[static_cast<size_t>(token)];
      logit = logit > 0.0f ? logit / repetition : logit * repetition;
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    for (const auto& [token, count] : counts_) {
      logits[static_cast<size_t>(token)] -=
          params_.frequency_penalty * static_cast<float>(count) + params_.presence_penalty;
    }
  }
  for (const auto& [token, bias] : params_.logit_bias) logits[static_cast<size_t>(token)] += bias;
  if (answer_tokens_ < params_.min_tokens) {
    for (model::TokenId token : params_.stop_tokens) {
      logits[static_cast<size_t>(token)] = -std::numeric_limits<float>::infinity();
    }
  }
}

void LogitProcessor::accept(model::TokenId token) {
  ++answer_tokens_;
  if (params_.repetition_penalty != 1.0f) seen_.insert(token);
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) ++counts_[token];
}

LogitProcessor::PickedToken LogitProcessor::pick(std::span<float> logits, Sampler& sampler,
                                                 const TokenDraw& draw) {
  PickedToken picked;
  const bool changes = changesLogits();
  // Logprobs are of the raw row: keep it when the processors are about to change it.
  if (params_.logprobs && changes) raw_.assign(logits.begin(), logits.end());
  if (changes) apply(logits);
  picked.token = sampler.pick(logits, draw);
  if (params_.logprobs) {
    const std::span<const float> raw = changes ? std::span<const float>(raw_) : logits;
    computeLogprobs(raw, picked.token, *params_.logprobs, picked.logprobs.emplace());
  }
  accept(picked.token);
  return picked;
}

}  // namespace kvferry::engine
