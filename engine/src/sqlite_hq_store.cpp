// The embedded HQ backend: one SQLite file in WAL mode.
#include <array>
#include <bit>
#include <map>
#include <cstdio>

#include "customer_table.h"
#include "hq_store_common.h"
#include "tillsync/hq_store.h"
#include "tillsync/storage/database.h"
#include "tillsync/storage/schema.h"
#include "tillsync/validation.h"

namespace tillsync {

std::string_view to_string(SyncStatus s) {
  switch (s) {
    case SyncStatus::pending: return "pending";
    case SyncStatus::converted: return "converted";
    case SyncStatus::failed: return "failed";
    case SyncStatus::duplicate: return "duplicate";
    case SyncStatus::conflict: return "conflict";
  }
  return "pending";
}

std::optional<SyncStatus> parse_sync_status(std::string_view s) {
  for (auto v : {SyncStatus::pending, SyncStatus::converted, SyncStatus::failed,
                 SyncStatus::duplicate, SyncStatus::conflict}) {
    if (to_string(v) == s) return v;
  }
  return std::nullopt;
}

std::string_view to_string(ConflictPolicy p) {
  switch (p) {
    case ConflictPolicy::lww: return "lww";
    case ConflictPolicy::hq_wins: return "hq-wins";
    case ConflictPolicy::manual: return "manual";
  }
  return "lww";
}

std::optional<ConflictPolicy> parse_conflict_policy(std::string_view s) {
  for (auto p : {ConflictPolicy::lww, ConflictPolicy::hq_wins, ConflictPolicy::manual}) {
    if (to_string(p) == s) return p;
  }
  return std::nullopt;
}

std::string_view to_string(DuplicatePolicy p) { return p == DuplicatePolicy::flag ? "flag" : "merge"; }

std::optional<DuplicatePolicy> parse_duplicate_policy(std::string_view s) {
  if (s == "flag") return DuplicatePolicy::flag;
  if (s == "merge") return DuplicatePolicy::merge;
  return std::nullopt;
}

Result<std::vector<bool>> HqTransaction::stage_all(std::span<const LogRecord> records,
                                                   std::int64_t received_at_ms) {
  std::vector<bool> fresh;
  fresh.reserve(records.size());
  for (const LogRecord& r : records) {
    TS_ASSIGN_OR_RETURN(bool f, stage(r, received_at_ms));
    fresh.push_back(f);
  }
  return fresh;
}

Status HqStore::for_each_customer_by_guid(const std::function<Status(const Customer&)>& fn) {
  TS_ASSIGN_OR_RETURN(auto all, all_customers_by_guid());
  for (const Customer& c : all) TS_RETURN_IF_ERROR(fn(c));
  return Status::Ok();
}

namespace {

// PRAGMA application_id of HQ databases: "TSYH".
constexpr std::uint32_t kHqApplicationId = 0x54535948;

constexpr std::string_view kHqSchema = R"sql(
CREATE TABLE hq_meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
CREATE TABLE customer_channel (
  guid    BLOB PRIMARY KEY,
  channel TEXT NOT NULL
) STRICT;
CREATE TABLE node_cursors (
  node_id TEXT PRIMARY KEY,
  cursor  INTEGER NOT NULL
) STRICT;
CREATE TABLE inbound (
  node_id TEXT    NOT NULL,
  seq     INTEGER NOT NULL,
  op_id   BLOB    NOT NULL UNIQUE,
  entity  BLOB    NOT NULL,
  kind    INTEGER NOT NULL,
  hlc     INTEGER NOT NULL,
  payload BLOB    NOT NULL,
  state   TEXT    NOT NULL,
  error   TEXT    NOT NULL DEFAULT '',
  PRIMARY KEY (node_id, seq)
) STRICT;
CREATE INDEX inbound_staged ON inbound(node_id, seq) WHERE state = 'staged';
CREATE INDEX inbound_entity ON inbound(entity);
CREATE TABLE sync_status (
  guid           BLOB PRIMARY KEY,
  node_id        TEXT NOT NULL,
  account_number TEXT,
  status         TEXT NOT NULL,
  last_error     TEXT NOT NULL,
  created_at_ms  INTEGER NOT NULL,
  updated_at_ms  INTEGER NOT NULL
) STRICT;
CREATE INDEX sync_status_status ON sync_status(status);
CREATE TABLE feed (
  seq      INTEGER PRIMARY KEY,
  channel  TEXT NOT NULL,
  customer BLOB NOT NULL,
  payload  BLOB NOT NULL
) STRICT;
CREATE INDEX feed_channel ON feed(channel, seq);
)sql";

constexpr std::string_view kConflictSchema = R"sql(
CREATE TABLE field_writes (
  customer BLOB    NOT NULL,
  key      TEXT    NOT NULL,
  hlc      INTEGER NOT NULL,
  node     TEXT    NOT NULL,
  version  INTEGER NOT NULL,
  PRIMARY KEY (customer, key)
) STRICT;
CREATE TABLE conflicts (
  id            INTEGER PRIMARY KEY,
  customer      BLOB    NOT NULL,
  field         TEXT    NOT NULL,
  kept          TEXT    NOT NULL,
  lost          TEXT    NOT NULL,
  kept_hlc      INTEGER NOT NULL,
  kept_node     TEXT    NOT NULL,
  kept_version  INTEGER NOT NULL,
  lost_hlc      INTEGER NOT NULL,
  lost_node     TEXT    NOT NULL,
  lost_version  INTEGER NOT NULL,
  policy        TEXT    NOT NULL,
  outcome       TEXT    NOT NULL,
  status        TEXT    NOT NULL,
  created_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX conflicts_customer ON conflicts(customer, status);
)sql";

constexpr std::string_view kDuplicateSchema = R"sql(
CREATE TABLE match_keys (
  key      TEXT NOT NULL,
  customer BLOB NOT NULL,
  PRIMARY KEY (key, customer)
) STRICT;
CREATE INDEX match_keys_customer ON match_keys(customer);
CREATE TABLE guid_aliases (
  alias  BLOB PRIMARY KEY,
  target BLOB NOT NULL
) STRICT;
ALTER TABLE sync_status ADD COLUMN twin BLOB;
ALTER TABLE feed ADD COLUMN alias BLOB;
)sql";

constexpr std::string_view kTombstoneSchema = R"sql(
CREATE TABLE tombstones (
  customer BLOB    NOT NULL,
  child    BLOB    NOT NULL,
  hlc      INTEGER NOT NULL,
  node     TEXT    NOT NULL,
  version  INTEGER NOT NULL,
  feed_seq INTEGER NOT NULL,
  PRIMARY KEY (customer, child)
) STRICT;
CREATE TABLE node_pulls (
  node_id TEXT PRIMARY KEY,
  cursor  INTEGER NOT NULL
) STRICT;
)sql";

