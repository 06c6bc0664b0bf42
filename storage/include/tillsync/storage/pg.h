// A thin, value-returning layer over libpq for the PostgreSQL HQ backend.
//
// Ownership: a PgConnection owns its libpq connection and the names of the statements
// it has prepared; PgRows owns one query result.
// Thread-safety: a PgConnection belongs to one thread at a time (libpq's rule).
// Errors: every call returns Status/Result. A serialization failure (SQLSTATE 40001)
// or a deadlock (40P01) is Code::busy: the caller rolls back and runs the whole
// transaction again. Everything else (connection lost, constraint violated, bad SQL)
// is Code::internal with PostgreSQL's message.
//
// Values travel in binary format only, always through prepared statements: bigint,
// text and bytea parameters, and results read back as the same three types (cast in
// SQL, e.g. count(*)::bigint, when a column has another type).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tillsync/status.h"

struct pg_conn;
struct pg_result;

namespace tillsync::storage {

// Whether `location` names a PostgreSQL database ("postgresql://..." or
// "postgres://..."), as opposed to a file path.
bool is_postgres_url(std::string_view location);

// `location` as it may be shown: a PostgreSQL URL without its password (from
// `user:password@` and from `password=` / `sslpassword=` parameters, which become
// `password=***`); a libpq keyword=value string with its password values hidden the
// same way; anything else unchanged.
std::string redact_postgres_url(std::string_view location);

// Whether `location` is a libpq keyword=value connection string ("host=... dbname=...",
// or anything naming a password=): tillsync takes PostgreSQL databases by URL only, and
// must not take such a string for a file name.
bool is_keyword_connection_string(std::string_view location);

// `url` with `schema` as its search_path, so an HQ there lives in that schema (e.g. one
// schema per test or benchmark run on a shared server). `schema` is a plain identifier.
std::string postgres_url_in_schema(const std::string& url, const std::string& schema);

// The parameters of one statement execution. Append in $1, $2, ... order.
class PgParams {
 public:
  PgParams& i64(std::int64_t v);
  PgParams& text(std::string_view v);
  PgParams& bytes(std::string_view v);  // bytea
  PgParams& opt_text(const std::optional<std::string>& v);
  PgParams& opt_bytes(const std::optional<std::string>& v);
  PgParams& boolean(bool v) { return i64(v ? 1 : 0); }
  // One-dimensional arrays (bigint[], text[], bytea[]), e.g. for
  // INSERT ... SELECT * FROM unnest($1::bigint[], $2::bytea[]): many rows, one round trip.
  PgParams& i64_array(const std::vector<std::int64_t>& v);
  PgParams& text_array(const std::vector<std::string>& v);
  PgParams& bytes_array(const std::vector<std::string>& v);

  std::size_t size() const { return values_.size(); }

 private:
  friend class PgConnection;
  PgParams& add(unsigned oid, std::optional<std::string> value);
  std::vector<unsigned> types_;
  std::vector<std::optional<std::string>> values_;
};

// The rows of one result. Columns are read in binary format.
class PgRows {
 public:
  PgRows(PgRows&& other) noexcept;
  PgRows& operator=(PgRows&& other) noexcept;
  PgRows(const PgRows&) = delete;
  PgRows& operator=(const PgRows&) = delete;
  ~PgRows();

  int size() const;
  bool empty() const { return size() == 0; }
  bool is_null(int row, int col) const;
  std::int64_t i64(int row, int col) const;  // bigint (int8) column
  std::string text(int row, int col) const;  // text column ("" for NULL)
  std::string bytes(int row, int col) const;  // bytea column ("" for NULL)
  std::optional<std::string> opt_text(int row, int col) const;
  std::optional<std::string> opt_bytes(int row, int col) const;
  // Rows an INSERT/UPDATE/DELETE touched.
  std::int64_t affected() const;

 private:
  friend class PgConnection;
  explicit PgRows(pg_result* r) : r_(r) {}
  pg_result* r_ = nullptr;
};

class PgConnection {
 public:
  // Connects to `url` (a libpq connection URI). internal when the server refuses.
  static Result<std::unique_ptr<PgConnection>> open(const std::string& url);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs parameterless SQL text (schema, BEGIN/COMMIT); several statements allowed.
  Status exec(std::string_view sql);
  // COMMIT of the open transaction; internal when PostgreSQL rolled it back instead
  // (a statement of it had failed).
  Status commit();
  // Runs `sql` as a prepared statement (prepared on first use on this connection).
  // Statements queue()d before it are sent in the same round trip, run first, in
  // order; the first error among them is returned instead of this statement's result.
  Result<PgRows> run(std::string_view sql, const PgParams& params = {});
  // Sends `sql` without waiting for its result (libpq pipeline mode): for writes and
  // locks whose only outcome is "no error". Queued statements run in order, before
  // whatever is sent next; their first error comes back from the next run(), exec()
  // or commit() (commit() then rolls the transaction back).
  Status queue(std::string_view sql, const PgParams& params = {});
  // The first column of the first row as bigint; nullopt when no row or NULL.
  Result<std::optional<std::int64_t>> query_i64(std::string_view sql, const PgParams& params = {});

  // The URL without its password, for messages.
  const std::string& display_url() const { return display_url_; }

 private:
  PgConnection(pg_conn* c, std::string display_url) : c_(c), display_url_(std::move(display_url)) {}
  Status error(pg_result* r, std::string_view what) const;
  // The name `sql` is prepared under; queues its preparation the first time.
  Result<std::string> statement(std::string_view sql, const PgParams& params);
  Status send(const std::string& name, const PgParams& params);
  // Ends the pipeline: reads every queued result; keeps the last one when asked.
  Result<PgRows> drain(bool keep_last);
  pg_conn* c_ = nullptr;
  bool pipelined_ = false;
  int pending_ = 0;                      // queued results not read yet
  std::vector<std::string> unconfirmed_;  // prepared in the current pipeline
  std::uint64_t statements_ = 0;          // names given so far
  std::string display_url_;
  std::map<std::string, std::string, std::less<>> prepared_;  // SQL -> statement name
};

}  // namespace tillsync::storage
