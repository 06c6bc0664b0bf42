// The server HQ backend: PostgreSQL, shared by any number of HQ processes.
//
// Transactions run at READ COMMITTED; what several HQ processes must not do at once is
// serialized with transaction-scoped advisory locks, each taken before the rows it
// guards are read (so the read sees every earlier holder's commit):
//   - push:     one lock per node around its cursor and staging (a terminal that
//               reconnects to another HQ process cannot have a batch staged twice);
//   - sync job: staged() try-locks nodes and returns only the operations of nodes it
//               locked, so each node's operations are applied in order by exactly one
//               worker at a time, and workers spread over nodes;
//   - customer: customer() locks the GUID, so two workers never merge into the same
//               customer from stale reads (field state, tombstones, status follow it);
//   - duplicate keys: find_duplicate() locks each e-mail/phone key, so two customers
//               with one e-mail created at once in two processes are still flagged;
//   - feed:     entries are written at commit under one lock, with seqs taken from
//               the feed itself, so seqs become visible in ascending order and a pull
//               never skips an entry still being committed.
// Blocking locks can deadlock between two workers; PostgreSQL then aborts one of them
// (Code::busy) and Headquarters runs that transaction again.
#include <limits>
#include <algorithm>
#include <array>
#include <map>
#include <set>

#include "hq_store_common.h"
#include "tillsync/hq_store.h"
#include "tillsync/storage/pg.h"

