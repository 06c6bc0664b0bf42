// Storage layer: opening files, pragmas, prepared statements, transactions, migrations
// and the checks that keep tillsync away from files that are not its own.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "support/temp_dir.h"
#include "tillsync/status.h"
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
#define EXPECT_OK(expr)                                        \
  do {                                                         \
    const auto& ok_or_ = (expr);                               \
    EXPECT_TRUE(ok_or_.ok()) << status_of(ok_or_).to_string(); \
  } while (0)
// Compares codes by name so that a failure prints both, with the full status.
#define EXPECT_CODE(expr, expected)                                 \
  do {                                                              \
    const auto& code_of_ = (expr);                                  \
    EXPECT_EQ(status_of(code_of_).code_name(), code_name(expected)) \
        << status_of(code_of_).to_string();                         \
  } while (0)
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(TS_CONCAT(result_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(tmp, lhs, expr)    \
  auto tmp = (expr);                                 \
  ASSERT_TRUE(tmp.ok()) << tmp.status().to_string(); \
  lhs = std::move(tmp).value()

DatabaseOptions creating() {
  DatabaseOptions o;
  o.create_if_missing = true;
  return o;
}

// The first column of the first row of a parameterless query, as text.
std::optional<std::string> query_text(Database& db, std::string_view sql) {
  auto st = db.prepare(sql);
  if (!st.ok()) return std::nullopt;
  auto row = st->step();
  if (!row.ok() || !*row) return std::nullopt;
  return st->column_optional_text(0);
}

std::int64_t query_count(Database& db, std::string_view sql) {
  auto v = db.query_int(sql);
  EXPECT_TRUE(v.ok()) << v.status().to_string();
  return v.ok() ? v->value_or(-1) : -1;
}

bool has_table(Database& db, const std::string& name) {
  auto st = db.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1");
  EXPECT_TRUE(st.ok());
  if (!st.ok()) return false;
  st->bind(1, std::string_view(name));
  auto row = st->step();
  EXPECT_TRUE(row.ok() && *row);
  return row.ok() && *row && st->column_int64(0) == 1;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

unsigned permissions_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 0777U;
}

// ---- Opening ---------------------------------------------------------------------

// Restores the process umask when a test is done with it.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(old_); }
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t old_;
};

TEST(StorageOpen, CreatesMissingFileReadableOnlyByOwner) {
  // With no umask to help, only the explicit creation mode keeps other users out.
  ScopedUmask no_umask(0);
  TempDir dir;
  const std::string path = dir.file("node.db");
  ASSERT_OK_AND_ASSIGN(auto db, Database::open(path, creating()));
  ASSERT_TRUE(std::filesystem::exists(path));
  EXPECT_EQ(permissions_of(path), 0600U);

  // SQLite gives the WAL file the permissions of the database file.
  ASSERT_OK(db->exec("CREATE TABLE t(x); INSERT INTO t VALUES(1);"));
  ASSERT_TRUE(std::filesystem::exists(path + "-wal"));
  EXPECT_EQ(permissions_of(path + "-wal"), 0600U);
  EXPECT_EQ(db->path(), path);
}

TEST(StorageOpen, MissingFileIsNotFoundUnlessCreateIfMissing) {
  TempDir dir;
  const std::string path = dir.file("absent.db");
  auto db = Database::open(path);
  ASSERT_FALSE(db.ok());
  EXPECT_CODE(db.status(), Code::not_found);
  EXPECT_NE(db.status().message().find(path), std::string::npos) << db.status().message();
  EXPECT_FALSE(std::filesystem::exists(path)) << "a failed open must not create the file";
}

TEST(StorageOpen, ExistingFileOpensWithoutCreateFlag) {
  TempDir dir;
  const std::string path = dir.file("node.db");
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::open(path, creating()));
    ASSERT_OK(db->exec("CREATE TABLE t(x); INSERT INTO t VALUES(42);"));
  }
  ASSERT_OK_AND_ASSIGN(auto db, Database::open(path));
  EXPECT_EQ(query_count(*db, "SELECT x FROM t"), 42);
}

TEST(StorageOpen, DirectoryIsInvalidInput) {
  TempDir dir;
  auto db = Database::open(dir.path().string(), creating());
  ASSERT_FALSE(db.ok());
  EXPECT_CODE(db.status(), Code::invalid_input);
}