const storage::SchemaSpec& hq_schema() {
  static const std::string v1 = std::string(kHqSchema) + std::string(kCustomerSchema);
  static const std::array<storage::Migration, 12> migrations{{
      {1, "HQ: customer master, inbound staging, status view, outbound feed", v1},
      {2, "HQ: per-field write state and the conflict journal", kConflictSchema},
      {3, "HQ: duplicate detection keys and GUID aliases", kDuplicateSchema},
      {4, "HQ: tombstones of removed addresses and contacts, nodes' pull cursors", kTombstoneSchema},
      {5, "HQ: nodes registered for filtered pulls (D5)",
       "ALTER TABLE node_pulls ADD COLUMN filtered INTEGER NOT NULL DEFAULT 0;"},
      // Only failed operations are looked up by customer (resync); indexing every staged
      // row by its random GUID cost a random B-tree page per operation received.
      // The status index served only `hq sync-status --status`, a report that may scan;
      // maintaining it cost every upload and every conversion an index write.
      {6, "HQ: index only failed inbound operations by customer; no status index",
       "DROP INDEX inbound_entity;\n"
       "CREATE INDEX inbound_failed ON inbound(entity) WHERE state = 'failed';\n"
       "DROP INDEX sync_status_status;"},
      // An upload writes no `pending` status row (a second, randomly keyed B-tree write
      // per creation): the status view derives it from the staged create and the time
      // HQ received it.
      {7, "HQ: when each inbound operation was received",
       "ALTER TABLE inbound ADD COLUMN received_at_ms INTEGER NOT NULL DEFAULT 0;"},
      // Operations waiting for their customer's create (state 'waiting'), found by
      // customer when it arrives; each terminal's clock lead at its last push; and
      // requests of the real-time service carried out, by request id (the op id the
      // terminal logs the write under).
      {8, "HQ: operations waiting for their customer; terminals' clocks; real-time requests", R"sql(
CREATE INDEX inbound_waiting ON inbound(entity) WHERE state = 'waiting';
CREATE TABLE node_clocks (
  node_id  TEXT PRIMARY KEY,
  ahead_ms INTEGER NOT NULL,
  at_ms    INTEGER NOT NULL
) STRICT;
CREATE TABLE rts_requests (
  request  BLOB PRIMARY KEY,
  node_id  TEXT NOT NULL,
  customer BLOB NOT NULL,
  result   TEXT NOT NULL,
  at_ms    INTEGER NOT NULL
) STRICT;
)sql"},
      // An operation id is unique per node, not across nodes: a node (a stolen till)
      // that sent another node's op id first must not make that node's operation look
      // like a duplicate and be dropped. SQLite cannot drop a column's UNIQUE: the table
      // is rebuilt with its indexes.
      {9, "HQ: operation ids unique per node", R"sql(
CREATE TABLE inbound_v9 (
  node_id        TEXT    NOT NULL,
  seq            INTEGER NOT NULL,
  op_id          BLOB    NOT NULL,
  entity         BLOB    NOT NULL,
  kind           INTEGER NOT NULL,
  hlc            INTEGER NOT NULL,
  payload        BLOB    NOT NULL,
  state          TEXT    NOT NULL,
  error          TEXT    NOT NULL DEFAULT '',
  received_at_ms INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (node_id, seq),
  UNIQUE (node_id, op_id)
) STRICT;
INSERT INTO inbound_v9(node_id, seq, op_id, entity, kind, hlc, payload, state, error, received_at_ms)
  SELECT node_id, seq, op_id, entity, kind, hlc, payload, state, error, received_at_ms FROM inbound;
DROP TABLE inbound;
ALTER TABLE inbound_v9 RENAME TO inbound;
CREATE INDEX inbound_staged ON inbound(node_id, seq) WHERE state = 'staged';
CREATE INDEX inbound_failed ON inbound(entity) WHERE state = 'failed';
CREATE INDEX inbound_waiting ON inbound(entity) WHERE state = 'waiting';
)sql"},
      // Feed compaction finds a customer's older snapshots by customer; the feed's head
      // is recorded now and then with the time (how old a position is); received
      // operations are pruned per node from the start of its log.
      {10, "HQ: feed compaction and received-operation retention", R"sql(
CREATE INDEX feed_customer ON feed(customer, seq);
CREATE TABLE feed_heads (
  at_ms INTEGER PRIMARY KEY,
  seq   INTEGER NOT NULL
) STRICT;
ALTER TABLE node_cursors ADD COLUMN pruned_through INTEGER NOT NULL DEFAULT 0;
ALTER TABLE node_cursors ADD COLUMN pruned_hlc INTEGER NOT NULL DEFAULT 0;
)sql"},
      // Right to erasure: the GUIDs of erased customers (nothing is written for them
      // again), and the mark a feed entry had before an erasure redacted it (a node
      // whose pull position it is names it by that mark).
      {11, "HQ: erased customers", R"sql(
CREATE TABLE erased_customers (
  guid  BLOB PRIMARY KEY,
  at_ms INTEGER NOT NULL
) STRICT;
ALTER TABLE feed ADD COLUMN mark INTEGER;
)sql"},
      // Identity merges (hq merge-customers), journaled; a merged customer's account
      // number names the customer it was merged into.
      {12, "HQ: identity merges", R"sql(
CREATE TABLE customer_merges (
  id              INTEGER PRIMARY KEY,
  kept            BLOB NOT NULL,
  dropped         BLOB NOT NULL,
  kept_account    TEXT,
  dropped_account TEXT,
  at_ms           INTEGER NOT NULL
) STRICT;
CREATE INDEX customer_merges_account ON customer_merges(dropped_account);
)sql"},
  }};
  static const storage::SchemaSpec spec{kHqApplicationId, "HQ", migrations};
  return spec;
}

storage::DatabaseOptions db_options(const SqliteHqOptions& o, bool create) {
  storage::DatabaseOptions d;
  d.synchronous = o.durable ? storage::Synchronous::full : storage::Synchronous::normal;
  d.busy_timeout_ms = o.busy_timeout_ms;
  d.create_if_missing = create;
  return d;
}

Result<std::optional<std::string>> meta_get(storage::Database& db, std::string_view key) {
  TS_ASSIGN_OR_RETURN(auto st, db.prepare("SELECT value FROM hq_meta WHERE key = ?1"));
  st.bind(1, key);
  TS_ASSIGN_OR_RETURN(bool row, st.step());
  if (!row) return std::optional<std::string>{};
  return std::optional<std::string>{st.column_text(0)};
}

Status meta_put(storage::Database& db, std::string_view key, std::string_view value) {
  TS_ASSIGN_OR_RETURN(auto st, db.prepare(
      "INSERT INTO hq_meta(key, value) VALUES(?1, ?2) "
      "ON CONFLICT(key) DO UPDATE SET value = excluded.value"));
  st.bind(1, key).bind(2, value);
  return st.run();
}

// Identity merge (merge_customer): what moves from the dropped customer (?1) to the
// kept one (?2). The state of its addresses' and contacts' fields ("address:<guid>:
// <field>") and their tombstones go with them (its own fields' state is deleted next).
constexpr std::array<std::string_view, 4> kMergeMoves{{
    "UPDATE field_writes SET customer = ?2 WHERE customer = ?1 AND key LIKE '%:%'",
    "UPDATE tombstones SET customer = ?2 WHERE customer = ?1",
    "UPDATE guid_aliases SET target = ?2 WHERE target = ?1",
    "INSERT INTO guid_aliases(alias, target) VALUES(?1, ?2) ON CONFLICT(alias) DO UPDATE SET target = excluded.target",
}};

// Right to erasure (erase_customer): rows about one GUID (?1) that go.
constexpr std::array<std::string_view, 7> kErasureDeletes{{
    "DELETE FROM customer_merges WHERE kept = ?1 OR dropped = ?1",
    "DELETE FROM match_keys WHERE customer = ?1",
    "DELETE FROM field_writes WHERE customer = ?1",
    "DELETE FROM tombstones WHERE customer = ?1",
    "DELETE FROM rts_requests WHERE customer = ?1",
    "DELETE FROM customer_channel WHERE guid = ?1",
    "DELETE FROM guid_aliases WHERE alias = ?1 OR target = ?1",
}};
// Received operations keep their place (a resend is still recognised by its op id) but
// not their content; those not applied yet fail. (SET expressions read the old row.)
constexpr std::string_view kEraseReceived =
    "UPDATE inbound SET payload = X'', "
    "state = CASE WHEN state = 'applied' THEN 'applied' ELSE 'failed' END, "
    "error = CASE WHEN state = 'applied' THEN '' ELSE ?2 END WHERE entity = ?1";
