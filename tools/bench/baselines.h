// Baselines for `tillsync bench` (issue 7, docs/performance.md "Baselines and the peer"):
// what the same workload costs without tillsync. Each function builds its own scratch
// SQLite files under `dir` (created if missing, with its parents; the baseline's files in
// it are deleted first, so a rerun starts fresh) and its own ZeroMQ sockets on tcp://127.0.0.1:* (ephemeral
// ports), runs to completion and returns its figures. Times are measured with
// std::chrono::steady_clock.
//
// Thread-safety: each call is self-contained (it starts and joins its own threads); calls
// may run concurrently when given different directories.
// Errors: SQLite/ZeroMQ failures come back as Code::internal, bad arguments (n == 0,
// batch == 0, ...) as Code::invalid_input. Nothing is thrown.
#pragma once

#include <cstddef>
#include <string>

#include "tillsync/status.h"

namespace tillsync::bench {

struct LatencyStats {
  std::size_t count = 0;
  double p50_us = 0;
  double p99_us = 0;
  double mean_us = 0;
  double per_second = 0;  // count / total wall time
};

// The bytes tillsync logs and ships for one realistic customer create: the size of
// encode_payload(CustomerCreated{...}) for a person with first and last name, e-mail,
// phone and the default-customer values (group, receipt option, currency, language), as
// `tillsync bench` creates them (no address). Use it as `bytes`/`row_bytes` below so the
// baselines move the same volume as tillsync.
std::size_t typical_create_record_bytes();
// The same for a one-field edit (CustomerUpdated with one FieldChange).
std::size_t typical_edit_record_bytes();

// Raw SQLite single-row insert: one transaction per creation that inserts a customer row
// (guid + the fields of the typical create) and a log row (seq, op_id, entity, kind, hlc, node_id,
// payload blob of typical_create_record_bytes()), WAL mode, synchronous=FULL when
// `durable`, NORMAL otherwise. Latency per transaction (BEGIN..COMMIT). The comparison
// for terminal creation latency (scenario a).
Result<LatencyStats> raw_sqlite_single_inserts(const std::string& dir, std::size_t n,
                                               bool durable);

// Raw SQLite batched insert: `rows` rows of (seq INTEGER PRIMARY KEY, data BLOB of
// `row_bytes` bytes) in transactions of `batch` rows, WAL, synchronous FULL when `durable`
// else NORMAL, prepared statement reused, no secondary index. Returns rows per second
// (scenario c): what the disk and SQLite allow for these bytes.
Result<double> raw_sqlite_batched_inserts(const std::string& dir, std::size_t rows,
                                          std::size_t batch, std::size_t row_bytes,
                                          bool durable);

// Raw ZeroMQ: `messages` messages of `bytes` bytes sent from a PUSH socket to a PULL
// socket over tcp://127.0.0.1:* in batches of `batch` (one multipart message per batch,
// one frame per message). The receiver acks each batch on a second PUSH->PULL pair and
// the sender keeps at most `window` batches unacknowledged, like an acked replication
// protocol (tillsync's replicator keeps 2 in flight). Returns messages per second
// (scenario c).
Result<double> raw_zmq_transfer(std::size_t messages, std::size_t bytes, std::size_t batch,
                                std::size_t window = 2);

// The peer (issue 7 item h), "what a C++ developer would otherwise do": a terminal SQLite
// db with a `customers` table (one row per customer with the fields of the typical create,
// GUID primary key) and an `outbox` table of changesets.
//  1. Capture (timed separately; like tillsync's backlog in scenario c it is not the
//     replication figure, and like it is written with synchronous=NORMAL): `ops`
//     operations, each its own transaction, while the SQLite session extension records
//     the customers table. Operations are creations (one customer row) except that when
//     `edit_every` > 0 every edit_every-th operation updates one column of an earlier
//     customer. Every `batch` operations the
//     session's changeset is stored in the outbox (in the same transaction as the last op).
//  2. Replication (the ops_per_second figure, comparable with scenario c): a sender thread
//     reads the outbox in order and sends each changeset over ZeroMQ DEALER->ROUTER on
//     tcp://127.0.0.1:*; the HQ thread applies it with sqlite3changeset_apply to an HQ
//     SQLite db with the same tables in one transaction (same durability, WAL) and acks
//     after commit; the sender records each acked outbox id in the terminal db (same
//     durability), with at most `window` changesets in flight (2, as tillsync's
//     replicator).
// The default edit_every = 0 is the workload of scenario c (a backlog of creations).
struct PeerStats {
  std::size_t ops = 0;
  double ops_per_second = 0;    // ops / replication seconds (phase 2)
  std::size_t bytes_shipped = 0;  // changeset bytes sent (phase 2), excluding ZeroMQ framing
  std::size_t changesets = 0;
  double capture_seconds = 0;   // phase 1: writes with the session attached (NORMAL)
  double replication_seconds = 0;  // phase 2: first outbox read to last ack recorded
};
Result<PeerStats> session_changeset_peer(const std::string& dir, std::size_t ops,
                                         std::size_t batch, bool durable,
                                         std::size_t edit_every = 0, std::size_t window = 2);

}  // namespace tillsync::bench