TEST(StorageOpen, UsesWriteAheadLog) {
  TempDir dir;
  const std::string path = dir.file("node.db");
  {
    ASSERT_OK_AND_ASSIGN(auto db, Database::open(path, creating()));
    EXPECT_EQ(query_text(*db, "PRAGMA journal_mode"), "wal");
  }
  // WAL mode is a property of the file: a reopened database keeps it.
  ASSERT_OK_AND_ASSIGN(auto db, Database::open(path));
  EXPECT_EQ(query_text(*db, "PRAGMA journal_mode"), "wal");
}

TEST(StorageOpen, EnablesForeignKeys) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::open(dir.file("node.db"), creating()));
  EXPECT_EQ(query_count(*db, "PRAGMA foreign_keys"), 1);
  ASSERT_OK(
      db->exec("CREATE TABLE p(id INTEGER PRIMARY KEY);"
               "CREATE TABLE c(p INTEGER NOT NULL REFERENCES p(id));"));
  Status s = db->exec("INSERT INTO c VALUES(7)");
  EXPECT_CODE(s, Code::constraint_violation);
}

struct SynchronousCase {
  const char* name;
  Synchronous option;
  std::int64_t pragma_value;  // what PRAGMA synchronous reports
};
// Parameters print as their name: readable, stable test names in gtest and ctest.
void PrintTo(const SynchronousCase& c, std::ostream* os) { *os << c.name; }

class StorageSynchronous : public ::testing::TestWithParam<SynchronousCase> {};

TEST_P(StorageSynchronous, PragmaMatchesOption) {
  TempDir dir;
  DatabaseOptions o = creating();
  o.synchronous = GetParam().option;
  ASSERT_OK_AND_ASSIGN(auto db, Database::open(dir.file("node.db"), o));
  EXPECT_EQ(query_count(*db, "PRAGMA synchronous"), GetParam().pragma_value);
}

INSTANTIATE_TEST_SUITE_P(Storage, StorageSynchronous,
                         ::testing::Values(SynchronousCase{"off", Synchronous::off, 0},
                                           SynchronousCase{"normal", Synchronous::normal, 1},
                                           SynchronousCase{"full", Synchronous::full, 2},
                                           SynchronousCase{"extra", Synchronous::extra, 3}));

TEST(StorageOpen, DefaultDurabilityIsFull) {
  TempDir dir;
  ASSERT_OK_AND_ASSIGN(auto db, Database::open(dir.file("node.db"), creating()));
  EXPECT_EQ(query_count(*db, "PRAGMA synchronous"), 2);
}

// ---- Concurrency between connections ---------------------------------------------

TEST(StorageBusy, WriterGivesUpAfterBusyTimeout) {
  TempDir dir;
  const std::string path = dir.file("node.db");
  ASSERT_OK_AND_ASSIGN(auto holder, Database::open(path, creating()));
  ASSERT_OK(holder->exec("CREATE TABLE t(x)"));

  DatabaseOptions o;
  o.busy_timeout_ms = 50;
  ASSERT_OK_AND_ASSIGN(auto waiter, Database::open(path, o));
  EXPECT_EQ(query_count(*waiter, "PRAGMA busy_timeout"), 50);

  {
    ASSERT_OK_AND_ASSIGN(auto held, Transaction::begin(*holder));
    ASSERT_OK(holder->exec("INSERT INTO t VALUES(1)"));

    // The write lock is taken: the waiter retries for its busy timeout, then fails
    // with an error instead of hanging (and does not wait the 5 s default).
    const auto start = std::chrono::steady_clock::now();
    auto blocked = Transaction::begin(*waiter);
    const auto waited = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(blocked.ok());
    EXPECT_CODE(blocked.status(), Code::internal);
    EXPECT_NE(blocked.status().message().find("locked"), std::string::npos)
        << blocked.status().message();
    EXPECT_GE(waited, std::chrono::milliseconds(40));

    Status direct = waiter->exec("INSERT INTO t VALUES(2)");
    EXPECT_CODE(direct, Code::internal);

    ASSERT_OK(held.commit());
  }

  // Once the lock is released the same connection writes normally.
  ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*waiter));
  ASSERT_OK(waiter->exec("INSERT INTO t VALUES(3)"));
  ASSERT_OK(txn.commit());
  EXPECT_EQ(query_count(*holder, "SELECT group_concat(x, '') FROM t"), 13);
}