constexpr std::string_view kEraseConflicts = "UPDATE conflicts SET kept = ?2, lost = ?2 WHERE customer = ?1";
constexpr std::string_view kEraseStatus =
    "UPDATE sync_status SET account_number = NULL, status = 'failed', last_error = ?2, twin = NULL, "
    "updated_at_ms = ?3 WHERE guid = ?1";

// Records per staging INSERT: the largest power of two up to 64 that `remaining` holds,
// so that only seven statement texts are ever prepared and cached.
std::size_t stage_chunk(std::size_t remaining) {
  std::size_t rows = 64;
  while (rows > remaining) rows /= 2;
  return rows;
}

// The staging INSERT of `rows` records (a power of two up to 64), eight parameters a
// record, numbered on from record to record; it returns the rows actually inserted.
const std::string& stage_sql(std::size_t rows) {
  static const std::array<std::string, 7> texts = [] {
    std::array<std::string, 7> out;
    for (std::size_t i = 0; i < out.size(); ++i) {
      std::string& sql = out[i];
      sql = "INSERT OR IGNORE INTO inbound(node_id, seq, op_id, entity, kind, hlc, payload, "
            "received_at_ms, state) VALUES";
      for (int r = 0; r < (1 << i); ++r) {
        sql += r == 0 ? "(" : ", (";
        for (int p = 1; p <= 8; ++p) sql += "?" + std::to_string(r * 8 + p) + ", ";
        sql += "'staged')";
      }
      sql += " RETURNING node_id, seq";
    }
    return out;
  }();
  return texts.at(static_cast<std::size_t>(std::countr_zero(rows)));
}

Result<LogRecord> read_inbound(const storage::Statement& st, int col) {
  LogRecord r;
  r.node_id = st.column_text(col);
  r.seq = st.column_int64(col + 1);
  auto op = Guid::from_raw(st.column_blob(col + 2));
  auto entity = Guid::from_raw(st.column_blob(col + 3));
  auto kind = op_kind_from_int(static_cast<int>(st.column_int64(col + 4)));
  if (!op || !entity || !kind) return Status::CorruptLog("inbound row is malformed");
  r.op_id = *op;
  r.entity = *entity;
  r.kind = *kind;
  r.hlc = Hlc{static_cast<std::uint64_t>(st.column_int64(col + 5))};
  r.payload = st.column_blob(col + 6);
  return r;
}

constexpr std::string_view kInboundColumns = "node_id, seq, op_id, entity, kind, hlc, payload";

Result<std::vector<StagedOp>> read_staged(storage::Statement& st) {
  std::vector<StagedOp> out;
  for (;;) {
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    StagedOp op;
    TS_ASSIGN_OR_RETURN(op.record, read_inbound(st, 0));
    op.state = parse_staged_state(st.column_text(7));
    op.error = st.column_text(8);
    op.received_at_ms = st.column_int64(9);
    out.push_back(std::move(op));
  }
  return out;
}

SyncStatusRecord read_status(const storage::Statement& st) {
  SyncStatusRecord r;
  r.guid = Guid::from_raw(st.column_blob(0)).value_or(Guid{});
  r.node_id = st.column_text(1);
  r.account_number = st.column_optional_text(2);
  r.status = parse_sync_status(st.column_text(3)).value_or(SyncStatus::pending);
  r.last_error = st.column_text(4);
  r.created_at_ms = st.column_int64(5);
  r.updated_at_ms = st.column_int64(6);
  if (!st.column_is_null(7)) r.twin = Guid::from_raw(st.column_blob(7));
  return r;
}

constexpr std::string_view kConflictColumns =
    "id, customer, field, kept, lost, kept_hlc, kept_node, kept_version, lost_hlc, lost_node, "
    "lost_version, policy, outcome, status, created_at_ms";

ConflictRecord read_conflict(const storage::Statement& st) {
  ConflictRecord c;
  c.id = st.column_int64(0);
  c.customer = Guid::from_raw(st.column_blob(1)).value_or(Guid{});
  c.field = st.column_text(2);
  c.kept = st.column_text(3);
  c.lost = st.column_text(4);
  c.kept_write = {Hlc{static_cast<std::uint64_t>(st.column_int64(5))}, st.column_text(6), st.column_int64(7)};
  c.lost_write = {Hlc{static_cast<std::uint64_t>(st.column_int64(8))}, st.column_text(9), st.column_int64(10)};
  c.policy = parse_conflict_policy(st.column_text(11)).value_or(ConflictPolicy::lww);
  c.outcome = st.column_text(12);
  c.status = st.column_text(13);
  c.created_at_ms = st.column_int64(14);
  return c;
}

void bind_conflict(storage::Statement& st, const ConflictRecord& c) {
  st.bind_blob(1, c.customer.raw()).bind(2, c.field).bind(3, c.kept).bind(4, c.lost);
  st.bind(5, static_cast<std::int64_t>(c.kept_write.hlc.value)).bind(6, c.kept_write.node);
  st.bind(7, c.kept_write.version);
  st.bind(8, static_cast<std::int64_t>(c.lost_write.hlc.value)).bind(9, c.lost_write.node);
  st.bind(10, c.lost_write.version);
  st.bind(11, to_string(c.policy)).bind(12, c.outcome).bind(13, c.status).bind(14, c.created_at_ms);
}

class SqliteHqTransaction final : public HqTransaction {
 public:
  SqliteHqTransaction(storage::Database& db, storage::Transaction txn, std::string prefix)
      : db_(db), txn_(std::move(txn)), prefix_(std::move(prefix)) {}

