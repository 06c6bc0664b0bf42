// Replicator: moves a terminal's data to and from HQ. Three small parts:
//  - push: sends change-log rows after the acknowledged cursor in batches; the cursor
//    advances only to what HQ acknowledged after its commit, and moves back to HQ's
//    cursor when HQ reports a gap;
//  - pull: fetches HQ's outbound feed after the pulled cursor and applies each batch in
//    one transaction together with the new cursor, re-applying local operations HQ has
//    not acknowledged yet so they are never hidden;
//  - checkpoint: cursors, HQ epoch, online flag and last error live in the terminal's
//    database, so a restart resumes exactly where the last commit left off;
//  - log retention (opt-in, NodeConfig::log_retention_ms): after a successful sync, a
//    bounded pass compacts the prefix of the log HQ acknowledged long enough ago.
// A different HQ epoch resets both cursors (re-pushing is harmless: HQ is idempotent).
//
// Ownership: opens its own connection to the terminal's database (WAL lets it run
// beside a ChannelNode). The HqLink is borrowed. Thread-safety: one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "tillsync/clock.h"
#include "tillsync/hq_client.h"
#include "tillsync/status.h"

namespace tillsync {

struct ReplicatorOptions {
  std::size_t push_batch = 500;   // log rows per push request
  std::uint32_t pull_batch = 500;  // feed entries per pull request
  PhysicalClock* clock = nullptr;  // for last_sync_at and log retention; nullptr: system clock
  std::size_t compact_batch = 10'000;  // log rows one compaction pass deletes at most
};

struct SyncReport {
  std::int64_t pushed = 0;  // operations HQ newly acknowledged
  std::int64_t pulled = 0;  // feed entries applied
  std::int64_t pending_ops = 0;
  std::int64_t compacted = 0;  // log rows the retention removed after this sync
  // Not empty when HQ turned out to lack operations this terminal's log had compacted
  // (HQ restored from a backup older than the log retention, or replaced): what is
  // lost, for an operator. The sync itself went through; `store status` keeps it.
  std::string warning;
};

class Replicator {
 public:
  static Result<std::unique_ptr<Replicator>> open(const std::string& node_db_path, HqLink& hq,
                                                  const ReplicatorOptions& options = {});
  ~Replicator();

  // Pushes everything pending, then pulls everything new. hq_unreachable when HQ does
  // not answer (progress made before that is kept). The outcome is recorded for
  // `store status` (online, last_sync_at, last_error, and when HQ was unreachable, why:
  // HqLink::last_unreachable()). Then compacts the log (compact_log()).
  Result<SyncReport> sync_once();
  Result<std::int64_t> push_all();
  Result<std::int64_t> pull_all();
  // One pass of the log retention (at most compact_batch rows; nothing when retention
  // is off). Returns how many log rows it removed.
  Result<std::int64_t> compact_log();

 private:
  struct Impl;
  explicit Replicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tillsync
