#include "tillsync/storage/pg.h"

#include <libpq-fe.h>

#include <cstring>
#include <utility>

namespace tillsync::storage {
namespace {

// Type OIDs of the binary values we send (pg_type.h).
constexpr unsigned kInt8Oid = 20;
constexpr unsigned kTextOid = 25;
constexpr unsigned kByteaOid = 17;
constexpr unsigned kInt8ArrayOid = 1016;
constexpr unsigned kTextArrayOid = 1009;
constexpr unsigned kByteaArrayOid = 1001;

void put_be32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

std::string be64(std::int64_t v) {
  std::string be(8, '\0');
  auto u = static_cast<std::uint64_t>(v);
  for (int i = 7; i >= 0; --i, u >>= 8) be[static_cast<std::size_t>(i)] = static_cast<char>(u & 0xff);
  return be;
}

// PostgreSQL's binary array format: ndim, has-nulls flag, element type, then per
// dimension (size, lower bound), then each element as length + bytes.
template <typename T, typename Encode>
std::string binary_array(unsigned elem_oid, const std::vector<T>& elems, Encode encode) {
  std::string out;
  put_be32(out, elems.empty() ? 0 : 1);
  put_be32(out, 0);
  put_be32(out, elem_oid);
  if (elems.empty()) return out;
  put_be32(out, static_cast<std::uint32_t>(elems.size()));
  put_be32(out, 1);
  for (const T& e : elems) {
    const std::string bytes = encode(e);
    put_be32(out, static_cast<std::uint32_t>(bytes.size()));
    out += bytes;
  }
  return out;
}

std::uint64_t read_be64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::string trimmed(const char* message) {
  std::string m = message != nullptr ? message : "";
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

}  // namespace

bool is_postgres_url(std::string_view location) {
  return location.starts_with("postgresql://") || location.starts_with("postgres://");
}

namespace {

// Whether a parameter or keyword names a password ("password", "sslpassword", any case).
bool names_password(std::string_view key) {
  std::string k;
  for (char c : key) k += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return k.size() >= 8 && k.compare(k.size() - 8, 8, "password") == 0;
}

// `text` with the value of every password `key=value` hidden; `separators` end a value
// ('&' in a query string, spaces in a keyword string; a quoted keyword value may hold
// them).
std::string hide_password_values(std::string_view text, std::string_view separators) {
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t end = text.find_first_of(separators, i);
    const std::size_t eq = text.find('=', i);
    if (eq != std::string_view::npos && (end == std::string_view::npos || eq < end)) {
      std::size_t key_start = i;
      while (key_start < eq && text[key_start] == ' ') ++key_start;
      const std::string_view key = text.substr(key_start, eq - key_start);
      std::size_t value_end = end;
      if (eq + 1 < text.size() && text[eq + 1] == '\'') {  // 'quoted value', \' escapes
        std::size_t k = eq + 2;
        while (k < text.size() && text[k] != '\'') k += text[k] == '\\' ? 2 : 1;
        value_end = k < text.size() ? text.find_first_of(separators, k + 1) : std::string_view::npos;
      }
      if (names_password(key)) {
        out += std::string(text.substr(i, eq + 1 - i)) + "***";
        if (value_end == std::string_view::npos) return out;
        i = value_end;
        continue;
      }
      end = value_end;
    }
    if (end == std::string_view::npos) return out + std::string(text.substr(i));
    out += std::string(text.substr(i, end + 1 - i));
    i = end + 1;
  }
  return out;
}

}  // namespace

std::string redact_postgres_url(std::string_view location) {
  if (!is_postgres_url(location)) {
    return is_keyword_connection_string(location) ? hide_password_values(location, " \t") : std::string(location);
  }
  // postgresql://[user[:password]@]host[:port][/db][?params]
  const std::size_t start = location.find("://") + 3;
  std::size_t authority_end = location.find_first_of("/?", start);
  if (authority_end == std::string_view::npos) authority_end = location.size();
  std::string out(location.substr(0, start));
  const std::string_view authority = location.substr(start, authority_end - start);
  const std::size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    const std::string_view user = authority.substr(0, at);
    out += std::string(user.substr(0, user.find(':')));
    out += std::string(authority.substr(at));
  } else {
    out += std::string(authority);
  }
  const std::size_t query = location.find('?', authority_end);
  out += std::string(location.substr(authority_end, (query == std::string_view::npos ? location.size() : query) -
                                                        authority_end));
  if (query != std::string_view::npos) out += "?" + hide_password_values(location.substr(query + 1), "&");
  return out;
}

bool is_keyword_connection_string(std::string_view location) {
  if (is_postgres_url(location)) return false;
  for (std::string_view keyword : {"host=", "hostaddr=", "dbname=", "user=", "port=", "service="}) {
    if (location.starts_with(keyword)) return true;
  }
  for (std::size_t eq = location.find('='); eq != std::string_view::npos; eq = location.find('=', eq + 1)) {
    std::size_t k = eq;
    while (k > 0 && location[k - 1] != ' ' && location[k - 1] != '\t' && location[k - 1] != '/') --k;
    if (names_password(location.substr(k, eq - k))) return true;
  }
  return false;
}

