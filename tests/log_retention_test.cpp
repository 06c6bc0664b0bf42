// Issue 18, item 3: terminal log retention (DESIGN.md §3). A terminal may compact the
// prefix of its change log HQ acknowledged; the restore recoveries keep working with a
// compacted log, and a loss they cannot repair is reported. HQ serves on a real loopback
// socket with its job parked, as in recovery_test.cpp; HQ and the terminals share one
// manual clock that the tests move on by days.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "support/clocked_hq.h"

namespace tillsync {
namespace {

using testing::kDay;
using testing::new_person;
using testing::Terminal;

class LogRetentionTest : public testing::ClockedHqTest {
 protected:
  // A terminal keeping its log `retention_days` after HQ acknowledged it (nullopt: the
  // default, the whole log).
  std::unique_ptr<Terminal> terminal(const std::string& store, std::optional<std::int64_t> retention_days) {
    NodeConfig config = async_config(store);
    if (retention_days) config.log_retention_ms = *retention_days * kDay;
    return terminal_with(store, config);
  }

  Customer create(Terminal& t, const std::string& name) {
    auto out = t.node().create_customer(new_person(name, "Retained"));
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    return out.ok() ? out->customer : Customer{};
  }
  std::int64_t compact(Terminal& t) {
    auto removed = t.replicator().compact_log();
    EXPECT_TRUE(removed.ok()) << removed.status().to_string();
    return removed.ok() ? *removed : -1;
  }
  // The seqs the terminal's log holds.
  static std::vector<std::int64_t> seqs(Terminal& t) {
    std::vector<std::int64_t> out;
    for (const LogRecord& r : t.node().read_log(0, 1000).value()) out.push_back(r.seq);
    return out;
  }
  NodeStatus status(Terminal& t) { return t.node().status().value(); }
  std::size_t hq_customers() { return hq->inspect()->customers("").value().size(); }
  bool at_hq(const Customer& c) { return !hq->inspect()->customers(c.guid.to_string()).value().empty(); }
};

TEST_F(LogRetentionTest, ByDefaultTheWholeLogIsKept) {
  auto t = terminal("S001", std::nullopt);
  EXPECT_FALSE(t->node().config().log_retention_ms.has_value());
  for (const char* n : {"A1", "A2", "A3"}) create(*t, n);
  sync(*t);
  clock.advance(400 * kDay);
  create(*t, "A4");
  EXPECT_EQ(sync(*t).compacted, 0);
  clock.advance(400 * kDay);
  EXPECT_EQ(sync(*t).compacted, 0);
  EXPECT_EQ(compact(*t), 0);
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{1, 2, 3, 4}));
  const NodeStatus s = status(*t);
  EXPECT_EQ(s.first_seq, 1);
  EXPECT_EQ(s.log_rows, 4);
  EXPECT_EQ(s.compacted_through, 0);
  EXPECT_FALSE(s.compacted_at_ms.has_value());
}

// Only rows HQ acknowledged longer ago than the retention go, a prefix at a time; the
// newest acknowledged row (hello names it) and every unacknowledged row stay, and no
// seq is given out twice.
TEST_F(LogRetentionTest, CompactsOnlyRowsHqAcknowledgedLongEnoughAgoAndKeepsTheAcknowledgedRow) {
  auto t = terminal("S001", 30);
  for (const char* n : {"A1", "A2", "A3"}) create(*t, n);
  sync(*t);  // day 0: HQ acknowledges 1-3
  clock.advance(10 * kDay);
  for (const char* n : {"B1", "B2"}) create(*t, n);
  EXPECT_EQ(sync(*t).compacted, 0);  // day 10: HQ acknowledges 4-5; nothing is 30 days old
  clock.advance(10 * kDay);
  create(*t, "C1");  // day 20: seq 6, not pushed
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}));

  clock.advance(11 * kDay);  // day 31: 1-3 were acknowledged 31 days ago, 4-5 21 days ago
  EXPECT_EQ(compact(*t), 3);
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{4, 5, 6}));
  clock.advance(10 * kDay);  // day 41: 4-5 too, but 5 is the acknowledged cursor's row
  EXPECT_EQ(compact(*t), 1);
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{5, 6}));
  clock.advance(359 * kDay);  // day 400: 6 was never acknowledged
  EXPECT_EQ(compact(*t), 0);
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{5, 6}));
  NodeStatus s = status(*t);
  EXPECT_EQ(s.first_seq, 5);
  EXPECT_EQ(s.last_seq, 6);
  EXPECT_EQ(s.log_rows, 2);
  EXPECT_EQ(s.compacted_through, 4);
  EXPECT_EQ(s.acked_seq, 5);
  EXPECT_EQ(s.pending_ops, 1);

  // Pushed now: 6 becomes the acknowledged row and 5 (acknowledged on day 10) goes.
  SyncReport r = sync(*t);
  EXPECT_EQ(r.pushed, 1);
  EXPECT_EQ(r.compacted, 1);
  EXPECT_TRUE(r.warning.empty()) << r.warning;
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{6}));
  // The next operation gets the next seq, never one the log had before.
  create(*t, "D1");
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{6, 7}));
  r = sync(*t);
  EXPECT_EQ(r.pushed, 1);
  EXPECT_EQ(r.pending_ops, 0);
  run_job();
  EXPECT_EQ(hq_customers(), 7u);
  EXPECT_EQ(status(*t).lost_at_ms, std::nullopt);
}

