// The append-only change log: dense sequence numbers, reads after a cursor, and the
// guarantees that let a node resume and replicate (no updates, no gaps, no duplicates).
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "support/temp_dir.h"
#include "tillsync/clock.h"
#include "tillsync/guid.h"
#include "tillsync/status.h"
#include "tillsync/storage/change_log.h"
#include "tillsync/storage/database.h"
#include "tillsync/storage/schema.h"

namespace tillsync::storage {
namespace {

using tillsync::testing::TempDir;

const Status& status_of(const Status& s) { return s; }
template <typename T>
const Status& status_of(const Result<T>& r) {
  return r.status();
}

#define ASSERT_OK(expr)                                        \
  do {                                                         \
    const auto& ok_or_ = (expr);                               \
    ASSERT_TRUE(ok_or_.ok()) << status_of(ok_or_).to_string(); \
  } while (0)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(TS_CONCAT(result_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr)    \
  auto tmp = (expr);                                 \
  ASSERT_TRUE(tmp.ok()) << tmp.status().to_string(); \
  lhs = std::move(tmp).value()

constexpr Migration kLogMigrations[] = {{1, "change log", ChangeLog::kSchema}};
constexpr SchemaSpec kSpec{0x54534c47, "change-log test", kLogMigrations};

class ChangeLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    DatabaseOptions o;
    o.create_if_missing = true;
    auto db = Database::open(dir_.file("node.db"), o);
    ASSERT_TRUE(db.ok()) << db.status().to_string();
    db_ = std::move(db).value();
    ASSERT_OK(migrate(*db_, kSpec));
    log_ = std::make_unique<ChangeLog>(*db_);
  }

  LogRow row(std::uint64_t hlc, std::string payload = "payload") {
    LogRow r;
    r.op_id = std::string(guids_.next().raw());
    r.entity = std::string(guids_.next().raw());
    r.kind = 3;
    r.hlc = hlc;
    r.node_id = "S001/T01";
    r.payload = std::move(payload);
    return r;
  }

  // Appends `r` in a transaction of its own; returns the seq it got.
  Result<std::int64_t> append_committed(const LogRow& r) {
    TS_ASSIGN_OR_RETURN(auto txn, Transaction::begin(*db_));
    TS_ASSIGN_OR_RETURN(std::int64_t seq, log_->append(txn, r));
    TS_RETURN_IF_ERROR(txn.commit());
    return seq;
  }

  std::vector<std::int64_t> seqs_after(std::int64_t after, std::size_t limit) {
    auto rows = log_->read_after(after, limit);
    EXPECT_TRUE(rows.ok()) << rows.status().to_string();
    std::vector<std::int64_t> out;
    if (rows.ok())
      for (const auto& r : *rows) out.push_back(r.seq);
    return out;
  }