std::string postgres_url_in_schema(const std::string& url, const std::string& schema) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" + schema;
}

PgParams& PgParams::add(unsigned oid, std::optional<std::string> value) {
  types_.push_back(oid);
  values_.push_back(std::move(value));
  return *this;
}

PgParams& PgParams::i64(std::int64_t v) { return add(kInt8Oid, be64(v)); }
PgParams& PgParams::i64_array(const std::vector<std::int64_t>& v) {
  return add(kInt8ArrayOid, binary_array(kInt8Oid, v, be64));
}
PgParams& PgParams::text_array(const std::vector<std::string>& v) {
  return add(kTextArrayOid, binary_array(kTextOid, v, [](const std::string& e) { return e; }));
}
PgParams& PgParams::bytes_array(const std::vector<std::string>& v) {
  return add(kByteaArrayOid, binary_array(kByteaOid, v, [](const std::string& e) { return e; }));
}
PgParams& PgParams::text(std::string_view v) { return add(kTextOid, std::string(v)); }
PgParams& PgParams::bytes(std::string_view v) { return add(kByteaOid, std::string(v)); }
PgParams& PgParams::opt_text(const std::optional<std::string>& v) { return add(kTextOid, v); }
PgParams& PgParams::opt_bytes(const std::optional<std::string>& v) { return add(kByteaOid, v); }

PgRows::PgRows(PgRows&& other) noexcept : r_(std::exchange(other.r_, nullptr)) {}
PgRows& PgRows::operator=(PgRows&& other) noexcept {
  if (this != &other) {
    if (r_ != nullptr) PQclear(r_);
    r_ = std::exchange(other.r_, nullptr);
  }
  return *this;
}
PgRows::~PgRows() {
  if (r_ != nullptr) PQclear(r_);
}

int PgRows::size() const { return PQntuples(r_); }
bool PgRows::is_null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }
std::int64_t PgRows::i64(int row, int col) const {
  if (is_null(row, col) || PQgetlength(r_, row, col) != 8) return 0;
  return static_cast<std::int64_t>(read_be64(PQgetvalue(r_, row, col)));
}
std::string PgRows::text(int row, int col) const {
  if (is_null(row, col)) return {};
  return std::string(PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col)));
}
std::string PgRows::bytes(int row, int col) const { return text(row, col); }
std::optional<std::string> PgRows::opt_text(int row, int col) const {
  if (is_null(row, col)) return std::nullopt;
  return text(row, col);
}
std::optional<std::string> PgRows::opt_bytes(int row, int col) const { return opt_text(row, col); }
std::int64_t PgRows::affected() const {
  const char* n = PQcmdTuples(r_);
  return (n == nullptr || *n == '\0') ? 0 : std::strtoll(n, nullptr, 10);
}

Result<std::unique_ptr<PgConnection>> PgConnection::open(const std::string& url) {
  const std::string shown = redact_postgres_url(url);
  PGconn* c = PQconnectdb(url.c_str());
  if (c == nullptr) return Status::Internal(shown + ": out of memory connecting to PostgreSQL");
  if (PQstatus(c) != CONNECTION_OK) {
    Status s = Status::Internal(shown + ": cannot connect to PostgreSQL: " + trimmed(PQerrorMessage(c)));
    PQfinish(c);
    return s;
  }
  std::unique_ptr<PgConnection> conn(new PgConnection(c, shown));
  // Notices (e.g. "relation already exists, skipping") are not errors; keep stderr clean.
  PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);
  TS_RETURN_IF_ERROR(conn->exec("SET client_min_messages = warning"));
  return conn;
}

PgConnection::~PgConnection() {
  if (c_ != nullptr) PQfinish(c_);
}

Status PgConnection::error(PGresult* r, std::string_view what) const {
  const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  std::string message = r != nullptr ? trimmed(PQresultErrorMessage(r)) : std::string();
  if (message.empty()) message = trimmed(PQerrorMessage(c_));
  const std::string sqlstate = state != nullptr ? state : "";
  if (sqlstate == "40001" || sqlstate == "40P01")
    return Status(Code::busy, "PostgreSQL " + sqlstate + ": " + message);
  if (sqlstate.size() == 5 && sqlstate.starts_with("23"))  // integrity constraint violation
    return Status(Code::constraint_violation, display_url_ + ": " + std::string(what) + " failed: " +
                                                  message + " (SQLSTATE " + sqlstate + ")");
  return Status::Internal(display_url_ + ": " + std::string(what) + " failed: " + message +
                          (sqlstate.empty() ? "" : " (SQLSTATE " + sqlstate + ")"));
}

