// Headquarters: the head-office engine. It serves the real-time service (sync-mode
// calls from terminals), stages what terminals push, converts async customers in the
// customer sync job (D6, D12), and publishes the outbound feed terminals pull.
//
// Ownership: owns its HqStore. The PhysicalClock in the options is borrowed.
// Thread-safety: none; one thread drives a Headquarters (HqService does).
// Errors: Status codes of DESIGN.md §5. Every write is one store transaction, run again
// (up to 50 times) when a shared PostgreSQL store answers Code::busy.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tillsync/clock.h"
#include "tillsync/digest.h"
#include "tillsync/domain.h"
#include "tillsync/hq_gateway.h"
#include "tillsync/hq_store.h"
#include "tillsync/operations.h"
#include "tillsync/status.h"

namespace tillsync {

struct HqOptions {
  PhysicalClock* clock = nullptr;  // nullptr: the system clock
  // When set, stored in the HQ database (so `hq run-job` and later runs use them too);
  // when not, the stored policies apply (defaults: lww, flag).
  std::optional<ConflictPolicy> conflict_policy = std::nullopt;
  std::optional<DuplicatePolicy> duplicate_policy = std::nullopt;
  // SQLite durability: synchronous=FULL (true) or NORMAL (simulations, benchmarks).
  bool durable = true;
  // How far ahead of HQ's wall clock an operation's HLC is believed (`hq serve
  // --max-clock-offset-ms`). An operation stamped further ahead (a till with a wrong
  // clock) is applied as if stamped when HQ received it plus this offset; the HLC it is
  // staged with records that, so every replay orders it the same way. No remote HLC
  // moves HQ's clock further ahead than this.
  std::int64_t max_clock_offset_ms = 300'000;
  // Lifecycle (DESIGN.md §3, docs/operations.md "Retention"). A customer's superseded
  // feed snapshots are removed once every terminal HQ knows has pulled past them, or
  // once they are older than `feed_retention_ms` (a terminal offline longer is sent a
  // snapshot of its scope instead). Received operations are deleted once applied and
  // older than `received_retention_ms` (`hq serve --received-retention-days`); keep it
  // longer than the oldest backup a till is ever restored from. The sync job compacts
  // at most every `compaction_interval_ms` (0: never by itself; compact() still does).
  std::int64_t feed_retention_ms = 7LL * 24 * 3600 * 1000;
  std::int64_t received_retention_ms = 30LL * 24 * 3600 * 1000;
  std::int64_t compaction_interval_ms = 60'000;
};

struct PushResult {
  // The highest seq of the batch HQ holds the node's operations up to, after commit (the
  // batch's last when it went in or was already there; HQ's cursor after a gap).
  std::int64_t acked_seq = 0;
  std::size_t staged = 0;      // records newly staged by this push
  std::size_t duplicates = 0;  // records HQ already had
  bool gap = false;            // a record after a missing seq was refused
  // How far the newest record's HLC was ahead of HQ's clock, when that was beyond the
  // offset HQ believes (the till's clock is wrong); 0 otherwise.
  std::int64_t clock_ahead_ms = 0;
};


struct HelloResult {
  std::int64_t push_cursor = 0;  // highest seq of the node's log HQ holds
  Hlc hq_hlc;                    // HQ's clock
  bool holds_acked = true;       // HQ holds the operation hello() named (true when none)
};

struct PullResult {
  // `after` (with its mark) is not a position of this HQ's feed: HQ's database is older
  // than what the node pulled (restored from a backup). Nothing else is set.
  bool reset = false;
  // With reset: `after` lies in the part of the feed HQ compacted (the node was away
  // longer than the feed retention): the node pulls the feed again from 0, a snapshot
  // of its scope, without suspecting HQ of having gone back.
  bool compacted = false;
  std::int64_t cursor = 0;  // continue after this feed seq
  std::uint64_t cursor_mark = 0;  // the mark of `cursor` (feed_mark())
  std::vector<FeedEntry> entries;
  Hlc hq_hlc;  // HQ's clock: a terminal merges it so its later writes order after these
  bool more = false;  // the page ended at HQ's bound (kMaxPullBytes/kMaxPullEntries), not the limit
};

// What one compaction pass removed (Headquarters::compact).
struct CompactionReport {
  std::int64_t feed_removed = 0;      // superseded customer snapshots deleted
  std::int64_t feed_through = 0;      // the feed is compacted up to this seq
  std::int64_t received_removed = 0;  // received operations deleted after their retention
};

// What an erasure did (Headquarters::erase_customer, `hq erase-customer`).
struct ErasureReport {
  Guid customer;                              // the GUID erased
  std::optional<std::string> account_number;  // its account number, when it had one
  std::vector<Guid> aliases;                  // GUIDs merged into it, erased with it
  HqTransaction::Erased rows;                 // what was deleted or redacted
  bool already_erased = false;  // erased before: only what arrived since was redacted
  bool scrubbed = false;        // the store's own files hold no old copy (HqStore::scrub)
};

// What an identity merge did (Headquarters::merge_customers, `hq merge-customers`).
struct MergeReport {
  Customer kept;                              // the customer as it is now
  Guid dropped;                               // the GUID that now names it
  std::optional<std::string> dropped_account; // the account number that now names it
  std::vector<Guid> renamed;                  // GUIDs merged into `dropped` before, now naming it
  std::int64_t journal_id = 0;
};

struct JobReport {
  std::size_t applied = 0;
  std::size_t converted = 0;  // async customers that got an account number
  std::size_t failed = 0;
  std::size_t waiting = 0;    // operations whose customer HQ has not received yet
  std::size_t remaining = 0;  // staged operations left for a later pass
  std::size_t erased = 0;     // of `failed`: operations on erased customers, redacted
};

class Headquarters {
 public:
  explicit Headquarters(std::unique_ptr<HqStore> store, const HqOptions& options = {});
  ~Headquarters();
  Headquarters(const Headquarters&) = delete;
  Headquarters& operator=(const Headquarters&) = delete;

