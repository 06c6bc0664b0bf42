#include "tillsync/replicator.h"

#include <algorithm>
#include <deque>

#include "apply.h"
#include "customer_table.h"
#include "log_retention.h"
#include "node_schema.h"
#include "tillsync/crash_point.h"
#include "tillsync/headquarters.h"
#include "tillsync/storage/change_log.h"
#include "tillsync/storage/database.h"
#include "tillsync/validation.h"

namespace tillsync {
namespace {

constexpr std::string_view kEpochKey = "hq_epoch";

Result<LogRecord> to_record(storage::LogRow r) {
  auto op = Guid::from_raw(r.op_id);
  auto entity = Guid::from_raw(r.entity);
  auto kind = op_kind_from_int(r.kind);
  if (!op || !entity || !kind)
    return Status::CorruptLog("change log row " + std::to_string(r.seq) + " is malformed");
  LogRecord rec;
  rec.seq = r.seq;
  rec.op_id = *op;
  rec.entity = *entity;
  rec.kind = *kind;
  rec.hlc = Hlc{r.hlc};
  rec.node_id = std::move(r.node_id);
  rec.payload = std::move(r.payload);
  return rec;
}

}  // namespace

struct Replicator::Impl {
  std::unique_ptr<storage::Database> db;
  HqLink* hq;
  ReplicatorOptions options;
  NodeConfig config;
  PhysicalClock* clock;
  // The recoveries noted since this sync (or push_all/pull_all call) began: one sync
  // may recover on both sides (HQ restored: push again, pull again) and find compacted
  // operations HQ lacks; last_recovery keeps them all, not only the last.
  std::string sync_note;
  // What this sync found HQ lacks of the compacted log (SyncReport::warning).
  std::string warning;

  Result<std::int64_t> meta_int(std::string_view key) { return node_db::get_int(*db, key, 0); }

