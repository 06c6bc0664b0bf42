#include "tillsync/storage/database.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_map>
#include <vector>

namespace tillsync::storage {

struct Statement::Impl {
  sqlite3_stmt* stmt = nullptr;
  sqlite3* db = nullptr;
  bool in_use = false;
  Status bind_error;  // first binding failure, reported by step()
};

struct Database::Impl {
  sqlite3* db = nullptr;
  std::string path;
  // Prepared statements keyed by their SQL text. Each is handed out once at a time; a
  // nested use of the same SQL gets a second one, kept for reuse so the cache grows
  // only up to the deepest nesting.
  std::unordered_map<std::string, std::vector<std::unique_ptr<Statement::Impl>>> cache;

  ~Impl() {
    for (auto& [sql, list] : cache)
      for (auto& s : list) sqlite3_finalize(s->stmt);
    cache.clear();
    if (db != nullptr) sqlite3_close_v2(db);
  }
};

namespace {

Status sqlite_error(sqlite3* db, int rc, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  if (rc == SQLITE_NOTADB) return {Code::not_a_tillsync_database, std::move(msg)};
  if ((rc & 0xff) == SQLITE_CONSTRAINT) return {Code::constraint_violation, std::move(msg)};
  return Status::Internal(std::move(msg));
}

// SQLite binds NULL for a null data pointer whatever the length, and empty views and
// spans may carry one: point empty values at a real (empty) buffer instead.
const char* non_null(const void* data) {
  return data != nullptr ? static_cast<const char*>(data) : "";
}

const char* synchronous_pragma(Synchronous s) {
  switch (s) {
    case Synchronous::off: return "PRAGMA synchronous=OFF";
    case Synchronous::normal: return "PRAGMA synchronous=NORMAL";
    case Synchronous::full: return "PRAGMA synchronous=FULL";
    case Synchronous::extra: return "PRAGMA synchronous=EXTRA";
  }
  return "PRAGMA synchronous=FULL";
}

// Creates the file with owner-only permissions before SQLite opens it, so the database
// (and the -wal/-shm files SQLite derives from it) are never world-readable.
Status create_private_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return Status::Ok();
    return Status::Internal("cannot create " + path + ": " + std::strerror(errno));
  }
  ::close(fd);
  return Status::Ok();
}

}  // namespace

// ---- Statement -------------------------------------------------------------------

Statement::Statement(Statement&& other) noexcept : impl_(std::exchange(other.impl_, nullptr)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    this->~Statement();
    impl_ = std::exchange(other.impl_, nullptr);
  }
  return *this;
}

Statement::~Statement() {
  if (impl_ == nullptr) return;
  sqlite3_reset(impl_->stmt);
  sqlite3_clear_bindings(impl_->stmt);
  impl_->bind_error = Status::Ok();
  impl_->in_use = false;
}

#define TS_BIND(call)                                                               \
  do {                                                                              \
    int rc_ = (call);                                                               \
    if (rc_ != SQLITE_OK && impl_->bind_error.ok())                                 \
      impl_->bind_error = sqlite_error(impl_->db, rc_, "bind parameter " +          \
                                                           std::to_string(index));  \
  } while (0)

Statement& Statement::bind(int index, std::int64_t value) {
  TS_BIND(sqlite3_bind_int64(impl_->stmt, index, value));
  return *this;
}