  Result<std::optional<Customer>> customer(const Guid& guid) override {
    return CustomerTable(db_).get(guid);
  }
  Result<std::optional<Customer>> customer_by_account(std::string_view account) override {
    return CustomerTable(db_).by_account(account);
  }
  Status put_customer(const Customer& c, std::string_view channel) override {
    TS_RETURN_IF_ERROR(CustomerTable(db_).upsert(txn_, c));
    TS_RETURN_IF_ERROR(write_match_keys(c));
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT OR IGNORE INTO customer_channel(guid, channel) VALUES(?1, ?2)"));
    st.bind_blob(1, c.guid.raw()).bind(2, channel);
    return st.run();
  }
  Status append_alias(const Guid& alias, const Customer& target, std::string_view channel) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT INTO feed(channel, customer, payload, alias, mark) VALUES(?1, ?2, ?3, ?4, ?5)"));
    st.bind(1, channel).bind_blob(2, target.guid.raw()).bind_blob(3, encode_customer(target));
    st.bind_blob(4, alias.raw()).bind(5, new_feed_mark());
    return st.run();
  }
  Result<std::optional<Guid>> find_duplicate(const Customer& c) override {
    for (const std::string& key : duplicate_match_keys(c)) {
      TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
          "SELECT customer FROM match_keys WHERE key = ?1 AND customer != ?2 "
          "ORDER BY customer LIMIT 1"));
      st.bind(1, key).bind_blob(2, c.guid.raw());
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (row) return Guid::from_raw(st.column_blob(0));
    }
    return std::optional<Guid>{};
  }
  Status put_alias(const Guid& alias, const Guid& target) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT OR REPLACE INTO guid_aliases(alias, target) VALUES(?1, ?2)"));
    st.bind_blob(1, alias.raw()).bind_blob(2, target.raw());
    return st.run();
  }
  Result<std::optional<Guid>> alias_target(const Guid& alias) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare("SELECT target FROM guid_aliases WHERE alias = ?1"));
    st.bind_blob(1, alias.raw());
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return std::optional<Guid>{};
    return Guid::from_raw(st.column_blob(0));
  }
  Result<std::string> channel_of(const Guid& customer) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare("SELECT channel FROM customer_channel WHERE guid = ?1"));
    st.bind_blob(1, customer.raw());
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    return row ? st.column_text(0) : std::string();
  }
  Result<std::string> next_account_number() override {
    TS_ASSIGN_OR_RETURN(auto v, meta_get(db_, "next_number"));
    const long long n = v ? std::stoll(*v) : 1;
    if (n > kMaxAccountNumber) return Status::Internal("the account number sequence is exhausted");
    TS_RETURN_IF_ERROR(meta_put(db_, "next_number", std::to_string(n + 1)));
    return format_account_number(prefix_, n);
  }

  Result<std::int64_t> node_cursor(std::string_view node) override {
    if (auto it = cursors_.find(node); it != cursors_.end()) return it->second;
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare("SELECT cursor FROM node_cursors WHERE node_id = ?1"));
    st.bind(1, node);
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    return row ? st.column_int64(0) : std::int64_t{0};
  }
  Result<std::vector<bool>> holds_ops(std::string_view node, std::span<const Guid> op_ids) override {
    std::vector<bool> held;
    held.reserve(op_ids.size());
    for (const Guid& id : op_ids) {
      TS_ASSIGN_OR_RETURN(auto st, db_.prepare("SELECT 1 FROM inbound WHERE op_id = ?1 AND node_id = ?2"));
      st.bind_blob(1, id.raw()).bind(2, node);
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      held.push_back(row);
    }
    return held;
  }
  Result<std::vector<std::optional<Guid>>> ops_at(std::string_view node, std::span<const std::int64_t> seqs) override {
    std::vector<std::optional<Guid>> ops;
    ops.reserve(seqs.size());
    for (std::int64_t seq : seqs) {
      TS_ASSIGN_OR_RETURN(auto st, db_.prepare("SELECT op_id FROM inbound WHERE node_id = ?1 AND seq = ?2"));
      st.bind(1, node).bind(2, seq);
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      ops.push_back(row ? Guid::from_raw(st.column_blob(0)) : std::nullopt);
    }
    return ops;
  }
  Result<bool> stage(const LogRecord& r, std::int64_t received_at_ms) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT OR IGNORE INTO inbound(node_id, seq, op_id, entity, kind, hlc, payload, "
        "received_at_ms, state) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'staged')"));
    bind_inbound(st, r, received_at_ms, 0);
    TS_RETURN_IF_ERROR(st.run());
    const bool fresh = db_.changes() > 0;
    // The node's cursor is written once per transaction, at commit().
    TS_ASSIGN_OR_RETURN(std::int64_t cursor, node_cursor(r.node_id));
    cursors_[r.node_id] = std::max(cursor, r.seq);
    return fresh;
  }
  // ?base+1..?base+8 of an INSERT INTO inbound(node_id, seq, op_id, entity, kind, hlc,
  // payload, received_at_ms). Borrowed: `r` must outlive `st`.
  static void bind_inbound(storage::Statement& st, const LogRecord& r, std::int64_t received_at_ms, int base) {
    st.bind_borrowed(base + 1, r.node_id).bind(base + 2, r.seq).bind_blob_borrowed(base + 3, r.op_id.raw());
    st.bind_blob_borrowed(base + 4, r.entity.raw()).bind(base + 5, static_cast<std::int64_t>(r.kind));
    st.bind(base + 6, static_cast<std::int64_t>(r.hlc.value)).bind_blob_borrowed(base + 7, r.payload);
    st.bind(base + 8, received_at_ms);
  }
  // One multi-row INSERT per chunk of records: statement set-up, cursor opening and
  // bookkeeping are paid once per chunk instead of once per record. RETURNING names
  // the rows actually inserted; a record whose (node, seq) or op id HQ already holds
  // is ignored and comes back as not fresh.
  Result<std::vector<bool>> stage_all(std::span<const LogRecord> records, std::int64_t received_at_ms) override {
    std::vector<bool> fresh(records.size(), false);
    for (std::size_t at = 0; at < records.size();) {
      const std::size_t rows = stage_chunk(records.size() - at);
      TS_ASSIGN_OR_RETURN(auto st, db_.prepare(stage_sql(rows)));
      for (std::size_t i = 0; i < rows; ++i) bind_inbound(st, records[at + i], received_at_ms, static_cast<int>(i) * 8);
      // Rows come back in insertion order; the search starts where the last one was.
      std::size_t next = 0;
      for (;;) {
        TS_ASSIGN_OR_RETURN(bool row, st.step());
        if (!row) break;
        const std::string node = st.column_text(0);
        const std::int64_t seq = st.column_int64(1);
        for (std::size_t tried = 0; tried < rows; ++tried, next = (next + 1) % rows) {
          const LogRecord& r = records[at + next];
          if (r.seq == seq && r.node_id == node && !fresh[at + next]) {
            fresh[at + next] = true;
            next = (next + 1) % rows;
            break;
          }
        }
      }
      // The nodes' cursors are written once per transaction, at commit().
      for (std::size_t i = 0; i < rows; ++i) {
        const LogRecord& r = records[at + i];
        TS_ASSIGN_OR_RETURN(std::int64_t cursor, node_cursor(r.node_id));
        cursors_[r.node_id] = std::max(cursor, r.seq);
      }
      at += rows;
    }
    return fresh;
  }
  Result<std::vector<StagedOp>> staged(std::size_t limit) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT " + std::string(kInboundColumns) + ", state, error, received_at_ms FROM inbound "
        "WHERE state = 'staged' ORDER BY node_id, seq LIMIT ?1"));
    st.bind(1, static_cast<std::int64_t>(limit));
    return read_staged(st);
  }
  Result<std::vector<StagedOp>> failed_for(const Guid& customer) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT " + std::string(kInboundColumns) + ", state, error, received_at_ms FROM inbound "
        "WHERE entity = ?1 AND state = 'failed' ORDER BY node_id, seq"));
    st.bind_blob(1, customer.raw());
    return read_staged(st);
  }
  Status set_state(std::string_view node, std::int64_t seq, StagedState state,
                   std::string_view error) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "UPDATE inbound SET state = ?3, error = ?4 WHERE node_id = ?1 AND seq = ?2"));
    st.bind(1, node).bind(2, seq).bind(3, staged_state_name(state)).bind(4, error);
    return st.run();
  }

  Result<std::optional<RtsRequest>> rts_request(const Guid& request) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT node_id, customer, result FROM rts_requests WHERE request = ?1"));
    st.bind_blob(1, request.raw());
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return std::optional<RtsRequest>{};
    return std::optional<RtsRequest>{
        RtsRequest{st.column_text(0), Guid::from_raw(st.column_blob(1)).value_or(Guid{}), st.column_text(2)}};
  }
  Status put_rts_request(const Guid& request, const RtsRequest& r, std::int64_t at_ms) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT INTO rts_requests(request, node_id, customer, result, at_ms) VALUES(?1, ?2, ?3, ?4, ?5)"));
    st.bind_blob(1, request.raw()).bind(2, r.node).bind_blob(3, r.customer.raw()).bind(4, r.result).bind(5, at_ms);
    return st.run();
  }
  Result<std::vector<bool>> rts_requests_done(std::span<const std::pair<std::string, Guid>> requests) override {
    std::vector<bool> done;
    done.reserve(requests.size());
    for (const auto& [node, id] : requests) {
      TS_ASSIGN_OR_RETURN(auto st, db_.prepare("SELECT 1 FROM rts_requests WHERE request = ?1 AND node_id = ?2"));
      st.bind_blob(1, id.raw()).bind(2, node);
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      done.push_back(row);
    }
    return done;
  }
  Status redact_received(std::string_view node, std::int64_t seq) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare("UPDATE inbound SET payload = x'' WHERE node_id = ?1 AND seq = ?2"));
    st.bind(1, node).bind(2, seq);
    return st.run();
  }
  Status note_clock(std::string_view node, std::int64_t ahead_ms, std::int64_t at_ms) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT INTO node_clocks(node_id, ahead_ms, at_ms) VALUES(?1, ?2, ?3) "
        "ON CONFLICT(node_id) DO UPDATE SET ahead_ms = excluded.ahead_ms, at_ms = excluded.at_ms"));
    st.bind(1, node).bind(2, ahead_ms).bind(3, at_ms);
    return st.run();
  }
  Result<std::vector<std::pair<std::string, Guid>>> waiting_keys() override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT DISTINCT node_id, entity FROM inbound WHERE state = 'waiting'"));
    std::vector<std::pair<std::string, Guid>> out;
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      if (auto g = Guid::from_raw(st.column_blob(1))) out.emplace_back(st.column_text(0), *g);
    }
    return out;
  }
  Result<std::vector<std::string>> restage_waiting(const Guid& customer) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "UPDATE inbound SET state = 'staged', error = '' WHERE entity = ?1 AND state = 'waiting' "
        "RETURNING node_id"));
    st.bind_blob(1, customer.raw());
    std::vector<std::string> nodes;
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      nodes.push_back(st.column_text(0));
    }
    return nodes;
  }

  Result<std::optional<SyncStatusRecord>> sync_status(const Guid& guid) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT guid, node_id, account_number, status, last_error, created_at_ms, updated_at_ms, "
        "twin FROM sync_status WHERE guid = ?1"));
    st.bind_blob(1, guid.raw());
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return std::optional<SyncStatusRecord>{};
    return std::optional<SyncStatusRecord>{read_status(st)};
  }
  // Binds ?1..?8 of an INSERT INTO sync_status(guid, node_id, account_number, status,
  // last_error, created_at_ms, updated_at_ms, twin).
  static void bind_status(storage::Statement& st, const SyncStatusRecord& r) {
    st.bind_blob(1, r.guid.raw()).bind(2, r.node_id).bind(3, r.account_number);
    st.bind(4, to_string(r.status)).bind(5, r.last_error).bind(6, r.created_at_ms);
    st.bind(7, r.updated_at_ms);
    if (r.twin) st.bind_blob(8, r.twin->raw());
    else st.bind_null(8);
  }
  Status put_sync_status(const SyncStatusRecord& r) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT INTO sync_status(guid, node_id, account_number, status, last_error, "
        "created_at_ms, updated_at_ms, twin) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
        "ON CONFLICT(guid) DO UPDATE SET node_id = excluded.node_id, "
        "account_number = excluded.account_number, status = excluded.status, "
        "last_error = excluded.last_error, created_at_ms = excluded.created_at_ms, "
        "updated_at_ms = excluded.updated_at_ms, twin = excluded.twin"));
    bind_status(st, r);
    return st.run();
  }

  Status append_feed(const Customer& c, std::string_view channel) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT INTO feed(channel, customer, payload, mark) VALUES(?1, ?2, ?3, ?4)"));
    st.bind(1, channel).bind_blob(2, c.guid.raw()).bind_blob(3, encode_customer(c)).bind(4, new_feed_mark());
    return st.run();
  }

  Result<std::optional<FieldWrite>> field_write(const Guid& customer, std::string_view key) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT hlc, node, version FROM field_writes WHERE customer = ?1 AND key = ?2"));
    st.bind_blob(1, customer.raw()).bind(2, key);
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return std::optional<FieldWrite>{};
    return std::optional<FieldWrite>{FieldWrite{Hlc{static_cast<std::uint64_t>(st.column_int64(0))},
                                                st.column_text(1), st.column_int64(2)}};
  }
  Status put_field_write(const Guid& customer, std::string_view key, const FieldWrite& w) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT OR REPLACE INTO field_writes(customer, key, hlc, node, version) "
        "VALUES(?1, ?2, ?3, ?4, ?5)"));
    st.bind_blob(1, customer.raw()).bind(2, key).bind(3, static_cast<std::int64_t>(w.hlc.value));
    st.bind(4, w.node).bind(5, w.version);
    return st.run();
  }
  Result<std::int64_t> add_conflict(const ConflictRecord& c) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT INTO conflicts(customer, field, kept, lost, kept_hlc, kept_node, kept_version, "
        "lost_hlc, lost_node, lost_version, policy, outcome, status, created_at_ms) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"));
    bind_conflict(st, c);
    TS_RETURN_IF_ERROR(st.run());
    return db_.last_insert_rowid();
  }
  Result<std::optional<ConflictRecord>> conflict(std::int64_t id) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT " + std::string(kConflictColumns) + " FROM conflicts WHERE id = ?1"));
    st.bind(1, id);
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return std::optional<ConflictRecord>{};
    return std::optional<ConflictRecord>{read_conflict(st)};
  }
  Status update_conflict(const ConflictRecord& c) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "UPDATE conflicts SET customer = ?1, field = ?2, kept = ?3, lost = ?4, kept_hlc = ?5, "
        "kept_node = ?6, kept_version = ?7, lost_hlc = ?8, lost_node = ?9, lost_version = ?10, "
        "policy = ?11, outcome = ?12, status = ?13, created_at_ms = ?14 WHERE id = ?15"));
    bind_conflict(st, c);
    st.bind(15, c.id);
    return st.run();
  }
  Result<std::int64_t> open_conflicts(const Guid& customer) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT count(*) FROM conflicts WHERE customer = ?1 AND status = 'open'"));
    st.bind_blob(1, customer.raw());
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    return row ? st.column_int64(0) : std::int64_t{0};
  }
  Result<std::optional<std::string>> setting(std::string_view key) override {
    return meta_get(db_, key);
  }
  Result<std::optional<FieldWrite>> tombstone(const Guid& customer, const Guid& child) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT hlc, node, version FROM tombstones WHERE customer = ?1 AND child = ?2"));
    st.bind_blob(1, customer.raw()).bind_blob(2, child.raw());
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return std::optional<FieldWrite>{};
    return std::optional<FieldWrite>{FieldWrite{Hlc{static_cast<std::uint64_t>(st.column_int64(0))},
                                                st.column_text(1), st.column_int64(2)}};
  }
  Status put_tombstone(const Guid& customer, const Guid& child, const FieldWrite& w) override {
    TS_ASSIGN_OR_RETURN(auto seq, db_.query_int("SELECT coalesce(max(seq), 0) FROM feed"));
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT OR REPLACE INTO tombstones(customer, child, hlc, node, version, feed_seq) "
        "VALUES(?1, ?2, ?3, ?4, ?5, ?6)"));
    st.bind_blob(1, customer.raw()).bind_blob(2, child.raw());
    st.bind(3, static_cast<std::int64_t>(w.hlc.value)).bind(4, w.node).bind(5, w.version);
    // +1: the feed entry publishing the removal is appended after this call.
    st.bind(6, seq.value_or(0) + 1);
    return st.run();
  }
  Result<bool> note_pull(std::string_view node, std::int64_t cursor, bool filtered) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT INTO node_pulls(node_id, cursor, filtered) VALUES(?1, ?2, ?3) "
        "ON CONFLICT(node_id) DO UPDATE SET cursor = max(cursor, excluded.cursor), "
        "filtered = max(filtered, excluded.filtered)"));
    st.bind(1, node).bind(2, cursor).bind(3, std::int64_t{filtered ? 1 : 0});
    TS_RETURN_IF_ERROR(st.run());
    TS_ASSIGN_OR_RETURN(auto q, db_.prepare("SELECT filtered FROM node_pulls WHERE node_id = ?1"));
    q.bind(1, node);
    TS_ASSIGN_OR_RETURN(bool row, q.step());
    return row && q.column_int64(0) != 0;
  }
  Result<bool> registered_filtered(std::string_view node) override {
    TS_ASSIGN_OR_RETURN(auto q, db_.prepare("SELECT filtered FROM node_pulls WHERE node_id = ?1"));
    q.bind(1, node);
    TS_ASSIGN_OR_RETURN(bool row, q.step());
    return row && q.column_int64(0) != 0;
  }
  Result<std::int64_t> collect_tombstones() override {
    // Every node HQ knows (it pushed or pulled) must have pulled past the removal.
    TS_RETURN_IF_ERROR(db_.exec(
        "DELETE FROM tombstones WHERE NOT EXISTS ("
        "  SELECT 1 FROM node_cursors c LEFT JOIN node_pulls p ON p.node_id = c.node_id"
        "  WHERE p.cursor IS NULL OR p.cursor < tombstones.feed_seq)"
        " AND NOT EXISTS (SELECT 1 FROM node_pulls p WHERE p.cursor < tombstones.feed_seq)"));
    TS_ASSIGN_OR_RETURN(auto n, db_.query_int("SELECT changes()"));
    return n.value_or(0);
  }
  Status put_setting(std::string_view key, std::string_view value) override {
    return meta_put(db_, key, value);
  }

  Result<std::optional<std::int64_t>> min_pull_cursor() override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(kMinPullCursorQuery));
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row || st.column_is_null(0)) return std::optional<std::int64_t>{};
    return std::optional<std::int64_t>{st.column_int64(0)};
  }
  Result<std::int64_t> note_feed_head(std::int64_t at_ms, std::int64_t keep_after_ms) override {
    TS_ASSIGN_OR_RETURN(auto head, db_.query_int("SELECT coalesce(max(seq), 0) FROM feed"));
    TS_ASSIGN_OR_RETURN(auto put, db_.prepare("INSERT OR REPLACE INTO feed_heads(at_ms, seq) VALUES(?1, ?2)"));
    put.bind(1, at_ms).bind(2, head.value_or(0));
    TS_RETURN_IF_ERROR(put.run());
    TS_ASSIGN_OR_RETURN(auto forget, db_.prepare(
        "DELETE FROM feed_heads WHERE at_ms < (SELECT max(at_ms) FROM feed_heads WHERE at_ms <= ?1)"));
    forget.bind(1, keep_after_ms);
    TS_RETURN_IF_ERROR(forget.run());
    return head.value_or(0);
  }
  Result<std::int64_t> feed_head_at(std::int64_t at_ms) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT seq FROM feed_heads WHERE at_ms <= ?1 ORDER BY at_ms DESC LIMIT 1"));
    st.bind(1, at_ms);
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    return row ? st.column_int64(0) : std::int64_t{0};
  }
  Result<std::int64_t> remove_superseded(std::int64_t after, std::int64_t through) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "DELETE FROM feed WHERE seq IN (SELECT f.seq FROM "
        "(SELECT customer, max(seq) AS top FROM feed WHERE seq > ?1 AND seq <= ?2 GROUP BY customer) w "
        "JOIN feed f ON f.customer = w.customer AND f.seq < w.top WHERE f.alias IS NULL)"));
    st.bind(1, after).bind(2, through);
    TS_RETURN_IF_ERROR(st.run());
    TS_ASSIGN_OR_RETURN(auto n, db_.query_int("SELECT changes()"));
    return n.value_or(0);
  }
  Result<std::int64_t> prune_received(std::int64_t received_before_ms, std::size_t limit) override {
    struct Node {
      std::string id;
      std::int64_t cursor, pruned;
    };
    std::vector<Node> nodes;
    {
      TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
          "SELECT node_id, cursor, pruned_through FROM node_cursors WHERE pruned_through < cursor - 1"));
      for (;;) {
        TS_ASSIGN_OR_RETURN(bool row, st.step());
        if (!row) break;
        nodes.push_back({st.column_text(0), st.column_int64(1), st.column_int64(2)});
      }
    }
    std::int64_t removed = 0;
    for (const Node& n : nodes) {
      const std::int64_t budget = static_cast<std::int64_t>(limit) - removed;
      if (budget <= 0) break;
      const std::int64_t last = prune_scan_end(n.cursor, n.pruned, budget);
      TS_ASSIGN_OR_RETURN(auto blocker, db_.prepare(
          "SELECT seq FROM inbound WHERE node_id = ?1 AND seq > ?2 AND seq <= ?3 "
          "AND (state <> 'applied' OR received_at_ms >= ?4) ORDER BY seq LIMIT 1"));
      blocker.bind(1, n.id).bind(2, n.pruned).bind(3, last).bind(4, received_before_ms);
      TS_ASSIGN_OR_RETURN(bool blocked, blocker.step());
      const std::int64_t end = blocked ? blocker.column_int64(0) - 1 : last;
      if (end <= n.pruned) continue;
      TS_ASSIGN_OR_RETURN(auto newest, db_.prepare(
          "UPDATE node_cursors SET pruned_hlc = max(pruned_hlc, coalesce((SELECT max(hlc) FROM inbound "
          "WHERE node_id = ?1 AND seq > ?2 AND seq <= ?3), 0)) WHERE node_id = ?1"));
      newest.bind(1, n.id).bind(2, n.pruned).bind(3, end);
      TS_RETURN_IF_ERROR(newest.run());
      // The real-time requests those operations were logged under go with them.
      TS_ASSIGN_OR_RETURN(auto requests, db_.prepare(
          "DELETE FROM rts_requests WHERE node_id = ?1 AND request IN "
          "(SELECT op_id FROM inbound WHERE node_id = ?1 AND seq > ?2 AND seq <= ?3)"));
      requests.bind(1, n.id).bind(2, n.pruned).bind(3, end);
      TS_RETURN_IF_ERROR(requests.run());
      TS_ASSIGN_OR_RETURN(auto del, db_.prepare("DELETE FROM inbound WHERE node_id = ?1 AND seq > ?2 AND seq <= ?3"));
      del.bind(1, n.id).bind(2, n.pruned).bind(3, end);
      TS_RETURN_IF_ERROR(del.run());
      TS_ASSIGN_OR_RETURN(auto changed, db_.query_int("SELECT changes()"));
      removed += changed.value_or(0);
      TS_ASSIGN_OR_RETURN(auto mark, db_.prepare("UPDATE node_cursors SET pruned_through = ?2 WHERE node_id = ?1"));
      mark.bind(1, n.id).bind(2, end);
      TS_RETURN_IF_ERROR(mark.run());
    }
    return removed;
  }
  Result<bool> is_erased(const Guid& guid) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare("SELECT 1 FROM erased_customers WHERE guid = ?1"));
    st.bind_blob(1, guid.raw());
    return st.step();
  }
  Result<std::vector<Guid>> merge_customer(const Guid& drop, const Guid& keep, const MergeRecord& j) override {
    TS_ASSIGN_OR_RETURN(std::vector<Guid> renamed, aliases_of(drop));
    TS_RETURN_IF_ERROR(CustomerTable(db_).remove(txn_, drop));
    for (std::string_view sql : kMergeMoves) {
      TS_ASSIGN_OR_RETURN(auto st, db_.prepare(sql));
      st.bind_blob(1, drop.raw()).bind_blob(2, keep.raw());
      TS_RETURN_IF_ERROR(st.run());
    }
    for (std::string_view sql : {"DELETE FROM match_keys WHERE customer = ?1",
                                 "DELETE FROM field_writes WHERE customer = ?1"}) {
      TS_ASSIGN_OR_RETURN(auto st, db_.prepare(sql));
      st.bind_blob(1, drop.raw());
      TS_RETURN_IF_ERROR(st.run());
    }
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT INTO customer_merges(kept, dropped, kept_account, dropped_account, at_ms) VALUES(?1, ?2, ?3, ?4, ?5)"));
    st.bind_blob(1, keep.raw()).bind_blob(2, drop.raw()).bind(3, j.kept_account).bind(4, j.dropped_account);
    st.bind(5, j.at_ms);
    TS_RETURN_IF_ERROR(st.run());
    return renamed;
  }
  Result<std::optional<Guid>> merged_account(std::string_view account) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "SELECT kept FROM customer_merges WHERE dropped_account = ?1 ORDER BY id DESC LIMIT 1"));
    st.bind(1, account);
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return std::optional<Guid>{};
    return Guid::from_raw(st.column_blob(0));
  }
  Result<std::vector<Guid>> aliases_of(const Guid& target) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare("SELECT alias FROM guid_aliases WHERE target = ?1 ORDER BY alias"));
    st.bind_blob(1, target.raw());
    std::vector<Guid> out;
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      auto g = Guid::from_raw(st.column_blob(0));
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
      TS_ASSIGN_OR_RETURN(auto held, CustomerTable(db_).get(g));
      if (held) ++out.customers;
      TS_RETURN_IF_ERROR(CustomerTable(db_).remove(txn_, g));
      for (std::string_view sql : kErasureDeletes) {
        TS_ASSIGN_OR_RETURN(auto st, db_.prepare(sql));
        st.bind_blob(1, g.raw());
        TS_RETURN_IF_ERROR(st.run());
      }
      TS_ASSIGN_OR_RETURN(auto received, db_.prepare(kEraseReceived));
      received.bind_blob(1, g.raw()).bind(2, kErasedError);
      TS_RETURN_IF_ERROR(received.run());
      out.received += db_.changes();
      TS_ASSIGN_OR_RETURN(auto conflicts, db_.prepare(kEraseConflicts));
      conflicts.bind_blob(1, g.raw()).bind(2, kErasedValue);
      TS_RETURN_IF_ERROR(conflicts.run());
      out.conflicts += db_.changes();
      TS_ASSIGN_OR_RETURN(auto status, db_.prepare(kEraseStatus));
      status.bind_blob(1, g.raw()).bind(2, kErasedError).bind(3, at_ms);
      TS_RETURN_IF_ERROR(status.run());
      out.statuses += db_.changes();
      TS_ASSIGN_OR_RETURN(auto twins, db_.prepare("UPDATE sync_status SET twin = NULL WHERE twin = ?1"));
      twins.bind_blob(1, g.raw());
      TS_RETURN_IF_ERROR(twins.run());
      // Each entry becomes an erasure entry with the mark it had.
      std::vector<std::pair<std::int64_t, std::uint64_t>> marks;
      {
        TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
            "SELECT seq, channel, payload, alias, customer, mark FROM feed WHERE customer = ?1 "
            "AND length(payload) > 0"));
        st.bind_blob(1, g.raw());
        for (;;) {
          TS_ASSIGN_OR_RETURN(bool row, st.step());
          if (!row) break;
          TS_ASSIGN_OR_RETURN(FeedEntry e, read_feed_entry(st.column_int64(0), st.column_text(1),
                                                           st.column_blob(2),
                                                           st.column_is_null(3) ? std::string() : st.column_blob(3),
                                                           st.column_blob(4), st.column_int64(5)));
          marks.emplace_back(e.seq, feed_mark(e));
        }
      }
      for (const auto& [seq, mark] : marks) {
        TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
            "UPDATE feed SET payload = X'', alias = NULL, mark = ?2 WHERE seq = ?1"));
        st.bind(1, seq).bind(2, static_cast<std::int64_t>(mark));
        TS_RETURN_IF_ERROR(st.run());
      }
      out.feed += static_cast<std::int64_t>(marks.size());
      TS_ASSIGN_OR_RETURN(auto rec, db_.prepare(
          "INSERT OR IGNORE INTO erased_customers(guid, at_ms) VALUES(?1, ?2)"));
      rec.bind_blob(1, g.raw()).bind(2, at_ms);
      TS_RETURN_IF_ERROR(rec.run());
    }
    return out;
  }
  Status append_erasure(const Guid& guid, std::string_view channel) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
        "INSERT INTO feed(channel, customer, payload, mark) VALUES(?1, ?2, X'', ?3)"));
    st.bind(1, channel).bind_blob(2, guid.raw()).bind(3, new_feed_mark());
    return st.run();
  }
  Result<Pruned> pruned_through(std::string_view node) override {
    TS_ASSIGN_OR_RETURN(auto st, db_.prepare("SELECT pruned_through, pruned_hlc FROM node_cursors WHERE node_id = ?1"));
    st.bind(1, node);
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return Pruned{};
    return Pruned{st.column_int64(0), static_cast<std::uint64_t>(st.column_int64(1))};
  }

  Status commit() override {
    for (const auto& [node, cursor] : cursors_) {
      TS_ASSIGN_OR_RETURN(auto cur, db_.prepare(
          "INSERT INTO node_cursors(node_id, cursor) VALUES(?1, ?2) "
          "ON CONFLICT(node_id) DO UPDATE SET cursor = max(cursor, excluded.cursor)"));
      cur.bind(1, node).bind(2, cursor);
      TS_RETURN_IF_ERROR(cur.run());
    }
    return txn_.commit();
  }

 private:
  Status write_match_keys(const Customer& c) {
    TS_ASSIGN_OR_RETURN(auto del, db_.prepare("DELETE FROM match_keys WHERE customer = ?1"));
    del.bind_blob(1, c.guid.raw());
    TS_RETURN_IF_ERROR(del.run());
    for (const std::string& key : duplicate_match_keys(c)) {
      TS_ASSIGN_OR_RETURN(auto st, db_.prepare(
          "INSERT OR IGNORE INTO match_keys(key, customer) VALUES(?1, ?2)"));
      st.bind(1, key).bind_blob(2, c.guid.raw());
      TS_RETURN_IF_ERROR(st.run());
    }
    return Status::Ok();
  }

  storage::Database& db_;
  storage::Transaction txn_;
  // Cursors advanced by stage() in this transaction, written at commit().
  std::map<std::string, std::int64_t, std::less<>> cursors_;
  std::string prefix_;
};

