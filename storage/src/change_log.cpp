#include "tillsync/storage/change_log.h"

namespace tillsync::storage {

Result<std::int64_t> ChangeLog::append(Transaction& txn, const LogRow& row) {
  if (!txn.active()) return Status::Internal("change_log append outside a transaction");
  TS_ASSIGN_OR_RETURN(std::int64_t last, last_seq());
  const std::int64_t seq = last + 1;
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
      "INSERT INTO change_log(seq, op_id, entity, kind, hlc, node_id, payload) "
      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
  st.bind(1, seq)
      .bind_blob(2, row.op_id)
      .bind_blob(3, row.entity)
      .bind(4, std::int64_t{row.kind})
      .bind(5, static_cast<std::int64_t>(row.hlc))
      .bind(6, std::string_view(row.node_id))
      .bind_blob(7, row.payload);
  TS_RETURN_IF_ERROR(st.run());
  return seq;
}

Result<std::vector<LogRow>> ChangeLog::read_after(std::int64_t after_seq, std::size_t limit) {
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
      "SELECT seq, op_id, entity, kind, hlc, node_id, payload FROM change_log "
      "WHERE seq > ?1 ORDER BY seq LIMIT ?2"));
  st.bind(1, after_seq).bind(2, static_cast<std::int64_t>(limit));
  std::vector<LogRow> rows;
  for (;;) {
    TS_ASSIGN_OR_RETURN(bool more, st.step());
    if (!more) break;
    LogRow r;
    r.seq = st.column_int64(0);
    r.op_id = st.column_blob(1);
    r.entity = st.column_blob(2);
    r.kind = static_cast<int>(st.column_int64(3));
    r.hlc = static_cast<std::uint64_t>(st.column_int64(4));
    r.node_id = st.column_text(5);
    r.payload = st.column_blob(6);
    rows.push_back(std::move(r));
  }
  return rows;
}

Result<std::int64_t> ChangeLog::renumber_after(Transaction& txn, std::int64_t after_seq, std::int64_t delta) {
  if (!txn.active()) return Status::Internal("change_log renumbering outside a transaction");
  if (delta <= 0) return Status::Internal("change_log renumbering must move rows up");
  // Rows are never updated: they are copied aside, deleted and inserted again.
  TS_RETURN_IF_ERROR(db_->exec(
      "DROP TABLE IF EXISTS temp.change_log_moved; "
      "CREATE TEMP TABLE change_log_moved AS SELECT * FROM main.change_log WHERE 0"));
  {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "INSERT INTO temp.change_log_moved SELECT * FROM main.change_log WHERE seq > ?1"));
    st.bind(1, after_seq);
    TS_RETURN_IF_ERROR(st.run());
  }
  const std::int64_t moved = db_->changes();
  {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare("DELETE FROM main.change_log WHERE seq > ?1"));
    st.bind(1, after_seq);
    TS_RETURN_IF_ERROR(st.run());
  }
  {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare(
        "INSERT INTO main.change_log(seq, op_id, entity, kind, hlc, node_id, payload) "
        "SELECT seq + ?1, op_id, entity, kind, hlc, node_id, payload FROM temp.change_log_moved "
        "ORDER BY seq"));
    st.bind(1, delta);
    TS_RETURN_IF_ERROR(st.run());
  }
  TS_RETURN_IF_ERROR(db_->exec("DROP TABLE temp.change_log_moved"));
  return moved;
}