Statement& Statement::bind(int index, std::string_view text) {
  TS_BIND(sqlite3_bind_text64(impl_->stmt, index, non_null(text.data()), text.size(),
                              SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}

Statement& Statement::bind(int index, const std::optional<std::string>& text) {
  if (!text) return bind_null(index);
  return bind(index, std::string_view(*text));
}

Statement& Statement::bind_blob(int index, std::span<const std::uint8_t> bytes) {
  TS_BIND(sqlite3_bind_blob64(impl_->stmt, index, non_null(bytes.data()), bytes.size(),
                              SQLITE_TRANSIENT));
  return *this;
}

Statement& Statement::bind_blob(int index, std::string_view bytes) {
  TS_BIND(sqlite3_bind_blob64(impl_->stmt, index, non_null(bytes.data()), bytes.size(),
                              SQLITE_TRANSIENT));
  return *this;
}

Statement& Statement::bind_borrowed(int index, std::string_view text) {
  TS_BIND(sqlite3_bind_text64(impl_->stmt, index, non_null(text.data()), text.size(),
                              SQLITE_STATIC, SQLITE_UTF8));
  return *this;
}

Statement& Statement::bind_blob_borrowed(int index, std::string_view bytes) {
  TS_BIND(sqlite3_bind_blob64(impl_->stmt, index, non_null(bytes.data()), bytes.size(),
                              SQLITE_STATIC));
  return *this;
}

Statement& Statement::bind_null(int index) {
  TS_BIND(sqlite3_bind_null(impl_->stmt, index));
  return *this;
}

#undef TS_BIND

Result<bool> Statement::step() {
  if (!impl_->bind_error.ok()) return impl_->bind_error;
  int rc = sqlite3_step(impl_->stmt);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return sqlite_error(impl_->db, rc, "step");
}

Status Statement::run() {
  for (;;) {
    auto r = step();
    if (!r.ok()) return r.status();
    if (!*r) return Status::Ok();
  }
}

bool Statement::column_is_null(int index) const {
  return sqlite3_column_type(impl_->stmt, index) == SQLITE_NULL;
}

std::int64_t Statement::column_int64(int index) const {
  return sqlite3_column_int64(impl_->stmt, index);
}

std::string Statement::column_text(int index) const {
  const unsigned char* p = sqlite3_column_text(impl_->stmt, index);
  int n = sqlite3_column_bytes(impl_->stmt, index);
  if (p == nullptr) return {};
  return {reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)};
}

std::optional<std::string> Statement::column_optional_text(int index) const {
  if (column_is_null(index)) return std::nullopt;
  return column_text(index);
}

std::string Statement::column_blob(int index) const {
  const void* p = sqlite3_column_blob(impl_->stmt, index);
  int n = sqlite3_column_bytes(impl_->stmt, index);
  if (p == nullptr) return {};
  return {static_cast<const char*>(p), static_cast<std::size_t>(n)};
}

// ---- Database --------------------------------------------------------------------

Database::Database(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Database::~Database() = default;

Result<std::unique_ptr<Database>> Database::open(const std::string& path,
                                                 const DatabaseOptions& options) {
  struct stat st {};
  bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists) {
    if (!options.create_if_missing) return Status::NotFound("database file " + path + " does not exist");
    TS_RETURN_IF_ERROR(create_private_file(path));
  } else if (S_ISDIR(st.st_mode)) {
    return Status(Code::invalid_input, path + " is a directory, not a database file");
  }

  auto impl = std::make_unique<Impl>();
  impl->path = path;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  int rc = sqlite3_open_v2(path.c_str(), &impl->db, flags, nullptr);
  if (rc != SQLITE_OK) return sqlite_error(impl->db, rc, "open " + path);
  sqlite3_extended_result_codes(impl->db, 1);
  sqlite3_busy_timeout(impl->db, options.busy_timeout_ms);

  std::unique_ptr<Database> db(new Database(std::move(impl)));
  // The first read of the header tells whether this is an SQLite file at all.
  auto probe = db->query_int("PRAGMA schema_version");
  if (!probe.ok()) {
    if (probe.status().code() == Code::not_a_tillsync_database)
      return Status(Code::not_a_tillsync_database,
                    path + " is not a tillsync database (not an SQLite file)");
    return probe.status();
  }
  // WAL: readers never block the writer; commits are durable per `synchronous`.
  auto mode = db->prepare("PRAGMA journal_mode=WAL");
  if (!mode.ok()) return mode.status();
  auto row = mode->step();
  if (!row.ok()) return row.status();
  TS_RETURN_IF_ERROR(db->exec(synchronous_pragma(options.synchronous)));
  TS_RETURN_IF_ERROR(db->exec("PRAGMA foreign_keys=ON"));
  // Deleted and overwritten values are zeroed in the file, not left in free space: an
  // erased customer's data must not be readable from the database's bytes.
  TS_RETURN_IF_ERROR(db->exec("PRAGMA secure_delete=ON"));
  return db;
}

Result<bool> Database::truncate_wal() {
  // One row: (busy, log frames, checkpointed frames); busy = 1 when it could not finish.
  TS_ASSIGN_OR_RETURN(auto st, prepare("PRAGMA wal_checkpoint(TRUNCATE)"));
  TS_ASSIGN_OR_RETURN(bool row, st.step());
  return row && st.column_int64(0) == 0;
}

Status Database::exec(std::string_view sql) {
  std::string text(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(impl_->db, text.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err != nullptr ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    if ((rc & 0xff) == SQLITE_NOTADB) return {Code::not_a_tillsync_database, msg};
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return {Code::constraint_violation, "exec: " + msg};
    return Status::Internal("exec: " + msg);
  }
  return Status::Ok();
}

Result<Statement> Database::prepare(std::string_view sql) {
  std::string key(sql);
  auto& list = impl_->cache[key];
  for (auto& cached : list) {
    if (!cached->in_use) {
      cached->in_use = true;
      return Statement(cached.get());
    }
  }
  auto s = std::make_unique<Statement::Impl>();
  s->db = impl_->db;
  int rc = sqlite3_prepare_v3(impl_->db, key.data(), static_cast<int>(key.size()),
                              SQLITE_PREPARE_PERSISTENT, &s->stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(s->stmt);  // NULL after a failure; finalizing NULL is a no-op
    if (list.empty()) impl_->cache.erase(key);
    return sqlite_error(impl_->db, rc, "prepare \"" + key + "\"");
  }
  s->in_use = true;
  list.push_back(std::move(s));
  return Statement(list.back().get());
}

Result<std::optional<std::int64_t>> Database::query_int(std::string_view sql) {
  auto st = prepare(sql);
  if (!st.ok()) return st.status();
  auto row = st->step();
  if (!row.ok()) return row.status();
  if (!*row || st->column_is_null(0)) return std::optional<std::int64_t>{};
  return std::optional<std::int64_t>{st->column_int64(0)};
}

std::int64_t Database::last_insert_rowid() const { return sqlite3_last_insert_rowid(impl_->db); }
std::int64_t Database::changes() const { return sqlite3_changes(impl_->db); }

const std::string& Database::path() const { return impl_->path; }

// ---- Transaction -----------------------------------------------------------------

Result<Transaction> Transaction::begin(Database& db, Mode mode) {
  TS_RETURN_IF_ERROR(db.exec(mode == Mode::immediate ? "BEGIN IMMEDIATE" : "BEGIN DEFERRED"));
  return Transaction(&db);
}

Transaction::Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}

Transaction::~Transaction() {
  if (db_ != nullptr) (void)rollback();
}

Status Transaction::commit() {
  if (db_ == nullptr) return Status::Internal("commit of a finished transaction");
  Status s = db_->exec("COMMIT");
  if (!s.ok()) {
    (void)rollback();
    return s;
  }
  db_ = nullptr;
  return Status::Ok();
}

Status Transaction::rollback() {
  if (db_ == nullptr) return Status::Ok();
  Database* db = std::exchange(db_, nullptr);
  // After some errors SQLite has already rolled back; ROLLBACK then fails harmlessly.
  if (sqlite3_get_autocommit(db->impl_->db) != 0) return Status::Ok();
  return db->exec("ROLLBACK");
}

}  // namespace tillsync::storage