Status PgConnection::exec(std::string_view sql) {
  Status queued = Status::Ok();
  if (pipelined_) {
    auto d = drain(false);
    if (!d.ok()) queued = d.status();
  }
  PGresult* r = PQexec(c_, std::string(sql).c_str());
  const auto st = PQresultStatus(r);
  Status s = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? Status::Ok() : error(r, "statement");
  PQclear(r);
  return queued.ok() ? s : queued;
}

Status PgConnection::commit() {
  if (pipelined_) {
    auto d = drain(false);
    if (!d.ok()) {
      (void)exec("ROLLBACK");
      return d.status();
    }
  }
  PGresult* r = PQexec(c_, "COMMIT");
  Status s = PQresultStatus(r) == PGRES_COMMAND_OK ? Status::Ok() : error(r, "commit");
  if (s.ok() && std::string_view(PQcmdStatus(r)) != "COMMIT")
    s = Status::Internal(display_url_ + ": the transaction was rolled back, not committed");
  PQclear(r);
  return s;
}

Result<std::string> PgConnection::statement(std::string_view sql, const PgParams& params) {
  if (auto it = prepared_.find(sql); it != prepared_.end()) return it->second;
  // Never reused: a statement whose pipeline failed is prepared again under a new name.
  std::string name = "ts" + std::to_string(++statements_);
  const auto nparams = static_cast<int>(params.types_.size());
  const std::string text(sql);
  if (PQsendPrepare(c_, name.c_str(), text.c_str(), nparams, params.types_.data()) != 1)
    return error(nullptr, "prepare");
  ++pending_;
  unconfirmed_.push_back(text);
  prepared_.emplace(text, name);
  return name;
}

Status PgConnection::send(const std::string& name, const PgParams& params) {
  const int n = static_cast<int>(params.values_.size());
  std::vector<const char*> values(static_cast<std::size_t>(n));
  std::vector<int> lengths(static_cast<std::size_t>(n));
  std::vector<int> formats(static_cast<std::size_t>(n), 1);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto& v = params.values_[i];
    values[i] = v ? v->data() : nullptr;
    lengths[i] = v ? static_cast<int>(v->size()) : 0;
  }
  if (PQsendQueryPrepared(c_, name.c_str(), n, values.data(), lengths.data(), formats.data(),
                          /*resultFormat=*/1) != 1)
    return error(nullptr, "send");
  ++pending_;
  return Status::Ok();
}

Status PgConnection::queue(std::string_view sql, const PgParams& params) {
  if (!pipelined_) {
    if (PQenterPipelineMode(c_) != 1) return error(nullptr, "pipeline");
    pipelined_ = true;
  }
  TS_ASSIGN_OR_RETURN(std::string name, statement(sql, params));
  return send(name, params);
}

Result<PgRows> PgConnection::drain(bool keep_last) {
  Status first = Status::Ok();
  if (PQpipelineSync(c_) != 1) first = error(nullptr, "pipeline sync");
  PGresult* last = nullptr;
  for (int i = 0; i < pending_; ++i) {
    PGresult* r = PQgetResult(c_);
    if (r == nullptr) {
      first = error(nullptr, "pipeline");
      break;
    }
    const auto st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_PIPELINE_ABORTED && first.ok())
      first = error(r, "query");
    if (keep_last && i == pending_ - 1 && first.ok()) {
      last = r;
    } else {
      PQclear(r);
    }
    while (PGresult* extra = PQgetResult(c_)) PQclear(extra);  // the NULL ending each result
  }
  // The sync point ends the pipeline.
  for (;;) {
    PGresult* r = PQgetResult(c_);
    if (r == nullptr) break;
    const bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
    PQclear(r);
    if (sync) break;
  }
  pending_ = 0;
  if (PQexitPipelineMode(c_) == 1) pipelined_ = false;
  if (!first.ok()) {
    for (const std::string& sql : unconfirmed_) prepared_.erase(sql);  // may not exist
    unconfirmed_.clear();
    if (last != nullptr) PQclear(last);
    return first;
  }
  unconfirmed_.clear();
  if (last == nullptr) return PgRows(nullptr);
  return PgRows(last);
}

// Always through the pipeline: with nothing queued it is one query and one sync, the
// same single round trip PQexecPrepared makes.
Result<PgRows> PgConnection::run(std::string_view sql, const PgParams& params) {
  TS_RETURN_IF_ERROR(queue(sql, params));
  return drain(true);
}

Result<std::optional<std::int64_t>> PgConnection::query_i64(std::string_view sql, const PgParams& params) {
  TS_ASSIGN_OR_RETURN(PgRows rows, run(sql, params));
  if (rows.empty() || rows.is_null(0, 0)) return std::optional<std::int64_t>{};
  return std::optional<std::int64_t>{rows.i64(0, 0)};
}

}  // namespace tillsync::storage
