#include "log_retention.h"

#include <algorithm>

#include "node_schema.h"
#include "tillsync/clock.h"
#include "tillsync/storage/change_log.h"

namespace tillsync::log_retention {
namespace {

// The first column of the first row of `sql` with ?1 = a (NULL or no row: nullopt).
Result<std::optional<std::int64_t>> query_int(storage::Database& db, std::string_view sql, std::int64_t a) {
  TS_ASSIGN_OR_RETURN(auto st, db.prepare(sql));
  st.bind(1, a);
  TS_ASSIGN_OR_RETURN(bool row, st.step());
  if (!row || st.column_is_null(0)) return std::optional<std::int64_t>{};
  return std::optional<std::int64_t>{st.column_int64(0)};
}

std::string seqs(std::int64_t from, std::int64_t to) {
  return from == to ? "seq " + std::to_string(from) : "seqs " + std::to_string(from) + ".." + std::to_string(to);
}

}  // namespace

Status forget_acks_after(storage::Transaction& txn, std::int64_t acked) {
  // A mark beyond the cursor belongs to acknowledgements of a database HQ no longer has
  // (restored): rows acknowledged again later count from then.
  TS_ASSIGN_OR_RETURN(auto forget, txn.db().prepare("DELETE FROM log_acks WHERE seq > ?1"));
  forget.bind(1, acked);
  return forget.run();
}

Status note_ack(storage::Transaction& txn, std::int64_t acked, std::int64_t now_ms) {
  storage::Database& db = txn.db();
  TS_RETURN_IF_ERROR(forget_acks_after(txn, acked));
  TS_ASSIGN_OR_RETURN(auto retention, node_db::log_retention(db));
  if (!retention || acked <= 0) return Status::Ok();
  TS_ASSIGN_OR_RETURN(auto newest, db.prepare("SELECT seq, at_ms FROM log_acks ORDER BY seq DESC LIMIT 1"));
  TS_ASSIGN_OR_RETURN(bool any, newest.step());
  if (any) {
    if (newest.column_int64(0) >= acked) return Status::Ok();  // acknowledged already then
    // One mark per stretch: a later acknowledgement in it is marked by the next one
    // after it, which only keeps rows longer.
    const std::int64_t step = std::min(kMaxAckMarkStepMs, *retention / 10);
    if (newest.column_int64(1) > now_ms - step) return Status::Ok();
  }
  TS_ASSIGN_OR_RETURN(auto put, db.prepare("INSERT OR REPLACE INTO log_acks(seq, at_ms) VALUES(?1, ?2)"));
  put.bind(1, acked).bind(2, now_ms);
  return put.run();
}

Status start(storage::Transaction& txn, std::int64_t now_ms) {
  TS_ASSIGN_OR_RETURN(std::int64_t acked, node_db::get_int(txn.db(), node_db::key::acked_seq, 0));
  if (acked <= 0) return Status::Ok();
  TS_ASSIGN_OR_RETURN(auto put, txn.db().prepare("INSERT OR IGNORE INTO log_acks(seq, at_ms) VALUES(?1, ?2)"));
  put.bind(1, acked).bind(2, now_ms);
  return put.run();
}

Status stop(storage::Transaction& txn) { return txn.db().exec("DELETE FROM log_acks"); }

Result<Compaction> compact(storage::Database& db, std::int64_t now_ms, std::size_t limit) {
  Compaction out;
  TS_ASSIGN_OR_RETURN(out.through, node_db::get_int(db, node_db::key::log_compacted_through, 0));
  TS_ASSIGN_OR_RETURN(auto retention, node_db::log_retention(db));
  if (!retention || limit == 0) return out;
  const std::int64_t horizon = now_ms - *retention;
  TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(db));
  TS_ASSIGN_OR_RETURN(std::int64_t acked, node_db::get_int(db, node_db::key::acked_seq, 0));
  if (acked <= 0) return out;
  // How far HQ had acknowledged the log `retention` ago.
  TS_ASSIGN_OR_RETURN(auto held_since, query_int(db, "SELECT max(seq) FROM log_acks WHERE at_ms <= ?1", horizon));
  if (!held_since) return out;
  // The newest row at or below the cursor stays: hello and the next push name it.
  TS_ASSIGN_OR_RETURN(auto keep, query_int(db, "SELECT max(seq) FROM change_log WHERE seq <= ?1", acked));
  if (!keep) return out;
  const std::int64_t bound = std::min({*held_since, acked, *keep - 1});
  // The longest prefix of rows up to `bound` written before the horizon: the log stays
  // one stretch of seqs (HLCs grow along the log; a row stamped later stops the pass).
  std::int64_t cut = 0;
  {
    TS_ASSIGN_OR_RETURN(auto rows, db.prepare("SELECT seq, hlc FROM change_log WHERE seq <= ?1 ORDER BY seq LIMIT ?2"));
    rows.bind(1, bound).bind(2, static_cast<std::int64_t>(limit));
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, rows.step());
      if (!row) break;
      const Hlc hlc{static_cast<std::uint64_t>(rows.column_int64(1))};
      if (static_cast<std::int64_t>(std::min<std::uint64_t>(hlc.millis(), kLatestSaneHlcMs)) > horizon) break;
      cut = rows.column_int64(0);
    }
  }
  // Marks older than the one in use are never needed again.
  TS_ASSIGN_OR_RETURN(auto prune, db.prepare("DELETE FROM log_acks WHERE seq < ?1"));
  prune.bind(1, *held_since);
  TS_RETURN_IF_ERROR(prune.run());
  if (cut > 0) {
    storage::ChangeLog log(db);
    TS_ASSIGN_OR_RETURN(out.removed, log.remove_through(txn, cut));
    out.through = std::max(out.through, cut);
    TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::log_compacted_through, out.through));
    TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::log_compacted_at, now_ms));
  }
  TS_RETURN_IF_ERROR(txn.commit());
  return out;
}

