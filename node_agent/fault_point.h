// The agent's one fault point (config `faults:`, flag --fault): the process dies (SIGKILL, as
// kill -9 would) or stops itself (SIGSTOP, as a hung host; a test sends SIGCONT or SIGKILL) at a
// chosen place, the Nth time it gets there. For fault tests and chaos runs; unarmed, a reached
// point costs one relaxed atomic load.
#pragma once

#include <cstdint>

#include "config/config.h"

namespace kvferry::agent {

// Arms the point (main() does, once, before the agent starts).
void armFaultPoint(const config::AgentFaults& faults);

// The places: before a prefill computes (split or colocated), after the batch of one layer of a
// prefill's KV is posted (`layer`), at a decode step with sequences in it.
void faultPoint(config::FaultPhase phase, uint32_t layer = 0);

}  // namespace kvferry::agent