  // `hq init` + open: a new HQ with a fresh epoch. `location` is a file path (SQLite)
  // or a postgresql:// URL (PostgreSQL, which several HQ processes may share).
  static Result<std::unique_ptr<Headquarters>> init(const std::string& location,
                                                    std::string_view number_prefix,
                                                    const HqOptions& options = {});
  static Result<std::unique_ptr<Headquarters>> open(const std::string& location,
                                                    const HqOptions& options = {});

  const std::string& epoch() const;
  // Transactions run again since this object was made because the store answered
  // Code::busy (PostgreSQL: another HQ process won a lock or a deadlock).
  std::uint64_t busy_retries() const;

  // ---- real-time service (sync mode) ----
  // Each request has an id (the op id the terminal logs the write under): HQ carries a
  // request id out once, and answers it again with the customer as it is now and what
  // the request did (its loyalty card). invalid_input for a nil id; unauthorized when
  // the id is another node's. A create is also idempotent on the GUID, and a GUID HQ
  // merged into another customer names that customer. An edit whose base_version is
  // above HQ's version of the customer is refused (invalid_input).
  Result<RtsAnswer> rts_create(std::string_view node_id, const Guid& request, const Customer& customer);
  Result<RtsAnswer> rts_edit(std::string_view node_id, const Guid& request, const Guid& customer,
                             std::int64_t base_version, const std::vector<FieldChange>& changes);
  Result<RtsAnswer> rts_add_address(std::string_view node_id, const Guid& request, const Guid& customer,
                                    const Address& address);
  Result<RtsAnswer> rts_issue_loyalty_card(std::string_view node_id, const Guid& request,
                                           const Guid& customer);
  // A terminal's search of the customer master: `text` must hold at least
  // kMinSearchText characters besides spaces (invalid_input otherwise), and at most
  // kMaxSearchResults customers come back, in name order, `truncated` saying more
  // matched. A node that asks `filtered`, or is registered for filtered pulls (D5, also
  // registered by its first search), sees only its own store's customers.
  static constexpr std::size_t kMinSearchText = 3;
  static constexpr std::size_t kMaxSearchResults = 50;
  struct SearchResult {
    std::vector<Customer> customers;
    bool truncated = false;
  };
  Result<SearchResult> search(std::string_view node_id, std::string_view text, bool filtered);