Result<std::string> note_hq_cursor(storage::Transaction& txn, std::int64_t hq_cursor, std::int64_t now_ms) {
  storage::Database& db = txn.db();
  TS_ASSIGN_OR_RETURN(std::int64_t through, node_db::get_int(db, node_db::key::log_compacted_through, 0));
  if (hq_cursor >= through) return std::string();
  const std::int64_t from = std::max<std::int64_t>(hq_cursor, 0) + 1;
  TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::log_lost_from, from));
  TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::log_lost_to, through));
  TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::log_lost_at, now_ms));
  TS_ASSIGN_OR_RETURN(auto first, query_int(db, "SELECT min(seq) FROM change_log WHERE seq > ?1", 0));
  return "HQ holds this terminal's operations only up to seq " + std::to_string(hq_cursor) +
         ", and this terminal's log no longer holds " + seqs(from, through) +
         ": compacted by the log retention after an earlier HQ database had acknowledged them (HQ was "
         "restored from a backup older than the retention, or replaced). HQ lacks those operations for good "
         "unless it is restored from a newer backup; the operations the log holds" +
         (first ? " (from seq " + std::to_string(*first) + ")" : std::string()) + " are pushed again";
}

Result<Extent> extent(storage::Database& db) {
  Extent e;
  TS_ASSIGN_OR_RETURN(auto st, db.prepare("SELECT min(seq), max(seq), count(*) FROM change_log"));
  TS_ASSIGN_OR_RETURN(bool row, st.step());
  if (row && !st.column_is_null(0)) {
    e.first_seq = st.column_int64(0);
    e.last_seq = st.column_int64(1);
    e.rows = st.column_int64(2);
  }
  TS_ASSIGN_OR_RETURN(e.compacted_through, node_db::get_int(db, node_db::key::log_compacted_through, 0));
  TS_ASSIGN_OR_RETURN(std::int64_t compacted_at, node_db::get_int(db, node_db::key::log_compacted_at, 0));
  if (compacted_at > 0) e.compacted_at_ms = compacted_at;
  TS_ASSIGN_OR_RETURN(e.lost_from, node_db::get_int(db, node_db::key::log_lost_from, 0));
  TS_ASSIGN_OR_RETURN(e.lost_to, node_db::get_int(db, node_db::key::log_lost_to, 0));
  TS_ASSIGN_OR_RETURN(std::int64_t lost_at, node_db::get_int(db, node_db::key::log_lost_at, 0));
  if (lost_at > 0) e.lost_at_ms = lost_at;
  return e;
}

}  // namespace tillsync::log_retention