class SqliteHqStore final : public HqStore {
 public:
  SqliteHqStore(std::unique_ptr<storage::Database> db, std::string epoch, std::string prefix)
      : db_(std::move(db)), epoch_(std::move(epoch)), prefix_(std::move(prefix)) {}

  Result<std::unique_ptr<HqTransaction>> begin() override {
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db_));
    return std::unique_ptr<HqTransaction>(
        std::make_unique<SqliteHqTransaction>(*db_, std::move(txn), prefix_));
  }
  const std::string& epoch() const override { return epoch_; }
  const std::string& number_prefix() const override { return prefix_; }

  Result<std::vector<FeedEntry>> feed_after(std::int64_t after, std::size_t limit,
                                            const std::optional<std::string>& channel,
                                            std::int64_t* cursor_out) override {
    // One read transaction, so the cursor and the entries agree.
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db_, storage::Transaction::Mode::deferred));
    TS_ASSIGN_OR_RETURN(auto max_seq, db_->query_int("SELECT max(seq) FROM feed"));
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "SELECT seq, channel, payload, alias, customer, mark FROM feed WHERE seq > ?1 "
        "AND (?2 IS NULL OR channel = ?2) ORDER BY seq LIMIT ?3"));
    st.bind(1, after).bind(2, channel).bind(3, static_cast<std::int64_t>(limit));
    std::vector<FeedEntry> out;
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      TS_ASSIGN_OR_RETURN(FeedEntry e, read_feed_entry(st.column_int64(0), st.column_text(1), st.column_blob(2),
                                                       st.column_is_null(3) ? std::string() : st.column_blob(3),
                                                       st.column_blob(4), st.column_int64(5)));
      out.push_back(std::move(e));
    }
    if (cursor_out != nullptr) {
      *cursor_out = out.size() < limit ? std::max(after, max_seq.value_or(0)) : out.back().seq;
    }
    return out;
  }
  Result<bool> scrub() override { return db_->truncate_wal(); }
  Result<bool> holds_op(std::string_view node, const Guid& op) override {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare("SELECT 1 FROM inbound WHERE op_id = ?1 AND node_id = ?2"));
    st.bind_blob(1, op.raw()).bind(2, node);
    return st.step();
  }
  Result<std::int64_t> push_cursor(std::string_view node) override {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare("SELECT cursor FROM node_cursors WHERE node_id = ?1"));
    st.bind(1, node);
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    return row ? st.column_int64(0) : std::int64_t{0};
  }
  Result<std::vector<Customer>> search(std::string_view text, std::size_t limit,
                                       const std::optional<std::string>& channel) override {
    if (!channel) return CustomerTable(*db_).search(text, limit);
    return CustomerTable(*db_).search(text, limit, "guid IN (SELECT guid FROM customer_channel WHERE channel = ?4)",
                                      *channel);
  }
  Result<std::vector<Customer>> all_customers_by_guid() override {
    return CustomerTable(*db_).all_by_guid();
  }
  Status for_each_customer_by_guid(const std::function<Status(const Customer&)>& fn) override {
    // One read transaction: every page comes from the same snapshot.
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db_, storage::Transaction::Mode::deferred));
    TS_RETURN_IF_ERROR(CustomerTable(*db_).for_each_by_guid(fn));
    return txn.commit();
  }
  Result<std::vector<SyncStatusRecord>> sync_statuses(std::optional<SyncStatus> filter) override {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "SELECT guid, node_id, account_number, status, last_error, created_at_ms, updated_at_ms, "
        "twin FROM sync_status WHERE ?1 IS NULL OR status = ?1 "
        "UNION ALL "
        // One row per customer: the first create staged for it (by node, seq).
        "SELECT entity, node_id, NULL, 'pending', '', received_at_ms, received_at_ms, NULL "
        "FROM (SELECT entity, node_id, received_at_ms, "
        "        row_number() OVER (PARTITION BY entity ORDER BY node_id, seq) AS nth "
        "      FROM inbound i WHERE state = 'staged' AND kind = ?2 "
        "        AND NOT EXISTS (SELECT 1 FROM sync_status s WHERE s.guid = i.entity)) "
        "WHERE nth = 1 AND (?1 IS NULL OR ?1 = 'pending') "
        "ORDER BY 6, 1"));
    st.bind(1, filter ? std::optional<std::string>(std::string(to_string(*filter))) : std::nullopt);
    st.bind(2, static_cast<std::int64_t>(OpKind::customer_create));
    std::vector<SyncStatusRecord> out;
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      out.push_back(read_status(st));
    }
    return out;
  }
  Result<std::optional<std::string>> setting(std::string_view key) override {
    return meta_get(*db_, key);
  }
  Result<std::vector<ConflictRecord>> conflicts() override {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "SELECT " + std::string(kConflictColumns) + " FROM conflicts ORDER BY id"));
    std::vector<ConflictRecord> out;
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      out.push_back(read_conflict(st));
    }
    return out;
  }
  Result<std::vector<MergeRecord>> merges() override {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "SELECT id, kept, dropped, kept_account, dropped_account, at_ms FROM customer_merges ORDER BY id"));
    std::vector<MergeRecord> out;
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      MergeRecord m;
      m.id = st.column_int64(0);
      m.kept = Guid::from_raw(st.column_blob(1)).value_or(Guid{});
      m.dropped = Guid::from_raw(st.column_blob(2)).value_or(Guid{});
      m.kept_account = st.column_optional_text(3);
      m.dropped_account = st.column_optional_text(4);
      m.at_ms = st.column_int64(5);
      out.push_back(std::move(m));
    }
    return out;
  }
  Result<std::vector<TerminalInfo>> terminals() override {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(kTerminalsQuery));
    std::vector<TerminalInfo> out;
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      TerminalInfo t;
      t.node_id = st.column_text(0);
      t.push_cursor = st.column_int64(1);
      if (!st.column_is_null(2)) t.pull_cursor = st.column_int64(2);
      t.filtered = st.column_int64(3) != 0;
      t.clock_ahead_ms = st.column_int64(4);
      t.clock_seen_at_ms = st.column_int64(5);
      t.pruned_through = st.column_int64(6);
      out.push_back(std::move(t));
    }
    return out;
  }
  Result<std::vector<LogRecord>> received(std::string_view node, std::int64_t after,
                                          std::size_t limit) override {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "SELECT " + std::string(kInboundColumns) + " FROM inbound WHERE node_id = ?1 AND seq > ?2 "
        "ORDER BY seq LIMIT ?3"));
    st.bind(1, node).bind(2, after).bind(3, static_cast<std::int64_t>(limit));
    std::vector<LogRecord> out;
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      TS_ASSIGN_OR_RETURN(LogRecord r, read_inbound(st, 0));
      out.push_back(std::move(r));
    }
    return out;
  }

 private:
  std::unique_ptr<storage::Database> db_;
  std::string epoch_;
  std::string prefix_;
};

}  // namespace