namespace tillsync {
namespace {

using storage::PgConnection;
using storage::PgParams;
using storage::PgRows;

// Advisory lock classes (the first key of pg_advisory_xact_lock(int, int)).
enum LockClass : std::int64_t {
  kPushLock = 0x7453'0001,
  kJobLock = 0x7453'0002,
  kCustomerLock = 0x7453'0003,
  kMatchKeyLock = 0x7453'0004,
  kFeedLock = 0x7453'0005,
  kSchemaLock = 0x7453'0006,
};

// The second key: a 31-bit FNV-1a hash (collisions only make two holders wait).
std::int64_t lock_key(std::string_view bytes) {
  std::uint32_t h = 2166136261u;
  for (char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 16777619u;
  }
  return static_cast<std::int64_t>(h & 0x7fffffffu);
}

struct PgMigration {
  std::int64_t version;
  std::string_view description;
  std::string_view sql;
  Status (*after)(PgConnection&) = nullptr;  // a step SQL cannot do, in the same transaction
};

// What of a customer must be unique across customers: the GUIDs of its addresses and
// contacts ("g" + 16 bytes) and its loyalty card numbers ("c" + number).
std::vector<std::string> child_keys(const Customer& c) {
  std::vector<std::string> out;
  out.reserve(c.addresses.size() + c.contacts.size() + c.loyalty_cards.size());
  for (const Address& a : c.addresses) out.push_back("g" + std::string(a.guid.raw()));
  for (const Contact& k : c.contacts) out.push_back("g" + std::string(k.guid.raw()));
  for (const LoyaltyCard& l : c.loyalty_cards) out.push_back("c" + l.card_number);
  return out;
}

// Migration 3: the children of customers stored before it, page by page.
Status backfill_child_keys(PgConnection& db) {
  std::string after;
  for (;;) {
    TS_ASSIGN_OR_RETURN(auto rows, db.run(
        "SELECT guid, payload FROM customers WHERE guid > $1 ORDER BY guid LIMIT 1000",
        PgParams().bytes(after)));
    if (rows.empty()) return Status::Ok();
    std::vector<std::string> guids, owners;
    for (int i = 0; i < rows.size(); ++i) {
      TS_ASSIGN_OR_RETURN(Customer c, decode_customer(rows.bytes(i, 1)));
      for (std::string& g : child_keys(c)) {
        guids.push_back(std::move(g));
        owners.emplace_back(c.guid.raw());
      }
    }
    TS_ASSIGN_OR_RETURN(auto done, db.run(
        "INSERT INTO child_keys(key, customer) SELECT g, o FROM unnest($1::bytea[], $2::bytea[]) AS t(g, o) "
        "ON CONFLICT DO NOTHING",
        PgParams().bytes_array(guids).bytes_array(owners)));
    (void)done;
    after = rows.bytes(rows.size() - 1, 0);
  }
}

constexpr std::string_view kSchemaV1 = R"sql(
CREATE TABLE hq_meta (
  key   text PRIMARY KEY,
  value text NOT NULL
);
CREATE TABLE customers (
  guid           bytea PRIMARY KEY,
  account_number text UNIQUE,
  channel        text NOT NULL,
  search         text NOT NULL,
  sort_name      text COLLATE "C" NOT NULL,
  sort_first     text COLLATE "C" NOT NULL,
  payload        bytea NOT NULL
);
CREATE SEQUENCE account_numbers MINVALUE 1 MAXVALUE 999999999 NO CYCLE;
CREATE TABLE node_cursors (
  node_id text PRIMARY KEY,
  cursor  bigint NOT NULL
);
CREATE TABLE inbound (
  node_id text   NOT NULL,
  seq     bigint NOT NULL,
  op_id   bytea  NOT NULL UNIQUE,
  entity  bytea  NOT NULL,
  kind    bigint NOT NULL,
  hlc     bigint NOT NULL,
  payload bytea  NOT NULL,
  state   text   NOT NULL,
  error   text   NOT NULL DEFAULT '',
  PRIMARY KEY (node_id, seq)
);
CREATE INDEX inbound_staged ON inbound(node_id, seq) WHERE state = 'staged';
CREATE INDEX inbound_failed ON inbound(entity) WHERE state = 'failed';
CREATE TABLE sync_status (
  guid           bytea PRIMARY KEY,
  node_id        text NOT NULL,
  account_number text,
  status         text NOT NULL,
  last_error     text NOT NULL,
  created_at_ms  bigint NOT NULL,
  updated_at_ms  bigint NOT NULL,
  twin           bytea
);
CREATE TABLE feed (
  seq      bigint PRIMARY KEY,
  channel  text NOT NULL,
  customer bytea NOT NULL,
  payload  bytea NOT NULL,
  alias    bytea
);
CREATE INDEX feed_channel ON feed(channel, seq);
CREATE TABLE field_writes (
  customer bytea  NOT NULL,
  key      text   NOT NULL,
  hlc      bigint NOT NULL,
  node     text   NOT NULL,
  version  bigint NOT NULL,
  PRIMARY KEY (customer, key)
);
CREATE TABLE conflicts (
  id            bigserial PRIMARY KEY,
  customer      bytea  NOT NULL,
  field         text   NOT NULL,
  kept          text   NOT NULL,
  lost          text   NOT NULL,
  kept_hlc      bigint NOT NULL,
  kept_node     text   NOT NULL,
  kept_version  bigint NOT NULL,
  lost_hlc      bigint NOT NULL,
  lost_node     text   NOT NULL,
  lost_version  bigint NOT NULL,
  policy        text   NOT NULL,
  outcome       text   NOT NULL,
  status        text   NOT NULL,
  created_at_ms bigint NOT NULL
);
CREATE INDEX conflicts_customer ON conflicts(customer, status);
CREATE TABLE match_keys (
  key      text  NOT NULL,
  customer bytea NOT NULL,
  PRIMARY KEY (key, customer)
);
CREATE INDEX match_keys_customer ON match_keys(customer);
CREATE TABLE guid_aliases (
  alias  bytea PRIMARY KEY,
  target bytea NOT NULL
);
CREATE TABLE tombstones (
  customer bytea  NOT NULL,
  child    bytea  NOT NULL,
  hlc      bigint NOT NULL,
  node     text   NOT NULL,
  version  bigint NOT NULL,
  feed_seq bigint NOT NULL,
  PRIMARY KEY (customer, child)
);
CREATE TABLE node_pulls (
  node_id  text PRIMARY KEY,
  cursor   bigint NOT NULL,
  filtered bigint NOT NULL DEFAULT 0
);
)sql";

// Versioned like the SQLite schemas: append a migration, never edit one that shipped.
constexpr std::array<PgMigration, 8> kMigrations{{
    {1, "HQ: customer master, staging, status view, feed, conflicts, duplicates, tombstones", kSchemaV1},
    // As SQLite's migration 7: an upload writes no `pending` status rows; the view
    // derives them from staged creates and the time they were received.
    {2, "HQ: when each inbound operation was received",
     "ALTER TABLE inbound ADD COLUMN received_at_ms bigint NOT NULL DEFAULT 0;"},
    // A GUID is never reused: an address or contact GUID (or a loyalty card number)
    // another customer holds is a constraint violation, as SQLite's addresses,
    // contacts and loyalty_cards tables make it.
    {3, "HQ: address and contact GUIDs and loyalty card numbers, unique",
     "CREATE TABLE child_keys (key bytea PRIMARY KEY, customer bytea NOT NULL);\n"
     "CREATE INDEX child_keys_customer ON child_keys(customer);",
     backfill_child_keys},
    // As SQLite's migration 8.
    {4, "HQ: operations waiting for their customer; terminals' clocks; real-time requests",
     "CREATE INDEX inbound_waiting ON inbound(entity) WHERE state = 'waiting';\n"
     "CREATE TABLE node_clocks (node_id text PRIMARY KEY, ahead_ms bigint NOT NULL, at_ms bigint NOT NULL);\n"
     "CREATE TABLE rts_requests (request bytea PRIMARY KEY, node_id text NOT NULL, "
     "customer bytea NOT NULL, result text NOT NULL, at_ms bigint NOT NULL);"},
    // As SQLite's migration 9: an operation id is unique per node, not across nodes.
    {5, "HQ: operation ids unique per node",
     "ALTER TABLE inbound DROP CONSTRAINT IF EXISTS inbound_op_id_key;\n"
     "ALTER TABLE inbound ADD CONSTRAINT inbound_node_op UNIQUE (node_id, op_id);"},
    // As SQLite's migration 10: feed compaction and received-operation retention.
    {6, "HQ: feed compaction and received-operation retention",
     "CREATE INDEX feed_customer ON feed(customer, seq);\n"
     "CREATE TABLE feed_heads (at_ms bigint PRIMARY KEY, seq bigint NOT NULL);\n"
     "ALTER TABLE node_cursors ADD COLUMN pruned_through bigint NOT NULL DEFAULT 0;\n"
     "ALTER TABLE node_cursors ADD COLUMN pruned_hlc bigint NOT NULL DEFAULT 0;"},
    // As SQLite's migration 11: erased customers; the mark of a redacted feed entry.
    {7, "HQ: erased customers",
     "CREATE TABLE erased_customers (guid bytea PRIMARY KEY, at_ms bigint NOT NULL);\n"
     "ALTER TABLE feed ADD COLUMN mark bigint;"},
    // As SQLite's migration 12: identity merges.
    {8, "HQ: identity merges",
     "CREATE TABLE customer_merges (id bigserial PRIMARY KEY, kept bytea NOT NULL, dropped bytea NOT NULL, "
     "kept_account text, dropped_account text, at_ms bigint NOT NULL);\n"
     "CREATE INDEX customer_merges_account ON customer_merges(dropped_account);"},
}};

constexpr std::string_view kSchemaTable =
    "CREATE TABLE IF NOT EXISTS tillsync_schema ("
    " version bigint PRIMARY KEY, description text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

// Advisory locks belong to the whole database, not to a schema: `scope` (the HQ's
// schema) keeps two HQs in two schemas of one database from locking each other out.
// Queued: the lock is taken before whatever statement is sent next runs (statements
// of a pipeline run in order), so that statement reads what the previous holder
// committed, in the same round trip.
Status lock(PgConnection& db, std::string_view scope, LockClass cls, std::string_view key) {
  return db.queue("SELECT pg_advisory_xact_lock($1::int, $2::int)",
                  PgParams().i64(cls).i64(lock_key(std::string(scope) + '\x1f' + std::string(key))));
}

Result<bool> try_lock(PgConnection& db, std::string_view scope, LockClass cls, std::string_view key) {
  TS_ASSIGN_OR_RETURN(auto v, db.query_i64("SELECT pg_try_advisory_xact_lock($1::int, $2::int)::int::bigint",
                                           PgParams().i64(cls).i64(lock_key(std::string(scope) + '\x1f' + std::string(key)))));
  return v.value_or(0) != 0;
}

// The schema HQ's tables live in (the first of the search_path that exists).
Result<std::string> current_schema(PgConnection& db) {
  TS_ASSIGN_OR_RETURN(auto rows, db.run("SELECT coalesce(current_schema(), '')"));
  return rows.empty() ? std::string() : rows.text(0, 0);
}

Result<bool> has_schema(PgConnection& db) {
  TS_ASSIGN_OR_RETURN(auto v, db.query_i64("SELECT (to_regclass('tillsync_schema') IS NOT NULL)::int::bigint"));
  return v.value_or(0) != 0;
}

// Brings the schema to the newest version in one transaction, under a lock so HQ
// processes starting together migrate once. unsupported_version when the database is
// newer than this build.
Status migrate(PgConnection& db) {
  TS_ASSIGN_OR_RETURN(std::string scope, current_schema(db));
  TS_RETURN_IF_ERROR(db.exec("BEGIN"));
  TS_RETURN_IF_ERROR(lock(db, scope, kSchemaLock, "schema"));
  TS_RETURN_IF_ERROR(db.exec(kSchemaTable));
  TS_ASSIGN_OR_RETURN(auto current, db.query_i64("SELECT max(version) FROM tillsync_schema"));
  const std::int64_t have = current.value_or(0);
  if (have > kMigrations.back().version) {
    (void)db.exec("ROLLBACK");
    return Status::UnsupportedVersion(db.display_url() + ": HQ schema version " + std::to_string(have) +
                                      " is newer than this tillsync (" +
                                      std::to_string(kMigrations.back().version) + ")");
  }
  for (const PgMigration& m : kMigrations) {
    if (m.version <= have) continue;
    Status s = db.exec(m.sql);
    if (s.ok() && m.after != nullptr) s = m.after(db);
    if (s.ok()) {
      auto r = db.run("INSERT INTO tillsync_schema(version, description) VALUES($1, $2)",
                      PgParams().i64(m.version).text(m.description));
      if (!r.ok()) s = r.status();
    }
    if (!s.ok()) {
      (void)db.exec("ROLLBACK");
      return s;
    }
  }
  return db.exec("COMMIT");
}

Result<std::optional<std::string>> meta_get(PgConnection& db, std::string_view key) {
  TS_ASSIGN_OR_RETURN(auto rows, db.run("SELECT value FROM hq_meta WHERE key = $1", PgParams().text(key)));
  if (rows.empty()) return std::optional<std::string>{};
  return std::optional<std::string>{rows.text(0, 0)};
}

// Queued: its outcome comes back with the next read or the commit.
Status meta_put(PgConnection& db, std::string_view key, std::string_view value) {
  return db.queue("INSERT INTO hq_meta(key, value) VALUES($1, $2) "
                  "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                  PgParams().text(key).text(value));
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// What search() matches: the same fields CustomerTable::search matches with LIKE
// (ASCII case-insensitive), separated so a match cannot span two fields.
std::string search_text(const Customer& c) {
  std::string s;
  for (std::string_view f : {std::string_view(c.first_name), std::string_view(c.middle_name),
                             std::string_view(c.last_name), std::string_view(c.org_name),
                             std::string_view(c.email), std::string_view(c.phone)}) {
    s += ascii_lower(f);
    s += '\x1f';
  }
  s += ascii_lower(c.account_number.value_or(""));
  s += '\x1f';
  s += c.guid.to_string();
  return s;
}

Result<LogRecord> read_inbound(const PgRows& rows, int i) {
  LogRecord r;
  r.node_id = rows.text(i, 0);
  r.seq = rows.i64(i, 1);
  auto op = Guid::from_raw(rows.bytes(i, 2));
  auto entity = Guid::from_raw(rows.bytes(i, 3));
  auto kind = op_kind_from_int(static_cast<int>(rows.i64(i, 4)));
  if (!op || !entity || !kind) return Status::CorruptLog("inbound row is malformed");
  r.op_id = *op;
  r.entity = *entity;
  r.kind = *kind;
  r.hlc = Hlc{static_cast<std::uint64_t>(rows.i64(i, 5))};
  r.payload = rows.bytes(i, 6);
  return r;
}

constexpr std::string_view kInboundColumns = "node_id, seq, op_id, entity, kind, hlc, payload";

Result<std::vector<StagedOp>> read_staged(const PgRows& rows, std::vector<StagedOp> out = {}) {
  for (int i = 0; i < rows.size(); ++i) {
    StagedOp op;
    TS_ASSIGN_OR_RETURN(op.record, read_inbound(rows, i));
    op.state = parse_staged_state(rows.text(i, 7));
    op.error = rows.text(i, 8);
    op.received_at_ms = rows.i64(i, 9);
    out.push_back(std::move(op));
  }
  return out;
}

constexpr std::string_view kStatusColumns =
    "guid, node_id, account_number, status, last_error, created_at_ms, updated_at_ms, twin";

SyncStatusRecord read_status(const PgRows& rows, int i) {
  SyncStatusRecord r;
  r.guid = Guid::from_raw(rows.bytes(i, 0)).value_or(Guid{});
  r.node_id = rows.text(i, 1);
  r.account_number = rows.opt_text(i, 2);
  r.status = parse_sync_status(rows.text(i, 3)).value_or(SyncStatus::pending);
  r.last_error = rows.text(i, 4);
  r.created_at_ms = rows.i64(i, 5);
  r.updated_at_ms = rows.i64(i, 6);
  if (!rows.is_null(i, 7)) r.twin = Guid::from_raw(rows.bytes(i, 7));
  return r;
}

PgParams status_params(const SyncStatusRecord& r) {
  PgParams p;
  p.bytes(r.guid.raw()).text(r.node_id).opt_text(r.account_number).text(to_string(r.status));
  p.text(r.last_error).i64(r.created_at_ms).i64(r.updated_at_ms);
  p.opt_bytes(r.twin ? std::optional<std::string>(std::string(r.twin->raw())) : std::nullopt);
  return p;
}

constexpr std::string_view kConflictColumns =
    "id, customer, field, kept, lost, kept_hlc, kept_node, kept_version, lost_hlc, lost_node, "
    "lost_version, policy, outcome, status, created_at_ms";

ConflictRecord read_conflict(const PgRows& rows, int i) {
  ConflictRecord c;
  c.id = rows.i64(i, 0);
  c.customer = Guid::from_raw(rows.bytes(i, 1)).value_or(Guid{});
  c.field = rows.text(i, 2);
  c.kept = rows.text(i, 3);
  c.lost = rows.text(i, 4);
  c.kept_write = {Hlc{static_cast<std::uint64_t>(rows.i64(i, 5))}, rows.text(i, 6), rows.i64(i, 7)};
  c.lost_write = {Hlc{static_cast<std::uint64_t>(rows.i64(i, 8))}, rows.text(i, 9), rows.i64(i, 10)};
  c.policy = parse_conflict_policy(rows.text(i, 11)).value_or(ConflictPolicy::lww);
  c.outcome = rows.text(i, 12);
  c.status = rows.text(i, 13);
  c.created_at_ms = rows.i64(i, 14);
  return c;
}

// $1..$14 of a conflict row (without its id).
PgParams conflict_params(const ConflictRecord& c) {
  PgParams p;
  p.bytes(c.customer.raw()).text(c.field).text(c.kept).text(c.lost);
  p.i64(static_cast<std::int64_t>(c.kept_write.hlc.value)).text(c.kept_write.node).i64(c.kept_write.version);
  p.i64(static_cast<std::int64_t>(c.lost_write.hlc.value)).text(c.lost_write.node).i64(c.lost_write.version);
  p.text(to_string(c.policy)).text(c.outcome).text(c.status).i64(c.created_at_ms);
  return p;
}

Result<std::optional<FieldWrite>> field_write_from(const PgRows& rows) {
  if (rows.empty()) return std::optional<FieldWrite>{};
  return std::optional<FieldWrite>{
      FieldWrite{Hlc{static_cast<std::uint64_t>(rows.i64(0, 0))}, rows.text(0, 1), rows.i64(0, 2)}};
}

// A feed entry written at commit.
struct PendingFeed {
  std::string channel;
  std::string customer;
  std::string payload;
  std::optional<std::string> alias;
};

class PgHqTransaction final : public HqTransaction {
 public:
  PgHqTransaction(PgConnection& db, std::string prefix, std::string scope)
      : db_(db), prefix_(std::move(prefix)), scope_(std::move(scope)) {}
  ~PgHqTransaction() override {
    if (!done_) (void)db_.exec("ROLLBACK");
  }
  PgHqTransaction(const PgHqTransaction&) = delete;
  PgHqTransaction& operator=(const PgHqTransaction&) = delete;

  Result<std::optional<Customer>> customer(const Guid& guid) override {
    TS_RETURN_IF_ERROR(lock_customer(guid));
    // With, in the same round trip, the alias the GUID may be (Headquarters looks it up
    // next when the customer is missing).
    // And whether it was erased (asked next when it is missing, e.g. before a create).
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "SELECT c.payload, c.channel, (SELECT target FROM guid_aliases WHERE alias = $1), "
        "EXISTS (SELECT 1 FROM erased_customers WHERE guid = $1)::int::bigint "
        "FROM (SELECT 1) AS one LEFT JOIN customers c ON c.guid = $1",
        PgParams().bytes(guid.raw())));
    if (rows.empty() || rows.is_null(0, 0)) {
      aliases_[guid] = rows.empty() ? std::nullopt : rows.opt_bytes(0, 2);
      erased_[guid] = !rows.empty() && rows.i64(0, 3) != 0;
      return std::optional<Customer>{};
    }
    channels_[guid] = rows.text(0, 1);
    TS_ASSIGN_OR_RETURN(Customer c, decode_customer(rows.bytes(0, 0)));
    return std::optional<Customer>{std::move(c)};
  }
  Result<std::optional<Customer>> customer_by_account(std::string_view account) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run("SELECT guid FROM customers WHERE account_number = $1",
                                           PgParams().text(account)));
    if (rows.empty()) return std::optional<Customer>{};
    auto guid = Guid::from_raw(rows.bytes(0, 0));
    if (!guid) return Status::CorruptLog("customers row has a malformed GUID");
    return customer(*guid);  // locked, then read again
  }
  Status put_customer(const Customer& c, std::string_view channel) override {
    TS_RETURN_IF_ERROR(lock_customer(c.guid));
    const bool org = c.type == CustomerType::organization;
    PgParams p;
    p.bytes(c.guid.raw()).opt_text(c.account_number).text(channel).text(search_text(c));
    p.text(ascii_lower(org ? c.org_name : c.last_name)).text(ascii_lower(c.first_name));
    p.bytes(encode_customer(c)).text_array(duplicate_match_keys(c)).bytes_array(child_keys(c));
    // The row and its duplicate-match keys (stale ones out, new ones in), queued. The
    // channel is recorded on first insert only: a customer read in this transaction
    // (customer() is always called first, under its lock) keeps the one it has.
    channels_.try_emplace(c.guid, std::string(channel));
    return db_.queue(
        "WITH del AS (DELETE FROM match_keys WHERE customer = $1 AND NOT (key = ANY($8::text[]))), "
        "ins AS (INSERT INTO match_keys(key, customer) SELECT k, $1 FROM unnest($8::text[]) AS k "
        "ON CONFLICT DO NOTHING), "
        // Children the customer no longer has are let go; new ones must be free.
        "gone AS (DELETE FROM child_keys WHERE customer = $1 AND NOT (key = ANY($9::bytea[]))), "
        "kids AS (INSERT INTO child_keys(key, customer) SELECT g, $1 FROM unnest($9::bytea[]) AS g "
        "WHERE NOT EXISTS (SELECT 1 FROM child_keys h WHERE h.key = g AND h.customer = $1)) "
        "INSERT INTO customers(guid, account_number, channel, search, sort_name, sort_first, payload) "
        "VALUES($1, $2, $3, $4, $5, $6, $7) ON CONFLICT(guid) DO UPDATE SET "
        "account_number = excluded.account_number, search = excluded.search, "
        "sort_name = excluded.sort_name, sort_first = excluded.sort_first, payload = excluded.payload",
        p);
  }
  Result<std::string> channel_of(const Guid& customer) override {
    if (auto it = channels_.find(customer); it != channels_.end()) return it->second;
    TS_ASSIGN_OR_RETURN(auto rows, db_.run("SELECT channel FROM customers WHERE guid = $1",
                                           PgParams().bytes(customer.raw())));
    return rows.empty() ? std::string() : rows.text(0, 0);
  }
  Result<std::string> next_account_number() override {
    auto n = db_.query_i64("SELECT nextval('account_numbers')");
    if (!n.ok()) {
      if (n.status().code() == Code::busy) return n.status();
      return Status::Internal("the account number sequence is exhausted or unavailable: " +
                              n.status().message());
    }
    return format_account_number(prefix_, static_cast<long long>(n->value_or(0)));
  }

  Result<std::int64_t> node_cursor(std::string_view node) override {
    if (auto it = cursors_.find(node); it != cursors_.end()) return it->second;
    // Whoever stages for this node holds its push lock until commit.
    TS_RETURN_IF_ERROR(lock(db_, scope_, kPushLock, node));
    TS_ASSIGN_OR_RETURN(auto v, db_.query_i64("SELECT cursor FROM node_cursors WHERE node_id = $1",
                                              PgParams().text(node)));
    cursors_[std::string(node)] = v.value_or(0);
    return v.value_or(0);
  }
  Result<std::vector<bool>> holds_ops(std::string_view node, std::span<const Guid> op_ids) override {
    std::vector<std::string> ids;
    ids.reserve(op_ids.size());
    for (const Guid& id : op_ids) ids.emplace_back(id.raw());
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "SELECT op_id FROM inbound WHERE op_id = ANY($1::bytea[]) AND node_id = $2",
        PgParams().bytes_array(ids).text(node)));
    std::set<std::string> found;
    for (int i = 0; i < rows.size(); ++i) found.insert(rows.bytes(i, 0));
    std::vector<bool> held;
    held.reserve(op_ids.size());
    for (const std::string& id : ids) held.push_back(found.contains(id));
    return held;
  }
  Result<std::vector<std::optional<Guid>>> ops_at(std::string_view node, std::span<const std::int64_t> seqs) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "SELECT seq, op_id FROM inbound WHERE node_id = $1 AND seq = ANY($2::bigint[])",
        PgParams().text(node).i64_array(std::vector<std::int64_t>(seqs.begin(), seqs.end()))));
    std::map<std::int64_t, Guid> found;
    for (int i = 0; i < rows.size(); ++i)
      if (auto g = Guid::from_raw(rows.bytes(i, 1))) found.emplace(rows.i64(i, 0), *g);
    std::vector<std::optional<Guid>> ops;
    ops.reserve(seqs.size());
    for (std::int64_t seq : seqs) {
      auto it = found.find(seq);
      ops.push_back(it == found.end() ? std::nullopt : std::optional<Guid>(it->second));
    }
    return ops;
  }
  Result<bool> stage(const LogRecord& r, std::int64_t received_at_ms) override {
    TS_ASSIGN_OR_RETURN(std::int64_t cursor, node_cursor(r.node_id));
    PgParams p;
    p.text(r.node_id).i64(r.seq).bytes(r.op_id.raw()).bytes(r.entity.raw());
    p.i64(static_cast<std::int64_t>(r.kind)).i64(static_cast<std::int64_t>(r.hlc.value)).bytes(r.payload);
    p.i64(received_at_ms);
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "INSERT INTO inbound(node_id, seq, op_id, entity, kind, hlc, payload, received_at_ms, state) "
        "VALUES($1, $2, $3, $4, $5, $6, $7, $8, 'staged') ON CONFLICT DO NOTHING",
        p));
    cursors_[r.node_id] = std::max(cursor, r.seq);
    return rows.affected() > 0;
  }
  // One statement for the whole run (arrays through unnest): a push of 500 records is
  // a handful of round trips, not a thousand. All records are of one node.
  Result<std::vector<bool>> stage_all(std::span<const LogRecord> records, std::int64_t received_at_ms) override {
    std::vector<bool> fresh(records.size(), false);
    if (records.empty()) return fresh;
    const std::string& node = records.front().node_id;
    TS_ASSIGN_OR_RETURN(std::int64_t cursor, node_cursor(node));
    std::vector<std::int64_t> seqs, kinds, hlcs;
    std::vector<std::string> ops, entities, payloads;
    for (const LogRecord& r : records) {
      seqs.push_back(r.seq);
      ops.emplace_back(r.op_id.raw());
      entities.emplace_back(r.entity.raw());
      kinds.push_back(static_cast<std::int64_t>(r.kind));
      hlcs.push_back(static_cast<std::int64_t>(r.hlc.value));
      payloads.push_back(r.payload);
    }
    PgParams p;
    p.text(node).i64_array(seqs).bytes_array(ops).bytes_array(entities).i64_array(kinds);
    p.i64_array(hlcs).bytes_array(payloads).i64(received_at_ms);
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "INSERT INTO inbound(node_id, seq, op_id, entity, kind, hlc, payload, received_at_ms, state) "
        "SELECT $1, s, o, e, k, h, p, $8, 'staged' FROM unnest($2::bigint[], $3::bytea[], $4::bytea[], "
        "$5::bigint[], $6::bigint[], $7::bytea[]) AS t(s, o, e, k, h, p) "
        "ON CONFLICT DO NOTHING RETURNING seq",
        p));
    std::set<std::int64_t> inserted;
    for (int i = 0; i < rows.size(); ++i) inserted.insert(rows.i64(i, 0));
    for (std::size_t i = 0; i < records.size(); ++i) fresh[i] = inserted.contains(records[i].seq);
    cursors_[node] = std::max(cursor, records.back().seq);
    return fresh;
  }
  Result<std::vector<StagedOp>> staged(std::size_t limit) override {
    TS_RETURN_IF_ERROR(write_states());  // reads below see this transaction's outcomes
    // Nodes with work (one probe of the staged index per known node). A worker skips
    // the nodes another worker holds and takes the next ones.
    TS_ASSIGN_OR_RETURN(auto nodes, db_.run(
        "SELECT c.node_id FROM node_cursors c WHERE EXISTS (SELECT 1 FROM inbound i "
        "WHERE i.node_id = c.node_id AND i.state = 'staged') ORDER BY c.node_id"));
    std::vector<StagedOp> out;
    for (int i = 0; i < nodes.size() && out.size() < limit; ++i) {
      const std::string node = nodes.text(i, 0);
      if (!locked_nodes_.contains(node)) {
        TS_ASSIGN_OR_RETURN(bool mine, try_lock(db_, scope_, kJobLock, node));
        if (!mine) continue;  // another worker is applying this node's operations
        locked_nodes_.insert(node);
      }
      TS_ASSIGN_OR_RETURN(auto rows, db_.run(
          "SELECT " + std::string(kInboundColumns) + ", state, error, received_at_ms FROM inbound "
          "WHERE node_id = $1 AND state = 'staged' ORDER BY seq LIMIT $2",
          PgParams().text(node).i64(static_cast<std::int64_t>(limit - out.size()))));
      TS_ASSIGN_OR_RETURN(out, read_staged(rows, std::move(out)));
    }
    // The interface promises (node, seq) order.
    std::stable_sort(out.begin(), out.end(), [](const StagedOp& a, const StagedOp& b) {
      return a.record.node_id < b.record.node_id;
    });
    return out;
  }
  Result<std::vector<StagedOp>> failed_for(const Guid& customer) override {
    TS_RETURN_IF_ERROR(write_states());
    TS_RETURN_IF_ERROR(lock_customer(customer));
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "SELECT " + std::string(kInboundColumns) + ", state, error, received_at_ms FROM inbound "
        "WHERE entity = $1 AND state = 'failed' ORDER BY node_id, seq",
        PgParams().bytes(customer.raw())));
    return read_staged(rows);
  }
  // Written at commit, all in one statement.
  Status set_state(std::string_view node, std::int64_t seq, StagedState state,
                   std::string_view error) override {
    states_[{std::string(node), seq}] = {staged_state_name(state), std::string(error)};
    return Status::Ok();
  }

  Result<std::optional<RtsRequest>> rts_request(const Guid& request) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "SELECT node_id, customer, result FROM rts_requests WHERE request = $1", PgParams().bytes(request.raw())));
    if (rows.empty()) return std::optional<RtsRequest>{};
    return std::optional<RtsRequest>{
        RtsRequest{rows.text(0, 0), Guid::from_raw(rows.bytes(0, 1)).value_or(Guid{}), rows.text(0, 2)}};
  }
  Status put_rts_request(const Guid& request, const RtsRequest& r, std::int64_t at_ms) override {
    return db_.queue(
        "INSERT INTO rts_requests(request, node_id, customer, result, at_ms) VALUES($1, $2, $3, $4, $5)",
        PgParams().bytes(request.raw()).text(r.node).bytes(r.customer.raw()).text(r.result).i64(at_ms));
  }
  Result<std::vector<bool>> rts_requests_done(std::span<const std::pair<std::string, Guid>> requests) override {
    std::vector<std::string> ids;
    ids.reserve(requests.size());
    for (const auto& r : requests) ids.emplace_back(r.second.raw());
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "SELECT request, node_id FROM rts_requests WHERE request = ANY($1::bytea[])", PgParams().bytes_array(ids)));
    std::set<std::pair<std::string, std::string>> found;  // (request, node)
    for (int i = 0; i < rows.size(); ++i) found.emplace(rows.bytes(i, 0), rows.text(i, 1));
    std::vector<bool> done;
    done.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) done.push_back(found.contains({ids[i], requests[i].first}));
    return done;
  }
  Status redact_received(std::string_view node, std::int64_t seq) override {
    return db_.queue("UPDATE inbound SET payload = ''::bytea WHERE node_id = $1 AND seq = $2",
                     PgParams().text(node).i64(seq));
  }
  Status note_clock(std::string_view node, std::int64_t ahead_ms, std::int64_t at_ms) override {
    return db_.queue(
        "INSERT INTO node_clocks(node_id, ahead_ms, at_ms) VALUES($1, $2, $3) "
        "ON CONFLICT(node_id) DO UPDATE SET ahead_ms = excluded.ahead_ms, at_ms = excluded.at_ms",
        PgParams().text(node).i64(ahead_ms).i64(at_ms));
  }
  Result<std::vector<std::pair<std::string, Guid>>> waiting_keys() override {
    TS_RETURN_IF_ERROR(write_states());
    TS_ASSIGN_OR_RETURN(auto rows, db_.run("SELECT DISTINCT node_id, entity FROM inbound WHERE state = 'waiting'"));
    std::vector<std::pair<std::string, Guid>> out;
    for (int i = 0; i < rows.size(); ++i) {
      if (auto g = Guid::from_raw(rows.bytes(i, 1))) out.emplace_back(rows.text(i, 0), *g);
    }
    return out;
  }
  Result<std::vector<std::string>> restage_waiting(const Guid& customer) override {
    TS_RETURN_IF_ERROR(write_states());  // this transaction's own waits included
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "UPDATE inbound SET state = 'staged', error = '' WHERE entity = $1 AND state = 'waiting' "
        "RETURNING node_id",
        PgParams().bytes(customer.raw())));
    std::vector<std::string> nodes;
    for (int i = 0; i < rows.size(); ++i) nodes.push_back(rows.text(i, 0));
    return nodes;
  }

  Result<std::optional<SyncStatusRecord>> sync_status(const Guid& guid) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "SELECT " + std::string(kStatusColumns) + " FROM sync_status WHERE guid = $1",
        PgParams().bytes(guid.raw())));
    if (rows.empty()) return std::optional<SyncStatusRecord>{};
    return std::optional<SyncStatusRecord>{read_status(rows, 0)};
  }
  Status put_sync_status(const SyncStatusRecord& r) override {
    return db_.queue(
        "INSERT INTO sync_status(" + std::string(kStatusColumns) + ") "
        "VALUES($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT(guid) DO UPDATE SET "
        "node_id = excluded.node_id, account_number = excluded.account_number, "
        "status = excluded.status, last_error = excluded.last_error, "
        "created_at_ms = excluded.created_at_ms, updated_at_ms = excluded.updated_at_ms, "
        "twin = excluded.twin",
        status_params(r));
  }
  Status append_feed(const Customer& c, std::string_view channel) override {
    feed_.push_back({std::string(channel), std::string(c.guid.raw()), encode_customer(c), std::nullopt});
    return Status::Ok();
  }
  Status append_alias(const Guid& alias, const Customer& target, std::string_view channel) override {
    feed_.push_back({std::string(channel), std::string(target.guid.raw()), encode_customer(target),
                     std::string(alias.raw())});
    return Status::Ok();
  }

  Result<std::optional<Guid>> find_duplicate(const Customer& c) override {
    const std::vector<std::string> keys = duplicate_match_keys(c);
    if (keys.empty()) return std::optional<Guid>{};
    // Lock every key (in one order everywhere, so two processes cannot deadlock on
    // them), then read the matches of all keys at once.
    std::vector<std::int64_t> hashes;
    for (const std::string& key : keys) hashes.push_back(lock_key(scope_ + '\x1f' + key));
    std::sort(hashes.begin(), hashes.end());
    TS_RETURN_IF_ERROR(db_.queue(
        "SELECT pg_advisory_xact_lock($1::int, h::int) FROM unnest($2::bigint[]) AS h",
        PgParams().i64(kMatchKeyLock).i64_array(hashes)));
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        // One index probe per key (a plan over `key = ANY(array)` may scan the table).
        "SELECT k, (SELECT customer FROM match_keys WHERE key = k AND customer <> $2 "
        "ORDER BY customer LIMIT 1) FROM unnest($1::text[]) AS k",
        PgParams().text_array(keys).bytes(c.guid.raw())));
    for (const std::string& key : keys) {  // e-mail before phone, as in SQLite
      for (int i = 0; i < rows.size(); ++i)
        if (rows.text(i, 0) == key && !rows.is_null(i, 1)) return Guid::from_raw(rows.bytes(i, 1));
    }
    return std::optional<Guid>{};
  }
  Status put_alias(const Guid& alias, const Guid& target) override {
    aliases_[alias] = std::string(target.raw());
    return db_.queue(
        "INSERT INTO guid_aliases(alias, target) VALUES($1, $2) "
        "ON CONFLICT(alias) DO UPDATE SET target = excluded.target",
        PgParams().bytes(alias.raw()).bytes(target.raw()));
  }
  Result<std::optional<Guid>> alias_target(const Guid& alias) override {
    if (auto it = aliases_.find(alias); it != aliases_.end()) {
      if (!it->second) return std::optional<Guid>{};
      return Guid::from_raw(*it->second);
    }
    TS_ASSIGN_OR_RETURN(auto rows, db_.run("SELECT target FROM guid_aliases WHERE alias = $1",
                                           PgParams().bytes(alias.raw())));
    if (rows.empty()) return std::optional<Guid>{};
    return Guid::from_raw(rows.bytes(0, 0));
  }

  Result<std::optional<FieldWrite>> field_write(const Guid& customer, std::string_view key) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "SELECT hlc, node, version FROM field_writes WHERE customer = $1 AND key = $2",
        PgParams().bytes(customer.raw()).text(key)));
    return field_write_from(rows);
  }
  Status put_field_write(const Guid& customer, std::string_view key, const FieldWrite& w) override {
    return db_.queue(
        "INSERT INTO field_writes(customer, key, hlc, node, version) VALUES($1, $2, $3, $4, $5) "
        "ON CONFLICT(customer, key) DO UPDATE SET hlc = excluded.hlc, node = excluded.node, "
        "version = excluded.version",
        PgParams().bytes(customer.raw()).text(key).i64(static_cast<std::int64_t>(w.hlc.value))
            .text(w.node).i64(w.version));
  }
  Result<std::int64_t> add_conflict(const ConflictRecord& c) override {
    TS_ASSIGN_OR_RETURN(auto id, db_.query_i64(
        "INSERT INTO conflicts(customer, field, kept, lost, kept_hlc, kept_node, kept_version, "
        "lost_hlc, lost_node, lost_version, policy, outcome, status, created_at_ms) "
        "VALUES($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        conflict_params(c)));
    return id.value_or(0);
  }
  Result<std::optional<ConflictRecord>> conflict(std::int64_t id) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        // Locked: of two operators resolving one conflict at once, the second reads it
        // after the first committed (and finds it resolved).
        "SELECT " + std::string(kConflictColumns) + " FROM conflicts WHERE id = $1 FOR UPDATE", PgParams().i64(id)));
    if (rows.empty()) return std::optional<ConflictRecord>{};
    return std::optional<ConflictRecord>{read_conflict(rows, 0)};
  }
  Status update_conflict(const ConflictRecord& c) override {
    return db_.queue(
        "UPDATE conflicts SET customer = $1, field = $2, kept = $3, lost = $4, kept_hlc = $5, "
        "kept_node = $6, kept_version = $7, lost_hlc = $8, lost_node = $9, lost_version = $10, "
        "policy = $11, outcome = $12, status = $13, created_at_ms = $14 WHERE id = $15",
        conflict_params(c).i64(c.id));
  }
  Result<std::int64_t> open_conflicts(const Guid& customer) override {
    TS_ASSIGN_OR_RETURN(auto n, db_.query_i64(
        "SELECT count(*)::bigint FROM conflicts WHERE customer = $1 AND status = 'open'",
        PgParams().bytes(customer.raw())));
    return n.value_or(0);
  }

  Result<std::optional<FieldWrite>> tombstone(const Guid& customer, const Guid& child) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "SELECT hlc, node, version FROM tombstones WHERE customer = $1 AND child = $2",
        PgParams().bytes(customer.raw()).bytes(child.raw())));
    return field_write_from(rows);
  }
  Status put_tombstone(const Guid& customer, const Guid& child, const FieldWrite& w) override {
    // feed_seq is set at commit, to the seq of this transaction's last feed entry
    // (which publishes the removal).
    TS_RETURN_IF_ERROR(db_.queue(
        "INSERT INTO tombstones(customer, child, hlc, node, version, feed_seq) "
        "VALUES($1, $2, $3, $4, $5, 9223372036854775807) ON CONFLICT(customer, child) DO UPDATE SET "
        "hlc = excluded.hlc, node = excluded.node, version = excluded.version, feed_seq = excluded.feed_seq",
        PgParams().bytes(customer.raw()).bytes(child.raw()).i64(static_cast<std::int64_t>(w.hlc.value))
            .text(w.node).i64(w.version)));
    tombstones_.emplace_back(customer.raw(), child.raw());
    return Status::Ok();
  }
  Result<bool> note_pull(std::string_view node, std::int64_t cursor, bool filtered) override {
    TS_ASSIGN_OR_RETURN(auto v, db_.query_i64(
        "INSERT INTO node_pulls(node_id, cursor, filtered) VALUES($1, $2, $3) "
        "ON CONFLICT(node_id) DO UPDATE SET cursor = greatest(node_pulls.cursor, excluded.cursor), "
        "filtered = greatest(node_pulls.filtered, excluded.filtered) RETURNING filtered",
        PgParams().text(node).i64(cursor).i64(filtered ? 1 : 0)));
    return v.value_or(0) != 0;
  }
  Result<bool> registered_filtered(std::string_view node) override {
    TS_ASSIGN_OR_RETURN(auto v, db_.query_i64("SELECT filtered FROM node_pulls WHERE node_id = $1",
                                              PgParams().text(node)));
    return v.value_or(0) != 0;
  }
  Result<std::int64_t> collect_tombstones() override {
    // As in SQLite, and only while nothing is staged anywhere: other HQ processes may
    // hold staged operations this transaction's staged() could not see.
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "DELETE FROM tombstones WHERE NOT EXISTS ("
        "  SELECT 1 FROM node_cursors c LEFT JOIN node_pulls p ON p.node_id = c.node_id"
        "  WHERE p.cursor IS NULL OR p.cursor < tombstones.feed_seq)"
        " AND NOT EXISTS (SELECT 1 FROM node_pulls p WHERE p.cursor < tombstones.feed_seq)"
        " AND NOT EXISTS (SELECT 1 FROM inbound WHERE state = 'staged')"));
    return rows.affected();
  }

  Result<std::optional<std::int64_t>> min_pull_cursor() override {
    return db_.query_i64(kMinPullCursorQuery);
  }
  Result<std::int64_t> note_feed_head(std::int64_t at_ms, std::int64_t keep_after_ms) override {
    TS_ASSIGN_OR_RETURN(auto head, db_.query_i64(
        "INSERT INTO feed_heads(at_ms, seq) SELECT $1, coalesce(max(seq), 0) FROM feed "
        "ON CONFLICT(at_ms) DO UPDATE SET seq = excluded.seq RETURNING seq",
        PgParams().i64(at_ms)));
    TS_RETURN_IF_ERROR(db_.queue(
        "DELETE FROM feed_heads WHERE at_ms < (SELECT max(at_ms) FROM feed_heads WHERE at_ms <= $1)",
        PgParams().i64(keep_after_ms)));
    return head.value_or(0);
  }
  Result<std::int64_t> feed_head_at(std::int64_t at_ms) override {
    TS_ASSIGN_OR_RETURN(auto v, db_.query_i64(
        "SELECT seq FROM feed_heads WHERE at_ms <= $1 ORDER BY at_ms DESC LIMIT 1", PgParams().i64(at_ms)));
    return v.value_or(0);
  }
  Result<std::int64_t> remove_superseded(std::int64_t after, std::int64_t through) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "DELETE FROM feed f USING "
        "(SELECT customer, max(seq) AS top FROM feed WHERE seq > $1 AND seq <= $2 GROUP BY customer) w "
        "WHERE f.customer = w.customer AND f.seq < w.top AND f.alias IS NULL",
        PgParams().i64(after).i64(through)));
    return rows.affected();
  }
  Result<std::int64_t> prune_received(std::int64_t received_before_ms, std::size_t limit) override {
    TS_ASSIGN_OR_RETURN(auto nodes, db_.run(
        "SELECT node_id, cursor, pruned_through FROM node_cursors WHERE pruned_through < cursor - 1"));
    std::int64_t removed = 0;
    for (int i = 0; i < nodes.size(); ++i) {
      const std::int64_t budget = static_cast<std::int64_t>(limit) - removed;
      if (budget <= 0) break;
      const std::string node = nodes.text(i, 0);
      const std::int64_t pruned = nodes.i64(i, 2);
      const std::int64_t last = prune_scan_end(nodes.i64(i, 1), pruned, budget);
      TS_ASSIGN_OR_RETURN(auto blocker, db_.query_i64(
          "SELECT seq FROM inbound WHERE node_id = $1 AND seq > $2 AND seq <= $3 "
          "AND (state <> 'applied' OR received_at_ms >= $4) ORDER BY seq LIMIT 1",
          PgParams().text(node).i64(pruned).i64(last).i64(received_before_ms)));
      const std::int64_t end = blocker ? *blocker - 1 : last;
      if (end <= pruned) continue;
      TS_RETURN_IF_ERROR(db_.queue(
          "UPDATE node_cursors SET pruned_hlc = greatest(pruned_hlc, coalesce((SELECT max(hlc) FROM inbound "
          "WHERE node_id = $1 AND seq > $2 AND seq <= $3), 0)) WHERE node_id = $1",
          PgParams().text(node).i64(pruned).i64(end)));
      // The real-time requests those operations were logged under go with them.
      TS_RETURN_IF_ERROR(db_.queue(
          "DELETE FROM rts_requests WHERE node_id = $1 AND request IN "
          "(SELECT op_id FROM inbound WHERE node_id = $1 AND seq > $2 AND seq <= $3)",
          PgParams().text(node).i64(pruned).i64(end)));
      TS_ASSIGN_OR_RETURN(auto del, db_.run("DELETE FROM inbound WHERE node_id = $1 AND seq > $2 AND seq <= $3",
                                            PgParams().text(node).i64(pruned).i64(end)));
      removed += del.affected();
      TS_RETURN_IF_ERROR(db_.queue(
          "UPDATE node_cursors SET pruned_through = greatest(pruned_through, $2) WHERE node_id = $1",
          PgParams().text(node).i64(end)));
    }
    return removed;
  }
  Result<bool> is_erased(const Guid& guid) override {
    if (auto it = erased_.find(guid); it != erased_.end()) return it->second;
    TS_ASSIGN_OR_RETURN(auto rows, db_.run("SELECT 1 FROM erased_customers WHERE guid = $1",
                                           PgParams().bytes(guid.raw())));
    return !rows.empty();
  }
  Result<std::vector<Guid>> merge_customer(const Guid& drop, const Guid& keep, const MergeRecord& j) override {
    TS_RETURN_IF_ERROR(lock_customer(drop));
    TS_RETURN_IF_ERROR(lock_customer(keep));
    TS_ASSIGN_OR_RETURN(std::vector<Guid> renamed, aliases_of(drop));
    channels_.erase(drop);
    aliases_[drop] = std::string(keep.raw());
    const PgParams one = PgParams().bytes(drop.raw());
    for (std::string_view sql : {"DELETE FROM customers WHERE guid = $1", "DELETE FROM child_keys WHERE customer = $1",
                                 "DELETE FROM match_keys WHERE customer = $1"})
      TS_RETURN_IF_ERROR(db_.queue(sql, one));
    // As SQLite's kMergeMoves; then its own fields' state goes.
    const PgParams both = PgParams().bytes(drop.raw()).bytes(keep.raw());
    for (std::string_view sql : {
             "UPDATE field_writes SET customer = $2 WHERE customer = $1 AND key LIKE '%:%'",
             "UPDATE tombstones SET customer = $2 WHERE customer = $1",
             "UPDATE guid_aliases SET target = $2 WHERE target = $1",
             "INSERT INTO guid_aliases(alias, target) VALUES($1, $2) ON CONFLICT(alias) DO UPDATE SET target = excluded.target"})
      TS_RETURN_IF_ERROR(db_.queue(sql, both));
    TS_RETURN_IF_ERROR(db_.queue("DELETE FROM field_writes WHERE customer = $1", one));
    TS_RETURN_IF_ERROR(db_.queue(
        "INSERT INTO customer_merges(kept, dropped, kept_account, dropped_account, at_ms) VALUES($1, $2, $3, $4, $5)",
        PgParams().bytes(keep.raw()).bytes(drop.raw()).opt_text(j.kept_account).opt_text(j.dropped_account).i64(j.at_ms)));
    return renamed;
  }
  Result<std::optional<Guid>> merged_account(std::string_view account) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run(
        "SELECT kept FROM customer_merges WHERE dropped_account = $1 ORDER BY id DESC LIMIT 1", PgParams().text(account)));
    if (rows.empty()) return std::optional<Guid>{};
    return Guid::from_raw(rows.bytes(0, 0));
  }
  Result<std::vector<Guid>> aliases_of(const Guid& target) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run("SELECT alias FROM guid_aliases WHERE target = $1 ORDER BY alias",
                                           PgParams().bytes(target.raw())));
    std::vector<Guid> out;
    for (int i = 0; i < rows.size(); ++i) {
      auto g = Guid::from_raw(rows.bytes(i, 0));
      if (!g) return Status::CorruptLog("guid_aliases row has a malformed GUID");
      out.push_back(*g);
    }
    return out;
  }
  Result<Erased> erase_customer(const Guid& guid, std::span<const Guid> aliases, std::int64_t at_ms) override {
    Erased out;
    std::vector<Guid> all{guid};
    all.insert(all.end(), aliases.begin(), aliases.end());
    for (const Guid& g : all) {
      TS_RETURN_IF_ERROR(lock_customer(g));
      channels_.erase(g);
      aliases_.erase(g);
      erased_[g] = true;
      const PgParams id = PgParams().bytes(g.raw());
      TS_ASSIGN_OR_RETURN(auto gone, db_.run("DELETE FROM customers WHERE guid = $1", id));
      out.customers += gone.affected();
      for (std::string_view sql : {"DELETE FROM customer_merges WHERE kept = $1 OR dropped = $1",
                                   "DELETE FROM child_keys WHERE customer = $1",
                                   "DELETE FROM match_keys WHERE customer = $1",
                                   "DELETE FROM field_writes WHERE customer = $1",
                                   "DELETE FROM tombstones WHERE customer = $1",
                                   "DELETE FROM rts_requests WHERE customer = $1",
                                   "DELETE FROM guid_aliases WHERE alias = $1 OR target = $1",
                                   "UPDATE sync_status SET twin = NULL WHERE twin = $1"}) {
        TS_RETURN_IF_ERROR(db_.queue(sql, id));
      }
      TS_ASSIGN_OR_RETURN(auto received, db_.run(
          "UPDATE inbound SET payload = ''::bytea, "
          "state = CASE WHEN state = 'applied' THEN 'applied' ELSE 'failed' END, "
          "error = CASE WHEN state = 'applied' THEN '' ELSE $2 END WHERE entity = $1",
          PgParams().bytes(g.raw()).text(kErasedError)));
      out.received += received.affected();
      TS_ASSIGN_OR_RETURN(auto conflicts, db_.run("UPDATE conflicts SET kept = $2, lost = $2 WHERE customer = $1",
                                                  PgParams().bytes(g.raw()).text(kErasedValue)));
      out.conflicts += conflicts.affected();
      TS_ASSIGN_OR_RETURN(auto status, db_.run(
          "UPDATE sync_status SET account_number = NULL, status = 'failed', last_error = $2, twin = NULL, "
          "updated_at_ms = $3 WHERE guid = $1",
          PgParams().bytes(g.raw()).text(kErasedError).i64(at_ms)));
      out.statuses += status.affected();
      // Each entry becomes an erasure entry with the mark it had.
      TS_ASSIGN_OR_RETURN(auto feed, db_.run(
          "SELECT seq, channel, payload, alias, customer, coalesce(mark, 0) FROM feed "
          "WHERE customer = $1 AND length(payload) > 0", id));
      for (int i = 0; i < feed.size(); ++i) {
        TS_ASSIGN_OR_RETURN(FeedEntry e, read_feed_entry(feed.i64(i, 0), feed.text(i, 1), feed.bytes(i, 2),
                                                         feed.is_null(i, 3) ? std::string() : feed.bytes(i, 3),
                                                         feed.bytes(i, 4), feed.i64(i, 5)));
        TS_RETURN_IF_ERROR(db_.queue("UPDATE feed SET payload = ''::bytea, alias = NULL, mark = $2 WHERE seq = $1",
                                     PgParams().i64(e.seq).i64(static_cast<std::int64_t>(feed_mark(e)))));
      }
      out.feed += feed.size();
      TS_RETURN_IF_ERROR(db_.queue(
          "INSERT INTO erased_customers(guid, at_ms) VALUES($1, $2) ON CONFLICT DO NOTHING",
          PgParams().bytes(g.raw()).i64(at_ms)));
    }
    return out;
  }
  Status append_erasure(const Guid& guid, std::string_view channel) override {
    feed_.push_back({std::string(channel), std::string(guid.raw()), std::string(), std::nullopt});
    return Status::Ok();
  }
  Result<Pruned> pruned_through(std::string_view node) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_.run("SELECT pruned_through, pruned_hlc FROM node_cursors WHERE node_id = $1",
                                           PgParams().text(node)));
    if (rows.size() == 0) return Pruned{};
    return Pruned{rows.i64(0, 0), static_cast<std::uint64_t>(rows.i64(0, 1))};
  }

  Result<std::optional<std::string>> setting(std::string_view key) override {
    if (auto it = settings_.find(key); it != settings_.end()) return it->second;
    TS_ASSIGN_OR_RETURN(auto v, meta_get(db_, key));
    settings_[std::string(key)] = v;
    return v;
  }
  Status put_setting(std::string_view key, std::string_view value) override {
    settings_[std::string(key)] = std::string(value);
    dirty_settings_.insert(std::string(key));
    return Status::Ok();
  }

  Status commit() override {
    // Everything that every HQ process writes (the feed, the HLC) comes last, so the
    // locks and row locks it takes are held for as short a time as possible.
    for (const std::string& key : dirty_settings_) {
      if (key == kHlcSetting) continue;
      TS_RETURN_IF_ERROR(meta_put(db_, key, *settings_[key]));
    }
    for (const auto& [node, cursor] : cursors_) {
      TS_RETURN_IF_ERROR(db_.queue(
          "INSERT INTO node_cursors(node_id, cursor) VALUES($1, $2) "
          "ON CONFLICT(node_id) DO UPDATE SET cursor = greatest(node_cursors.cursor, excluded.cursor)",
          PgParams().text(node).i64(cursor)));
    }
    TS_RETURN_IF_ERROR(write_states());
    if (!feed_.empty()) TS_RETURN_IF_ERROR(write_feed());
    if (dirty_settings_.contains(std::string(kHlcSetting))) {
      TS_RETURN_IF_ERROR(db_.queue(
          "INSERT INTO hq_meta(key, value) VALUES($1, $2) ON CONFLICT(key) DO UPDATE SET "
          "value = greatest(hq_meta.value::numeric, excluded.value::numeric)::text",
          PgParams().text(kHlcSetting).text(*settings_[std::string(kHlcSetting)])));
    }
    done_ = true;
    return db_.commit();
  }

 private:
  Status lock_customer(const Guid& guid) {
    if (locked_customers_.contains(guid)) return Status::Ok();
    TS_RETURN_IF_ERROR(lock(db_, scope_, kCustomerLock, guid.raw()));
    locked_customers_.insert(guid);
    return Status::Ok();
  }

  // The states set_state() collected, in one UPDATE.
  Status write_states() {
    if (states_.empty()) return Status::Ok();
    std::vector<std::string> nodes, states, errors;
    std::vector<std::int64_t> seqs;
    for (const auto& [key, value] : states_) {
      nodes.push_back(key.first);
      seqs.push_back(key.second);
      states.push_back(value.first);
      errors.push_back(value.second);
    }
    TS_RETURN_IF_ERROR(db_.queue(
        "UPDATE inbound i SET state = t.s, error = t.e FROM unnest($1::text[], $2::bigint[], "
        "$3::text[], $4::text[]) AS t(n, q, s, e) WHERE i.node_id = t.n AND i.seq = t.q",
        PgParams().text_array(nodes).i64_array(seqs).text_array(states).text_array(errors)));
    states_.clear();
    return Status::Ok();
  }

  Status write_feed() {
    TS_RETURN_IF_ERROR(lock(db_, scope_, kFeedLock, "feed"));
    TS_ASSIGN_OR_RETURN(auto top, db_.query_i64("SELECT max(seq) FROM feed"));
    std::int64_t seq = top.value_or(0);
    for (const PendingFeed& f : feed_) {
      TS_RETURN_IF_ERROR(db_.queue(
          "INSERT INTO feed(seq, channel, customer, payload, alias, mark) VALUES($1, $2, $3, $4, $5, $6)",
          PgParams().i64(++seq).text(f.channel).bytes(f.customer).bytes(f.payload).opt_bytes(f.alias).i64(new_feed_mark())));
    }
    for (const auto& [customer, child] : tombstones_) {
      TS_RETURN_IF_ERROR(db_.queue(
          "UPDATE tombstones SET feed_seq = $3 WHERE customer = $1 AND child = $2",
          PgParams().bytes(customer).bytes(child).i64(seq)));
    }
    return Status::Ok();
  }

  PgConnection& db_;
  std::string prefix_;
  std::string scope_;
  bool done_ = false;
  std::map<std::string, std::int64_t, std::less<>> cursors_;
  std::map<std::string, std::optional<std::string>, std::less<>> settings_;
  std::set<std::string, std::less<>> dirty_settings_;
  std::set<std::string, std::less<>> locked_nodes_;
  std::set<Guid> locked_customers_;
  std::vector<PendingFeed> feed_;
  std::vector<std::pair<std::string, std::string>> tombstones_;
  std::map<Guid, std::string> channels_;  // customer -> channel, from customer()/put_customer
  // GUID -> the customer it was merged into, read by customer() for a missing GUID
  // (under that GUID's lock) or written by put_alias().
  std::map<Guid, std::optional<std::string>> aliases_;
  std::map<Guid, bool> erased_;  // GUID -> erased, read by customer() for a missing GUID
  // (node, seq) -> (state, error) of the operations this transaction applied.
  std::map<std::pair<std::string, std::int64_t>, std::pair<std::string, std::string>> states_;
};