TEST(StorageBusy, ReadersAreNotBlockedByAnOpenWriter) {
  TempDir dir;
  const std::string path = dir.file("node.db");
  ASSERT_OK_AND_ASSIGN(auto writer, Database::open(path, creating()));
  ASSERT_OK(writer->exec("CREATE TABLE t(x); INSERT INTO t VALUES(1);"));
  DatabaseOptions o;
  o.busy_timeout_ms = 0;  // a reader that had to wait would fail at once
  ASSERT_OK_AND_ASSIGN(auto reader, Database::open(path, o));

  ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*writer));
  ASSERT_OK(writer->exec("INSERT INTO t VALUES(2)"));
  // The reader sees the last committed state, not the open transaction.
  EXPECT_EQ(query_count(*reader, "SELECT count(*) FROM t"), 1);
  ASSERT_OK(txn.commit());
  EXPECT_EQ(query_count(*reader, "SELECT count(*) FROM t"), 2);
}

// ---- Prepared statements ---------------------------------------------------------

class StorageStatement : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = Database::open(dir_.file("node.db"), creating());
    ASSERT_TRUE(db.ok()) << db.status().to_string();
    db_ = std::move(db).value();
    ASSERT_OK(db_->exec(
        "CREATE TABLE v(id INTEGER PRIMARY KEY, txt TEXT, num INTEGER, data BLOB, opt TEXT);"
        "CREATE TABLE x(y);"));
  }

  TempDir dir_;
  std::unique_ptr<Database> db_;
};

