#include "node_schema.h"

#include <array>
#include <string>

#include "customer_table.h"
#include "tillsync/storage/change_log.h"

namespace tillsync::node_db {
namespace {

constexpr std::string_view kMetaSchema = R"sql(
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
CREATE TABLE default_affiliations (
  position INTEGER PRIMARY KEY,
  name     TEXT NOT NULL
) STRICT;
)sql";

const std::string& v1_sql() {
  static const std::string sql = std::string(kMetaSchema) + std::string(kCustomerSchema) +
                                 std::string(storage::ChangeLog::kSchema);
  return sql;
}

// Profile and default-customer settings, by key.
struct BoolSetting {
  std::string_view key;
  bool FunctionalityProfile::*member;
};
constexpr std::array<BoolSetting, 5> kProfile{{
    {"async_customer_creation", &FunctionalityProfile::async_customer_creation},
    {"filter_shared_customer_tables", &FunctionalityProfile::filter_shared_customer_tables},
    {"enhanced_async_customer", &FunctionalityProfile::enhanced_async_customer},
    {"async_customer_addresses", &FunctionalityProfile::async_customer_addresses},
    {"async_customer_edits", &FunctionalityProfile::async_customer_edits},
}};

struct TextSetting {
  std::string_view key;
  std::string DefaultCustomer::*member;
};
constexpr std::array<TextSetting, 5> kDefaults{{
    {"default.customer_group", &DefaultCustomer::customer_group},
    {"default.receipt_option", &DefaultCustomer::receipt_option},
    {"default.receipt_email", &DefaultCustomer::receipt_email},
    {"default.currency", &DefaultCustomer::currency},
    {"default.language", &DefaultCustomer::language},
}};

}  // namespace

const storage::SchemaSpec& schema() {
  static const std::array<storage::Migration, 6> migrations{{
      {1, "terminal: settings, customer replica, change log", v1_sql()},
      {2, "terminal: GUIDs HQ merged into other customers", R"sql(
CREATE TABLE guid_aliases (
  alias  BLOB PRIMARY KEY,
  target BLOB NOT NULL
) STRICT;
)sql"},
      // A customer from HQ's feed this terminal could not store (it breaks a local
      // rule: a GUID or number another local record holds, a value validation refuses)
      // is kept here, and the pull goes on; a later entry of the customer that applies
      // replaces it.
      // Real-time requests whose answer did not come (state 'unknown'), settled with HQ
      // at the next contact, and those settled lately ('done', 'failed'), kept a day so
      // that a cashier repeating the same thing is recognised (`content`). And the log
      // rows of writes HQ carried out through the real-time service: a pulled customer
      // already includes them, so they are not re-applied on top of it.
      {3, "terminal: feed entries set aside; real-time requests", R"sql(
CREATE TABLE set_aside (
  customer BLOB PRIMARY KEY,
  payload  BLOB NOT NULL,
  error    TEXT NOT NULL,
  at_ms    INTEGER NOT NULL
) STRICT;
CREATE TABLE rts_requests (
  request  BLOB PRIMARY KEY,
  kind     INTEGER NOT NULL,
  customer BLOB NOT NULL,
  content  BLOB NOT NULL,
  payload  BLOB NOT NULL,
  state    TEXT NOT NULL,
  note     TEXT NOT NULL,
  at_ms    INTEGER NOT NULL
) STRICT;
CREATE INDEX rts_requests_content ON rts_requests(content);
CREATE TABLE rts_applied (
  op_id BLOB PRIMARY KEY
) STRICT;
)sql"},
      // A filtered terminal's GUID that HQ merged into another store's customer: the
      // account number it now names (that customer's data is not sent, D5).
      {4, "terminal: account numbers of GUIDs merged into another store's customers", R"sql(
ALTER TABLE guid_aliases ADD COLUMN account_number TEXT;
)sql"},
      // Log retention: when HQ acknowledged this log up to a seq (a few rows: one per
      // stretch of a tenth of the retention), so that only rows HQ has held for longer
      // than the retention are compacted (docs/operations.md, *Log retention*).
      {5, "terminal: when HQ acknowledged the change log (log retention)", R"sql(
CREATE TABLE log_acks (
  seq   INTEGER PRIMARY KEY,
  at_ms INTEGER NOT NULL
) STRICT;
)sql"},
      // The account number a merged GUID had (hq merge-customers): the old account
      // number, on a loyalty card or a receipt, still names the customer it joined.
      {6, "terminal: account numbers of customers HQ merged into others", R"sql(
ALTER TABLE guid_aliases ADD COLUMN alias_account TEXT;
CREATE INDEX guid_aliases_account ON guid_aliases(alias_account) WHERE alias_account IS NOT NULL;
)sql"},
  }};
  static const storage::SchemaSpec spec{kApplicationId, "terminal", migrations};
  return spec;
}

Result<std::optional<std::string>> get(storage::Database& db, std::string_view key) {
  TS_ASSIGN_OR_RETURN(auto st, db.prepare("SELECT value FROM meta WHERE key = ?1"));
  st.bind(1, key);
  TS_ASSIGN_OR_RETURN(bool row, st.step());
  if (!row) return std::optional<std::string>{};
  return std::optional<std::string>{st.column_text(0)};
}

Result<std::int64_t> get_int(storage::Database& db, std::string_view key, std::int64_t fallback) {
  TS_ASSIGN_OR_RETURN(auto v, get(db, key));
  if (!v) return fallback;
  try {
    return static_cast<std::int64_t>(std::stoll(*v));
  } catch (const std::exception&) {
    return Status::Internal("setting " + std::string(key) + " is not a number: " + *v);
  }
}

