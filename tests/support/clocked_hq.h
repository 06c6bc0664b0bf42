// A fixture for tests of what happens over days: one HQ serving on a real loopback socket
// with its job parked (the test runs it), and terminals, all on one manual clock that the
// test moves on. HQ can be backed up and restored on its endpoint.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "support/cluster.h"

namespace tillsync::testing {

inline constexpr std::int64_t kDay = 24LL * 3600 * 1000;

class ClockedHqTest : public ::testing::Test {
 protected:
  static constexpr int kParkedJobMs = 3'600'000;

  void SetUp() override {
    HqServiceOptions o;
    o.job_interval_ms = kParkedJobMs;
    hq = std::make_unique<HqProcess>(hq_location.str(), o);
    hq->hq_options().clock = &clock;
    hq->start();
  }

  // A terminal of `store` (terminal T01) with every write asynchronous, on the clock.
  NodeConfig async_config(const std::string& store) {
    return terminal_config(store, "T01", hq->endpoint(), kAsyncEverything);
  }
  std::unique_ptr<Terminal> terminal_with(const std::string& store, const NodeConfig& config) {
    return std::make_unique<Terminal>(dir.file(store + ".db"), config, std::hash<std::string>{}(store), &clock);
  }

  SyncReport sync(Terminal& t) {
    auto s = t.sync();
    EXPECT_TRUE(s.ok()) << t.node().node_id() << ": " << s.status().to_string();
    return s.ok() ? *s : SyncReport{};
  }
  // Runs HQ's job until nothing is staged.
  void run_job() {
    for (int i = 0; i < 10; ++i) {
      auto r = hq->inspect()->run_sync_job();
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      if (r->remaining == 0) return;
    }
  }

  // An operator's backup of HQ's database, and its restore (HQ stopped meanwhile; it
  // comes back on the same endpoint, where the terminals find it again).
  void backup_hq(const std::string& name) {
    const std::string endpoint = hq->endpoint();
    hq->stop();
    hq_location.backup(dir, name);
    hq->start(endpoint);
  }
  void restore_hq(const std::string& name) {
    const std::string endpoint = hq->endpoint();
    hq->stop();
    hq_location.restore(dir, name);
    hq->start(endpoint);
  }

  ManualClock clock{1'750'000'000'000};
  TempDir dir;
  HqLocation hq_location{dir};
  std::unique_ptr<HqProcess> hq;
};

}  // namespace tillsync::testing