TEST_F(StorageStatement, BindsEveryTypeAndReadsItBack) {
  const std::string blob("\x00\x01\xff\x00'\"", 6);
  const std::array<std::uint8_t, 4> bytes{0x00, 0x80, 0xff, 0x7f};
  {
    ASSERT_OK_AND_ASSIGN(
        auto st, db_->prepare("INSERT INTO v(id, txt, num, data, opt) VALUES(?1,?2,?3,?4,?5)"));
    st.bind(1, std::int64_t{1})
        .bind(2, "héllo, wörld")
        .bind(3, std::numeric_limits<std::int64_t>::min())
        .bind_blob(4, std::string_view(blob))
        .bind(5, std::optional<std::string>("present"));
    ASSERT_OK(st.run());
  }
  {
    ASSERT_OK_AND_ASSIGN(
        auto st, db_->prepare("INSERT INTO v(id, txt, num, data, opt) VALUES(?1,?2,?3,?4,?5)"));
    st.bind(1, std::int64_t{2})
        .bind_null(2)
        .bind(3, std::numeric_limits<std::int64_t>::max())
        .bind_blob(4, std::span<const std::uint8_t>(bytes))
        .bind(5, std::optional<std::string>());
    ASSERT_OK(st.run());
  }

  ASSERT_OK_AND_ASSIGN(auto st, db_->prepare("SELECT txt, num, data, opt, typeof(data) FROM v "
                                             "ORDER BY id"));
  ASSERT_OK_AND_ASSIGN(bool row, st.step());
  ASSERT_TRUE(row);
  EXPECT_EQ(st.column_text(0), "héllo, wörld");
  EXPECT_EQ(st.column_int64(1), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(st.column_blob(2), blob);
  EXPECT_EQ(st.column_text(4), "blob");
  EXPECT_EQ(st.column_optional_text(3), std::optional<std::string>("present"));

  ASSERT_OK_AND_ASSIGN(row, st.step());
  ASSERT_TRUE(row);
  EXPECT_TRUE(st.column_is_null(0));
  EXPECT_EQ(st.column_optional_text(0), std::nullopt);
  EXPECT_EQ(st.column_int64(1), std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(st.column_blob(2), std::string("\x00\x80\xff\x7f", 4));
  EXPECT_TRUE(st.column_is_null(3));
  EXPECT_EQ(st.column_optional_text(3), std::nullopt);

  ASSERT_OK_AND_ASSIGN(row, st.step());
  EXPECT_FALSE(row);
}

TEST_F(StorageStatement, SqlMetacharactersAreStoredAsData) {
  const std::string evil = "'; DROP TABLE x; --";
  const std::string evil_quotes = "\"); DELETE FROM v; /*";
  {
    ASSERT_OK_AND_ASSIGN(auto st, db_->prepare("INSERT INTO v(txt, data, opt) VALUES(?1, ?2, ?3)"));
    st.bind(1, std::string_view(evil)).bind_blob(2, evil).bind(3, std::optional(evil_quotes));
    ASSERT_OK(st.run());
  }
  EXPECT_TRUE(has_table(*db_, "x"));
  ASSERT_OK_AND_ASSIGN(auto st, db_->prepare("SELECT txt, data, opt FROM v WHERE txt = ?1"));
  st.bind(1, std::string_view(evil));
  ASSERT_OK_AND_ASSIGN(bool row, st.step());
  ASSERT_TRUE(row);
  EXPECT_EQ(st.column_text(0), evil);
  EXPECT_EQ(st.column_blob(1), evil);
  EXPECT_EQ(st.column_text(2), evil_quotes);
  EXPECT_EQ(query_count(*db_, "SELECT count(*) FROM v"), 1);
}

TEST_F(StorageStatement, EmptyTextAndBlobAreNotNull) {
  {
    ASSERT_OK_AND_ASSIGN(auto st, db_->prepare("INSERT INTO v(txt, data, opt) VALUES(?1, ?2, ?3)"));
    // Default-constructed views and spans carry a null data pointer.
    st.bind(1, std::string_view())
        .bind_blob(2, std::span<const std::uint8_t>())
        .bind(3, std::optional<std::string>(""));
    ASSERT_OK(st.run());
  }
  {
    ASSERT_OK_AND_ASSIGN(auto st, db_->prepare("INSERT INTO v(txt, data) VALUES(?1, ?2)"));
    st.bind(1, "").bind_blob(2, std::string_view());
    ASSERT_OK(st.run());
  }
  ASSERT_OK_AND_ASSIGN(auto st,
                       db_->prepare("SELECT typeof(txt), typeof(data), opt FROM v ORDER BY id"));
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    ASSERT_OK_AND_ASSIGN(bool row, st.step());
    ASSERT_TRUE(row);
    EXPECT_EQ(st.column_text(0), "text");
    EXPECT_EQ(st.column_text(1), "blob");
  }
  EXPECT_EQ(query_text(*db_, "SELECT opt FROM v ORDER BY id LIMIT 1"),
            std::optional<std::string>(""));
}

TEST_F(StorageStatement, BindingErrorIsReportedByStep) {
  ASSERT_OK_AND_ASSIGN(auto st, db_->prepare("INSERT INTO v(txt) VALUES(?1)"));
  st.bind(1, "fine").bind(5, std::int64_t{1});  // there is no parameter 5
  Status s = st.run();
  EXPECT_CODE(s, Code::internal);
  EXPECT_NE(s.message().find("bind parameter 5"), std::string::npos) << s.message();
  EXPECT_EQ(query_count(*db_, "SELECT count(*) FROM v"), 0) << "nothing may be written";
}

TEST_F(StorageStatement, BadSqlIsAnErrorNamingTheStatement) {
  auto st = db_->prepare("SELEC nonsense");
  ASSERT_FALSE(st.ok());
  EXPECT_CODE(st.status(), Code::internal);
  EXPECT_NE(st.status().message().find("SELEC nonsense"), std::string::npos);
}

TEST_F(StorageStatement, ConstraintViolationIsAnError) {
  ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(1)"));
  ASSERT_OK_AND_ASSIGN(auto st, db_->prepare("INSERT INTO v(id) VALUES(?1)"));
  st.bind(1, std::int64_t{1});
  Status s = st.run();
  EXPECT_CODE(s, Code::constraint_violation);
  EXPECT_NE(s.message().find("UNIQUE"), std::string::npos) << s.message();
}

TEST_F(StorageStatement, LastInsertRowid) {
  ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(41)"));
  ASSERT_OK_AND_ASSIGN(auto st, db_->prepare("INSERT INTO v(txt) VALUES('a')"));
  ASSERT_OK(st.run());
  EXPECT_EQ(db_->last_insert_rowid(), 42);
}

TEST_F(StorageStatement, QueryIntDistinguishesNoRowAndNull) {
  ASSERT_OK_AND_ASSIGN(auto none, db_->query_int("SELECT num FROM v"));
  EXPECT_EQ(none, std::nullopt);
  ASSERT_OK(db_->exec("INSERT INTO v(num) VALUES(NULL)"));
  ASSERT_OK_AND_ASSIGN(auto null, db_->query_int("SELECT num FROM v"));
  EXPECT_EQ(null, std::nullopt);
  ASSERT_OK_AND_ASSIGN(auto seven, db_->query_int("SELECT 7"));
  EXPECT_EQ(seven, std::optional<std::int64_t>(7));
}

// ---- Statement cache ---------------------------------------------------------------

constexpr std::string_view kSelectFrom = "SELECT id FROM v WHERE id >= ?1 ORDER BY id";

TEST_F(StorageStatement, CachedStatementComesBackResetAndUnbound) {
  ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(1),(2),(3)"));
  {
    ASSERT_OK_AND_ASSIGN(auto st, db_->prepare(kSelectFrom));
    st.bind(1, std::int64_t{2});
    ASSERT_OK_AND_ASSIGN(bool row, st.step());
    ASSERT_TRUE(row);
    EXPECT_EQ(st.column_int64(0), 2);
    // Dropped in the middle of the result set.
  }
  {
    ASSERT_OK_AND_ASSIGN(auto st, db_->prepare(kSelectFrom));
    // The earlier binding is gone: id >= NULL matches nothing.
    ASSERT_OK_AND_ASSIGN(bool row, st.step());
    EXPECT_FALSE(row);
  }
  ASSERT_OK_AND_ASSIGN(auto st, db_->prepare(kSelectFrom));
  st.bind(1, std::int64_t{1});
  ASSERT_OK_AND_ASSIGN(bool row, st.step());
  ASSERT_TRUE(row);
  EXPECT_EQ(st.column_int64(0), 1) << "the reused statement starts from its first row";
}

TEST_F(StorageStatement, NestedUseOfTheSameSqlIsIndependent) {
  ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(1),(2),(3)"));
  ASSERT_OK_AND_ASSIGN(auto outer, db_->prepare(kSelectFrom));
  outer.bind(1, std::int64_t{1});
  std::vector<std::string> pairs;
  for (;;) {
    ASSERT_OK_AND_ASSIGN(bool row, outer.step());
    if (!row) break;
    const std::int64_t o = outer.column_int64(0);
    ASSERT_OK_AND_ASSIGN(auto inner, db_->prepare(kSelectFrom));
    inner.bind(1, o);
    for (;;) {
      ASSERT_OK_AND_ASSIGN(bool irow, inner.step());
      if (!irow) break;
      pairs.push_back(std::to_string(o) + std::to_string(inner.column_int64(0)));
    }
  }
  EXPECT_EQ(pairs, (std::vector<std::string>{"11", "12", "13", "22", "23", "33"}));
}

TEST_F(StorageStatement, MovedStatementKeepsItsState) {
  ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(1),(2)"));
  ASSERT_OK_AND_ASSIGN(auto a, db_->prepare(kSelectFrom));
  a.bind(1, std::int64_t{1});
  ASSERT_OK_AND_ASSIGN(bool row, a.step());
  ASSERT_TRUE(row);
  Statement b(std::move(a));
  ASSERT_OK_AND_ASSIGN(row, b.step());
  ASSERT_TRUE(row);
  EXPECT_EQ(b.column_int64(0), 2);
  // Move-assigning over a live handle returns the overwritten one to the cache.
  ASSERT_OK_AND_ASSIGN(auto c, db_->prepare("SELECT 1"));
  c = std::move(b);
  ASSERT_OK_AND_ASSIGN(row, c.step());
  EXPECT_FALSE(row);
}

// Every prepared statement of a connection is listed by the sqlite_stmt virtual table
// (compiled into Debian's SQLite); it shows whether the cache grows.
std::optional<std::int64_t> live_statements(Database& db) {
  auto n = db.query_int("SELECT count(*) FROM sqlite_stmt");
  if (!n.ok() || !n->has_value()) return std::nullopt;
  return **n;
}

TEST_F(StorageStatement, SequentialReuseDoesNotPrepareAgain) {
  if (!live_statements(*db_)) GTEST_SKIP() << "SQLite built without SQLITE_ENABLE_STMTVTAB";
  { ASSERT_OK_AND_ASSIGN(auto st, db_->prepare(kSelectFrom)); }
  const auto before = live_statements(*db_);
  for (int i = 0; i < 50; ++i) {
    ASSERT_OK_AND_ASSIGN(auto st, db_->prepare(kSelectFrom));
    st.bind(1, std::int64_t{i});
    ASSERT_OK(st.step());
  }
  EXPECT_EQ(live_statements(*db_), before);
}

TEST_F(StorageStatement, RepeatedNestedUseKeepsTheCacheBounded) {
  if (!live_statements(*db_)) GTEST_SKIP() << "SQLite built without SQLITE_ENABLE_STMTVTAB";
  ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(1),(2),(3)"));
  auto nested_round = [&]() -> Status {
    TS_ASSIGN_OR_RETURN(auto outer, db_->prepare(kSelectFrom));
    outer.bind(1, std::int64_t{1});
    TS_ASSIGN_OR_RETURN(bool row, outer.step());
    if (!row) return Status::Internal("no row");
    TS_ASSIGN_OR_RETURN(auto inner, db_->prepare(kSelectFrom));
    inner.bind(1, std::int64_t{2});
    TS_ASSIGN_OR_RETURN(bool inner_row, inner.step());
    if (!inner_row || inner.column_int64(0) != 2) return Status::Internal("wrong inner row");
    return Status::Ok();
  };
  ASSERT_OK(nested_round());
  const auto before = live_statements(*db_);
  // A node runs the same nested pattern for every operation it applies: the second
  // statement must be reused too, not prepared afresh each time.
  for (int i = 0; i < 100; ++i) ASSERT_OK(nested_round());
  EXPECT_EQ(live_statements(*db_), before);
}

// ---- Transactions ------------------------------------------------------------------

class StorageTransaction : public StorageStatement {};

TEST_F(StorageTransaction, RollsBackWhenDestroyedWithoutCommit) {
  {
    ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
    EXPECT_TRUE(txn.active());
    ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(1)"));
    EXPECT_EQ(query_count(*db_, "SELECT count(*) FROM v"), 1);
  }
  EXPECT_EQ(query_count(*db_, "SELECT count(*) FROM v"), 0);
  // The connection is back in autocommit mode: a new transaction can start.
  ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
  ASSERT_OK(txn.commit());
}

TEST_F(StorageTransaction, CommitPersistsAcrossReopen) {
  {
    ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
    ASSERT_OK(db_->exec("INSERT INTO v(id, txt) VALUES(1, 'kept')"));
    ASSERT_OK(txn.commit());
    EXPECT_FALSE(txn.active());
  }
  db_.reset();
  ASSERT_OK_AND_ASSIGN(auto db, Database::open(dir_.file("node.db")));
  EXPECT_EQ(query_text(*db, "SELECT txt FROM v WHERE id = 1"), "kept");
}

TEST_F(StorageTransaction, ExplicitRollbackAndFinishedTransactions) {
  ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_, Transaction::Mode::deferred));
  ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(1)"));
  ASSERT_OK(txn.rollback());
  EXPECT_FALSE(txn.active());
  EXPECT_OK(txn.rollback());  // idempotent
  EXPECT_CODE(txn.commit(), Code::internal);
  EXPECT_EQ(query_count(*db_, "SELECT count(*) FROM v"), 0);
}