Status put(storage::Transaction& txn, std::string_view key, std::string_view value) {
  TS_ASSIGN_OR_RETURN(auto st, txn.db().prepare(
      "INSERT INTO meta(key, value) VALUES(?1, ?2) "
      "ON CONFLICT(key) DO UPDATE SET value = excluded.value"));
  st.bind(1, key).bind(2, value);
  return st.run();
}

Status put_int(storage::Transaction& txn, std::string_view key, std::int64_t value) {
  return put(txn, key, std::to_string(value));
}

Status set_aside(storage::Transaction& txn, const Customer& c, std::string_view why, std::int64_t at_ms) {
  TS_ASSIGN_OR_RETURN(auto st, txn.db().prepare(
      "INSERT INTO set_aside(customer, payload, error, at_ms) VALUES(?1, ?2, ?3, ?4) "
      "ON CONFLICT(customer) DO UPDATE SET payload = excluded.payload, error = excluded.error, "
      "at_ms = excluded.at_ms"));
  st.bind_blob(1, c.guid.raw()).bind_blob(2, encode_customer(c)).bind(3, why).bind(4, at_ms);
  return st.run();
}

Result<std::optional<std::int64_t>> log_retention(storage::Database& db) {
  TS_ASSIGN_OR_RETURN(auto v, get(db, key::log_retention_ms));
  if (!v || v->empty()) return std::optional<std::int64_t>{};
  TS_ASSIGN_OR_RETURN(std::int64_t ms, get_int(db, key::log_retention_ms, 0));
  return std::optional<std::int64_t>{ms};
}

Status write_config(storage::Transaction& txn, const NodeConfig& config) {
  TS_RETURN_IF_ERROR(put(txn, "store_id", config.store_id));
  TS_RETURN_IF_ERROR(put(txn, "terminal_id", config.terminal_id));
  TS_RETURN_IF_ERROR(put(txn, "hq_endpoint", config.hq_endpoint.value_or("")));
  TS_RETURN_IF_ERROR(put_int(txn, "rts_timeout_ms", config.rts_timeout_ms));
  TS_RETURN_IF_ERROR(put(txn, "curve.key_dir", config.key_dir.value_or("")));
  TS_RETURN_IF_ERROR(put(txn, "curve.hq_public_key", config.hq_public_key.value_or("")));
  TS_RETURN_IF_ERROR(put(txn, key::log_retention_ms,
                         config.log_retention_ms ? std::to_string(*config.log_retention_ms) : std::string()));
  for (const auto& s : kProfile) TS_RETURN_IF_ERROR(put(txn, s.key, config.profile.*s.member ? "1" : "0"));
  TS_RETURN_IF_ERROR(put(txn, "default.type", to_string(config.default_customer.type)));
  for (const auto& s : kDefaults) TS_RETURN_IF_ERROR(put(txn, s.key, config.default_customer.*s.member));
  TS_RETURN_IF_ERROR(txn.db().exec("DELETE FROM default_affiliations"));
  std::int64_t pos = 0;
  for (const auto& a : config.default_customer.affiliations) {
    TS_ASSIGN_OR_RETURN(auto st, txn.db().prepare(
        "INSERT INTO default_affiliations(position, name) VALUES(?1, ?2)"));
    st.bind(1, pos++).bind(2, std::string_view(a));
    TS_RETURN_IF_ERROR(st.run());
  }
  return Status::Ok();
}

Result<NodeConfig> read_config(storage::Database& db) {
  NodeConfig c;
  auto text = [&](std::string_view key) -> Result<std::string> {
    TS_ASSIGN_OR_RETURN(auto v, get(db, key));
    if (!v) return Status(Code::not_a_tillsync_database,
                          db.path() + ": terminal setting " + std::string(key) + " is missing");
    return *v;
  };
  TS_ASSIGN_OR_RETURN(c.store_id, text("store_id"));
  TS_ASSIGN_OR_RETURN(c.terminal_id, text("terminal_id"));
  TS_ASSIGN_OR_RETURN(std::string hq, text("hq_endpoint"));
  if (!hq.empty()) c.hq_endpoint = hq;
  TS_ASSIGN_OR_RETURN(std::int64_t timeout, get_int(db, "rts_timeout_ms", 2000));
  c.rts_timeout_ms = static_cast<int>(timeout);
  // Optional (databases made before CurveZMQ support have neither).
  TS_ASSIGN_OR_RETURN(auto key_dir, get(db, "curve.key_dir"));
  if (key_dir && !key_dir->empty()) c.key_dir = *key_dir;
  TS_ASSIGN_OR_RETURN(auto hq_key, get(db, "curve.hq_public_key"));
  if (hq_key && !hq_key->empty()) c.hq_public_key = *hq_key;
  // Optional (databases made before log retention keep their whole log).
  TS_ASSIGN_OR_RETURN(c.log_retention_ms, log_retention(db));
  for (const auto& s : kProfile) {
    TS_ASSIGN_OR_RETURN(std::string v, text(s.key));
    c.profile.*s.member = v == "1";
  }
  TS_ASSIGN_OR_RETURN(std::string type, text("default.type"));
  c.default_customer.type = parse_customer_type(type).value_or(CustomerType::person);
  for (const auto& s : kDefaults) {
    TS_ASSIGN_OR_RETURN(c.default_customer.*s.member, text(s.key));
  }
  TS_ASSIGN_OR_RETURN(auto st, db.prepare("SELECT name FROM default_affiliations ORDER BY position"));
  for (;;) {
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) break;
    c.default_customer.affiliations.push_back(st.column_text(0));
  }
  return c;
}

}  // namespace tillsync::node_db
