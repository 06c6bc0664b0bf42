// The terminal database: schema (numbered migrations) and its key/value settings
// (node configuration, functionality profile, default customer, replication state).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tillsync/channel_node.h"
#include "tillsync/status.h"
#include "tillsync/storage/database.h"
#include "tillsync/storage/schema.h"

namespace tillsync::node_db {

// PRAGMA application_id of terminal databases: "TSYT".
inline constexpr std::uint32_t kApplicationId = 0x54535954;

const storage::SchemaSpec& schema();

// Keys of replication/bookkeeping state in the `meta` table.
namespace key {
inline constexpr std::string_view hlc = "hlc_last";
inline constexpr std::string_view acked_seq = "acked_seq";
inline constexpr std::string_view pulled_seq = "pulled_seq";
inline constexpr std::string_view pulled_mark = "pulled_mark";  // HQ's mark of pulled_seq
// 1 while this terminal's customer versions may be another HQ database's (HQ went back
// or was replaced) and it has not pulled HQ's state again.
inline constexpr std::string_view versions_unsure = "versions_unsure";
// What the last recovery from a restore did ("" when none): shown by `store status`.
inline constexpr std::string_view last_recovery = "last_recovery";
inline constexpr std::string_view online = "online";
inline constexpr std::string_view last_sync_at = "last_sync_at_ms";
inline constexpr std::string_view last_error = "last_error";
// The last contact that found HQ unreachable (cleared when HQ answers): when (ms), and
// why when the link could tell: a stable word (UnreachableCause::reason, "" when
// unknown) and a short explanation.
inline constexpr std::string_view unreachable_at = "unreachable_at_ms";
inline constexpr std::string_view unreachable_reason = "unreachable_reason";
inline constexpr std::string_view unreachable_detail = "unreachable_detail";
// Log retention (NodeConfig::log_retention_ms; "" or missing: keep the whole log).
inline constexpr std::string_view log_retention_ms = "log_retention_ms";
// The highest seq compaction removed (0: none), and when it last removed rows.
inline constexpr std::string_view log_compacted_through = "log_compacted_through";
inline constexpr std::string_view log_compacted_at = "log_compacted_at_ms";
// The last time HQ turned out to lack operations this log had compacted (HQ restored
// from a backup older than the retention, or replaced): the seqs, and when (0: never).
inline constexpr std::string_view log_lost_from = "log_lost_from";
inline constexpr std::string_view log_lost_to = "log_lost_to";
inline constexpr std::string_view log_lost_at = "log_lost_at_ms";
}  // namespace key

Result<std::optional<std::string>> get(storage::Database& db, std::string_view key);
Result<std::int64_t> get_int(storage::Database& db, std::string_view key, std::int64_t fallback);
Status put(storage::Transaction& txn, std::string_view key, std::string_view value);
Status put_int(storage::Transaction& txn, std::string_view key, std::int64_t value);

// Keeps a customer from HQ this terminal cannot store yet (`why`: the local rule it
// breaks) in `set_aside`, replacing an earlier entry of that customer; it is tried
// again after every pulled page.
Status set_aside(storage::Transaction& txn, const Customer& c, std::string_view why, std::int64_t at_ms);

// The log retention setting (nullopt: keep the whole log).
Result<std::optional<std::int64_t>> log_retention(storage::Database& db);

Status write_config(storage::Transaction& txn, const NodeConfig& config);
Result<NodeConfig> read_config(storage::Database& db);

}  // namespace tillsync::node_db