TEST_F(StorageTransaction, MovedTransactionOwnsTheCommit) {
  ASSERT_OK_AND_ASSIGN(auto first, Transaction::begin(*db_));
  ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(1)"));
  Transaction second(std::move(first));
  EXPECT_FALSE(first.active());  // NOLINT(bugprone-use-after-move): checking the contract
  EXPECT_TRUE(second.active());
  EXPECT_EQ(&second.db(), db_.get());
  ASSERT_OK(second.commit());
  EXPECT_EQ(query_count(*db_, "SELECT count(*) FROM v"), 1);
}

TEST_F(StorageTransaction, NestedBeginIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
  auto nested = Transaction::begin(*db_);
  EXPECT_FALSE(nested.ok());
  EXPECT_TRUE(txn.active());
  ASSERT_OK(txn.commit());
}

TEST_F(StorageTransaction, FailedStatementInsideLeavesEarlierWorkToTheCaller) {
  ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(1)"));
  {
    ASSERT_OK_AND_ASSIGN(auto txn, Transaction::begin(*db_));
    ASSERT_OK(db_->exec("INSERT INTO v(id) VALUES(2)"));
    EXPECT_FALSE(db_->exec("INSERT INTO v(id) VALUES(1)").ok());
    // Dropped: everything of the transaction goes, including row 2.
  }
  EXPECT_EQ(query_count(*db_, "SELECT group_concat(id, ',') FROM v"), 1);
}

