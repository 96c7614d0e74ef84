// Open-loop arrival schedules: when each request (or multi-turn session) is released, as seconds
// from the start of the measured run. Pure functions; deterministic from the Rng.
#pragma once

#include <cstdint>
#include <vector>

#include "bench/benchmark_client/random.h"
#include "common/status.h"

namespace kvferry::bench {

// Gaps between arrivals follow Gamma(shape = burstiness, scale = 1 / (rate · burstiness)), whose
// mean is 1/rate for every burstiness, as vLLM's `bench serve` draws them: burstiness 1 is a
// Poisson process (exponential gaps), < 1 is burstier, > 1 is more regular. The first arrival is
// at 0 and arrival i at the sum of i gaps (vLLM also delays the first request by one gap and
// rescales the sum to count/rate; we do neither, so this is a plain renewal process).
// rate = +inf releases everything at 0. INVALID_ARGUMENT for rate <= 0, NaN, or burstiness that is
// not a positive finite number.
Result<std::vector<double>> arrivalTimes(uint64_t count, double rate_per_s, double burstiness,
                                         Rng& rng);

}  // namespace kvferry::bench
