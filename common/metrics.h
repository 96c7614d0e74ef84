// Prometheus helpers every component's metrics struct uses (orchestrator/metrics.h,
// node_agent/metrics.h): one-line family builders for unlabelled metrics, and the text exposition
// a /metrics route serves.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string>
#include <string_view>

namespace kvferry::metrics {

// The exposition format's content type (text format 0.0.4).
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4";

// The registry's families in the text exposition format.
std::string text(const prometheus::Registry& registry);

// A family with one unlabelled metric, registered on `registry`.
prometheus::Histogram& histogram(prometheus::Registry& registry, const std::string& name,
                                 const std::string& help,
                                 const prometheus::Histogram::BucketBoundaries& buckets);
prometheus::Counter& counter(prometheus::Registry& registry, const std::string& name,
                             const std::string& help);
prometheus::Gauge& gauge(prometheus::Registry& registry, const std::string& name,
                         const std::string& help);
// A labelled counter family (metrics are added per label set by the caller).
prometheus::Family<prometheus::Counter>& counterFamily(prometheus::Registry& registry,
                                                       const std::string& name,
                                                       const std::string& help);

}  // namespace kvferry::metrics