  // A different epoch means HQ's database was replaced: both cursors start over, so
  // everything is pushed again (HQ is idempotent) and the feed is re-pulled.
  Status adopt_epoch(storage::Transaction& txn, const std::string& epoch) {
    TS_ASSIGN_OR_RETURN(auto known, node_db::get(*db, kEpochKey));
    if (known && *known == epoch) return Status::Ok();
    if (known) {
      TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::pulled_seq, 0));
      TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::pulled_mark, 0));
      TS_RETURN_IF_ERROR(lower_acked(txn, 0));
      TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::versions_unsure, 1));
      TS_RETURN_IF_ERROR(forget_merges());
      TS_RETURN_IF_ERROR(note_recovery(txn, "HQ's database was replaced (new epoch " + epoch +
                                                "): everything is pushed and pulled again"));
    }
    return node_db::put(txn, kEpochKey, epoch);
  }

  // The GUIDs HQ merged into other customers are learnt again from the feed when the
  // terminal pulls it from the start (merge entries are never compacted): an HQ that
  // went back may not have made a merge this terminal heard of (an operator's merge
  // after HQ's backup), and the merged customer is then its own again.
  Status forget_merges() { return db->exec("DELETE FROM guid_aliases"); }

  // HQ holds less of this log than it acknowledged (restored, replaced): the terminal
  // pushes again from `acked`, and what HQ acknowledges then counts for the log
  // retention from then on.
  Status lower_acked(storage::Transaction& txn, std::int64_t acked) {
    TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::acked_seq, acked));
    return log_retention::forget_acks_after(txn, acked);
  }

  Status note_recovery(storage::Transaction& txn, const std::string& what) {
    if (sync_note.find(what) == std::string::npos) sync_note = sync_note.empty() ? what : sync_note + "; " + what;
    return node_db::put(txn, node_db::key::last_recovery, sync_note);
  }

  // HQ just reported its push cursor for this node. Below what the log retention
  // compacted, HQ lacks those operations for good (restored from a backup older than
  // the retention, or replaced): this terminal cannot push them again, so it says so
  // (last_recovery, `store status`, the sync's warning) and pushes what it holds. HQ
  // never sees a gap: a push's `prev` tells it the terminal holds nothing between.
  // What those operations wrote stays in this terminal's copies only, unlike HQ and every
  // other terminal: the feed is pulled again from the start, so HQ's state replaces them
  // (HQ may even have rebuilt the same feed entries up to this terminal's position).
  Status check_compacted(storage::Transaction& txn, std::int64_t hq_cursor) {
    TS_ASSIGN_OR_RETURN(std::string lost, log_retention::note_hq_cursor(txn, hq_cursor, clock->now_ms()));
    if (lost.empty()) return Status::Ok();
    warning = lost;
    TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::pulled_seq, 0));
    TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::pulled_mark, 0));
    return note_recovery(txn, lost + "; this terminal's copies are pulled again from HQ");
  }

  // Later local writes order after everything HQ had applied (causality for
  // last-writer-wins): the node's persisted clock resumes above HQ's reading.
  Status merge_hq_clock(storage::Transaction& txn, Hlc hq_hlc) {
    hq_hlc = bounded(hq_hlc, 0, kLatestSaneHlcMs);
    TS_ASSIGN_OR_RETURN(std::int64_t hlc, meta_int(node_db::key::hlc));
    if (static_cast<std::int64_t>(hq_hlc.value) > hlc)
      TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::hlc, static_cast<std::int64_t>(hq_hlc.value)));
    return Status::Ok();
  }

  // The start of a sync: HQ's epoch, how much of this node's log HQ holds, HQ's clock.
  // HQ holding less than this terminal recorded as acknowledged means HQ's database is
  // older than its acknowledgements (restored from a backup, same epoch): the terminal
  // pushes again from HQ's cursor.
  //
  // HQ holding enough is not HQ holding ours: after HQ went back and took another copy
  // of this node's operations, and this terminal went back too (both restored), the
  // seqs this terminal counts as acknowledged may be other operations at HQ. So hello
  // names this terminal's newest acknowledged operation; when HQ does not hold it, the
  // terminal pushes its whole log again (HQ takes what it holds as duplicates, by op
  // id, and a conflict moves the rest after its cursor).
  Status handshake() {
    TS_ASSIGN_OR_RETURN(std::int64_t acked_before, meta_int(node_db::key::acked_seq));
    TS_ASSIGN_OR_RETURN(Guid acked_op, newest_op_up_to(acked_before));
    TS_ASSIGN_OR_RETURN(HelloReply hello, hq->hello(config.node_id(), acked_op, acked_before));
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    TS_ASSIGN_OR_RETURN(auto known_epoch, node_db::get(*db, kEpochKey));
    const bool same_epoch = known_epoch && *known_epoch == hello.epoch;
    TS_RETURN_IF_ERROR(adopt_epoch(txn, hello.epoch));
    TS_ASSIGN_OR_RETURN(std::int64_t acked, meta_int(node_db::key::acked_seq));
    if (same_epoch && !hello.holds_acked && acked > 0) {
      TS_RETURN_IF_ERROR(lower_acked(txn, 0));
      TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::versions_unsure, 1));
      TS_RETURN_IF_ERROR(note_recovery(
          txn, "HQ does not hold operation " + acked_op.to_string() + " it had acknowledged (HQ and this "
               "terminal both restored from backups): the whole log is pushed again"));
    } else if (hello.push_cursor < acked) {
      TS_RETURN_IF_ERROR(lower_acked(txn, hello.push_cursor));
      TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::versions_unsure, 1));
      TS_RETURN_IF_ERROR(note_recovery(
          txn, "HQ holds this terminal's operations only up to seq " + std::to_string(hello.push_cursor) +
                   " of " + std::to_string(acked) + " acknowledged (HQ restored from a backup): pushed again"));
    }
    TS_RETURN_IF_ERROR(check_compacted(txn, hello.push_cursor));
    TS_RETURN_IF_ERROR(merge_hq_clock(txn, hello.hq_hlc));
    return txn.commit();
  }

  // HQ refused a push with `conflict`: it holds other operations of this node at seqs
  // this terminal's log uses (the terminal was restored from an older backup, or
  // re-initialised under the same node id). Those operations are HQ's to keep; this
  // terminal moves its unacknowledged operations after HQ's cursor, unchanged (op ids
  // included, so any HQ already holds stay duplicates), and pushes them from there.
  Status recover_log() {
    TS_ASSIGN_OR_RETURN(HelloReply hello, hq->hello(config.node_id(), Guid{}));
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    TS_ASSIGN_OR_RETURN(auto known, node_db::get(*db, kEpochKey));
    TS_RETURN_IF_ERROR(adopt_epoch(txn, hello.epoch));
    TS_RETURN_IF_ERROR(merge_hq_clock(txn, hello.hq_hlc));
    TS_ASSIGN_OR_RETURN(std::int64_t acked, meta_int(node_db::key::acked_seq));
    storage::ChangeLog log(*db);
    TS_ASSIGN_OR_RETURN(auto first, log.first_after(acked));
    if (known && *known == hello.epoch && first && *first <= hello.push_cursor) {
      const std::int64_t delta = hello.push_cursor + 1 - *first;
      TS_ASSIGN_OR_RETURN(std::int64_t moved, log.renumber_after(txn, acked, delta));
      TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::acked_seq, hello.push_cursor));
      TS_RETURN_IF_ERROR(note_recovery(
          txn, "HQ holds other operations of " + config.node_id() + " up to seq " +
                   std::to_string(hello.push_cursor) + " (this database was restored or re-initialised): " +
                   std::to_string(moved) + " unacknowledged operation(s) moved after them"));
    } else if (hello.push_cursor < acked) {
      TS_RETURN_IF_ERROR(lower_acked(txn, hello.push_cursor));
    }
    TS_RETURN_IF_ERROR(check_compacted(txn, hello.push_cursor));
    return txn.commit();
  }

  // The op id of this log's newest row at or below `seq` (nil when none).
  Result<Guid> newest_op_up_to(std::int64_t seq) {
    if (seq <= 0) return Guid{};
    TS_ASSIGN_OR_RETURN(auto st, db->prepare("SELECT op_id FROM change_log WHERE seq <= ?1 ORDER BY seq DESC LIMIT 1"));
    st.bind(1, seq);
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return Guid{};
    return Guid::from_raw(st.column_blob(0)).value_or(Guid{});
  }

  // Up to one batch of log records after `after`, within HQ's bounds of a push (records
  // and payload bytes; at least one record).
  Result<std::vector<LogRecord>> read_batch(storage::ChangeLog& log, std::int64_t after) {
    TS_ASSIGN_OR_RETURN(auto rows, log.read_after(after, std::clamp<std::size_t>(options.push_batch, 1,
                                                                                Headquarters::kMaxPushRecords)));
    std::vector<LogRecord> records;
    records.reserve(rows.size());
    std::size_t bytes = 0;
    for (auto& r : rows) {
      bytes += r.payload.size();
      if (!records.empty() && bytes > Headquarters::kMaxPushBytes) break;
      TS_ASSIGN_OR_RETURN(LogRecord rec, to_record(std::move(r)));
      records.push_back(std::move(rec));
    }
    return records;
  }

  // The op id of the log row at `seq` (nil when there is none: seq 0, or a hole left
  // by a renumbering). A push names it so that HQ can tell a batch that continues its
  // cursor from one that only continues its seq.
  Result<Guid> op_at(storage::ChangeLog& log, std::int64_t seq) {
    if (seq <= 0) return Guid{};
    TS_ASSIGN_OR_RETURN(auto rows, log.read_after(seq - 1, 1));
    if (rows.empty() || rows.front().seq != seq) return Guid{};
    TS_ASSIGN_OR_RETURN(LogRecord rec, to_record(std::move(rows.front())));
    return rec.op_id;
  }

  // Records HQ's acknowledgement (and its epoch) in the terminal's database. HQ's
  // cursor is the truth: it may be behind ours after an HQ reset (a gap), and then we
  // resend from there. It is never recorded beyond this log's last row, so that every
  // later row is pushed (HQ holding more of this node is met by the conflict check).
  //
  // With log retention on, when HQ acknowledged how far is noted too (log_retention.h);
  // and an acknowledgement below what the log compacted (HQ's cursor, after a gap)
  // means HQ lacks those operations.
  Status save_ack(const PushReply& reply, std::int64_t last) {
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    TS_RETURN_IF_ERROR(adopt_epoch(txn, reply.epoch));
    TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::acked_seq, std::min(reply.acked_seq, last)));
    TS_RETURN_IF_ERROR(log_retention::note_ack(txn, std::min(reply.acked_seq, last), clock->now_ms()));
    TS_RETURN_IF_ERROR(check_compacted(txn, reply.acked_seq));
    // Acknowledged rows are never rebased again: their real-time marks can go.
    TS_ASSIGN_OR_RETURN(auto st, db->prepare(
        "DELETE FROM rts_applied WHERE EXISTS (SELECT 1 FROM change_log c "
        "WHERE c.op_id = rts_applied.op_id AND c.seq <= ?1)"));
    st.bind(1, std::min(reply.acked_seq, last));
    TS_RETURN_IF_ERROR(st.run());
    crash_point("node.ack.before_commit");
    return txn.commit();
  }

  // Pushes everything after HQ's cursor with up to kPushWindow batches in flight, so
  // HQ finds the next batch waiting when it has committed one. While HQ works, the
  // terminal reads and sends the next batch (guessing that HQ takes the earlier ones
  // whole) and records the previous acknowledgement (a durable commit). When HQ
  // acknowledges less than a batch, the batches after it are drained and the terminal
  // resends from HQ's cursor. An acknowledgement not yet recorded when the terminal
  // stops is only a resend next time: HQ is idempotent. A `conflict` (HQ holds other
  // operations of this node at our seqs) is recovered from once per call.
  static constexpr std::size_t kPushWindow = 2;

  Result<std::int64_t> push_all() {
    for (int attempt = 1;; ++attempt) {
      std::deque<std::int64_t> in_flight;  // last seq of each batch sent, oldest first
      auto pushed = push_window(in_flight);
      // After an error, the replies to batches still in flight are read and dropped, so
      // none of them is taken for the reply to a later request.
      for (; !in_flight.empty(); in_flight.pop_front()) (void)hq->finish_push();
      if (pushed.ok() || pushed.status().code() != Code::conflict || attempt == 3) return pushed;
      TS_RETURN_IF_ERROR(recover_log());
    }
  }

  Result<std::int64_t> push_window(std::deque<std::int64_t>& in_flight) {
    storage::ChangeLog log(*db);
    std::int64_t pushed = 0;
    int stalled = 0;
    TS_ASSIGN_OR_RETURN(std::int64_t acked, meta_int(node_db::key::acked_seq));
    TS_ASSIGN_OR_RETURN(std::int64_t last, log.last_seq());
    std::optional<PushReply> unsaved;      // HQ's last reply, not yet recorded here
    std::int64_t sent_up_to = acked;       // the next batch starts after this seq
    TS_ASSIGN_OR_RETURN(Guid sent_op, op_at(log, sent_up_to));  // the row at sent_up_to
    bool resending = false;                // HQ took less: drain, then resend from its cursor
    // Every way out records HQ's last reply first.
    auto leave = [&](Status s) -> Status {
      if (unsaved) {
        Status saved = save_ack(*unsaved, last);
        if (!saved.ok() && s.ok()) s = saved;
      }
      return s;
    };
    for (;;) {
      while (!resending && in_flight.size() < kPushWindow) {
        auto records = read_batch(log, sent_up_to);
        if (!records.ok()) return leave(records.status());
        if (records->empty()) break;
        last = std::max(last, records->back().seq);
        TS_RETURN_IF_ERROR(leave(hq->start_push(config.node_id(), sent_up_to, sent_op, *records)));
        sent_up_to = records->back().seq;
        sent_op = records->back().op_id;
        in_flight.push_back(sent_up_to);
      }
      if (in_flight.empty()) {
        TS_RETURN_IF_ERROR(leave(Status::Ok()));
        return pushed;
      }
      if (unsaved) {
        TS_RETURN_IF_ERROR(save_ack(*unsaved, last));
        unsaved.reset();
      }
      auto reply = hq->finish_push();
      const std::int64_t batch_last = in_flight.front();
      in_flight.pop_front();
      if (!reply.ok()) return reply.status();
      // A reply to a batch sent before HQ answered short (drained) does not count as a
      // stall: HQ has not seen the resend yet.
      if (reply->acked_seq > acked) {
        TS_ASSIGN_OR_RETURN(std::int64_t rows, log.count_between(acked, reply->acked_seq));
        pushed += rows;
        stalled = 0;
      } else if (!resending && ++stalled > 2) {
        TS_RETURN_IF_ERROR(save_ack(*reply, last));
        return Status::Internal("HQ does not acknowledge operations after seq " +
                                std::to_string(reply->acked_seq));
      }
      // HQ's cursor is the truth: behind what was sent (a gap, e.g. after an HQ reset),
      // everything after it is sent again once the batches in flight are answered.
      acked = std::min(reply->acked_seq, last);
      unsaved = std::move(reply).value();
      if (acked != batch_last) resending = true;
      if (resending && in_flight.empty()) {
        resending = false;
        sent_up_to = acked;
        auto op = op_at(log, sent_up_to);
        if (!op.ok()) return leave(op.status());
        sent_op = *op;
      }
    }
  }

  // Re-applies this terminal's operations HQ has not acknowledged yet on top of `c`
  // (not those HQ carried out through the real-time service: `c` includes them).
  Status rebase(Customer& c, std::int64_t acked) {
    TS_ASSIGN_OR_RETURN(auto st, db->prepare(
        "SELECT kind, payload FROM change_log WHERE entity = ?1 AND seq > ?2 AND length(payload) > 0 "
        "AND op_id NOT IN (SELECT op_id FROM rts_applied) ORDER BY seq"));
    st.bind_blob(1, c.guid.raw()).bind(2, acked);
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (!row) break;
      auto kind = op_kind_from_int(static_cast<int>(st.column_int64(0)));
      if (!kind) return Status::CorruptLog("change log row has an unknown kind");
      TS_ASSIGN_OR_RETURN(Payload p, decode_payload(*kind, st.column_blob(1)));
      Customer candidate = c;
      // A local edit HQ would refuse is left for HQ to report; it is not re-applied.
      if (apply_to_customer(candidate, p, {}, /*bump_version=*/false).ok()) c = std::move(candidate);
    }
    return Status::Ok();
  }

  // Stores one customer from HQ's feed, on top of this terminal's unacknowledged
  // operations. An entry the terminal cannot store (a GUID or number another local
  // record holds, a value validation refuses, an undecodable local operation) is set
  // aside with its error, and the pull goes on; storage failures stop the pull.
  Status apply_entry(storage::Transaction& txn, CustomerTable& customers, Customer c, std::int64_t acked) {
    const Customer as_sent = c;
    TS_RETURN_IF_ERROR(db->exec("SAVEPOINT feed_entry"));
    Status s = [&]() -> Status {
      TS_RETURN_IF_ERROR(validate_customer(c));
      TS_RETURN_IF_ERROR(rebase(c, acked));
      TS_ASSIGN_OR_RETURN(std::int64_t released, customers.upsert_from_hq(txn, c));
      (void)released;
      return Status::Ok();
    }();
    const bool set_aside = !s.ok() && s.code() != Code::internal && s.code() != Code::busy;
    if (!s.ok() && !set_aside) return s;
    if (set_aside) TS_RETURN_IF_ERROR(db->exec("ROLLBACK TO feed_entry"));
    TS_RETURN_IF_ERROR(db->exec("RELEASE feed_entry"));
    if (set_aside) return node_db::set_aside(txn, as_sent, s.to_string(), clock->now_ms());
    TS_ASSIGN_OR_RETURN(auto st, db->prepare("DELETE FROM set_aside WHERE customer = ?1"));
    st.bind_blob(1, c.guid.raw());
    return st.run();
  }

  // Entries set aside earlier are tried again after each page: what kept one out (an
  // address or contact GUID another local customer held until this page released it:
  // an identity merge, HQ going back past one) may be gone now.
  Status retry_set_aside(storage::Transaction& txn, CustomerTable& customers, std::int64_t acked) {
    std::vector<std::pair<std::string, std::string>> waiting;  // (GUID, payload)
    {
      TS_ASSIGN_OR_RETURN(auto st, db->prepare("SELECT customer, payload FROM set_aside ORDER BY at_ms, customer"));
      for (;;) {
        TS_ASSIGN_OR_RETURN(bool row, st.step());
        if (!row) break;
        waiting.emplace_back(st.column_blob(0), st.column_blob(1));
      }
    }
    for (const auto& [guid, payload] : waiting) {
      auto c = decode_customer(payload);
      if (!c.ok()) {
        TS_ASSIGN_OR_RETURN(auto del, db->prepare("DELETE FROM set_aside WHERE customer = ?1"));
        del.bind_blob(1, guid);
        TS_RETURN_IF_ERROR(del.run());
        continue;
      }
      TS_RETURN_IF_ERROR(apply_entry(txn, customers, std::move(*c), acked));
    }
    return Status::Ok();
  }

  // HQ's customer versions are its own count. After HQ went back (restored) or was
  // replaced, the versions this terminal's unacknowledged edits say their editor had
  // seen belong to another HQ database, and may even equal this one's by chance (then
  // HQ would take an edit for one that saw a write it never saw). Once the terminal has
  // pulled HQ's state again, the base versions of the edits written before are dropped
  // (0: concurrent with every other terminal's write, so the newest wins under lww).
  Status settle_versions() {
    TS_ASSIGN_OR_RETURN(std::int64_t unsure, meta_int(node_db::key::versions_unsure));
    if (unsure == 0) return Status::Ok();
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    TS_ASSIGN_OR_RETURN(std::int64_t acked, meta_int(node_db::key::acked_seq));
    storage::ChangeLog log(*db);
    std::vector<std::pair<std::int64_t, std::string>> rewritten;
    for (std::int64_t after = acked;;) {
      TS_ASSIGN_OR_RETURN(auto rows, log.read_after(after, 500));
      if (rows.empty()) break;
      for (const storage::LogRow& r : rows) {
        after = r.seq;
        if (r.payload.empty()) continue;  // redacted by an erasure
        auto kind = op_kind_from_int(r.kind);
        if (!kind) return Status::CorruptLog("change log row " + std::to_string(r.seq) + " has an unknown kind");
        TS_ASSIGN_OR_RETURN(Payload p, decode_payload(*kind, r.payload));
        bool had = false;
        std::visit([&had](auto& v) {
          if constexpr (requires { v.base_version; }) {
            had = v.base_version != 0;
            v.base_version = 0;
          }
        }, p);
        if (had) rewritten.emplace_back(r.seq, encode_payload(p));
      }
    }
    TS_RETURN_IF_ERROR(log.rewrite_payloads(txn, rewritten));
    TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::versions_unsure, 0));
    return txn.commit();
  }

  // HQ erased customer `guid` (right to erasure): its copy, the feed entry set aside
  // for it and its real-time requests go, the GUIDs merged into it stop naming it, and
  // the payloads of its operations in the change log are redacted (emptied; one not yet
  // pushed still goes to HQ, which fails it with `erased`). HQ names each GUID merged
  // into the customer in an erasure entry of its own: what this terminal believes
  // merged (learnt from a real-time answer of an HQ that has since gone back) is not
  // taken for it. Returns the rows that held its data (0 when this terminal never had
  // it).
  Result<std::int64_t> erase_local(storage::Transaction& txn, CustomerTable& customers, const Guid& guid) {
    std::int64_t held = 0;
    TS_ASSIGN_OR_RETURN(auto copy, customers.get(guid));
    if (copy) ++held;
    TS_RETURN_IF_ERROR(customers.remove(txn, guid));
    for (std::string_view sql : {"DELETE FROM guid_aliases WHERE alias = ?1 OR target = ?1",
                                 "DELETE FROM set_aside WHERE customer = ?1",
                                 "DELETE FROM rts_requests WHERE customer = ?1"}) {
      TS_ASSIGN_OR_RETURN(auto st, db->prepare(sql));
      st.bind_blob(1, guid.raw());
      TS_RETURN_IF_ERROR(st.run());
      held += db->changes();
    }
    TS_ASSIGN_OR_RETURN(std::int64_t redacted, storage::ChangeLog(*db).redact(txn, guid.raw()));
    return held + redacted;
  }

  Result<std::int64_t> pull_all() {
    std::int64_t pulled = 0;
    int resets = 0;
    for (;;) {
      TS_ASSIGN_OR_RETURN(std::int64_t after, meta_int(node_db::key::pulled_seq));
      TS_ASSIGN_OR_RETURN(std::int64_t mark, meta_int(node_db::key::pulled_mark));
      TS_ASSIGN_OR_RETURN(PullReply reply,
                          hq->pull(config.node_id(), after, static_cast<std::uint64_t>(mark),
                                   options.pull_batch, config.profile.filter_shared_customer_tables));
      TS_ASSIGN_OR_RETURN(auto known, node_db::get(*db, kEpochKey));
      if (known && *known != reply.epoch) {
        // HQ was replaced since this sync began. Feed positions of another HQ database
        // mean nothing here; the next sync pushes everything again, then pulls.
        TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
        TS_RETURN_IF_ERROR(adopt_epoch(txn, reply.epoch));
        TS_RETURN_IF_ERROR(txn.commit());
        return pulled;
      }
      if (reply.reset) {
        // Our cursor is not a position of HQ's feed: HQ's database is older than what
        // this terminal pulled (restored from a backup), or HQ compacted its feed past
        // it while this terminal was away. Everything is pulled again.
        if (++resets > 1) return Status::Internal("HQ refused the start of its own feed");
        TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
        TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::pulled_seq, 0));
        TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::pulled_mark, 0));
        // Also after a compaction: HQ cannot tell an entry it compacted from one of a
        // history it lost in a restore, so the versions of edits not yet pushed (a sync
        // pushes first: usually none) are not trusted either.
        TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::versions_unsure, 1));
        TS_RETURN_IF_ERROR(forget_merges());
        if (reply.compacted) {
          TS_RETURN_IF_ERROR(note_recovery(
              txn, "HQ compacted its feed past this terminal's pull position " + std::to_string(after) +
                       " (away longer than HQ's feed retention): pulled a snapshot from the start"));
        } else {
          TS_RETURN_IF_ERROR(note_recovery(txn, "HQ's feed does not hold this terminal's pull position " +
                                                    std::to_string(after) +
                                                    " (HQ restored from a backup): pulled again from the start"));
        }
        TS_RETURN_IF_ERROR(merge_hq_clock(txn, reply.hq_hlc));
        TS_RETURN_IF_ERROR(txn.commit());
        continue;
      }
      if (reply.customers.empty() && reply.erased.empty() && reply.cursor == after) {
        TS_RETURN_IF_ERROR(settle_versions());
        return pulled;
      }
      TS_ASSIGN_OR_RETURN(std::int64_t acked, meta_int(node_db::key::acked_seq));
      TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
      CustomerTable customers(*db);
      // Duplicates HQ merged: the local record gives way to the customer it joined, and
      // its GUID keeps working as a name for that customer. First, so that the joined
      // customer, which may now hold the merged one's addresses and contacts, finds
      // their GUIDs free.
      for (const auto& [alias, target] : reply.aliases) {
        TS_RETURN_IF_ERROR(customers.remove(txn, alias));
        // An entry of the merged customer set aside before is void now.
        TS_ASSIGN_OR_RETURN(auto void_entry, db->prepare("DELETE FROM set_aside WHERE customer = ?1"));
        void_entry.bind_blob(1, alias.raw());
        TS_RETURN_IF_ERROR(void_entry.run());
        TS_ASSIGN_OR_RETURN(auto st, db->prepare(
            "INSERT OR REPLACE INTO guid_aliases(alias, target) VALUES(?1, ?2)"));
        st.bind_blob(1, alias.raw()).bind_blob(2, target.raw());
        TS_RETURN_IF_ERROR(st.run());
      }
      // The account number a merged GUID had keeps naming the customer it joined.
      for (const auto& [alias, account] : reply.alias_accounts) {
        TS_ASSIGN_OR_RETURN(auto st, db->prepare("UPDATE guid_aliases SET alias_account = ?2 WHERE alias = ?1"));
        st.bind_blob(1, alias.raw()).bind(2, account);
        TS_RETURN_IF_ERROR(st.run());
      }
      // A GUID of this store merged into another store's customer (a filtered node):
      // only the account number it now has comes, never that customer.
      for (const auto& [alias, account] : reply.merged_elsewhere) {
        TS_ASSIGN_OR_RETURN(auto st, db->prepare("UPDATE guid_aliases SET account_number = ?2 WHERE alias = ?1"));
        st.bind_blob(1, alias.raw()).bind(2, account);
        TS_RETURN_IF_ERROR(st.run());
      }
      for (Customer& c : reply.customers) TS_RETURN_IF_ERROR(apply_entry(txn, customers, c, acked));
      std::int64_t erased = 0;
      for (const Guid& g : reply.erased) {
        TS_ASSIGN_OR_RETURN(std::int64_t n, erase_local(txn, customers, g));
        erased += n;
      }
      TS_RETURN_IF_ERROR(retry_set_aside(txn, customers, acked));
      TS_RETURN_IF_ERROR(adopt_epoch(txn, reply.epoch));
      TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::pulled_seq, reply.cursor));
      TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::pulled_mark, static_cast<std::int64_t>(reply.cursor_mark)));
      TS_RETURN_IF_ERROR(merge_hq_clock(txn, reply.hq_hlc));
      crash_point("node.pull.before_commit");
      TS_RETURN_IF_ERROR(txn.commit());
      crash_point("node.pull.after_commit");
      // No copy of the erased values stays in the write-ahead log either (best effort:
      // another connection reading at this moment keeps it; the next erasure retries).
      if (erased > 0) {
        TS_ASSIGN_OR_RETURN(bool truncated, db->truncate_wal());
        (void)truncated;
      }
      pulled += static_cast<std::int64_t>(reply.customers.size());
      const std::size_t page = reply.customers.size() + reply.merged_elsewhere.size() + reply.erased.size();
      if (page < options.pull_batch && !reply.more) {
        TS_RETURN_IF_ERROR(settle_versions());
        return pulled;
      }
    }
  }

  Status record_outcome(const Status& outcome) {
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    const bool reached = outcome.ok() || outcome.code() != Code::hq_unreachable;
    TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::online, reached ? 1 : 0));
    if (outcome.ok()) TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::last_sync_at, clock->now_ms()));
    TS_RETURN_IF_ERROR(node_db::put(txn, node_db::key::last_error, outcome.ok() ? "" : outcome.to_string()));
    // Why HQ was unreachable, for `store status`; forgotten once HQ answers.
    const auto cause = reached ? std::nullopt : hq->last_unreachable();
    TS_RETURN_IF_ERROR(node_db::put_int(txn, node_db::key::unreachable_at, reached ? 0 : clock->now_ms()));
    TS_RETURN_IF_ERROR(node_db::put(txn, node_db::key::unreachable_reason, cause ? cause->reason : ""));
    TS_RETURN_IF_ERROR(node_db::put(txn, node_db::key::unreachable_detail,
                                    reached ? "" : cause ? cause->detail : outcome.message()));
    return txn.commit();
  }
};

