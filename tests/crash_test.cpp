// Crash tests: a terminal's domain row and its change-log row are written in one
// transaction, so a process killed at any moment (kill -9) leaves both or neither.
//
// A forked child plays the terminal: it writes a customer row plus its log row per
// transaction and reports every committed seq to the parent through a pipe. The parent
// SIGKILLs it at points chosen by a seeded RNG (counted in commits, never in time),
// reopens the database and checks it. Synchronization is by pipes only; no sleeps.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <ostream>
#include <random>
#include <string>

#include "support/temp_dir.h"
#include "tillsync/clock.h"
#include "tillsync/guid.h"
#include "tillsync/status.h"
#include "tillsync/storage/change_log.h"
#include "tillsync/storage/database.h"
#include "tillsync/storage/schema.h"

namespace tillsync {
namespace {

using storage::ChangeLog;
using storage::Database;
using storage::DatabaseOptions;
using storage::LogRow;
using storage::Migration;
using storage::SchemaSpec;
using storage::Transaction;

// The domain table stands in for a terminal's customers; payload makes rows as large as
// a test needs.
constexpr Migration kMigrations[] = {
    {1, "customers",
     "CREATE TABLE customers(guid BLOB PRIMARY KEY, name TEXT NOT NULL, note BLOB NOT NULL) "
     "STRICT;"},
    {2, "change log", ChangeLog::kSchema},
};
constexpr SchemaSpec kSpec{0x54534b39, "crash-test terminal", kMigrations};

constexpr std::int64_t kWallMs = 1'700'000'000'000;
constexpr int kCustomerCreated = 1;

DatabaseOptions durable() {
  DatabaseOptions o;
  o.synchronous = storage::Synchronous::full;
  o.create_if_missing = true;
  return o;
}

Result<std::unique_ptr<Database>> open_node(const std::string& path) {
  TS_ASSIGN_OR_RETURN(auto db, Database::open(path, durable()));
  TS_RETURN_IF_ERROR(storage::migrate(*db, kSpec));
  return db;
}

// The two writes of a customer creation, inside the caller's transaction.
Result<std::int64_t> write_customer(Database& db, ChangeLog& log, Transaction& txn,
                                    const Guid& customer, const Guid& op_id, Hlc hlc,
                                    const std::string& payload) {
  TS_ASSIGN_OR_RETURN(auto st, db.prepare("INSERT INTO customers(guid, name, note) "
                                          "VALUES(?1, ?2, ?3)"));
  st.bind_blob(1, customer.raw()).bind(2, "Customer " + customer.to_string()).bind_blob(3, payload);
  TS_RETURN_IF_ERROR(st.run());
  LogRow row;
  row.op_id = std::string(op_id.raw());
  row.entity = std::string(customer.raw());
  row.kind = kCustomerCreated;
  row.hlc = hlc.value;
  row.node_id = "S001/T01";
  row.payload = payload;
  return log.append(txn, row);
}

// One complete creation: a transaction that commits both rows or neither.
Result<std::int64_t> create_customer(Database& db, ChangeLog& log, const Guid& customer,
                                     const Guid& op_id, Hlc hlc, const std::string& payload) {
  TS_ASSIGN_OR_RETURN(auto txn, Transaction::begin(db));
  TS_ASSIGN_OR_RETURN(auto seq, write_customer(db, log, txn, customer, op_id, hlc, payload));
  TS_RETURN_IF_ERROR(txn.commit());
  return seq;
}

// ---- Pipes and processes ----------------------------------------------------------

bool write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// False on end of file (the writer died) or error.
bool read_all(int fd, void* data, std::size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

struct Pipe {
  int read_end = -1;
  int write_end = -1;
  Pipe() {
    int fds[2];
    if (::pipe(fds) == 0) {
      read_end = fds[0];
      write_end = fds[1];
    }
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  bool ok() const { return read_end >= 0; }
  void close_read() {
    if (read_end >= 0) ::close(read_end);
    read_end = -1;
  }
  void close_write() {
    if (write_end >= 0) ::close(write_end);
    write_end = -1;
  }
};

// Exit codes of a child that failed on its own (a killed child has none).
enum ChildExit : int {
  kChildOpenFailed = 10,
  kChildWriteFailed = 11,
  kChildPipeFailed = 12,
  kChildException = 13,
};

[[noreturn]] void child_fail(int code, const Status& s) {
  std::fprintf(stderr, "crash-test child: %s\n", s.to_string().c_str());
  ::_exit(code);
}

// Runs `body` in a forked child that never returns into gtest, and SIGKILLs it when the
// parent is done with it — also when an assertion ends the test early, so no writer is
// ever left running.
class Child {
 public:
  template <typename Body>
  explicit Child(Body&& body) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int code = 0;
      try {
        code = body();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "crash-test child: exception %s\n", e.what());
        code = kChildException;
      } catch (...) {
        code = kChildException;
      }
      ::_exit(code);
    }
  }
  ~Child() {
    if (pid_ > 0) (void)kill_and_reap();
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  bool started() const { return pid_ > 0; }

  // SIGKILL, then wait for it; returns the wait status.
  int kill_and_reap() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
};

std::string describe_wait(int status) {
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  return "wait status " + std::to_string(status);
}

bool killed_by_sigkill(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

// ---- What the parent checks after a crash -------------------------------------------

struct Snapshot {
  std::int64_t customers = -1;
  std::int64_t log_rows = -1;
  std::int64_t max_seq = -1;
  std::int64_t min_seq = -1;
  std::int64_t matched = -1;          // customers with exactly their own log row
  std::int64_t hlc_regressions = -1;  // seq n+1 with an HLC not above seq n's
  std::string integrity;
};

std::int64_t query(Database& db, std::string_view sql) {
  auto v = db.query_int(sql);
  EXPECT_TRUE(v.ok()) << sql << ": " << v.status().to_string();
  return v.ok() ? v->value_or(0) : -1;
}

Snapshot inspect(Database& db) {
  Snapshot s;
  auto st = db.prepare("PRAGMA integrity_check");
  EXPECT_TRUE(st.ok());
  if (st.ok()) {
    auto row = st->step();
    if (row.ok() && *row) s.integrity = st->column_text(0);
  }
  s.customers = query(db, "SELECT count(*) FROM customers");
  s.log_rows = query(db, "SELECT count(*) FROM change_log");
  s.max_seq = query(db, "SELECT coalesce(max(seq), 0) FROM change_log");
  s.min_seq = query(db, "SELECT coalesce(min(seq), 1) FROM change_log");
  s.matched = query(db,
                    "SELECT count(*) FROM customers c JOIN change_log l ON l.entity = c.guid "
                    "WHERE l.kind = 1 AND l.payload = c.note");
  s.hlc_regressions = query(db,
                            "SELECT count(*) FROM change_log a JOIN change_log b "
                            "ON b.seq = a.seq + 1 WHERE b.hlc <= a.hlc");
  return s;
}

// Every invariant a crash may not break; `n` is the number of rows.
void expect_consistent(const Snapshot& s) {
  EXPECT_EQ(s.integrity, "ok");
  EXPECT_EQ(s.customers, s.log_rows) << "a domain row without its log row, or the reverse";
  EXPECT_EQ(s.matched, s.customers) << "every customer has its own log row";
  EXPECT_EQ(s.min_seq, 1);
  EXPECT_EQ(s.max_seq, s.log_rows) << "seq must be dense 1..n";
  EXPECT_EQ(s.hlc_regressions, 0) << "the HLC went backwards across a restart";
}

// ---- The writer ----------------------------------------------------------------------

// The child's loop: resume the clock from the log (with the wall clock set back, as after
// a reboot with a wrong clock), then create customers forever, reporting each commit.
int writer_loop(const std::string& path, int report_fd, std::uint64_t seed) {
  auto db = open_node(path);
  if (!db.ok()) child_fail(kChildOpenFailed, db.status());
  ChangeLog log(**db);
  auto resume = log.max_hlc();
  if (!resume.ok()) child_fail(kChildOpenFailed, resume.status());
  ManualClock wall(kWallMs - static_cast<std::int64_t>(seed % 1000) * 1000);
  HybridLogicalClock clock(wall, Hlc{*resume});
  GuidGenerator guids(seed);
  for (std::uint64_t i = 0;; ++i) {
    const Guid customer = guids.next();
    const Guid op = guids.next();
    // Sizes vary so that some transactions span several pages.
    const std::string payload(static_cast<std::size_t>(16 + (i * 977) % 9000),
                              static_cast<char>('a' + i % 26));
    auto seq = create_customer(**db, log, customer, op, clock.now(), payload);
    if (!seq.ok()) child_fail(kChildWriteFailed, seq.status());
    const std::int64_t committed = *seq;
    if (!write_all(report_fd, &committed, sizeof committed)) return kChildPipeFailed;
    if (i % 3 == 0) wall.advance(1);
  }
}

TEST(CrashDurability, KilledWriterLeavesOnlyWholeCommittedTransactions) {
  testing::TempDir dir;
  const std::string path = dir.file("terminal.db");
  std::mt19937_64 rng(0x7115c);
  std::int64_t rows_before = 0;

  for (int round = 0; round < 20; ++round) {
    // Kill after this many reported commits; 0 kills the child while it opens/migrates.
    const auto kill_after = static_cast<int>(rng() % 48);
    SCOPED_TRACE("round " + std::to_string(round) + ", kill after " + std::to_string(kill_after) +
                 " commits");

    Pipe reports;
    ASSERT_TRUE(reports.ok());
    const std::uint64_t seed = 1000 + static_cast<std::uint64_t>(round);
    Child child([&] {
      reports.close_read();
      return writer_loop(path, reports.write_end, seed);
    });
    ASSERT_TRUE(child.started());
    reports.close_write();

    std::int64_t reported = rows_before;
    for (int i = 0; i < kill_after; ++i) {
      std::int64_t seq = 0;
      ASSERT_TRUE(read_all(reports.read_end, &seq, sizeof seq))
          << "the writer stopped early: " << describe_wait(child.kill_and_reap());
      ASSERT_EQ(seq, reported + 1) << "the writer reported a gap";
      reported = seq;
    }
    const int status = child.kill_and_reap();
    ASSERT_TRUE(killed_by_sigkill(status)) << describe_wait(status);
    // Collect what the child reported before it died: every one of those commits must
    // have survived, and at most one more (committed, not yet reported).
    std::int64_t seq = 0;
    while (read_all(reports.read_end, &seq, sizeof seq)) {
      ASSERT_EQ(seq, reported + 1);
      reported = seq;
    }

    auto db = open_node(path);
    ASSERT_TRUE(db.ok()) << db.status().to_string();
    const Snapshot s = inspect(**db);
    expect_consistent(s);
    EXPECT_GE(s.log_rows, reported) << "a reported commit was lost";
    EXPECT_LE(s.log_rows, reported + 1);
    EXPECT_GE(s.log_rows, rows_before);
    rows_before = s.log_rows;
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(rows_before, 0);
}

// The child commits `committed` customers, then opens one more transaction, writes the
// customer and its log row, tells the parent "in txn" and waits forever.
int open_transaction_writer(const std::string& path, int report_fd, int wait_fd, int committed,
                            std::size_t open_payload) {
  auto db = open_node(path);
  if (!db.ok()) child_fail(kChildOpenFailed, db.status());
  ChangeLog log(**db);
  ManualClock wall(kWallMs);
  HybridLogicalClock clock(wall);
  GuidGenerator guids(77);
  for (int i = 0; i < committed; ++i) {
    const Guid customer = guids.next();
    const Guid op = guids.next();
    auto seq = create_customer(**db, log, customer, op, clock.now(), "committed");
    if (!seq.ok()) child_fail(kChildWriteFailed, seq.status());
  }
  // Start from an empty WAL and a tiny page cache: a large open transaction must then
  // spill its uncommitted pages into the WAL file before it commits.
  Status s = (*db)->exec("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA cache_size=10;");
  if (!s.ok()) child_fail(kChildWriteFailed, s);
  auto txn = Transaction::begin(**db);
  if (!txn.ok()) child_fail(kChildWriteFailed, txn.status());
  const Guid customer = guids.next();
  const Guid op = guids.next();
  auto seq =
      write_customer(**db, log, *txn, customer, op, clock.now(), std::string(open_payload, 'u'));
  if (!seq.ok()) child_fail(kChildWriteFailed, seq.status());
  const char in_txn = 'T';
  if (!write_all(report_fd, &in_txn, 1)) return kChildPipeFailed;
  char never = 0;
  (void)read_all(wait_fd, &never, 1);  // blocks until the parent kills us
  return kChildPipeFailed;
}

struct OpenTxnCase {
  const char* name;
  std::size_t payload;
  bool spills;  // the uncommitted transaction reaches the WAL file before the kill
};
void PrintTo(const OpenTxnCase& c, std::ostream* os) { *os << c.name; }

class CrashDuringTransaction : public ::testing::TestWithParam<OpenTxnCase> {};

TEST_P(CrashDuringTransaction, KilledInsideAnOpenTransactionLeavesNeitherRow) {
  testing::TempDir dir;
  const std::string path = dir.file("terminal.db");
  constexpr int kCommitted = 3;
  Pipe reports, hold;
  ASSERT_TRUE(reports.ok() && hold.ok());
  Child child([&] {
    reports.close_read();
    hold.close_write();
    return open_transaction_writer(path, reports.write_end, hold.read_end, kCommitted,
                                   GetParam().payload);
  });
  ASSERT_TRUE(child.started());
  reports.close_write();
  hold.close_read();

  char signal_byte = 0;
  ASSERT_TRUE(read_all(reports.read_end, &signal_byte, 1))
      << "the writer never reached its open transaction: " << describe_wait(child.kill_and_reap());
  ASSERT_EQ(signal_byte, 'T');
  struct stat wal {};
  ASSERT_EQ(::stat((path + "-wal").c_str(), &wal), 0);
  if (GetParam().spills) {
    EXPECT_GT(wal.st_size, 0) << "the open transaction did not spill; the case tests less";
  }
  const int status = child.kill_and_reap();
  ASSERT_TRUE(killed_by_sigkill(status)) << describe_wait(status);

  auto db = open_node(path);
  ASSERT_TRUE(db.ok()) << db.status().to_string();
  const Snapshot s = inspect(**db);
  expect_consistent(s);
  EXPECT_EQ(s.customers, kCommitted);
  EXPECT_EQ(s.log_rows, kCommitted);
  EXPECT_EQ(query(**db, "SELECT count(*) FROM customers WHERE note <> CAST('committed' AS BLOB)"),
            0);

  // The node carries on with the next seq.
  ChangeLog log(**db);
  GuidGenerator guids(5);
  auto seq = create_customer(**db, log, guids.next(), guids.next(), Hlc::make(kWallMs + 10, 0),
                             "after restart");
  ASSERT_TRUE(seq.ok()) << seq.status().to_string();
  EXPECT_EQ(*seq, kCommitted + 1);
}

INSTANTIATE_TEST_SUITE_P(Crash, CrashDuringTransaction,
                         ::testing::Values(OpenTxnCase{"SmallTransaction", 64, false},
                                           OpenTxnCase{"SpilledTransaction", 2 << 20, true}));

TEST(CrashFailedTransaction, LogInsertFailureRollsBackTheDomainRow) {
  testing::TempDir dir;
  const std::string path = dir.file("terminal.db");
  GuidGenerator guids(9);
  const Guid first_op = guids.next();
  const Guid doomed = guids.next();
  {
    auto db = open_node(path);
    ASSERT_TRUE(db.ok()) << db.status().to_string();
    ChangeLog log(**db);
    auto first = create_customer(**db, log, guids.next(), first_op, Hlc::make(kWallMs, 0), "one");
    ASSERT_TRUE(first.ok()) << first.status().to_string();

    // The customer insert succeeds, then the log insert violates UNIQUE(op_id).
    auto failed = create_customer(**db, log, doomed, first_op, Hlc::make(kWallMs, 1), "two");
    ASSERT_FALSE(failed.ok());
    EXPECT_NE(failed.status().message().find("op_id"), std::string::npos)
        << failed.status().to_string();

    Snapshot s = inspect(**db);
    expect_consistent(s);
    EXPECT_EQ(s.customers, 1);
    auto st = (*db)->prepare("SELECT count(*) FROM customers WHERE guid = ?1");
    ASSERT_TRUE(st.ok());
    st->bind_blob(1, doomed.raw());
    auto row = st->step();
    ASSERT_TRUE(row.ok() && *row);
    EXPECT_EQ(st->column_int64(0), 0) << "the domain row outlived its failed transaction";
  }
  // Same after a reopen, and the connection's next write takes seq 2.
  auto db = open_node(path);
  ASSERT_TRUE(db.ok()) << db.status().to_string();
  expect_consistent(inspect(**db));
  ChangeLog log(**db);
  auto next = create_customer(**db, log, doomed, guids.next(), Hlc::make(kWallMs, 2), "two");
  ASSERT_TRUE(next.ok()) << next.status().to_string();
  EXPECT_EQ(*next, 2);
  EXPECT_EQ(inspect(**db).customers, 2);
}

}  // namespace
}  // namespace tillsync
