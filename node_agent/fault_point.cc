#include "node_agent/fault_point.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>

namespace kvferry::agent {
namespace {

std::atomic<bool> g_armed{false};
config::AgentFaults g_faults;  // written once, before g_armed is set
std::atomic<uint32_t> g_reached{0};

const char* phaseName(config::FaultPhase phase) {
  switch (phase) {
    case config::FaultPhase::kBeforePrefill:
      return "before_prefill";
    case config::FaultPhase::kTransferLayer:
      return "transfer_layer";
    case config::FaultPhase::kDecodeStep:
      return "decode_step";
    case config::FaultPhase::kNone:
      break;
  }
  return "none";
}

}  // namespace

void armFaultPoint(const config::AgentFaults& faults) {
  if (faults.at == config::FaultPhase::kNone) return;
  g_faults = faults;
  g_reached.store(0);
  g_armed.store(true, std::memory_order_release);
  spdlog::warn("fault point armed: {} at {}{} (time {})",
               faults.action == config::FaultAction::kDie ? "die" : "stall", phaseName(faults.at),
               faults.at == config::FaultPhase::kTransferLayer
                   ? " layer " + std::to_string(faults.layer)
                   : std::string(),
               faults.after);
}

void faultPoint(config::FaultPhase phase, uint32_t layer) {
  if (!g_armed.load(std::memory_order_acquire)) return;
  if (phase != g_faults.at) return;
  if (phase == config::FaultPhase::kTransferLayer && layer != g_faults.layer) return;
  if (g_reached.fetch_add(1) + 1 != g_faults.after) return;
  const bool die = g_faults.action == config::FaultAction::kDie;
  spdlog::error("fault point reached: {} at {} (config faults:)", die ? "dying" : "stalling",
                phaseName(phase));
  spdlog::default_logger()->flush();
  std::raise(die ? SIGKILL : SIGSTOP);
}

}  // namespace kvferry::agent
