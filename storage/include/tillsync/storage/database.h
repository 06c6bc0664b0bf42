// RAII access to one SQLite database file.
//
// Ownership: a Database owns its connection and its cache of prepared statements.
// Statements and Transactions borrow the Database and must not outlive it.
// Thread-safety: a Database and everything borrowed from it belong to one thread at a
// time; open one Database per thread (WAL mode lets readers run beside one writer).
// Errors: every call returns Status/Result; SQLite failures map to Code::internal
// (with SQLite's message), busy-timeouts included. Values are only ever bound to
// prepared statements; exec() is for parameterless schema text.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "tillsync/status.h"

namespace tillsync::storage {

enum class Synchronous { off, normal, full, extra };

struct DatabaseOptions {
  // Durability of commits (PRAGMA synchronous). FULL survives power loss in WAL mode.
  Synchronous synchronous = Synchronous::full;
  // How long a writer waits for another connection's lock before failing.
  int busy_timeout_ms = 5000;
  // Create the file (mode 0600) when it does not exist; otherwise a missing file is
  // Code::not_found.
  bool create_if_missing = false;
};

class Database;

// A prepared statement borrowed from the Database's cache. Move-only. Bindings are
// 1-based. Binding errors are remembered and reported by the next step()/run().
// Destroying the handle resets the statement and returns it to the cache.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, const char* text) { return bind(index, std::string_view(text)); }
  Statement& bind(int index, const std::string& text) { return bind(index, std::string_view(text)); }
  Statement& bind(int index, const std::optional<std::string>& text);  // nullopt binds NULL
  Statement& bind_blob(int index, std::span<const std::uint8_t> bytes);
  Statement& bind_blob(int index, std::string_view bytes);
  // Binds without copying: `text`/`bytes` must stay valid and unchanged until this
  // Statement is destroyed (which resets it). For large batched statements.
  Statement& bind_borrowed(int index, std::string_view text);
  Statement& bind_blob_borrowed(int index, std::string_view bytes);
  Statement& bind_null(int index);

  // Advances: true when a row is available, false when done.
  Result<bool> step();
  // Steps to completion, ignoring rows (INSERT/UPDATE/DELETE).
  Status run();

  bool column_is_null(int index) const;
  std::int64_t column_int64(int index) const;
  std::string column_text(int index) const;
  std::optional<std::string> column_optional_text(int index) const;
  std::string column_blob(int index) const;  // bytes as a std::string

 private:
  friend class Database;
  struct Impl;
  explicit Statement(Impl* impl) : impl_(impl) {}
  Impl* impl_ = nullptr;  // owned by the Database's cache
};

class Database {
 public:
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Opens (or creates) `path` in WAL mode with the given durability and busy timeout,
  // with secure_delete on: content deleted or replaced is overwritten with zeros, so
  // freed pages keep no old values (right to erasure).
  // A file that is not an SQLite database yields Code::not_a_tillsync_database.
  static Result<std::unique_ptr<Database>> open(const std::string& path,
                                                const DatabaseOptions& options = {});

  // Runs parameterless SQL (schema, pragmas). Never build values into this text.
  Status exec(std::string_view sql);

  // A cached prepared statement for `sql`, reset and with bindings cleared.
  Result<Statement> prepare(std::string_view sql);

  // Runs `sql` (with no parameters) and returns the first column of the first row as
  // an integer; nullopt when there is no row or it is NULL.
  Result<std::optional<std::int64_t>> query_int(std::string_view sql);

  // Copies the write-ahead log into the database file and truncates it to zero bytes,
  // so no page image written before lingers in it (after an erasure). Returns false
  // when another connection's reader or writer kept it from completing (busy); the
  // data is safe either way.
  Result<bool> truncate_wal();

  std::int64_t last_insert_rowid() const;
  // Rows changed by the last INSERT/UPDATE/DELETE on this connection.
  std::int64_t changes() const;
  const std::string& path() const;

 private:
  friend class Transaction;
  struct Impl;
  explicit Database(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// An SQLite transaction that rolls back unless commit() succeeds. Move-only.
// Write APIs in tillsync take the open Transaction& so that the data and its log row
// or checkpoint always land in the same commit.
class Transaction {
 public:
  enum class Mode { deferred, immediate };

  static Result<Transaction> begin(Database& db, Mode mode = Mode::immediate);
  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();  // rolls back when still open

  Status commit();
  Status rollback();
  bool active() const noexcept { return db_ != nullptr; }
  Database& db() const { return *db_; }

 private:
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_ = nullptr;
};

}  // namespace tillsync::storage
