// `tillsync bench`: the suite never times anything; it checks that the quick run works
// end to end and emits the JSON shape docs/performance.md describes (one object per
// scenario, each with its figures and the baselines measured in the same run).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "support/process.h"
#include "support/temp_dir.h"

namespace {

using nlohmann::json;
using tillsync::testing::Process;
using tillsync::testing::TempDir;

constexpr int kBenchTimeoutMs = 600'000;  // a loaded CI machine; --quick is ~1 minute

class BenchCliTest : public ::testing::Test {
 protected:
  std::pair<int, std::string> run(const std::vector<std::string>& args, int timeout_ms = kBenchTimeoutMs) {
    Process p(TILLSYNC_BIN, args, dir_.file("err-" + std::to_string(runs_++) + ".txt"));
    const int code = p.wait(timeout_ms);
    last_err_ = p.err();
    return {code, p.out()};
  }
  TempDir dir_;
  int runs_ = 0;
  std::string last_err_;
};

// Every number in `figures` (recursively) is finite and not negative.
void expect_sane_numbers(const json& j, const std::string& where) {
  if (j.is_number()) {
    EXPECT_GE(j.get<double>(), 0.0) << where;
  } else if (j.is_object() || j.is_array()) {
    for (const auto& [k, v] : j.items()) expect_sane_numbers(v, where + "." + k);
  }
}

TEST_F(BenchCliTest, QuickRunEmitsOneValidObjectPerScenarioWithSameRunBaselines) {
  auto [code, out] = run({"bench", "--quick", "--json"});
  ASSERT_EQ(code, 0) << out << "\nstderr: " << last_err_;
  const json j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << "not JSON: " << out;
  EXPECT_EQ(j.at("mode"), "quick");
  ASSERT_TRUE(j.at("scenarios").is_array());

  std::set<std::string> seen;
  for (const json& s : j.at("scenarios")) {
    const std::string id = s.at("scenario").get<std::string>();
    SCOPED_TRACE("scenario " + id);
    seen.insert(id);
    ASSERT_FALSE(s.contains("error")) << s.dump();
    EXPECT_FALSE(s.at("title").get<std::string>().empty());
    EXPECT_FALSE(s.at("figures").empty());
    EXPECT_FALSE(s.at("bound").get<std::string>().empty());
    expect_sane_numbers(s.at("figures"), id);
    expect_sane_numbers(s.at("ratios"), id);
    for (const json& t : s.at("targets")) {
      EXPECT_TRUE(t.at("met").is_boolean());
      EXPECT_FALSE(t.at("target").get<std::string>().empty());
    }
  }
  EXPECT_EQ(seen, (std::set<std::string>{"a", "b", "c", "d", "e", "f", "g", "h", "i"}));

  // The comparisons the issue asks for are measured in the same run, not quoted.
  auto scenario = [&](const std::string& id) {
    for (const json& s : j.at("scenarios"))
      if (s.at("scenario") == id) return s;
    return json();
  };
  const json a = scenario("a"), c = scenario("c"), h = scenario("h");
  EXPECT_GT(a.at("baselines").at("raw_sqlite_single_row_insert").at("p50_us").get<double>(), 0);
  EXPECT_GT(a.at("figures").at("async").at("p99_us").get<double>(), 0);
  EXPECT_GT(a.at("figures").at("sync_loopback").at("per_second").get<double>(), 0);
  EXPECT_GT(c.at("figures").at("ops_per_second").get<double>(), 0);
  EXPECT_GT(c.at("baselines").at("raw_sqlite_batched_insert_rows_per_second").get<double>(), 0);
  EXPECT_GT(c.at("baselines").at("raw_zmq_push_pull_messages_per_second").get<double>(), 0);
  EXPECT_GT(c.at("baselines").at("session_changeset_peer_ops_per_second").get<double>(), 0);
  EXPECT_TRUE(c.at("ratios").contains("vs_raw_sqlite_batched_insert"));
  EXPECT_GT(h.at("figures").at("ops_per_second").get<double>(), 0);
  EXPECT_EQ(scenario("b").at("figures").at("by_terminals").size(), 4u);
}

TEST_F(BenchCliTest, OnlyAndDirSelectScenariosAndKeepTheDatabases) {
  const std::string dir = dir_.file("kept");
  auto [code, out] = run({"bench", "--quick", "--json", "--only", "a", "--dir", dir});
  ASSERT_EQ(code, 0) << out << "\nstderr: " << last_err_;
  const json j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << out;
  ASSERT_EQ(j.at("scenarios").size(), 1u);
  EXPECT_EQ(j.at("scenarios")[0].at("scenario"), "a");
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(dir) / "a-hq.db"));

  // A directory with earlier results is refused rather than mixed with new ones.
  auto again = run({"bench", "--quick", "--only", "a", "--dir", dir});
  EXPECT_EQ(again.first, 3) << again.second << last_err_;
  EXPECT_EQ(run({"bench", "--only", "z"}).first, 2);
}

}  // namespace
