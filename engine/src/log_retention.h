// Terminal log retention (DESIGN.md §3, docs/operations.md "Log retention").
//
// Opt-in (NodeConfig::log_retention_ms; by default the whole log is kept). A row of the
// change log is compacted (deleted) only when all of these hold:
//  - HQ acknowledged it (seq <= the acknowledged cursor), and not the newest row at or
//    below that cursor: `hello` and `push` name that row's op id, and it keeps the
//    log's last seq where it is;
//  - HQ acknowledged it longer than the retention ago. The log's own HLCs cannot tell
//    that (a till offline for a week pushes week-old rows today), so the terminal keeps
//    a few (seq, time) marks of its acknowledged cursor (table log_acks). Hence an HQ
//    restored from a backup younger than the retention holds every compacted row;
//  - it was written longer than the retention ago (its HLC).
// Compaction deletes a prefix of the log (seqs 1..K, "compacted through K"), bounded
// per pass. When HQ later reports a push cursor C below K (HQ restored from a backup
// older than the retention, or replaced), HQ lacks seqs C+1..K for good: the terminal
// cannot push them again. It says so (last_recovery, `store status`, the sync's
// warning) and pushes what it holds.
//
// All functions work inside the caller's transaction on the terminal's database except
// compact(), which runs one of its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "tillsync/status.h"
#include "tillsync/storage/database.h"

namespace tillsync::log_retention {

// The acknowledgement marks are kept one per stretch of a tenth of the retention, at
// most this long: a row is compacted at most that much later than it could be.
inline constexpr std::int64_t kMaxAckMarkStepMs = 10 * 60'000;

// HQ acknowledged this log up to `acked` at `now_ms` (after a push reply). Marks beyond
// `acked` are forgotten (HQ holds less than it acknowledged before). Nothing is written
// while retention is off.
Status note_ack(storage::Transaction& txn, std::int64_t acked, std::int64_t now_ms);

// HQ holds this log only up to `acked` after all: marks beyond it go.
Status forget_acks_after(storage::Transaction& txn, std::int64_t acked);

// Retention was turned on (start: rows acknowledged so far count as acknowledged now)
// or off (stop: the marks go).
Status start(storage::Transaction& txn, std::int64_t now_ms);
Status stop(storage::Transaction& txn);

struct Compaction {
  std::int64_t removed = 0;  // rows deleted by this pass
  std::int64_t through = 0;  // the log is compacted through this seq (0: never)
};

// One pass: deletes at most `limit` rows, in one transaction. Nothing while retention
// is off.
Result<Compaction> compact(storage::Database& db, std::int64_t now_ms, std::size_t limit);

// HQ reported a push cursor of `hq_cursor` for this node. When that is below what the
// log compacted, HQ lacks those operations for good: recorded (`store status`) and
// described in the returned text (empty when HQ lacks nothing compacted).
Result<std::string> note_hq_cursor(storage::Transaction& txn, std::int64_t hq_cursor, std::int64_t now_ms);

// What the log holds, for `store status` and `store export-log`.
struct Extent {
  std::int64_t first_seq = 0;  // lowest seq held (0: the log is empty)
  std::int64_t last_seq = 0;
  std::int64_t rows = 0;
  std::int64_t compacted_through = 0;  // 0: nothing compacted
  std::optional<std::int64_t> compacted_at_ms;
  // The last time HQ lacked compacted operations (lost_from..lost_to), and when.
  std::int64_t lost_from = 0, lost_to = 0;
  std::optional<std::int64_t> lost_at_ms;
};
Result<Extent> extent(storage::Database& db);

}  // namespace tillsync::log_retention
