// Replay of capture files (.tslog): what support engineers run at their desk with
// `tillsync replay` (DESIGN.md §5, docs/replay.md).
//
// verify_captures() checks captures without writing anything: framing, checksums and
// the end frame (CaptureReader), plus what only a whole log shows: every record decodes,
// names the node of the file header, and the sequence numbers run densely from the
// header's first_seq. replay_captures() verifies every file first and then feeds the
// records through the same HQ ingestion as live replication (Headquarters::push and the
// customer sync job), so the result is what HQ would have done live.
//
// Both stream: one record per open file (verify) or a small per-node buffer (replay) is
// in memory, whatever the size of the captures.
//
// Errors: corrupt_log / unsupported_version naming the file, the byte offset and the
// record number; not_found for a missing file; storage errors of the target HQ.
// Without skip_corrupt a bad capture fails the call before anything is applied.
// Thread-safety: none; the Headquarters passed in is used from the calling thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tillsync/headquarters.h"
#include "tillsync/status.h"

namespace tillsync {

struct ReplayOptions {
  // Stop each node after this sequence number (the seq written in the capture).
  // Ignored by verify_captures, which always checks whole files.
  std::optional<std::int64_t> until_seq;
  // Seeds the order in which records of different nodes interleave (each node's own
  // order is always kept). nullopt: round-robin over the nodes in fixed-size chunks.
  std::optional<std::uint64_t> shuffle_seed;
  // Go on past bad records (and files whose header is unusable), listing each in
  // ReplaySummary::issues, instead of failing. Pushed seqs are renumbered densely per
  // node in this mode, because HQ refuses gaps (see docs/replay.md).
  bool skip_corrupt = false;
  // Called now and then with the bytes read so far and the total. A replay reads every
  // file twice (verification, then application), so its total is twice the file sizes.
  std::function<void(std::uint64_t bytes_done, std::uint64_t bytes_total)> progress;
};

// A record (or a whole file, record 0) that skip_corrupt left out, or a sequence gap it
// went past.
struct ReplayIssue {
  std::string file;
  std::uint64_t offset = 0;  // byte offset of the frame (0 for a file-level problem)
  std::int64_t record = 0;   // 1-based record number in the file; 0 for the file header
  Status status;             // corrupt_log or unsupported_version, with the details
};

// One node's share of the captures.
struct ReplayNode {
  std::string node_id;
  std::int64_t files = 0;
  std::int64_t records = 0;    // records verified (verify) or delivered to HQ (replay)
  std::int64_t first_seq = 0;  // as written in the captures; 0 when there are none
  std::int64_t last_seq = 0;
};

struct ReplaySummary {
  // verify: intact records in the files; replay: records delivered to HQ (after
  // until_seq, without records that overlapping captures of a node repeat).
  std::int64_t records = 0;
  // The rest is set by replay_captures only.
  std::int64_t customers = 0;       // customers in the resulting HQ database
  std::int64_t created = 0;         // async creates converted by the sync job
  std::int64_t updated = 0;         // other operations the sync job applied
  std::int64_t conflicts = 0;       // conflict journal entries written during the replay
  std::int64_t duplicates = 0;      // status-view rows in status `duplicate` (whole database)
  std::int64_t failed = 0;          // operations the sync job marked failed
  std::string digest;               // content digest of the resulting HQ database
  std::vector<ReplayNode> nodes;    // ordered by node id
  std::vector<ReplayIssue> issues;  // skip_corrupt only; in file order
};

Result<ReplaySummary> verify_captures(const std::vector<std::string>& files,
                                      const ReplayOptions& options = {});

// Several captures of one node are consecutive segments (ordered by first_seq; they may
// overlap). Without skip_corrupt, a gap between them, or between what `hq` already has
// from the node and the first capture, is corrupt_log and nothing is applied. A first
// capture starting after seq 1 into an HQ that has nothing from the node is no gap: the
// node's log started there (compacted by its log retention); it is pushed as it is.
Result<ReplaySummary> replay_captures(const std::vector<std::string>& files, Headquarters& hq,
                                      const ReplayOptions& options = {});

}  // namespace tillsync
