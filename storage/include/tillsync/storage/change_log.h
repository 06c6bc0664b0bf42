// The append-only change log table of a node.
//
// Rows are (seq, op_id, entity, kind, hlc, node_id, payload). `seq` increases from 1,
// densely except where renumber_after() moved a suffix; rows are never updated (a
// trigger refuses UPDATE) except by the recoveries from restores and by an erasure,
// which delete and insert them again (renumber_after, rewrite_payloads, redact). A prefix may be deleted
// (remove_through: the opt-in log retention), never the newest row, so a seq is never
// given out twice. Appends take the caller's open Transaction so that a domain
// change and its log row commit together.
// Thread-safety: as the Database it borrows.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tillsync/status.h"
#include "tillsync/storage/database.h"

namespace tillsync::storage {

struct LogRow {
  std::int64_t seq = 0;
  std::string op_id;   // 16 raw bytes
  std::string entity;  // 16 raw bytes
  int kind = 0;
  std::uint64_t hlc = 0;
  std::string node_id;
  std::string payload;
};

class ChangeLog {
 public:
  // DDL of the table; include it in a schema migration.
  static constexpr std::string_view kSchema = R"sql(
CREATE TABLE change_log (
  seq     INTEGER PRIMARY KEY,
  op_id   BLOB    NOT NULL UNIQUE,
  entity  BLOB    NOT NULL,
  kind    INTEGER NOT NULL,
  hlc     INTEGER NOT NULL,
  node_id TEXT    NOT NULL,
  payload BLOB    NOT NULL
) STRICT;
CREATE INDEX change_log_entity ON change_log(entity);
CREATE TRIGGER change_log_append_only BEFORE UPDATE ON change_log
BEGIN SELECT RAISE(ABORT, 'change_log is append-only'); END;
)sql";

  explicit ChangeLog(Database& db) : db_(&db) {}

  // Appends `row` with seq = last_seq() + 1 (row.seq is ignored) and returns that seq.
  Result<std::int64_t> append(Transaction& txn, const LogRow& row);
  // Up to `limit` rows with seq > after_seq, in seq order.
  Result<std::vector<LogRow>> read_after(std::int64_t after_seq, std::size_t limit);
  // Moves every row with seq > after_seq up by `delta` (> 0), keeping op ids, order and
  // content: the recovery of a log whose seqs another copy of this node already used
  // at HQ (docs/protocol.md). Returns how many rows moved.
  Result<std::int64_t> renumber_after(Transaction& txn, std::int64_t after_seq, std::int64_t delta);
  // Replaces the payloads of the rows at the given seqs, keeping everything else (the
  // recovery that drops base versions of another HQ database, docs/protocol.md).
  Status rewrite_payloads(Transaction& txn, const std::vector<std::pair<std::int64_t, std::string>>& payloads);
  // Empties the payload of every row about `entity` (the right to erasure: the rows keep
  // their place, seq, op id and kind, not their content). Returns how many it emptied.
  Result<std::int64_t> redact(Transaction& txn, std::string_view entity);
  // Deletes every row with seq <= through_seq (a prefix: the log retention compacts
  // what HQ acknowledged). The newest row is never deleted: a call that would delete it
  // deletes nothing and fails, so last_seq() never goes back and append() never gives
  // a seq out twice. Returns how many rows were deleted.
  Result<std::int64_t> remove_through(Transaction& txn, std::int64_t through_seq);
  // Lowest seq above after_seq (nullopt when none).
  Result<std::optional<std::int64_t>> first_after(std::int64_t after_seq);
  // Highest seq ever appended (0 when empty): the newest row is never removed.
  Result<std::int64_t> last_seq();
  Result<std::int64_t> count_after(std::int64_t after_seq);
  // Rows with after_seq < seq <= up_to (a range scan of the primary key).
  Result<std::int64_t> count_between(std::int64_t after_seq, std::int64_t up_to);
  // Highest HLC in the log (0 when empty): lets a clock resume after a restart.
  Result<std::uint64_t> max_hlc();

 private:
  Database* db_;
};

}  // namespace tillsync::storage