// Rows written long ago but pushed only now (a till offline for two months) stay until
// HQ has held them for the retention: an HQ restored from a backup younger than the
// retention, taken before it had them, still gets every operation back.
TEST_F(LogRetentionTest, AnHqBackupYoungerThanTheRetentionLosesNothing) {
  auto t = terminal("S001", 30);
  const Customer a1 = create(*t, "A1");
  const Customer a2 = create(*t, "A2");  // day 0, not pushed
  clock.advance(50 * kDay);
  backup_hq("day-50");  // HQ has nothing of S001/T01
  clock.advance(10 * kDay);
  SyncReport r = sync(*t);  // day 60: HQ acknowledges 1-2, written 60 days ago
  EXPECT_EQ(r.pushed, 2);
  EXPECT_EQ(r.compacted, 0);
  clock.advance(10 * kDay);
  EXPECT_EQ(sync(*t).compacted, 0);
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{1, 2}));

  restore_hq("day-50");  // day 70: a backup 20 days old, inside the retention
  r = sync(*t);
  EXPECT_TRUE(r.warning.empty()) << r.warning;
  EXPECT_EQ(r.pushed, 2);
  EXPECT_FALSE(status(*t).lost_at_ms.has_value());
  run_job();
  EXPECT_TRUE(at_hq(a1));
  EXPECT_TRUE(at_hq(a2));

  clock.advance(31 * kDay);  // 31 days after HQ acknowledged them again
  EXPECT_EQ(sync(*t).compacted, 1);  // 2 is the acknowledged row
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{2}));
}

// HQ restored from a backup older than the retention: the terminal cannot push what it
// compacted. It pushes what it holds and says which seqs HQ lacks, in the sync's
// warning, `store status` and its last recovery; the sync is not a silent success.
TEST_F(LogRetentionTest, AnHqBackupOlderThanTheRetentionIsReportedAsALoss) {
  auto t = terminal("S001", 1);
  backup_hq("empty");
  const Customer a1 = create(*t, "A1");
  create(*t, "A2");
  sync(*t);
  run_job();
  clock.advance(2 * kDay);
  const Customer a3 = create(*t, "A3");
  SyncReport r = sync(*t);
  EXPECT_EQ(r.compacted, 2);
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{3}));
  EXPECT_TRUE(r.warning.empty()) << r.warning;

  restore_hq("empty");  // two days old: older than the retention
  r = sync(*t);
  EXPECT_EQ(r.pushed, 1);  // what the log holds goes to HQ
  EXPECT_NE(r.warning.find("seqs 1..2"), std::string::npos) << r.warning;
  EXPECT_NE(r.warning.find("compacted"), std::string::npos) << r.warning;
  NodeStatus s = status(*t);
  EXPECT_EQ(s.lost_from, 1);
  EXPECT_EQ(s.lost_to, 2);
  ASSERT_TRUE(s.lost_at_ms.has_value());
  EXPECT_EQ(*s.lost_at_ms, clock.now_ms());
  EXPECT_NE(s.last_recovery.find("seqs 1..2"), std::string::npos) << s.last_recovery;
  EXPECT_EQ(s.pending_ops, 0);
  run_job();
  EXPECT_TRUE(at_hq(a3));
  EXPECT_FALSE(at_hq(a1));  // lost at HQ, as reported
  EXPECT_TRUE(t->node().find(a1.guid.to_string()).ok());  // the till deletes nothing

  // Said when found; `store status` keeps it.
  r = sync(*t);
  EXPECT_TRUE(r.warning.empty()) << r.warning;
  EXPECT_EQ(status(*t).lost_to, 2);
}

