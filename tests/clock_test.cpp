// The hybrid logical clock: packing, total order, monotonicity under a misbehaving wall
// clock, merging remote timestamps, and resuming after a restart.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "support/temp_dir.h"
#include "tillsync/clock.h"
#include "tillsync/guid.h"
#include "tillsync/storage/change_log.h"
#include "tillsync/storage/database.h"
#include "tillsync/storage/schema.h"

namespace tillsync {
namespace {

constexpr std::int64_t kT = 1'700'000'000'000;  // an arbitrary wall-clock reading (ms)
constexpr std::uint64_t kTu = static_cast<std::uint64_t>(kT);
constexpr std::uint16_t kMaxCounter = 0xFFFF;

Hlc at(std::uint64_t millis, std::uint16_t counter) { return Hlc::make(millis, counter); }

// gtest prints Hlc values readably in failure messages.
std::string show(Hlc h) { return h.to_string(); }

#define EXPECT_HLC(actual, expected) EXPECT_EQ(show(actual), show(expected))

TEST(HlcPacking, MillisAndCounterShareOneInteger) {
  const Hlc h = at(kTu, 7);
  EXPECT_EQ(h.millis(), kTu);
  EXPECT_EQ(h.counter(), 7);
  EXPECT_EQ(h.value, (kTu << 16) | 7U);
  EXPECT_EQ(h.to_string(), "1700000000000.7");

  const Hlc top = at(Hlc::kMaxMillis, kMaxCounter);
  EXPECT_EQ(top.millis(), Hlc::kMaxMillis);
  EXPECT_EQ(top.counter(), kMaxCounter);
  EXPECT_EQ(top.value, ~std::uint64_t{0});

  const Hlc zero = at(0, 0);
  EXPECT_EQ(zero.value, 0U);
  EXPECT_EQ(zero, Hlc{});
}

TEST(HlcOrdering, IntegerOrderIsMillisThenCounter) {
  EXPECT_TRUE(at(kTu, 0) < at(kTu, 1));
  EXPECT_TRUE(at(kTu, kMaxCounter) < at(kTu + 1, 0));
  EXPECT_TRUE(at(kTu - 1, kMaxCounter) < at(kTu, 0));
  EXPECT_EQ(at(kTu, 3), at(kTu, 3));

  std::mt19937_64 rng(42);
  for (int i = 0; i < 10000; ++i) {
    // Small ranges so that equal millis (and equal counters) come up often.
    const Hlc a = at(kTu + rng() % 4, static_cast<std::uint16_t>(kMaxCounter - rng() % 3));
    const Hlc b = at(kTu + rng() % 4, static_cast<std::uint16_t>(kMaxCounter - rng() % 3));
    const auto ta = std::make_tuple(a.millis(), a.counter());
    const auto tb = std::make_tuple(b.millis(), b.counter());
    ASSERT_EQ(a < b, ta < tb) << show(a) << " vs " << show(b);
    ASSERT_EQ(a == b, ta == tb) << show(a) << " vs " << show(b);
  }
}

TEST(HlcOrdering, EventsOfSeveralNodesAreTotallyOrderedByHlcThenNode) {
  // Two nodes whose wall clocks agree produce equal HLCs; the node id breaks the tie.
  ManualClock wall(kT);
  HybridLogicalClock a(wall), b(wall);
  struct Event {
    Hlc hlc;
    std::string node;
    auto operator<=>(const Event&) const = default;
  };
  std::vector<Event> events;
  for (int i = 0; i < 3; ++i) {
    events.push_back({a.now(), "S001/T02"});
    events.push_back({b.now(), "S001/T01"});
  }
  std::vector<Event> sorted = events;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 1; i < sorted.size(); ++i) {
    EXPECT_TRUE(sorted[i - 1] < sorted[i]) << "no two events compare equal";
  }
  EXPECT_EQ(sorted.front().node, "S001/T01");
  EXPECT_HLC(sorted.front().hlc, at(kTu, 0));
  EXPECT_HLC(sorted.back().hlc, at(kTu, 2));
  EXPECT_EQ(sorted.back().node, "S001/T02");
}

TEST(HlcNow, CounterCountsEventsWithinOneMillisecond) {
  ManualClock wall(kT);
  HybridLogicalClock hlc(wall);
  EXPECT_HLC(hlc.now(), at(kTu, 0));
  EXPECT_HLC(hlc.now(), at(kTu, 1));
  EXPECT_HLC(hlc.now(), at(kTu, 2));
  wall.advance(1);
  EXPECT_HLC(hlc.now(), at(kTu + 1, 0));
  wall.advance(250);
  EXPECT_HLC(hlc.now(), at(kTu + 251, 0));
  EXPECT_HLC(hlc.last(), at(kTu + 251, 0));
}

TEST(HlcNow, MonotonicWhenTheWallClockJumpsBack) {
  ManualClock wall(kT);
  HybridLogicalClock hlc(wall);
  EXPECT_HLC(hlc.now(), at(kTu, 0));
  wall.set(kT - 3'600'000);  // NTP steps the clock back an hour
  EXPECT_HLC(hlc.now(), at(kTu, 1));
  EXPECT_HLC(hlc.now(), at(kTu, 2));
  wall.set(kT + 5);
  EXPECT_HLC(hlc.now(), at(kTu + 5, 0));
  wall.set(-1);  // even a reading before the epoch
  EXPECT_HLC(hlc.now(), at(kTu + 5, 1));
}

TEST(HlcNow, CounterOverflowBorrowsTheNextMillisecond) {
  ManualClock wall(kT);
  HybridLogicalClock hlc(wall, at(kTu, kMaxCounter - 1));
  EXPECT_HLC(hlc.now(), at(kTu, kMaxCounter));
  EXPECT_HLC(hlc.now(), at(kTu + 1, 0));
  EXPECT_HLC(hlc.now(), at(kTu + 1, 1));
  // The wall clock reaching the borrowed millisecond does not reset the counter.
  wall.set(kT + 1);
  EXPECT_HLC(hlc.now(), at(kTu + 1, 2));
  wall.set(kT + 2);
  EXPECT_HLC(hlc.now(), at(kTu + 2, 0));
}

TEST(HlcNow, MoreEventsThanTheCounterHoldsStayStrictlyIncreasing) {
  ManualClock wall(kT);
  HybridLogicalClock hlc(wall);
  Hlc prev = hlc.now();
  for (int i = 0; i < 3 * 65536; ++i) {
    const Hlc next = hlc.now();
    ASSERT_LT(prev.value, next.value) << "event " << i;
    prev = next;
  }
  EXPECT_HLC(prev, at(kTu + 3, 0));
}

TEST(HlcUpdate, RemoteAheadIsAdoptedAndPassed) {
  ManualClock wall(kT);
  HybridLogicalClock hlc(wall);
  EXPECT_HLC(hlc.now(), at(kTu, 0));
  EXPECT_HLC(hlc.update(at(kTu + 500, 7)), at(kTu + 500, 8));
  // Later local events keep counting from the remote reading until the wall catches up.
  EXPECT_HLC(hlc.now(), at(kTu + 500, 9));
  wall.set(kT + 501);
  EXPECT_HLC(hlc.now(), at(kTu + 501, 0));
}

TEST(HlcUpdate, RemoteAheadInTheSameMillisecond) {
  ManualClock wall(kT);
  HybridLogicalClock hlc(wall, at(kTu, 3));
  EXPECT_HLC(hlc.update(at(kTu, 10)), at(kTu, 11));
}

TEST(HlcUpdate, RemoteAheadOfUsButBehindTheWallClock) {
  ManualClock wall(kT + 10);
  HybridLogicalClock hlc(wall, at(kTu, 0));
  EXPECT_HLC(hlc.update(at(kTu + 5, 3)), at(kTu + 10, 0));
}

TEST(HlcUpdate, RemoteBehindDoesNotPullTheClockBack) {
  ManualClock wall(kT);
  HybridLogicalClock hlc(wall);
  EXPECT_HLC(hlc.now(), at(kTu, 0));
  EXPECT_HLC(hlc.update(at(kTu - 100, 50)), at(kTu, 1));
  wall.set(kT - 1000);
  EXPECT_HLC(hlc.update(at(kTu - 2000, 0)), at(kTu, 2));
}

TEST(HlcUpdate, RemoteWithAFullCounterBorrowsTheNextMillisecond) {
  ManualClock wall(kT);
  HybridLogicalClock hlc(wall);
  EXPECT_HLC(hlc.update(at(kTu + 1, kMaxCounter)), at(kTu + 2, 0));
}

TEST(HlcUpdate, NeverWrapsAroundAtTheLargestTimestamp) {
  // A corrupt or hostile peer may send the largest possible HLC; the clock must not
  // wrap to zero (it would then order every later local event before older ones).
  ManualClock wall(kT);
  HybridLogicalClock hlc(wall);
  const Hlc top = at(Hlc::kMaxMillis, kMaxCounter);
  EXPECT_HLC(hlc.update(top), top);
  EXPECT_HLC(hlc.now(), top);
  EXPECT_HLC(hlc.last(), top);

  HybridLogicalClock restarted(wall, at(Hlc::kMaxMillis, kMaxCounter - 1));
  EXPECT_HLC(restarted.now(), top);
  EXPECT_HLC(restarted.now(), top);
}

TEST(HlcUpdate, RandomScheduleKeepsEveryResultAboveAllItHasSeen) {
  // Two nodes with skewed, jumping wall clocks exchanging timestamps in a seeded order.
  std::mt19937_64 rng(2024);
  ManualClock wall_a(kT), wall_b(kT + 40);
  HybridLogicalClock a(wall_a), b(wall_b);
  Hlc last_a, last_b, sent_a, sent_b;
  for (int i = 0; i < 20000; ++i) {
    const auto step = static_cast<std::int64_t>(rng() % 7) - 3;  // -3..+3 ms
    (i % 2 == 0 ? wall_a : wall_b).advance(step);
    Hlc got;
    switch (rng() % 4) {
      case 0:
        got = a.now();
        sent_a = got;
        ASSERT_GT(got.value, last_a.value);
        last_a = got;
        break;
      case 1:
        got = b.now();
        sent_b = got;
        ASSERT_GT(got.value, last_b.value);
        last_b = got;
        break;
      case 2:
        got = a.update(sent_b);
        ASSERT_GT(got.value, last_a.value);
        ASSERT_GT(got.value, sent_b.value);
        last_a = got;
        break;
      default:
        got = b.update(sent_a);
        ASSERT_GT(got.value, last_b.value);
        ASSERT_GT(got.value, sent_a.value);
        last_b = got;
        break;
    }
  }
}

TEST(HlcRestart, PersistedLastIsNeverPassedBackwards) {
  ManualClock wall(kT);
  Hlc persisted;
  {
    HybridLogicalClock hlc(wall);
    for (int i = 0; i < 5; ++i) (void)hlc.now();
    (void)hlc.update(at(kTu + 60'000, 0));  // a peer a minute ahead
    persisted = hlc.last();
  }
  // The terminal reboots with its wall clock reset an hour back.
  wall.set(kT - 3'600'000);
  HybridLogicalClock hlc(wall, persisted);
  EXPECT_HLC(hlc.last(), persisted);
  const Hlc first = hlc.now();
  EXPECT_GT(first.value, persisted.value);
  EXPECT_HLC(first, at(kTu + 60'000, 2));
}

TEST(HlcRestart, ResumesFromTheChangeLogsHighestTimestamp) {
  // How a node resumes: the log's max_hlc() is what it persisted.
  testing::TempDir dir;
  static constexpr storage::Migration kMigrations[] = {{1, "log", storage::ChangeLog::kSchema}};
  const storage::SchemaSpec spec{0x54534843, "clock test", kMigrations};
  storage::DatabaseOptions options;
  options.create_if_missing = true;
  ManualClock wall(kT);
  GuidGenerator guids(1);
  Hlc issued;
  {
    auto db = storage::Database::open(dir.file("node.db"), options);
    ASSERT_TRUE(db.ok()) << db.status().to_string();
    ASSERT_TRUE(storage::migrate(**db, spec).ok());
    storage::ChangeLog log(**db);
    HybridLogicalClock hlc(wall);
    for (int i = 0; i < 4; ++i) {
      storage::LogRow row;
      row.op_id = std::string(guids.next().raw());
      row.entity = std::string(guids.next().raw());
      row.node_id = "S001/T01";
      row.hlc = hlc.now().value;
      issued = Hlc{row.hlc};
      auto txn = storage::Transaction::begin(**db);
      ASSERT_TRUE(txn.ok());
      ASSERT_TRUE(log.append(*txn, row).ok());
      ASSERT_TRUE(txn->commit().ok());
    }
  }
  wall.set(kT - 10);
  auto db = storage::Database::open(dir.file("node.db"));
  ASSERT_TRUE(db.ok()) << db.status().to_string();
  storage::ChangeLog log(**db);
  auto max = log.max_hlc();
  ASSERT_TRUE(max.ok());
  HybridLogicalClock hlc(wall, Hlc{*max});
  EXPECT_HLC(hlc.now(), at(issued.millis(), static_cast<std::uint16_t>(issued.counter() + 1)));
}

TEST(HlcSystemClock, ReadsTheSystemWallClockInMilliseconds) {
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  using std::chrono::system_clock;
  const auto before = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  const std::int64_t read = SystemClock::instance().now_ms();
  const auto after = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  EXPECT_LE(before, read);
  EXPECT_LE(read, after);
  EXPECT_EQ(&SystemClock::instance(), &SystemClock::instance());
}

}  // namespace
}  // namespace tillsync

namespace tillsync {
namespace {

// Issue 15, item 5: a remote reading further ahead than allowed is taken at the bound;
// nothing reaches the 48-bit limit, whatever the message says.
TEST(HlcBounded, ReadingsWithinTheOffsetPassAndOthersAreCapped) {
  constexpr std::int64_t now = 1'700'000'000'000;
  const Hlc near = Hlc::make(now + 1000, 7);
  EXPECT_EQ(bounded(near, now, 5000), near);
  EXPECT_EQ(bounded(Hlc::make(now + 6000, 7), now, 5000), Hlc::make(now + 5000, 0));
  EXPECT_EQ(bounded(Hlc::make(Hlc::kMaxMillis, 0xffff), now, 5000), Hlc::make(now + 5000, 0));
  EXPECT_LT(bounded(Hlc::make(Hlc::kMaxMillis, 0xffff), static_cast<std::int64_t>(Hlc::kMaxMillis), 5000).millis(),
            Hlc::kMaxMillis);
  EXPECT_EQ(bounded(Hlc::make(now - 1, 3), now, 0), Hlc::make(now - 1, 3));  // behind is fine
}

}  // namespace
}  // namespace tillsync