Replicator::Replicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Replicator::~Replicator() = default;

Result<std::unique_ptr<Replicator>> Replicator::open(const std::string& node_db_path, HqLink& hq,
                                                     const ReplicatorOptions& options) {
  auto impl = std::make_unique<Impl>();
  storage::DatabaseOptions dbo;
  TS_ASSIGN_OR_RETURN(impl->db, storage::Database::open(node_db_path, dbo));
  TS_RETURN_IF_ERROR(storage::upgrade(*impl->db, node_db::schema()));
  TS_ASSIGN_OR_RETURN(impl->config, node_db::read_config(*impl->db));
  impl->hq = &hq;
  impl->options = options;
  if (impl->options.push_batch == 0) impl->options.push_batch = 1;
  if (impl->options.pull_batch == 0) impl->options.pull_batch = 1;
  impl->clock = options.clock != nullptr ? options.clock : &SystemClock::instance();
  return std::unique_ptr<Replicator>(new Replicator(std::move(impl)));
}

Result<std::int64_t> Replicator::push_all() {
  impl_->sync_note.clear();
  return impl_->push_all();
}
Result<std::int64_t> Replicator::pull_all() {
  impl_->sync_note.clear();
  return impl_->pull_all();
}

Result<std::int64_t> Replicator::compact_log() {
  TS_ASSIGN_OR_RETURN(auto pass, log_retention::compact(*impl_->db, impl_->clock->now_ms(),
                                                        impl_->options.compact_batch));
  return pass.removed;
}

Result<SyncReport> Replicator::sync_once() {
  SyncReport report;
  impl_->warning.clear();
  impl_->sync_note.clear();
  Status outcome = [&]() -> Status {
    TS_RETURN_IF_ERROR(impl_->handshake());
    TS_ASSIGN_OR_RETURN(report.pushed, impl_->push_all());
    TS_ASSIGN_OR_RETURN(report.pulled, impl_->pull_all());
    // After a sync that went through, so that what it compacts HQ has acknowledged
    // (log retention; nothing when it is off).
    TS_ASSIGN_OR_RETURN(report.compacted, compact_log());
    return Status::Ok();
  }();
  report.warning = impl_->warning;
  TS_RETURN_IF_ERROR(impl_->record_outcome(outcome));
  if (!outcome.ok()) return outcome;
  storage::ChangeLog log(*impl_->db);
  TS_ASSIGN_OR_RETURN(std::int64_t acked, impl_->meta_int(node_db::key::acked_seq));
  TS_ASSIGN_OR_RETURN(report.pending_ops, log.count_after(acked));
  return report;
}

}  // namespace tillsync
