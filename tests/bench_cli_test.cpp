// `tillsync bench`: the suite never times anything; it checks that the quick run works
// end to end and emits the JSON shape docs/performance.md describes (one object per
// scenario, each with its figures and the baselines measured in the same run), and that
// scenario j's database sizes stay within its targets.
#include <gtest/gtest.h>

#include <cstdint>
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
  // Scenario j has its own test below (it is the slowest); every other one runs here.
  auto [code, out] = run({"bench", "--quick", "--json", "--only", "a,b,c,d,e,f,g,h,i"});
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

// Scenario j (issue 18, item 4): customers edited again and again, with HQ's feed
// compaction, received-operation pruning and the terminals' log retention on, keep
// HQ's and a terminal's database within a constant factor of the final data. Sizes
// only, never times: bytes per customer after the last round against the first
// measured one (after HQ's retention window has passed once), and against the same
// customers stored once in a plain table. A table nobody prunes (a feed that keeps
// every snapshot, a log nobody compacts) fails it.
TEST_F(BenchCliTest, GrowthScenarioKeepsDatabasesWithinAConstantFactorOfTheFinalData) {
  auto [code, out] = run({"bench", "--quick", "--json", "--only", "j"});
  ASSERT_EQ(code, 0) << out << "\nstderr: " << last_err_;
  const json j = json::parse(out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << "not JSON: " << out;
  ASSERT_EQ(j.at("scenarios").size(), 1u);
  const json& s = j.at("scenarios")[0];
  ASSERT_FALSE(s.contains("error")) << s.dump();
  SCOPED_TRACE(s.dump(2));

  const json& rows = s.at("figures").at("sqlite_by_edits");
  ASSERT_GE(rows.size(), 2u);
  EXPECT_GT(rows.back().at("edits_per_customer").get<int>(), rows.front().at("edits_per_customer").get<int>());
  for (const json& row : rows) {
    EXPECT_GT(row.at("hq_bytes_per_customer").get<double>(), 0);
    EXPECT_GT(row.at("terminal_bytes_per_customer").get<double>(), 0);
    EXPECT_EQ(row.at("hq_conflicts").get<int>(), 0) << "the edits are not concurrent";
  }
  // What the lifecycle prunes holds no more rows after more edits: HQ's received
  // operations (their retention), its feed (a snapshot per customer) and the terminal's
  // log (its retention).
  for (const char* held : {"hq_inbound_rows", "hq_feed_rows", "terminal_log_rows"}) {
    EXPECT_GT(rows.front().at(held).get<std::int64_t>(), 0) << held;
    EXPECT_LE(rows.back().at(held).get<std::int64_t>(), rows.front().at(held).get<std::int64_t>()) << held;
  }
  const json& ratios = s.at("ratios");
  for (const char* name : {"sqlite_hq_growth", "sqlite_hq_file_growth", "terminal_growth", "terminal_file_growth"}) {
    ASSERT_TRUE(ratios.contains(name)) << name;
    EXPECT_LT(ratios.at(name).get<double>(), 1.5) << name;
  }
  // A constant factor of the data itself, whatever the number of edits.
  const double raw = s.at("baselines").at("final_data_bytes_per_customer").get<double>();
  EXPECT_GT(raw, 0);
  EXPECT_GE(ratios.at("sqlite_hq_vs_final_data").get<double>(), 1.0);
  EXPECT_GE(ratios.at("terminal_vs_final_data").get<double>(), 1.0);
  // Every size target is met (PostgreSQL's too when TILLSYNC_PG_URL is set).
  std::size_t targets = 0;
  for (const json& t : s.at("targets")) {
    ++targets;
    EXPECT_TRUE(t.at("met").get<bool>()) << t.dump();
  }
  EXPECT_GE(targets, 6u);  // HQ's and the terminal's: growth in use and file, and the factor
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
