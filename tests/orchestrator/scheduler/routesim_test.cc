// Runs the real routesim binary on a trace slice (tests/data/traces/) and checks what a user
// relies on: every policy reported with sane numbers, the same seed giving the same JSON, and
// one-line errors.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace {

const std::string kSource = KVFERRY_SOURCE_DIR;
const std::string kTrace = kSource + "/tests/data/traces/conversation_head300.jsonl";
const std::string kCluster = kSource + "/config/examples/routesim_h100_llama3_8b.yaml";

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

RunResult routesim(const std::string& args) {
  std::string command = std::string(ROUTESIM_BIN) + " " + args + " 2>&1";
  RunResult run;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return run;
  char buffer[4096];
  size_t n = 0;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) run.output.append(buffer, n);
  int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

std::string readAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string tempPath(const std::string& name) {
  return ::testing::TempDir() + "routesim_test_" + std::to_string(getpid()) + "_" + name;
}

TEST(RoutesimTest, ReportsEveryPolicyDeterministically) {
  std::string first = tempPath("a.json");
  std::string second = tempPath("b.json");
  std::string args = "--trace " + kTrace + " --cluster " + kCluster +
                     " --policies all --rate-scale 1.5 --seed 7 --json ";
  RunResult run = routesim(args + first);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  ASSERT_EQ(routesim(args + second).exit_code, 0);
  std::string json = readAll(first);
  EXPECT_EQ(json, readAll(second));
  for (const char* name :
       {"round_robin", "least_loaded", "sglang_cache_aware", "dynamo_kv_cost", "kvferry"}) {
    EXPECT_NE(run.output.find(name), std::string::npos) << name;  // the stdout table
  }

  boost::json::object root = boost::json::parse(json).as_object();
  EXPECT_EQ(root.at("trace").as_string(), kTrace);
  EXPECT_EQ(root.at("rate_scale").as_double(), 1.5);
  const boost::json::array& policies = root.at("policies").as_array();
  ASSERT_EQ(policies.size(), 5u);
  for (const boost::json::value& value : policies) {
    const boost::json::object& p = value.as_object();
    EXPECT_EQ(p.size(), 12u);
    SCOPED_TRACE(std::string(p.at("name").as_string()));
    double p50 = p.at("ttft_p50_ms").as_double();
    EXPECT_GT(p50, 0);
    EXPECT_LE(p50, p.at("ttft_p90_ms").as_double());
    EXPECT_LE(p.at("ttft_p90_ms").as_double(), p.at("ttft_p99_ms").as_double());
    EXPECT_LE(p.at("tpot_p50_ms").as_double(), p.at("tpot_p99_ms").as_double());
    EXPECT_GT(p.at("tpot_p50_ms").as_double(), 6.0);  // at least the fixed 7 ms step
    double attained = p.at("slo_attained_frac").as_double();
    EXPECT_GE(attained, 0);
    EXPECT_LE(attained, 1);
    EXPECT_GE(p.at("goodput_rps").as_double(), 0);
    double hit = p.at("hit_rate").as_double();
    EXPECT_GE(hit, 0);
    EXPECT_LE(hit, 1);
    EXPECT_GT(p.at("oracle_hit_rate").as_double(), 0);
    EXPECT_EQ(p.at("rejected").to_number<uint64_t>(), 0u);
    EXPECT_GT(p.at("transfer_bytes").to_number<uint64_t>(), 0u);
  }
  // The idle-GPU bounds: more cache can only shorten a prefill, and a pooled cache only holds
  // blocks the oracle has seen, so the oracle's row is the best and no cache the worst.
  const boost::json::array& bounds = root.at("bounds").as_array();
  ASSERT_EQ(bounds.size(), 4u);
  const char* names[] = {"idle_no_cache", "idle_pooled_lru", "idle_pooled_belady",
                         "idle_oracle_cache"};
  const boost::json::object& no_cache = bounds[0].as_object();
  const boost::json::object& oracle = bounds[3].as_object();
  for (size_t i = 0; i < 4; ++i) {
    const boost::json::object& b = bounds[i].as_object();
    EXPECT_EQ(b.at("name").as_string(), names[i]);
    EXPECT_LE(b.at("ttft_p50_ms").as_double(), b.at("ttft_p90_ms").as_double());
    EXPECT_LE(b.at("ttft_p90_ms").as_double(), b.at("ttft_p99_ms").as_double());
    EXPECT_LE(b.at("ttft_p99_ms").as_double(), no_cache.at("ttft_p99_ms").as_double());
    EXPECT_GE(b.at("ttft_p99_ms").as_double(), oracle.at("ttft_p99_ms").as_double());
    EXPECT_GE(b.at("hit_rate").as_double(), no_cache.at("hit_rate").as_double());
    EXPECT_LE(b.at("hit_rate").as_double(), oracle.at("hit_rate").as_double());
  }
  EXPECT_EQ(no_cache.at("hit_rate").as_double(), 0.0);
  EXPECT_GT(oracle.at("hit_rate").as_double(), 0.0);
  EXPECT_EQ(oracle.at("hit_rate").as_double(),
            policies[0].as_object().at("oracle_hit_rate").as_double());
  std::remove(first.c_str());
  std::remove(second.c_str());
}

TEST(RoutesimTest, RejectsRequestsThatCanNeverFitAndCountsThem) {
  std::string cluster = tempPath("small.yaml");
  std::ofstream(cluster) << "cluster:\n  kv_blocks_per_node: 12\n";
  std::string json = tempPath("small.json");
  RunResult run = routesim("--trace " + kTrace + " --cluster " + cluster +
                           " --policies kvferry,round_robin --rate-scale 1 --json " + json);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  boost::json::object root = boost::json::parse(readAll(json)).as_object();
  for (const boost::json::value& p : root.at("policies").as_array()) {
    EXPECT_GT(p.as_object().at("rejected").to_number<uint64_t>(), 0u);
  }
  std::remove(cluster.c_str());
  std::remove(json.c_str());
}

TEST(RoutesimTest, ErrorsAreOneLineAndHelpHelps) {
  RunResult help = routesim("--help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("--rate-scale"), std::string::npos);

  RunResult bad_policy = routesim("--trace " + kTrace + " --cluster " + kCluster +
                                  " --policies kvferry,random --rate-scale 1");
  EXPECT_EQ(bad_policy.exit_code, 2);
  EXPECT_EQ(bad_policy.output.rfind("routesim: --policies: unknown policy 'random'", 0), 0u)
      << bad_policy.output;
  EXPECT_EQ(bad_policy.output.find('\n'), bad_policy.output.size() - 1);

  RunResult missing = routesim("--trace " + kTrace + " --policies all --rate-scale 1");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.output.find("--cluster is required"), std::string::npos);

  RunResult bad_rate =
      routesim("--trace " + kTrace + " --cluster " + kCluster + " --policies all --rate-scale 0");
  EXPECT_EQ(bad_rate.exit_code, 2);
  EXPECT_NE(bad_rate.output.find("--rate-scale: expected a positive number"), std::string::npos);

  RunResult no_file = routesim("--trace /nonexistent.jsonl --cluster " + kCluster +
                               " --policies all --rate-scale 1");
  EXPECT_EQ(no_file.exit_code, 2);
  EXPECT_NE(no_file.output.find("/nonexistent.jsonl"), std::string::npos);
}

}  // namespace
