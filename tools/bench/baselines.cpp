// Baselines for `tillsync bench`: raw SQLite, raw ZeroMQ and the session-changeset peer.
// See baselines.h for what each one does and docs/performance.md for why it is fair.
#include "bench/baselines.h"

// The session extension (sqlite3session_*, sqlite3changeset_*) is compiled into Debian's
// libsqlite3; its declarations are only visible with these defined.
#define SQLITE_ENABLE_SESSION 1
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "tillsync/domain.h"
#include "tillsync/guid.h"
#include "tillsync/operations.h"

namespace tillsync::bench {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

// Bounds a wait on a peer thread that failed; never a synchronization mechanism.
constexpr int kReceiveTimeoutMs = 60'000;
constexpr std::int64_t kBaseUnixMs = 1'700'000'000'000;

double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

// ---- SQLite ---------------------------------------------------------------------

struct DbCloser {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* st) const noexcept { sqlite3_finalize(st); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

Status sqlite_error(sqlite3* db, std::string_view what) {
  return Status::Internal(std::string(what) + ": " + (db ? sqlite3_errmsg(db) : "out of memory"));
}

Status exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    return Status::Internal(std::string(sql).substr(0, 60) + ": " + msg);
  }
  return Status::Ok();
}

// Removes `path` and its WAL/shared-memory companions so a rerun starts fresh.
void remove_db_files(const std::string& path) {
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) fs::remove(path + suffix, ec);
}

// A fresh database in WAL mode with the durability tillsync uses for the same setting:
// synchronous FULL (durable) or NORMAL, foreign keys on, a busy timeout.
Result<DbPtr> open_fresh(const std::string& path, bool durable) {
  remove_db_files(path);
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) return sqlite_error(raw, "open " + path);
  sqlite3_busy_timeout(db.get(), 5000);
  TS_RETURN_IF_ERROR(exec(db.get(), "PRAGMA journal_mode=WAL"));
  TS_RETURN_IF_ERROR(
      exec(db.get(), durable ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL"));
  TS_RETURN_IF_ERROR(exec(db.get(), "PRAGMA foreign_keys=ON"));
  return db;
}

Result<StmtPtr> prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, nullptr) != SQLITE_OK) {
    return sqlite_error(db, std::string("prepare ") + sql);
  }
  return StmtPtr(st);
}

void bind_blob(sqlite3_stmt* st, int index, std::string_view bytes) {
  sqlite3_bind_blob(st, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_STATIC);
}
void bind_text(sqlite3_stmt* st, int index, std::string_view text) {
  sqlite3_bind_text(st, index, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
}
void bind_int(sqlite3_stmt* st, int index, std::int64_t v) {
  sqlite3_bind_int64(st, index, static_cast<sqlite3_int64>(v));
}

// Runs a prepared statement that returns no rows, then resets it for reuse.
Status step_done(sqlite3* db, sqlite3_stmt* st, std::string_view what) {
  const int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc != SQLITE_DONE) return sqlite_error(db, what);
  return Status::Ok();
}

Result<std::int64_t> query_int(sqlite3* db, const char* sql) {
  TS_ASSIGN_OR_RETURN(auto st, prepare(db, sql));
  if (sqlite3_step(st.get()) != SQLITE_ROW) return sqlite_error(db, sql);
  return static_cast<std::int64_t>(sqlite3_column_int64(st.get(), 0));
}

Status ensure_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::Internal("create directory " + dir + ": " + ec.message());
  return Status::Ok();
}

// ---- the workload ---------------------------------------------------------------

// The customer `tillsync bench` creates (tools/bench_scenarios.cpp bench_person) after the
// default-customer values have been copied in (D11).
struct PersonRow {
  Guid guid;
  std::string first_name, last_name, email, phone;
};
constexpr std::string_view kLanguage = "en-us";
constexpr std::string_view kCurrency = "USD";
constexpr std::string_view kGroup = "RETAIL";
constexpr std::string_view kReceiptOption = "print";

PersonRow person_row(GuidGenerator& guids, std::size_t i) {
  PersonRow p;
  p.guid = guids.next_time_ordered(kBaseUnixMs + static_cast<std::int64_t>(i));
  p.first_name = "Bench1";
  p.last_name = "Customer" + std::to_string(i);
  p.email = "bench1." + std::to_string(i) + "@example.com";
  p.phone = "+1555" + std::to_string(1'100'000 + i);
  return p;
}