class PgHqStore final : public HqStore {
 public:
  PgHqStore(std::unique_ptr<PgConnection> db, std::string epoch, std::string prefix, std::string scope)
      : db_(std::move(db)), epoch_(std::move(epoch)), prefix_(std::move(prefix)), scope_(std::move(scope)) {}

  Result<std::unique_ptr<HqTransaction>> begin() override {
    TS_RETURN_IF_ERROR(db_->exec("BEGIN"));
    return std::unique_ptr<HqTransaction>(std::make_unique<PgHqTransaction>(*db_, prefix_, scope_));
  }
  const std::string& epoch() const override { return epoch_; }
  const std::string& number_prefix() const override { return prefix_; }

  Result<std::vector<FeedEntry>> feed_after(std::int64_t after, std::size_t limit,
                                            const std::optional<std::string>& channel,
                                            std::int64_t* cursor_out) override {
    // One statement, one snapshot: the cursor and the entries agree.
    TS_ASSIGN_OR_RETURN(auto rows, db_->run(
        "WITH top AS (SELECT coalesce(max(seq), 0) AS m FROM feed) "
        "SELECT top.m, f.seq, f.channel, f.payload, f.alias, f.customer, f.mark FROM top LEFT JOIN LATERAL ("
        "  SELECT seq, channel, payload, alias, customer, coalesce(mark, 0) AS mark FROM feed WHERE seq > $1 "
        "  AND ($2::text IS NULL OR channel = $2) ORDER BY seq LIMIT $3) f ON true ORDER BY f.seq",
        PgParams().i64(after).opt_text(channel).i64(static_cast<std::int64_t>(limit))));
    std::vector<FeedEntry> out;
    std::int64_t max_seq = 0;
    for (int i = 0; i < rows.size(); ++i) {
      max_seq = rows.i64(i, 0);
      if (rows.is_null(i, 1)) continue;
      TS_ASSIGN_OR_RETURN(FeedEntry e, read_feed_entry(rows.i64(i, 1), rows.text(i, 2), rows.bytes(i, 3),
                                                       rows.is_null(i, 4) ? std::string() : rows.bytes(i, 4),
                                                       rows.bytes(i, 5), rows.i64(i, 6)));
      out.push_back(std::move(e));
    }
    if (cursor_out != nullptr) {
      *cursor_out = out.size() < limit ? std::max(after, max_seq) : out.back().seq;
    }
    return out;
  }
  Result<bool> holds_op(std::string_view node, const Guid& op) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_->run("SELECT 1 FROM inbound WHERE op_id = $1 AND node_id = $2",
                                            PgParams().bytes(op.raw()).text(node)));
    return !rows.empty();
  }
  Result<std::int64_t> push_cursor(std::string_view node) override {
    TS_ASSIGN_OR_RETURN(auto v, db_->query_i64("SELECT cursor FROM node_cursors WHERE node_id = $1",
                                               PgParams().text(node)));
    return v.value_or(0);
  }
  Result<std::vector<Customer>> search(std::string_view text, std::size_t limit,
                                       const std::optional<std::string>& channel) override {
    // A NULL channel matches every customer.
    TS_ASSIGN_OR_RETURN(auto rows, db_->run(
        "SELECT payload FROM customers WHERE ($1 = '' OR strpos(search, $1) > 0) "
        "AND ($2::text IS NULL OR channel = $2) "
        "ORDER BY sort_name, sort_first, guid LIMIT $3",
        PgParams().text(ascii_lower(text)).opt_text(channel).i64(
            limit > 0 ? static_cast<std::int64_t>(limit) : std::numeric_limits<std::int64_t>::max())));
    return customers_from(rows);
  }
  Result<std::vector<Customer>> all_customers_by_guid() override {
    std::vector<Customer> out;
    TS_RETURN_IF_ERROR(for_each_customer_by_guid([&out](const Customer& c) {
      out.push_back(c);
      return Status::Ok();
    }));
    return out;
  }
  Status for_each_customer_by_guid(const std::function<Status(const Customer&)>& fn) override {
    // Pages of one snapshot (REPEATABLE READ), keyed on the GUID.
    TS_RETURN_IF_ERROR(db_->exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
    Status s = [&]() -> Status {
      constexpr std::int64_t kPage = 1000;
      std::string after;
      for (;;) {
        TS_ASSIGN_OR_RETURN(auto rows, db_->run(
            "SELECT payload, guid FROM customers WHERE guid > $1 ORDER BY guid LIMIT $2",
            PgParams().bytes(after).i64(kPage)));
        TS_ASSIGN_OR_RETURN(auto page, customers_from(rows));
        for (const Customer& c : page) TS_RETURN_IF_ERROR(fn(c));
        if (rows.size() < kPage) return Status::Ok();
        after = rows.bytes(rows.size() - 1, 1);
      }
    }();
    Status end = db_->exec(s.ok() ? "COMMIT" : "ROLLBACK");
    return s.ok() ? end : s;
  }
  Result<std::vector<SyncStatusRecord>> sync_statuses(std::optional<SyncStatus> filter) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_->run(
        "SELECT " + std::string(kStatusColumns) + " FROM sync_status "
        "WHERE $1::text IS NULL OR status = $1 "
        "UNION ALL "
        // One row per customer: the first create staged for it (by node, seq).
        "SELECT * FROM (SELECT DISTINCT ON (entity) entity, node_id, NULL::text, 'pending'::text, "
        "  ''::text, received_at_ms, received_at_ms, NULL::bytea FROM inbound i "
        "  WHERE ($1::text IS NULL OR $1 = 'pending') AND state = 'staged' AND kind = $2 "
        "    AND NOT EXISTS (SELECT 1 FROM sync_status s WHERE s.guid = i.entity) "
        "  ORDER BY entity, node_id, seq) AS derived "
        "ORDER BY 6, 1",
        PgParams().opt_text(filter ? std::optional<std::string>(std::string(to_string(*filter)))
                                   : std::nullopt).i64(static_cast<std::int64_t>(OpKind::customer_create))));
    std::vector<SyncStatusRecord> out;
    for (int i = 0; i < rows.size(); ++i) out.push_back(read_status(rows, i));
    return out;
  }
  Result<std::vector<ConflictRecord>> conflicts() override {
    TS_ASSIGN_OR_RETURN(auto rows, db_->run("SELECT " + std::string(kConflictColumns) +
                                            " FROM conflicts ORDER BY id"));
    std::vector<ConflictRecord> out;
    for (int i = 0; i < rows.size(); ++i) out.push_back(read_conflict(rows, i));
    return out;
  }
  Result<std::vector<MergeRecord>> merges() override {
    TS_ASSIGN_OR_RETURN(auto rows, db_->run(
        "SELECT id, kept, dropped, kept_account, dropped_account, at_ms FROM customer_merges ORDER BY id"));
    std::vector<MergeRecord> out;
    for (int i = 0; i < rows.size(); ++i) {
      MergeRecord m;
      m.id = rows.i64(i, 0);
      m.kept = Guid::from_raw(rows.bytes(i, 1)).value_or(Guid{});
      m.dropped = Guid::from_raw(rows.bytes(i, 2)).value_or(Guid{});
      m.kept_account = rows.opt_text(i, 3);
      m.dropped_account = rows.opt_text(i, 4);
      m.at_ms = rows.i64(i, 5);
      out.push_back(std::move(m));
    }
    return out;
  }
  Result<std::optional<std::string>> setting(std::string_view key) override { return meta_get(*db_, key); }
  Result<std::vector<TerminalInfo>> terminals() override {
    TS_ASSIGN_OR_RETURN(auto rows, db_->run(kTerminalsQuery));
    std::vector<TerminalInfo> out;
    for (int i = 0; i < rows.size(); ++i) {
      TerminalInfo t;
      t.node_id = rows.text(i, 0);
      t.push_cursor = rows.i64(i, 1);
      if (!rows.is_null(i, 2)) t.pull_cursor = rows.i64(i, 2);
      t.filtered = rows.i64(i, 3) != 0;
      t.pruned_through = rows.i64(i, 6);
      t.clock_ahead_ms = rows.i64(i, 4);
      t.clock_seen_at_ms = rows.i64(i, 5);
      out.push_back(std::move(t));
    }
    return out;
  }
  Result<std::vector<LogRecord>> received(std::string_view node, std::int64_t after,
                                          std::size_t limit) override {
    TS_ASSIGN_OR_RETURN(auto rows, db_->run(
        "SELECT " + std::string(kInboundColumns) + " FROM inbound WHERE node_id = $1 AND seq > $2 "
        "ORDER BY seq LIMIT $3",
        PgParams().text(node).i64(after).i64(static_cast<std::int64_t>(limit))));
    std::vector<LogRecord> out;
    for (int i = 0; i < rows.size(); ++i) {
      TS_ASSIGN_OR_RETURN(LogRecord r, read_inbound(rows, i));
      out.push_back(std::move(r));
    }
    return out;
  }

 private:
  static Result<std::vector<Customer>> customers_from(const PgRows& rows) {
    std::vector<Customer> out;
    out.reserve(static_cast<std::size_t>(rows.size()));
    for (int i = 0; i < rows.size(); ++i) {
      TS_ASSIGN_OR_RETURN(Customer c, decode_customer(rows.bytes(i, 0)));
      out.push_back(std::move(c));
    }
    return out;
  }

  std::unique_ptr<PgConnection> db_;
  std::string epoch_;
  std::string prefix_;
  std::string scope_;
};

}  // namespace