// ---- Migrations and schema checks --------------------------------------------------

constexpr std::uint32_t kTerminalId = 0x54535431;  // "TST1"
constexpr std::uint32_t kHqId = 0x54535132;        // "TSQ2"

// Each step records itself, and later steps depend on the earlier ones' tables.
constexpr Migration kMigrations[] = {
    {1, "applied log",
     "CREATE TABLE applied(version INTEGER NOT NULL);"
     "INSERT INTO applied VALUES(1);"},
    {2, "items",
     "CREATE TABLE items(id INTEGER PRIMARY KEY);"
     "INSERT INTO applied VALUES(2);"},
    {3, "item names",
     "ALTER TABLE items ADD COLUMN name TEXT;"
     "INSERT INTO applied VALUES(3);"},
};

SchemaSpec terminal_spec(std::size_t versions = std::size(kMigrations)) {
  return {kTerminalId, "terminal", std::span<const Migration>(kMigrations, versions)};
}

SchemaSpec hq_spec() { return {kHqId, "HQ", std::span<const Migration>(kMigrations)}; }

class StorageSchema : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }
  void reopen() {
    db_.reset();
    auto db = Database::open(path_, creating());
    ASSERT_TRUE(db.ok()) << db.status().to_string();
    db_ = std::move(db).value();
  }
  std::string applied() {
    auto v = query_text(*db_,
                        "SELECT group_concat(version, ',') FROM "
                        "(SELECT version FROM applied ORDER BY rowid)");
    return v.value_or("<none>");
  }

  TempDir dir_;
  std::string path_ = dir_.file("node.db");
  std::unique_ptr<Database> db_;
};