Status init_sqlite_hq(const std::string& path, std::string_view number_prefix,
                      std::string_view epoch, const SqliteHqOptions& options) {
  TS_ASSIGN_OR_RETURN(auto db, storage::Database::open(path, db_options(options, true)));
  TS_ASSIGN_OR_RETURN(auto version, db->query_int("PRAGMA user_version"));
  if (version.value_or(0) != 0) {
    TS_RETURN_IF_ERROR(storage::upgrade(*db, hq_schema()));
    return Status::InvalidInput("db", "db: " + path +
                                          " is already an initialized HQ database; refusing to "
                                          "overwrite it");
  }
  TS_RETURN_IF_ERROR(storage::migrate(*db, hq_schema()));
  TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
  TS_RETURN_IF_ERROR(meta_put(*db, "epoch", epoch));
  TS_RETURN_IF_ERROR(meta_put(*db, "number_prefix", number_prefix));
  TS_RETURN_IF_ERROR(meta_put(*db, "next_number", "1"));
  return txn.commit();
}

Result<std::unique_ptr<HqStore>> open_sqlite_hq(const std::string& path,
                                                const SqliteHqOptions& options) {
  TS_ASSIGN_OR_RETURN(auto db, storage::Database::open(path, db_options(options, false)));
  TS_RETURN_IF_ERROR(storage::upgrade(*db, hq_schema()));
  // Customers, statuses and match keys are keyed by random GUIDs and e-mail/phone keys,
  // so HQ's working set is index pages spread over the file: a 16 MiB page cache
  // (SQLite's default is 2 MiB) keeps them in memory for backlogs of ~100k customers.
  TS_RETURN_IF_ERROR(db->exec("PRAGMA cache_size = -16384"));
  TS_RETURN_IF_ERROR(db->exec("PRAGMA wal_autocheckpoint = 8192"));
  TS_ASSIGN_OR_RETURN(auto epoch, meta_get(*db, "epoch"));
  TS_ASSIGN_OR_RETURN(auto prefix, meta_get(*db, "number_prefix"));
  if (!epoch || !prefix)
    return Status(Code::not_a_tillsync_database, path + ": HQ settings are missing");
  return std::unique_ptr<HqStore>(
      std::make_unique<SqliteHqStore>(std::move(db), std::move(*epoch), std::move(*prefix)));
}

}  // namespace tillsync