Status init_postgres_hq(const std::string& url, std::string_view number_prefix, std::string_view epoch) {
  TS_ASSIGN_OR_RETURN(auto db, PgConnection::open(url));
  TS_ASSIGN_OR_RETURN(bool exists, has_schema(*db));
  if (exists) {
    TS_ASSIGN_OR_RETURN(auto v, db->query_i64("SELECT max(version) FROM tillsync_schema"));
    if (v.value_or(0) > 0)
      return Status::InvalidInput("db", "db: " + db->display_url() +
                                            " already holds an HQ database; refusing to overwrite it");
  }
  TS_RETURN_IF_ERROR(migrate(*db));
  TS_RETURN_IF_ERROR(db->exec("BEGIN"));
  Status s = meta_put(*db, "epoch", epoch);
  if (s.ok()) s = meta_put(*db, "number_prefix", number_prefix);
  if (!s.ok()) {
    (void)db->exec("ROLLBACK");
    return s;
  }
  return db->commit();
}

Result<std::unique_ptr<HqStore>> open_postgres_hq(const std::string& url) {
  TS_ASSIGN_OR_RETURN(auto db, PgConnection::open(url));
  TS_ASSIGN_OR_RETURN(bool exists, has_schema(*db));
  if (!exists)
    return Status(Code::not_a_tillsync_database,
                  db->display_url() + ": not an HQ database (run `tillsync hq init --db URL` first)");
  TS_RETURN_IF_ERROR(migrate(*db));
  TS_ASSIGN_OR_RETURN(auto epoch, meta_get(*db, "epoch"));
  TS_ASSIGN_OR_RETURN(auto prefix, meta_get(*db, "number_prefix"));
  if (!epoch || !prefix)
    return Status(Code::not_a_tillsync_database, db->display_url() + ": HQ settings are missing");
  TS_ASSIGN_OR_RETURN(std::string scope, current_schema(*db));
  return std::unique_ptr<HqStore>(
      std::make_unique<PgHqStore>(std::move(db), std::move(*epoch), std::move(*prefix), std::move(scope)));
}

}  // namespace tillsync