TEST_F(StorageSchema, AppliesNumberedVersionsInOrder) {
  ASSERT_OK(migrate(*db_, terminal_spec()));
  EXPECT_EQ(applied(), "1,2,3");
  EXPECT_EQ(query_count(*db_, "PRAGMA user_version"), 3);
  EXPECT_EQ(query_count(*db_, "PRAGMA application_id"), kTerminalId);
  ASSERT_OK(db_->exec("INSERT INTO items(id, name) VALUES(1, 'a')"));
}

TEST_F(StorageSchema, RerunningIsANoOp) {
  ASSERT_OK(migrate(*db_, terminal_spec()));
  ASSERT_OK(migrate(*db_, terminal_spec()));
  reopen();
  ASSERT_OK(migrate(*db_, terminal_spec()));
  EXPECT_EQ(applied(), "1,2,3");
  EXPECT_EQ(query_count(*db_, "PRAGMA user_version"), 3);
}

TEST_F(StorageSchema, UpgradesAnOlderFileWithOnlyTheNewSteps) {
  ASSERT_OK(migrate(*db_, terminal_spec(1)));
  EXPECT_EQ(applied(), "1");
  reopen();
  ASSERT_OK(migrate(*db_, terminal_spec()));
  EXPECT_EQ(applied(), "1,2,3");
}

TEST_F(StorageSchema, UpgradeOnOpenMigratesOlderFilesAndRefusesBlankOnes) {
  EXPECT_EQ(upgrade(*db_, terminal_spec()).code(), Code::not_a_tillsync_database);
  EXPECT_EQ(query_count(*db_, "PRAGMA user_version"), 0);  // the blank file is untouched
  ASSERT_OK(migrate(*db_, terminal_spec(1)));
  reopen();
  ASSERT_OK(upgrade(*db_, terminal_spec()));
  EXPECT_EQ(applied(), "1,2,3");
  ASSERT_OK(check_schema(*db_, terminal_spec()));
  EXPECT_EQ(upgrade(*db_, hq_spec()).code(), Code::not_a_tillsync_database);
}

TEST_F(StorageSchema, FailedStepRollsBackThatStepOnly) {
  constexpr Migration broken[] = {
      kMigrations[0],
      {2, "broken",
       "CREATE TABLE half(x); INSERT INTO applied VALUES(2); INSERT INTO nope VALUES(1);"},
  };
  Status s = migrate(*db_, {kTerminalId, "terminal", broken});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("nope"), std::string::npos) << s.to_string();
  EXPECT_EQ(query_count(*db_, "PRAGMA user_version"), 1);
  EXPECT_FALSE(has_table(*db_, "half"));
  EXPECT_EQ(applied(), "1");
  // The fixed code carries on from version 1.
  ASSERT_OK(migrate(*db_, terminal_spec()));
  EXPECT_EQ(applied(), "1,2,3");
}

TEST_F(StorageSchema, NewerFileIsUnsupportedVersion) {
  ASSERT_OK(migrate(*db_, terminal_spec()));
  reopen();
  Status s = migrate(*db_, terminal_spec(2));
  EXPECT_CODE(s, Code::unsupported_version);
  EXPECT_NE(s.message().find("3"), std::string::npos) << s.message();
  EXPECT_CODE(check_schema(*db_, terminal_spec(2)), Code::unsupported_version);
  EXPECT_EQ(query_count(*db_, "PRAGMA user_version"), 3) << "a refused file is left as it was";
}