// Binds the customer row's nine columns (guid, names, contacts, default-customer values).
void bind_customer(sqlite3_stmt* c, const PersonRow& p) {
  bind_blob(c, 1, p.guid.raw());
  bind_text(c, 2, p.first_name);
  bind_text(c, 3, p.last_name);
  bind_text(c, 4, p.email);
  bind_text(c, 5, p.phone);
  bind_text(c, 6, kLanguage);
  bind_text(c, 7, kCurrency);
  bind_text(c, 8, kGroup);
  bind_text(c, 9, kReceiptOption);
}

Customer typical_customer() {
  GuidGenerator guids(7);
  const PersonRow p = person_row(guids, 12'345);
  Customer c;
  c.guid = p.guid;
  c.type = CustomerType::person;
  c.first_name = p.first_name;
  c.last_name = p.last_name;
  c.email = p.email;
  c.phone = p.phone;
  c.language = std::string(kLanguage);
  c.currency = std::string(kCurrency);
  c.customer_group = std::string(kGroup);
  c.receipt_option = std::string(kReceiptOption);
  return c;
}

// `n` bytes that do not compress (so no layer can shrink them).
std::string incompressible_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& ch : s) ch = static_cast<char>(rng() & 0xFFu);
  return s;
}

double percentile_sorted(const std::vector<double>& sorted, double pct) {
  if (sorted.empty()) return 0;
  // Nearest rank.
  const double rank = pct / 100.0 * static_cast<double>(sorted.size());
  std::size_t idx = static_cast<std::size_t>(rank);
  if (static_cast<double>(idx) < rank) ++idx;  // ceil
  idx = std::clamp<std::size_t>(idx, 1, sorted.size());
  return sorted[idx - 1];
}

// Runs `body` and turns any exception (cppzmq throws zmq::error_t) into a Status.
template <typename F>
Status guarded(std::string_view what, F&& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return Status::Internal(std::string(what) + ": " + e.what());
  } catch (...) {
    return Status::Internal(std::string(what) + ": unknown exception");
  }
}

zmq::socket_t make_socket(zmq::context_t& ctx, zmq::socket_type type) {
  zmq::socket_t s(ctx, type);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, kReceiveTimeoutMs);
  s.set(zmq::sockopt::sndtimeo, kReceiveTimeoutMs);
  return s;
}