Status ChangeLog::rewrite_payloads(Transaction& txn, const std::vector<std::pair<std::int64_t, std::string>>& payloads) {
  if (!txn.active()) return Status::Internal("change_log rewrite outside a transaction");
  // Rows are never updated: each is read, deleted and inserted again.
  for (const auto& [seq, payload] : payloads) {
    TS_ASSIGN_OR_RETURN(auto read, db_->prepare(
        "SELECT op_id, entity, kind, hlc, node_id FROM change_log WHERE seq = ?1"));
    read.bind(1, seq);
    TS_ASSIGN_OR_RETURN(bool row, read.step());
    if (!row) return Status::Internal("change_log has no row " + std::to_string(seq) + " to rewrite");
    const std::string op = read.column_blob(0), entity = read.column_blob(1), node = read.column_text(4);
    const std::int64_t kind = read.column_int64(2), hlc = read.column_int64(3);
    TS_ASSIGN_OR_RETURN(auto del, db_->prepare("DELETE FROM change_log WHERE seq = ?1"));
    del.bind(1, seq);
    TS_RETURN_IF_ERROR(del.run());
    TS_ASSIGN_OR_RETURN(auto ins, db_->prepare(
        "INSERT INTO change_log(seq, op_id, entity, kind, hlc, node_id, payload) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
    ins.bind(1, seq).bind_blob(2, op).bind_blob(3, entity).bind(4, kind).bind(5, hlc).bind(6, std::string_view(node));
    ins.bind_blob(7, payload);
    TS_RETURN_IF_ERROR(ins.run());
  }
  return Status::Ok();
}

Result<std::int64_t> ChangeLog::redact(Transaction& txn, std::string_view entity) {
  std::vector<std::pair<std::int64_t, std::string>> emptied;
  {
    TS_ASSIGN_OR_RETURN(auto st, db_->prepare("SELECT seq FROM change_log WHERE entity = ?1 AND length(payload) > 0"));
    st.bind_blob(1, entity);
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      emptied.emplace_back(st.column_int64(0), std::string());
    }
  }
  TS_RETURN_IF_ERROR(rewrite_payloads(txn, emptied));
  return static_cast<std::int64_t>(emptied.size());
}

Result<std::int64_t> ChangeLog::remove_through(Transaction& txn, std::int64_t through_seq) {
  if (!txn.active()) return Status::Internal("change_log removal outside a transaction");
  // last_seq() is max(seq): removing the newest row would let append() give its seq
  // out again, to another operation (HQ would take it for a restored log).
  TS_ASSIGN_OR_RETURN(std::int64_t last, last_seq());
  if (through_seq >= last) {
    return Status::Internal("change_log removal through seq " + std::to_string(through_seq) +
                            " would remove the newest row (" + std::to_string(last) + ")");
  }
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare("DELETE FROM change_log WHERE seq <= ?1"));
  st.bind(1, through_seq);
  TS_RETURN_IF_ERROR(st.run());
  return db_->changes();
}

Result<std::optional<std::int64_t>> ChangeLog::first_after(std::int64_t after_seq) {
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare("SELECT min(seq) FROM change_log WHERE seq > ?1"));
  st.bind(1, after_seq);
  TS_ASSIGN_OR_RETURN(bool row, st.step());
  if (!row || st.column_is_null(0)) return std::optional<std::int64_t>{};
  return std::optional<std::int64_t>{st.column_int64(0)};
}

Result<std::int64_t> ChangeLog::last_seq() {
  TS_ASSIGN_OR_RETURN(auto v, db_->query_int("SELECT max(seq) FROM change_log"));
  return v.value_or(0);
}

Result<std::int64_t> ChangeLog::count_after(std::int64_t after_seq) {
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare("SELECT count(*) FROM change_log WHERE seq > ?1"));
  st.bind(1, after_seq);
  TS_ASSIGN_OR_RETURN(bool row, st.step());
  return row ? st.column_int64(0) : 0;
}

Result<std::int64_t> ChangeLog::count_between(std::int64_t after_seq, std::int64_t up_to) {
  TS_ASSIGN_OR_RETURN(auto st, db_->prepare("SELECT count(*) FROM change_log WHERE seq > ?1 AND seq <= ?2"));
  st.bind(1, after_seq).bind(2, up_to);
  TS_ASSIGN_OR_RETURN(bool row, st.step());
  return row ? st.column_int64(0) : 0;
}

Result<std::uint64_t> ChangeLog::max_hlc() {
  // HLCs are unsigned 64-bit values stored as SQLite's signed integers: those with the
  // top bit set read back negative, yet are the largest.
  TS_ASSIGN_OR_RETURN(auto v, db_->query_int(
      "SELECT coalesce((SELECT max(hlc) FROM change_log WHERE hlc < 0), "
      "(SELECT max(hlc) FROM change_log))"));
  return static_cast<std::uint64_t>(v.value_or(0));
}

}  // namespace tillsync::storage