  TempDir dir_;
  GuidGenerator guids_{7};
  std::unique_ptr<Database> db_;
  std::unique_ptr<ChangeLog> log_;
};

TEST_F(ChangeLogTest, EmptyLog) {
  ASSERT_OK_AND_ASSIGN(auto last, log_->last_seq());
  EXPECT_EQ(last, 0);
  ASSERT_OK_AND_ASSIGN(auto count, log_->count_after(0));
  EXPECT_EQ(count, 0);
  ASSERT_OK_AND_ASSIGN(auto hlc, log_->max_hlc());
  EXPECT_EQ(hlc, 0U);
  EXPECT_TRUE(seqs_after(0, 10).empty());
}

TEST_F(ChangeLogTest, SeqIsDenseFromOne) {
  for (std::int64_t expected = 1; expected <= 3; ++expected) {
    LogRow r = row(100);
    r.seq = 99;  // ignored: the log assigns seqs
    ASSERT_OK_AND_ASSIGN(auto seq, append_committed(r));
    EXPECT_EQ(seq, expected);
  }
  // Several appends in one transaction get consecutive seqs.
  {
    ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
    ASSERT_OK_AND_ASSIGN(auto a, log_->append(txn, row(101)));
    ASSERT_OK_AND_ASSIGN(auto b, log_->append(txn, row(102)));
    EXPECT_EQ(a, 4);
    EXPECT_EQ(b, 5);
    ASSERT_OK(txn.commit());
  }
  ASSERT_OK_AND_ASSIGN(auto last, log_->last_seq());
  EXPECT_EQ(last, 5);
  EXPECT_EQ(seqs_after(0, 100), (std::vector<std::int64_t>{1, 2, 3, 4, 5}));
}

TEST_F(ChangeLogTest, RowsRoundTripExactly) {
  LogRow r = row(Hlc::make(1'700'000'000'123, 7).value, std::string("\x00\x01\xff\x00", 4));
  r.kind = 12;
  r.node_id = "S042/T99";
  r.op_id = std::string(16, '\0');  // raw GUID bytes may be anything, zeros included
  ASSERT_OK_AND_ASSIGN(auto seq, append_committed(r));
  LogRow empty = row(5, "");
  ASSERT_OK(append_committed(empty));

  ASSERT_OK_AND_ASSIGN(auto rows, log_->read_after(0, 10));
  ASSERT_EQ(rows.size(), 2U);
  EXPECT_EQ(rows[0].seq, seq);
  EXPECT_EQ(rows[0].op_id, r.op_id);
  EXPECT_EQ(rows[0].entity, r.entity);
  EXPECT_EQ(rows[0].kind, 12);
  EXPECT_EQ(rows[0].hlc, r.hlc);
  EXPECT_EQ(rows[0].node_id, "S042/T99");
  EXPECT_EQ(rows[0].payload, r.payload);
  EXPECT_EQ(rows[1].payload, "");
}

TEST_F(ChangeLogTest, ReadAfterHonoursCursorAndLimit) {
  for (int i = 0; i < 10; ++i) ASSERT_OK(append_committed(row(100 + i)));
  EXPECT_EQ(seqs_after(3, 4), (std::vector<std::int64_t>{4, 5, 6, 7}));
  EXPECT_EQ(seqs_after(8, 100), (std::vector<std::int64_t>{9, 10}));
  EXPECT_TRUE(seqs_after(10, 5).empty());
  EXPECT_TRUE(seqs_after(0, 0).empty());
  EXPECT_EQ(seqs_after(0, 1), (std::vector<std::int64_t>{1}));
  // Paging through with the last seq as the cursor visits every row once.
  std::vector<std::int64_t> all;
  std::int64_t cursor = 0;
  for (;;) {
    auto page = seqs_after(cursor, 3);
    if (page.empty()) break;
    all.insert(all.end(), page.begin(), page.end());
    cursor = page.back();
  }
  EXPECT_EQ(all, (std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
}

TEST_F(ChangeLogTest, CountAfter) {
  for (int i = 0; i < 10; ++i) ASSERT_OK(append_committed(row(100 + i)));
  for (auto [after, expected] :
       std::vector<std::pair<std::int64_t, std::int64_t>>{{0, 10}, {7, 3}, {10, 0}, {25, 0}}) {
    ASSERT_OK_AND_ASSIGN(auto n, log_->count_after(after));
    EXPECT_EQ(n, expected) << "after " << after;
  }
}

TEST_F(ChangeLogTest, MaxHlcIsTheHighestNotTheLast) {
  for (std::uint64_t hlc : {500U, 900U, 300U}) ASSERT_OK(append_committed(row(hlc)));
  ASSERT_OK_AND_ASSIGN(auto max, log_->max_hlc());
  EXPECT_EQ(max, 900U);
}

TEST_F(ChangeLogTest, MaxHlcComparesAsUnsigned) {
  // HLCs use all 64 bits (48-bit ms + 16-bit counter); SQLite stores them as signed
  // integers, so a value with the top bit set must still count as the largest.
  const Hlc top = Hlc::make(Hlc::kMaxMillis, 3);
  ASSERT_OK(append_committed(row(Hlc::make(1'700'000'000'000, 0).value)));
  ASSERT_OK(append_committed(row(top.value)));
  ASSERT_OK(append_committed(row(Hlc::make(1'700'000'000'001, 0).value)));
  ASSERT_OK_AND_ASSIGN(auto max, log_->max_hlc());
  EXPECT_EQ(max, top.value);
  ASSERT_OK_AND_ASSIGN(auto rows, log_->read_after(1, 1));
  ASSERT_EQ(rows.size(), 1U);
  EXPECT_EQ(rows[0].hlc, top.value);
}

TEST_F(ChangeLogTest, UpdateIsRefusedByTheAppendOnlyTrigger) {
  ASSERT_OK(append_committed(row(100, "original")));
  Status s = db_->exec("UPDATE change_log SET payload = X'00', kind = 9 WHERE seq = 1");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("append-only"), std::string::npos) << s.to_string();
  Status bound_update = [&]() -> Status {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare("UPDATE change_log SET hlc = ?1"));
    st.bind(1, std::int64_t{1});
    return st.run();
  }();
  EXPECT_FALSE(bound_update.ok());
  ASSERT_OK_AND_ASSIGN(auto rows, log_->read_after(0, 10));
  ASSERT_EQ(rows.size(), 1U);
  EXPECT_EQ(rows[0].payload, "original");
  EXPECT_EQ(rows[0].kind, 3);
  EXPECT_EQ(rows[0].hlc, 100U);
}

// The log retention deletes a prefix (deleting is not updating: the trigger allows
// it). The newest row is never deleted, so no seq is given out twice.
TEST_F(ChangeLogTest, RemoveThroughDeletesAPrefixButNeverTheNewestRow) {
  for (int i = 1; i <= 5; ++i) ASSERT_OK(append_committed(row(static_cast<std::uint64_t>(i))));
  {
    ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
    ASSERT_OK_AND_ASSIGN(auto removed, log_->remove_through(txn, 3));
    EXPECT_EQ(removed, 3);
    ASSERT_OK(txn.commit());
  }
  EXPECT_EQ(seqs_after(0, 10), (std::vector<std::int64_t>{4, 5}));
  ASSERT_OK_AND_ASSIGN(auto first, log_->first_after(0));
  EXPECT_EQ(first, std::optional<std::int64_t>{4});
  {
    // Through the newest row (or beyond): refused, nothing deleted.
    ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
    for (std::int64_t through : {5, 9}) {
      auto all = log_->remove_through(txn, through);
      ASSERT_FALSE(all.ok());
      EXPECT_EQ(all.status().code(), Code::internal);
      EXPECT_NE(all.status().message().find("newest row"), std::string::npos) << all.status().to_string();
    }
    ASSERT_OK(txn.commit());
  }
  EXPECT_EQ(seqs_after(0, 10), (std::vector<std::int64_t>{4, 5}));
  ASSERT_OK_AND_ASSIGN(auto last, log_->last_seq());
  EXPECT_EQ(last, 5);
  ASSERT_OK_AND_ASSIGN(auto seq, append_committed(row(6)));
  EXPECT_EQ(seq, 6);
  {
    ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
    ASSERT_OK_AND_ASSIGN(auto removed, log_->remove_through(txn, 5));
    EXPECT_EQ(removed, 2);
    ASSERT_OK(txn.commit());
  }
  ASSERT_OK_AND_ASSIGN(seq, append_committed(row(7)));
  EXPECT_EQ(seq, 7);
  EXPECT_EQ(seqs_after(0, 10), (std::vector<std::int64_t>{6, 7}));
  // Still append-only otherwise.
  EXPECT_FALSE(db_->exec("UPDATE change_log SET kind = 9 WHERE seq = 6").ok());
  // And only inside a transaction.
  ASSERT_OK_AND_ASSIGN(auto done, Transaction::begin(*db_));
  ASSERT_OK(done.commit());
  EXPECT_FALSE(log_->remove_through(done, 6).ok());
}

TEST_F(ChangeLogTest, RolledBackAppendLeavesNoGap) {
  ASSERT_OK(append_committed(row(1)));
  ASSERT_OK(append_committed(row(2)));
  const LogRow abandoned = row(3, "abandoned");
  {
    ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
    ASSERT_OK_AND_ASSIGN(auto seq, log_->append(txn, abandoned));
    EXPECT_EQ(seq, 3);
    // Dropped without commit.
  }
  ASSERT_OK_AND_ASSIGN(auto last, log_->last_seq());
  EXPECT_EQ(last, 2);
  ASSERT_OK_AND_ASSIGN(auto count, log_->count_after(0));
  EXPECT_EQ(count, 2);

  // The next append takes seq 3: seqs stay dense, and the abandoned op_id is free.
  const LogRow next = row(4, "next");
  ASSERT_OK_AND_ASSIGN(auto seq, append_committed(next));
  EXPECT_EQ(seq, 3);
  ASSERT_OK_AND_ASSIGN(auto rows, log_->read_after(2, 10));
  ASSERT_EQ(rows.size(), 1U);
  EXPECT_EQ(rows[0].op_id, next.op_id);
  EXPECT_EQ(rows[0].payload, "next");
  ASSERT_OK(append_committed(abandoned));
}

TEST_F(ChangeLogTest, DuplicateOpIdIsRefused) {
  const LogRow first = row(1, "first");
  ASSERT_OK(append_committed(first));
  LogRow again = row(2, "again");
  again.op_id = first.op_id;
  {
    ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
    auto dup = log_->append(txn, again);
    ASSERT_FALSE(dup.ok());
    EXPECT_NE(dup.status().message().find("op_id"), std::string::npos) << dup.status().to_string();
  }
  ASSERT_OK_AND_ASSIGN(auto rows, log_->read_after(0, 10));
  ASSERT_EQ(rows.size(), 1U);
  EXPECT_EQ(rows[0].payload, "first");
  ASSERT_OK_AND_ASSIGN(auto seq, append_committed(row(3)));
  EXPECT_EQ(seq, 2);
}

TEST_F(ChangeLogTest, AppendNeedsAnOpenTransaction) {
  ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
  ASSERT_OK(txn.commit());
  auto seq = log_->append(txn, row(1));
  ASSERT_FALSE(seq.ok());
  EXPECT_EQ(seq.status().code_name(), "internal");
  ASSERT_OK_AND_ASSIGN(auto count, log_->count_after(0));
  EXPECT_EQ(count, 0);
}

TEST_F(ChangeLogTest, OtherConnectionsSeeAppendsOnlyAfterCommit) {
  ASSERT_OK_AND_ASSIGN(auto reader_db, Database::open(dir_.file("node.db")));
  ChangeLog reader(*reader_db);
  ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
  ASSERT_OK(log_->append(txn, row(1)));
  ASSERT_OK_AND_ASSIGN(auto before, reader.last_seq());
  EXPECT_EQ(before, 0);
  ASSERT_OK(txn.commit());
  ASSERT_OK_AND_ASSIGN(auto after, reader.last_seq());
  EXPECT_EQ(after, 1);
}

}  // namespace
}  // namespace tillsync::storage