TEST_F(StorageSchema, SqliteFileOfAnotherApplicationIsRefused) {
  ASSERT_OK(
      db_->exec("CREATE TABLE invoices(id INTEGER PRIMARY KEY, total INTEGER);"
                "INSERT INTO invoices VALUES(1, 100);"));
  Status s = migrate(*db_, terminal_spec());
  EXPECT_CODE(s, Code::not_a_tillsync_database);
  EXPECT_NE(s.message().find(path_), std::string::npos) << s.message();
  EXPECT_CODE(check_schema(*db_, terminal_spec()), Code::not_a_tillsync_database);
  // Nothing of ours was added to their file.
  EXPECT_FALSE(has_table(*db_, "applied"));
  EXPECT_EQ(query_count(*db_, "PRAGMA user_version"), 0);
  EXPECT_EQ(query_count(*db_, "PRAGMA application_id"), 0);
}

TEST_F(StorageSchema, EmptyFileWithForeignApplicationIdIsRefused) {
  ASSERT_OK(db_->exec("PRAGMA application_id=1234"));
  Status s = migrate(*db_, terminal_spec());
  EXPECT_CODE(s, Code::not_a_tillsync_database);
  EXPECT_EQ(query_count(*db_, "PRAGMA user_version"), 0);
  EXPECT_FALSE(has_table(*db_, "applied"));
}

TEST_F(StorageSchema, TillsyncFileOfAnotherKindIsRefused) {
  ASSERT_OK(migrate(*db_, terminal_spec()));
  reopen();
  Status s = migrate(*db_, hq_spec());
  EXPECT_CODE(s, Code::not_a_tillsync_database);
  EXPECT_NE(s.message().find("HQ"), std::string::npos) << s.message();
  EXPECT_CODE(check_schema(*db_, hq_spec()), Code::not_a_tillsync_database);
  EXPECT_EQ(query_count(*db_, "PRAGMA application_id"), kTerminalId);
}

TEST_F(StorageSchema, CheckSchemaAcceptsOnlyTheCurrentVersionAndChangesNothing) {
  // A brand-new file is not a tillsync database yet, and checking does not stamp it.
  Status blank = check_schema(*db_, terminal_spec());
  EXPECT_CODE(blank, Code::not_a_tillsync_database);
  EXPECT_EQ(query_count(*db_, "PRAGMA application_id"), 0);
  EXPECT_EQ(query_count(*db_, "SELECT count(*) FROM sqlite_schema"), 0);

  // An older file needs its migrations first: reading it as current would fail later
  // on missing columns.
  ASSERT_OK(migrate(*db_, terminal_spec(2)));
  Status older = check_schema(*db_, terminal_spec());
  EXPECT_CODE(older, Code::unsupported_version);
  EXPECT_NE(older.message().find("older"), std::string::npos) << older.message();
  EXPECT_EQ(query_count(*db_, "PRAGMA user_version"), 2);

  ASSERT_OK(migrate(*db_, terminal_spec()));
  EXPECT_OK(check_schema(*db_, terminal_spec()));
}

// ---- Files that are not SQLite databases -------------------------------------------

struct ForeignContent {
  const char* name;
  std::string bytes;
};
void PrintTo(const ForeignContent& c, std::ostream* os) { *os << c.name; }

class StorageForeignFile : public ::testing::TestWithParam<ForeignContent> {};

TEST_P(StorageForeignFile, IsNotATillsyncDatabaseAndIsLeftUntouched) {
  TempDir dir;
  const std::string path = dir.file("foreign.db");
  write_file(path, GetParam().bytes);
  auto db = Database::open(path, creating());
  ASSERT_FALSE(db.ok());
  EXPECT_CODE(db.status(), Code::not_a_tillsync_database);
  EXPECT_NE(db.status().message().find(path), std::string::npos) << db.status().message();
  EXPECT_NE(db.status().message().find("not an SQLite file"), std::string::npos)
      << db.status().message();
  EXPECT_EQ(read_file(path), GetParam().bytes);
  EXPECT_FALSE(std::filesystem::exists(path + "-wal"));
}

std::string random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xffU);
  return out;
}

INSTANTIATE_TEST_SUITE_P(Storage, StorageForeignFile,
                         ::testing::Values(ForeignContent{"random_4KiB", random_bytes(4096, 1)},
                                           ForeignContent{"random_100KB", random_bytes(100000, 2)},
                                           ForeignContent{"csv_text",
                                                          "store,terminal,total\nS001,T01,12.50\n"},
                                           // Right magic, wrong everything else.
                                           ForeignContent{"sqlite_magic_then_garbage",
                                                          std::string("SQLite format 3\0", 16) +
                                                              random_bytes(4080, 3)}));

}  // namespace
}  // namespace tillsync::storage