  // ---- replication ----
  // Bounds of one push and one pull page, so that no request or reply comes near the
  // socket's 16 MiB message limit: a push of more records or payload bytes is refused
  // with Code::limit_exceeded (nothing staged; Replicator never sends one), and a pull
  // returns at most kMaxPullEntries entries and stops after the entry that passes
  // kMaxPullBytes of customer encoding (at least one entry, whatever its size).
  static constexpr std::size_t kMaxPushRecords = 5'000;
  static constexpr std::size_t kMaxPushBytes = 8u << 20;
  static constexpr std::size_t kMaxPullEntries = 1'000;
  static constexpr std::size_t kMaxPullBytes = 8u << 20;
  // Where the node's log stands at HQ, and HQ's clock (the start of every sync); and
  // whether HQ holds `acked_op` from the node (nil: not asked).
  // `acked_seq` is the node's acknowledged cursor: an op HQ no longer holds is taken as
  // held when HQ pruned what it received up to there after its retention.
  Result<HelloResult> hello(std::string_view node_id, const Guid& acked_op = Guid{}, std::int64_t acked_seq = 0);
  // Stages `records` (all from `node_id`, ascending seq; `prev` is the node's log row
  // just before records[0], `prev_op` its op id or nil) in one transaction and returns the node's cursor after
  // commit. Records HQ holds (same op id from this node) are skipped; a batch whose
  // `prev` lies beyond the cursor is a gap, staged not at all (the node resends from
  // the returned cursor). A record at or below the cursor whose op id HQ does not hold
  // from this node is refused with Code::conflict, nothing staged: the node's database
  // was restored or re-initialised. So is a batch whose `prev` is at or below the cursor
  // while HQ does not hold a non-nil `prev_op` from this node (a batch the node sent
  // behind one HQ refused). Records of another node are refused with
  // unauthorized; malformed batches (seqs not ascending) with invalid_input.
  Result<PushResult> push(std::string_view node_id, std::int64_t prev, const Guid& prev_op,
                          const std::vector<LogRecord>& records);
  // Feed entries after `after`; with `filtered` only the node's own store's customers.
  // `after_mark` is the cursor_mark HQ returned with `after` (0 when after is 0); when
  // the feed holds no such entry at `after`, the result is a reset.
  Result<PullResult> pull(std::string_view node_id, std::int64_t after, std::uint64_t after_mark,
                          std::size_t limit, bool filtered);

  // ---- customer sync job (D6) ----
  // Applies up to `max_ops` staged operations in per-node order.
  Result<JobReport> run_sync_job(std::size_t max_ops = 10'000);

  // Removes superseded feed snapshots and received operations past their retention
  // (HqOptions), at most `max_rows` of each. The sync job calls it every
  // compaction_interval_ms; `hq compact` calls it until nothing is left.
  Result<CompactionReport> compact(std::size_t max_rows = 50'000);

  // ---- right to erasure (docs/operations.md) ----
  // Removes the personal data of one customer from everything HQ keeps (HqTransaction::
  // erase_customer) in one transaction and publishes the erasure on the feed, so every
  // terminal that has the customer deletes its copy and redacts its change log. From
  // then on an operation or request for the GUID (or a GUID merged into it) fails with
  // Code::erased. `account_or_guid`: an account number, the customer's GUID, a GUID
  // merged into it, or the GUID of a create HQ holds but never applied (failed). Erasing
  // again is harmless (already_erased). not_found when HQ holds nothing of it.
  Result<ErasureReport> erase_customer(std::string_view account_or_guid);

  // ---- identity merge ----
  // Two existing customers found to be the same person: `drop` becomes a name of
  // `keep` (each an account number or GUID). The kept customer keeps its fields, fills
  // the empty ones from the dropped one and takes over its addresses, contacts,
  // affiliations and loyalty cards (limit_exceeded when that passes a D13 bound,
  // nothing written). One transaction; journaled (merges()); every terminal learns it
  // from the feed as it learns duplicate merges. Later operations and requests on
  // either GUID reach the kept customer, and the dropped account number names it at
  // HQ. invalid_input when both name one customer; not_found / erased as for edits.
  Result<MergeReport> merge_customers(std::string_view keep, std::string_view drop);
  Result<std::vector<MergeRecord>> merges();

  // ---- back office ----
  Result<Customer> edit_customer(std::string_view account_or_guid,
                                 const std::vector<FieldChange>& changes);
  // Fixes a failed record (optional field changes to its create) and re-applies its
  // failed operations. not_found when `guid` has no failed record.
  Result<JobReport> resync(const Guid& guid, const std::vector<FieldChange>& fixes);
  Result<std::vector<SyncStatusRecord>> sync_status(std::optional<SyncStatus> filter);
  // The conflict journal, oldest first.
  Result<std::vector<ConflictRecord>> conflicts();
  // Every terminal HQ has heard from, by node id.
  Result<std::vector<TerminalInfo>> terminals();
  // Manual policy: settles an open conflict. keep_lost == false keeps the current
  // value; true applies the held value as a new HQ write, which reaches every terminal.
  Result<ConflictRecord> resolve_conflict(std::int64_t id, bool keep_lost);
  Result<ConflictPolicy> conflict_policy();
  Result<DuplicatePolicy> duplicate_policy();
  Result<std::vector<Customer>> customers(std::string_view search_text);
  Result<ContentDigest> digest();
  HqStore& store();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tillsync