// Binds to an ephemeral loopback port and returns the endpoint actually bound.
std::string bind_ephemeral(zmq::socket_t& s) {
  s.bind("tcp://127.0.0.1:*");
  return s.get(zmq::sockopt::last_endpoint);
}

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}
std::optional<std::uint64_t> get_u64(const zmq::message_t& m) {
  if (m.size() != 8) return std::nullopt;
  const auto* p = static_cast<const unsigned char*>(m.data());
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

// ---- sizes ----------------------------------------------------------------------

std::size_t typical_create_record_bytes() {
  return encode_payload(Payload{CustomerCreated{typical_customer()}}).size();
}

std::size_t typical_edit_record_bytes() {
  CustomerUpdated u;
  u.customer = typical_customer().guid;
  u.base_version = 1;
  u.changes.push_back({Field::phone, "+15550001234"});
  return encode_payload(Payload{u}).size();
}

// ---- raw SQLite single-row inserts ------------------------------------------------

Result<LatencyStats> raw_sqlite_single_inserts(const std::string& dir, std::size_t n,
                                               bool durable) {
  if (n == 0) return Status::InvalidInput("n", "at least one insert");
  TS_RETURN_IF_ERROR(ensure_dir(dir));
  TS_ASSIGN_OR_RETURN(DbPtr db, open_fresh((fs::path(dir) / "raw-single.db").string(), durable));
  // The terminal's customer row and its log row, primary keys only.
  TS_RETURN_IF_ERROR(exec(db.get(), R"sql(
CREATE TABLE customers (
  guid BLOB PRIMARY KEY, type TEXT NOT NULL, first_name TEXT NOT NULL,
  last_name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT NOT NULL,
  language TEXT NOT NULL, currency TEXT NOT NULL, customer_group TEXT NOT NULL,
  receipt_option TEXT NOT NULL, version INTEGER NOT NULL) STRICT;
CREATE TABLE change_log (
  seq INTEGER PRIMARY KEY, op_id BLOB NOT NULL, entity BLOB NOT NULL,
  kind INTEGER NOT NULL, hlc INTEGER NOT NULL, node_id TEXT NOT NULL,
  payload BLOB NOT NULL) STRICT;
)sql"));
  TS_ASSIGN_OR_RETURN(auto begin, prepare(db.get(), "BEGIN IMMEDIATE"));
  TS_ASSIGN_OR_RETURN(auto commit, prepare(db.get(), "COMMIT"));
  TS_ASSIGN_OR_RETURN(auto ins_customer,
                      prepare(db.get(),
                              "INSERT INTO customers VALUES "
                              "(?1, 'person', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)"));
  TS_ASSIGN_OR_RETURN(auto ins_log,
                      prepare(db.get(), "INSERT INTO change_log VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)"));
  const std::string payload = incompressible_bytes(typical_create_record_bytes(), 1);
  const std::string node_id = "S001/T01";
  GuidGenerator guids(11);

  std::vector<double> us;
  us.reserve(n);
  const auto start = SteadyClock::now();
  for (std::size_t i = 0; i < n; ++i) {
    const PersonRow p = person_row(guids, i);
    const Guid op = guids.next_time_ordered(kBaseUnixMs + static_cast<std::int64_t>(i));
    const auto t0 = SteadyClock::now();
    TS_RETURN_IF_ERROR(step_done(db.get(), begin.get(), "BEGIN"));
    sqlite3_stmt* c = ins_customer.get();
    bind_customer(c, p);
    TS_RETURN_IF_ERROR(step_done(db.get(), c, "insert customer"));
    sqlite3_stmt* l = ins_log.get();
    bind_int(l, 1, static_cast<std::int64_t>(i + 1));
    bind_blob(l, 2, op.raw());
    bind_blob(l, 3, p.guid.raw());
    bind_int(l, 4, static_cast<std::int64_t>(((kBaseUnixMs + static_cast<std::int64_t>(i)) << 16)));
    bind_text(l, 5, node_id);
    bind_blob(l, 6, payload);
    TS_RETURN_IF_ERROR(step_done(db.get(), l, "insert log row"));
    TS_RETURN_IF_ERROR(step_done(db.get(), commit.get(), "COMMIT"));
    us.push_back(std::chrono::duration<double, std::micro>(SteadyClock::now() - t0).count());
  }
  const double wall = seconds_since(start);

  LatencyStats stats;
  stats.count = n;
  double sum = 0;
  for (double v : us) sum += v;
  stats.mean_us = sum / static_cast<double>(n);
  std::sort(us.begin(), us.end());
  stats.p50_us = percentile_sorted(us, 50);
  stats.p99_us = percentile_sorted(us, 99);
  stats.per_second = static_cast<double>(n) / wall;
  return stats;
}

// ---- raw SQLite batched inserts ---------------------------------------------------

Result<double> raw_sqlite_batched_inserts(const std::string& dir, std::size_t rows,
                                          std::size_t batch, std::size_t row_bytes,
                                          bool durable) {
  if (rows == 0) return Status::InvalidInput("rows", "at least one row");
  if (batch == 0) return Status::InvalidInput("batch", "at least one row per batch");
  TS_RETURN_IF_ERROR(ensure_dir(dir));
  TS_ASSIGN_OR_RETURN(DbPtr db, open_fresh((fs::path(dir) / "raw-batched.db").string(), durable));
  TS_RETURN_IF_ERROR(
      exec(db.get(), "CREATE TABLE received (seq INTEGER PRIMARY KEY, data BLOB NOT NULL) STRICT"));
  TS_ASSIGN_OR_RETURN(auto begin, prepare(db.get(), "BEGIN IMMEDIATE"));
  TS_ASSIGN_OR_RETURN(auto commit, prepare(db.get(), "COMMIT"));
  TS_ASSIGN_OR_RETURN(auto ins, prepare(db.get(), "INSERT INTO received VALUES (?1, ?2)"));
  // Distinct bytes per row would only cost generation time; the pages written are the
  // same either way, and nothing in SQLite deduplicates or compresses them.
  const std::string data = incompressible_bytes(row_bytes, 2);

  const auto start = SteadyClock::now();
  for (std::size_t done = 0; done < rows;) {
    const std::size_t k = std::min(batch, rows - done);
    TS_RETURN_IF_ERROR(step_done(db.get(), begin.get(), "BEGIN"));
    for (std::size_t j = 0; j < k; ++j) {
      bind_int(ins.get(), 1, static_cast<std::int64_t>(done + j + 1));
      bind_blob(ins.get(), 2, data);
      TS_RETURN_IF_ERROR(step_done(db.get(), ins.get(), "insert row"));
    }
    TS_RETURN_IF_ERROR(step_done(db.get(), commit.get(), "COMMIT"));
    done += k;
  }
  return static_cast<double>(rows) / seconds_since(start);
}

// ---- raw ZeroMQ -------------------------------------------------------------------

Result<double> raw_zmq_transfer(std::size_t messages, std::size_t bytes, std::size_t batch,
                                std::size_t window) {
  if (messages == 0) return Status::InvalidInput("messages", "at least one message");
  if (batch == 0) return Status::InvalidInput("batch", "at least one message per batch");
  if (window == 0) return Status::InvalidInput("window", "at least one batch in flight");
  double rate = 0;
  Status s = guarded("raw zmq transfer", [&]() -> Status {
    zmq::context_t ctx;
    // Receiver side: data PULL and ack PUSH, bound on ephemeral ports.
    zmq::socket_t data_in = make_socket(ctx, zmq::socket_type::pull);
    zmq::socket_t ack_out = make_socket(ctx, zmq::socket_type::push);
    const std::string data_ep = bind_ephemeral(data_in);
    const std::string ack_ep = bind_ephemeral(ack_out);
    // Sender side.
    zmq::socket_t data_out = make_socket(ctx, zmq::socket_type::push);
    zmq::socket_t ack_in = make_socket(ctx, zmq::socket_type::pull);
    data_out.connect(data_ep);
    ack_in.connect(ack_ep);

    Status receiver_status;
    std::thread receiver([&] {
      receiver_status = guarded("raw zmq receiver", [&]() -> Status {
        std::size_t received = 0;
        while (received < messages) {
          std::size_t in_batch = 0;
          std::size_t batch_bytes = 0;
          for (bool more = true; more;) {
            zmq::message_t m;
            if (!data_in.recv(m)) return Status::Internal("raw zmq receiver: timed out");
            batch_bytes += m.size();
            ++in_batch;
            more = m.more();
          }
          if (batch_bytes != in_batch * bytes) return Status::Internal("raw zmq: short message");
          received += in_batch;
          std::string ack;
          put_u64(ack, received);
          if (!ack_out.send(zmq::buffer(ack))) return Status::Internal("raw zmq: ack not sent");
        }
        return Status::Ok();
      });
    });

    const std::string payload = incompressible_bytes(bytes, 3);
    Status sender_status = guarded("raw zmq sender", [&]() -> Status {
      const auto start = SteadyClock::now();
      std::deque<std::size_t> in_flight;  // messages sent up to each unacked batch
      for (std::size_t sent = 0; sent < messages || !in_flight.empty();) {
        if (sent < messages && in_flight.size() < window) {
          const std::size_t k = std::min(batch, messages - sent);
          for (std::size_t j = 0; j < k; ++j) {
            const auto flags = j + 1 < k ? zmq::send_flags::sndmore : zmq::send_flags::none;
            if (!data_out.send(zmq::buffer(payload), flags)) {
              return Status::Internal("raw zmq: send timed out");
            }
          }
          sent += k;
          in_flight.push_back(sent);
          continue;
        }
        zmq::message_t ack;
        if (!ack_in.recv(ack)) return Status::Internal("raw zmq sender: no ack");
        if (get_u64(ack) != in_flight.front()) return Status::Internal("raw zmq: unexpected ack");
        in_flight.pop_front();
      }
      rate = static_cast<double>(messages) / seconds_since(start);
      return Status::Ok();
    });
    receiver.join();
    TS_RETURN_IF_ERROR(sender_status);
    return receiver_status;
  });
  if (!s.ok()) return s;
  return rate;
}

// ---- the session-changeset peer ---------------------------------------------------

namespace {

constexpr const char* kPeerCustomers = R"sql(
CREATE TABLE customers (
  guid BLOB PRIMARY KEY, type TEXT NOT NULL, first_name TEXT NOT NULL,
  last_name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT NOT NULL,
  language TEXT NOT NULL, currency TEXT NOT NULL, customer_group TEXT NOT NULL,
  receipt_option TEXT NOT NULL, version INTEGER NOT NULL) STRICT;
)sql";

struct SessionDeleter {
  void operator()(sqlite3_session* s) const noexcept { sqlite3session_delete(s); }
};
using SessionPtr = std::unique_ptr<sqlite3_session, SessionDeleter>;

Result<SessionPtr> new_session(sqlite3* db) {
  sqlite3_session* raw = nullptr;
  if (sqlite3session_create(db, "main", &raw) != SQLITE_OK) {
    return sqlite_error(db, "sqlite3session_create");
  }
  SessionPtr s(raw);
  if (sqlite3session_attach(s.get(), "customers") != SQLITE_OK) {
    return sqlite_error(db, "sqlite3session_attach");
  }
  return s;
}

struct ApplyContext {
  std::size_t conflicts = 0;
};

int on_conflict(void* ctx, int type, sqlite3_changeset_iter* /*iter*/) {
  ++static_cast<ApplyContext*>(ctx)->conflicts;
  // A fresh HQ sees none; a real deployment would pick a policy here.
  if (type == SQLITE_CHANGESET_DATA || type == SQLITE_CHANGESET_CONFLICT) {
    return SQLITE_CHANGESET_REPLACE;
  }
  return SQLITE_CHANGESET_OMIT;
}

// Phase 1: the terminal's writes with a session attached; one outbox row per batch.
// Returns the number of creations (rows HQ must end up with).
Result<std::size_t> capture(sqlite3* db, std::size_t ops, std::size_t batch,
                            std::size_t edit_every) {
  TS_ASSIGN_OR_RETURN(auto begin, prepare(db, "BEGIN IMMEDIATE"));
  TS_ASSIGN_OR_RETURN(auto commit, prepare(db, "COMMIT"));
  TS_ASSIGN_OR_RETURN(auto ins,
                      prepare(db,
                              "INSERT INTO customers VALUES "
                              "(?1, 'person', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)"));
  TS_ASSIGN_OR_RETURN(auto upd, prepare(db, "UPDATE customers SET phone = ?1, "
                                            "version = version + 1 WHERE guid = ?2"));
  TS_ASSIGN_OR_RETURN(auto outbox,
                      prepare(db, "INSERT INTO outbox(ops, changeset) VALUES (?1, ?2)"));
  GuidGenerator guids(13);
  std::vector<Guid> created;
  created.reserve(ops);
  TS_ASSIGN_OR_RETURN(SessionPtr session, new_session(db));
  std::size_t in_batch = 0;
  for (std::size_t i = 0; i < ops; ++i) {
    TS_RETURN_IF_ERROR(step_done(db, begin.get(), "BEGIN"));
    const bool edit = edit_every > 0 && !created.empty() && (i + 1) % edit_every == 0;
    if (edit) {
      const std::string phone = "+1556" + std::to_string(1'000'000 + i);
      const Guid& target = created[created.size() / 2];
      bind_text(upd.get(), 1, phone);
      bind_blob(upd.get(), 2, target.raw());
      TS_RETURN_IF_ERROR(step_done(db, upd.get(), "update customer"));
    } else {
      const PersonRow p = person_row(guids, i);
      sqlite3_stmt* c = ins.get();
      bind_customer(c, p);
      TS_RETURN_IF_ERROR(step_done(db, c, "insert customer"));
      created.push_back(p.guid);
    }
    ++in_batch;
    const bool last = i + 1 == ops;
    if (in_batch == batch || last) {
      int n = 0;
      void* bytes = nullptr;
      if (sqlite3session_changeset(session.get(), &n, &bytes) != SQLITE_OK) {
        return sqlite_error(db, "sqlite3session_changeset");
      }
      bind_int(outbox.get(), 1, static_cast<std::int64_t>(in_batch));
      sqlite3_bind_blob(outbox.get(), 2, bytes, n, SQLITE_TRANSIENT);
      sqlite3_free(bytes);
      TS_RETURN_IF_ERROR(step_done(db, outbox.get(), "insert outbox"));
      in_batch = 0;
    }
    TS_RETURN_IF_ERROR(step_done(db, commit.get(), "COMMIT"));
    if (in_batch == 0 && !last) {
      // A fresh session per changeset: the next one holds only the next batch.
      session.reset();
      TS_ASSIGN_OR_RETURN(session, new_session(db));
    }
  }
  return created.size();
}

// Phase 2, HQ end: receive `expected` changesets on `router`, apply each in one
// transaction together with the (node, id) it came as, ack after commit.
Status hq_loop(sqlite3* db, zmq::socket_t& router, std::size_t expected) {
  TS_ASSIGN_OR_RETURN(auto begin, prepare(db, "BEGIN IMMEDIATE"));
  TS_ASSIGN_OR_RETURN(auto commit, prepare(db, "COMMIT"));
  TS_ASSIGN_OR_RETURN(auto mark, prepare(db, "INSERT INTO received(node, id) VALUES (?1, ?2)"));
  ApplyContext ctx;
  for (std::size_t k = 0; k < expected; ++k) {
    zmq::message_t identity, id_frame, changeset;
    if (!router.recv(identity) || !identity.more()) return Status::Internal("peer HQ: no request");
    if (!router.recv(id_frame) || !id_frame.more()) return Status::Internal("peer HQ: bad request");
    if (!router.recv(changeset) || changeset.more()) return Status::Internal("peer HQ: bad request");
    const auto id = get_u64(id_frame);
    if (!id) return Status::Internal("peer HQ: bad changeset id");
    TS_RETURN_IF_ERROR(step_done(db, begin.get(), "BEGIN"));
    bind_text(mark.get(), 1, "S001/T01");
    bind_int(mark.get(), 2, static_cast<std::int64_t>(*id));
    TS_RETURN_IF_ERROR(step_done(db, mark.get(), "record changeset id"));
    if (sqlite3changeset_apply(db, static_cast<int>(changeset.size()), changeset.data(), nullptr,
                               on_conflict, &ctx) != SQLITE_OK) {
      Status err = sqlite_error(db, "sqlite3changeset_apply");
      (void)exec(db, "ROLLBACK");
      return err;
    }
    TS_RETURN_IF_ERROR(step_done(db, commit.get(), "COMMIT"));
    if (!router.send(identity, zmq::send_flags::sndmore) ||
        !router.send(id_frame, zmq::send_flags::none)) {
      return Status::Internal("peer HQ: ack not sent");
    }
  }
  if (ctx.conflicts != 0) {
    return Status::Internal("peer HQ: " + std::to_string(ctx.conflicts) + " unexpected conflicts");
  }
  return Status::Ok();
}

// Phase 2, terminal end: ship the outbox in order with up to `window` changesets in
// flight, recording each ack durably as it comes.
Status ship(sqlite3* db, zmq::socket_t& dealer, PeerStats& stats, std::size_t window) {
  TS_ASSIGN_OR_RETURN(auto next, prepare(db, "SELECT id, ops, changeset FROM outbox "
                                             "WHERE id > ?1 ORDER BY id LIMIT 1"));
  TS_ASSIGN_OR_RETURN(auto acked, prepare(db, "UPDATE shipped SET acked = ?1"));
  std::int64_t cursor = 0;  // the last id sent
  std::deque<std::pair<std::int64_t, std::int64_t>> in_flight;  // (id, ops), oldest first
  for (bool outbox_done = false;;) {
    if (outbox_done || in_flight.size() >= window) {
      if (in_flight.empty()) break;
      zmq::message_t ack;
      if (!dealer.recv(ack)) return Status::Internal("peer terminal: no ack");
      const auto [id, ops] = in_flight.front();
      if (get_u64(ack) != static_cast<std::uint64_t>(id)) {
        return Status::Internal("peer terminal: unexpected ack");
      }
      bind_int(acked.get(), 1, id);
      TS_RETURN_IF_ERROR(step_done(db, acked.get(), "record ack"));
      stats.ops += static_cast<std::size_t>(ops);
      in_flight.pop_front();
      continue;
    }
    bind_int(next.get(), 1, cursor);
    const int rc = sqlite3_step(next.get());
    if (rc == SQLITE_DONE) {
      sqlite3_reset(next.get());
      outbox_done = true;
      continue;
    }
    if (rc != SQLITE_ROW) {
      sqlite3_reset(next.get());
      return sqlite_error(db, "read outbox");
    }
    const std::int64_t id = sqlite3_column_int64(next.get(), 0);
    const std::int64_t ops = sqlite3_column_int64(next.get(), 1);
    const void* blob = sqlite3_column_blob(next.get(), 2);
    const auto size = static_cast<std::size_t>(sqlite3_column_bytes(next.get(), 2));
    std::string id_bytes;
    put_u64(id_bytes, static_cast<std::uint64_t>(id));
    const bool sent = dealer.send(zmq::buffer(id_bytes), zmq::send_flags::sndmore) &&
                      dealer.send(zmq::const_buffer(blob, size), zmq::send_flags::none);
    sqlite3_reset(next.get());
    if (!sent) return Status::Internal("peer terminal: send timed out");
    stats.bytes_shipped += size;
    ++stats.changesets;
    in_flight.emplace_back(id, ops);
    cursor = id;
  }
  return Status::Ok();
}

}  // namespace

Result<PeerStats> session_changeset_peer(const std::string& dir, std::size_t ops,
                                         std::size_t batch, bool durable,
                                         std::size_t edit_every, std::size_t window) {
  if (ops == 0) return Status::InvalidInput("ops", "at least one operation");
  if (window == 0) return Status::InvalidInput("window", "at least one changeset in flight");
  if (batch == 0) return Status::InvalidInput("batch", "at least one operation per changeset");
  TS_RETURN_IF_ERROR(ensure_dir(dir));
  const fs::path base(dir);

  // The terminal: the backlog is written with synchronous=NORMAL (not what is measured),
  // then shipped with the requested durability.
  TS_ASSIGN_OR_RETURN(DbPtr terminal, open_fresh((base / "peer-terminal.db").string(), false));
  TS_RETURN_IF_ERROR(exec(terminal.get(), kPeerCustomers));
  TS_RETURN_IF_ERROR(exec(terminal.get(), R"sql(
CREATE TABLE outbox (id INTEGER PRIMARY KEY, ops INTEGER NOT NULL, changeset BLOB NOT NULL) STRICT;
CREATE TABLE shipped (acked INTEGER NOT NULL) STRICT;
INSERT INTO shipped VALUES (0);
)sql"));
  PeerStats stats;
  const auto capture_start = SteadyClock::now();
  TS_ASSIGN_OR_RETURN(std::size_t creations, capture(terminal.get(), ops, batch, edit_every));
  stats.capture_seconds = seconds_since(capture_start);
  TS_RETURN_IF_ERROR(exec(terminal.get(), "PRAGMA wal_checkpoint(TRUNCATE)"));
  TS_RETURN_IF_ERROR(exec(terminal.get(), durable ? "PRAGMA synchronous=FULL"
                                                  : "PRAGMA synchronous=NORMAL"));

  TS_ASSIGN_OR_RETURN(DbPtr hq, open_fresh((base / "peer-hq.db").string(), durable));
  TS_RETURN_IF_ERROR(exec(hq.get(), kPeerCustomers));
  TS_RETURN_IF_ERROR(exec(hq.get(),
                          "CREATE TABLE received (node TEXT NOT NULL, id INTEGER NOT NULL, "
                          "PRIMARY KEY (node, id)) STRICT"));
  TS_ASSIGN_OR_RETURN(std::int64_t changesets,
                      query_int(terminal.get(), "SELECT count(*) FROM outbox"));

  Status s = guarded("session changeset peer", [&]() -> Status {
    zmq::context_t ctx;
    zmq::socket_t router = make_socket(ctx, zmq::socket_type::router);
    const std::string endpoint = bind_ephemeral(router);
    zmq::socket_t dealer = make_socket(ctx, zmq::socket_type::dealer);
    dealer.connect(endpoint);

    Status hq_status;
    std::thread hq_thread([&] {
      hq_status = guarded("peer HQ", [&]() -> Status {
        return hq_loop(hq.get(), router, static_cast<std::size_t>(changesets));
      });
    });
    const auto start = SteadyClock::now();
    Status ship_status = guarded("peer terminal", [&]() -> Status {
      return ship(terminal.get(), dealer, stats, window);
    });
    stats.replication_seconds = seconds_since(start);
    hq_thread.join();
    TS_RETURN_IF_ERROR(ship_status);
    return hq_status;
  });
  if (!s.ok()) return s;

  TS_ASSIGN_OR_RETURN(std::int64_t at_hq, query_int(hq.get(), "SELECT count(*) FROM customers"));
  if (static_cast<std::size_t>(at_hq) != creations) {
    return Status::Internal("peer: HQ holds " + std::to_string(at_hq) + " customers, expected " +
                            std::to_string(creations));
  }
  if (stats.ops != ops) return Status::Internal("peer: shipped ops do not add up");
  stats.ops_per_second = static_cast<double>(ops) / stats.replication_seconds;
  return stats;
}

}  // namespace tillsync::bench