TEST_F(LogRetentionTest, ANewHqDatabaseIsToldWhatTheCompactedLogNoLongerHolds) {
  auto t = terminal("S001", 1);
  for (const char* n : {"A1", "A2", "A3"}) create(*t, n);
  sync(*t);
  clock.advance(2 * kDay);
  create(*t, "A4");
  EXPECT_EQ(sync(*t).compacted, 3);

  const std::string endpoint = hq->endpoint();
  hq->stop();
  hq_location.wipe();  // a new HQ database: a new epoch
  hq->start(endpoint);
  SyncReport r = sync(*t);
  EXPECT_EQ(r.pushed, 1);
  EXPECT_NE(r.warning.find("seqs 1..3"), std::string::npos) << r.warning;
  NodeStatus s = status(*t);
  EXPECT_EQ(s.lost_from, 1);
  EXPECT_EQ(s.lost_to, 3);
  EXPECT_NE(s.last_recovery.find("new epoch"), std::string::npos) << s.last_recovery;
  EXPECT_NE(s.last_recovery.find("seqs 1..3"), std::string::npos) << s.last_recovery;
}

// The till's disk is replaced by a backup of its compacted log; HQ holds operations of
// the lost copy at the seqs the restored till uses next. The renumbering recovery moves
// the till's unacknowledged operations after HQ's cursor as without retention, on a log
// that starts after seq 1, and nothing is lost.
TEST_F(LogRetentionTest, ATillRestoredFromABackupOfItsCompactedLogRecovers) {
  auto t = terminal("S001", 1);
  for (const char* n : {"A", "B", "C"}) create(*t, n);
  sync(*t);
  run_job();
  clock.advance(2 * kDay);
  create(*t, "D");
  EXPECT_EQ(sync(*t).compacted, 3);
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{4}));
  const std::string backup = dir.file("till-backup.db");
  t->backup_to(backup);
  for (const char* n : {"E", "F"}) create(*t, n);
  sync(*t);  // HQ holds 5-6 of this copy
  run_job();

  t->restore_from(backup);
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{4}));
  for (const char* n : {"G", "H"}) create(*t, n);  // seqs 5-6 again, other operations
  SyncReport r = sync(*t);
  EXPECT_EQ(r.pushed, 2);
  EXPECT_TRUE(r.warning.empty()) << r.warning;
  EXPECT_NE(status(*t).last_recovery.find("moved after them"), std::string::npos) << status(*t).last_recovery;
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{4, 7, 8}));
  run_job();
  sync(*t);
  EXPECT_EQ(hq_customers(), 8u);
  auto h = hq->inspect();
  EXPECT_EQ(t->node().search("").value().size(), 8u);
  EXPECT_EQ(t->node().digest()->hex, h->digest()->hex);
  EXPECT_EQ(status(*t).pending_ops, 0);

  // And it goes on: compaction, new operations after the highest seq.
  clock.advance(2 * kDay);
  sync(*t);
  create(*t, "I");
  EXPECT_EQ(seqs(*t).back(), 9);
  EXPECT_EQ(sync(*t).pushed, 1);
  run_job();
  sync(*t);
  EXPECT_EQ(hq_customers(), 9u);
  EXPECT_EQ(t->node().digest()->hex, hq->inspect()->digest()->hex);
}

// Set later: what HQ acknowledged before counts as acknowledged when retention was
// turned on; turned off, nothing more is compacted.
TEST_F(LogRetentionTest, RetentionSetLaterCountsFromThenAndCanBeTurnedOff) {
  auto t = terminal("S001", std::nullopt);
  for (const char* n : {"A1", "A2", "A3"}) create(*t, n);
  sync(*t);
  clock.advance(100 * kDay);
  ASSERT_TRUE(t->node().set_log_retention(10 * kDay).ok());
  EXPECT_EQ(t->node().config().log_retention_ms, 10 * kDay);
  EXPECT_EQ(sync(*t).compacted, 0);  // acknowledged 100 days ago, but retained from now
  clock.advance(11 * kDay);
  EXPECT_EQ(sync(*t).compacted, 2);
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{3}));

  ASSERT_TRUE(t->node().set_log_retention(std::nullopt).ok());
  create(*t, "A4");
  sync(*t);
  clock.advance(100 * kDay);
  create(*t, "A5");
  EXPECT_EQ(sync(*t).compacted, 0);
  EXPECT_EQ(seqs(*t), (std::vector<std::int64_t>{3, 4, 5}));
  EXPECT_EQ(t->node().set_log_retention(-1).code(), Code::invalid_input);
}

}  // namespace
}  // namespace tillsync
