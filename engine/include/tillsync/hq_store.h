// HQ persistence behind a narrow interface, so that a server database (PostgreSQL)
// can replace the embedded SQLite file without touching the sync logic.
//
// Everything the HQ logic writes goes through one HqTransaction: the customer master,
// the inbound staging area, per-node cursors, the synchronization status view (D12)
// and the outbound distribution feed. A transaction that is destroyed without
// commit() rolls back. Reads that need no transaction are on HqStore.
// Thread-safety: an HqStore and its transactions belong to one thread at a time.
// Errors: storage failures are Code::internal; a server backend shared by several HQ
// processes may also answer Code::busy (deadlock, serialization failure): the whole
// transaction was rolled back and may be run again (Headquarters does).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tillsync/domain.h"
#include "tillsync/operations.h"
#include "tillsync/status.h"

namespace tillsync {

// What HQ knows of one terminal (`hq terminals`).
struct TerminalInfo {
  std::string node_id;
  std::int64_t push_cursor = 0;               // highest seq of its log HQ holds
  std::optional<std::int64_t> pull_cursor;    // how far it pulled the feed (when known)
  bool filtered = false;                      // registered for filtered pulls (D5)
  std::int64_t clock_ahead_ms = 0;            // its clock's lead at its last push, if too far
  std::int64_t clock_seen_at_ms = 0;          // when HQ saw that lead (0: never)
  // Received operations up to this seq were pruned after their retention (HQ holds
  // pruned_through + 1 .. push_cursor); 0 when none were.
  std::int64_t pruned_through = 0;
};


// The settings key of HQ's hybrid logical clock (a decimal Hlc value).
inline constexpr std::string_view kHlcSetting = "hlc";

enum class SyncStatus { pending, converted, failed, duplicate, conflict };
std::string_view to_string(SyncStatus s);
std::optional<SyncStatus> parse_sync_status(std::string_view s);

// One row of the customer synchronization status view (D12).
struct SyncStatusRecord {
  Guid guid;
  std::string node_id;
  std::optional<std::string> account_number;
  SyncStatus status = SyncStatus::pending;
  std::string last_error;
  std::int64_t created_at_ms = 0;
  std::int64_t updated_at_ms = 0;
  std::optional<Guid> twin;  // status duplicate: the existing customer it matches
};

// waiting: the operation's customer does not exist at HQ yet (its create comes from
// another terminal, e.g. after a new epoch); it is staged again when the create is
// applied.
enum class StagedState { staged, applied, failed, waiting };

// An operation received from a node and kept until the sync job has applied it.
struct StagedOp {
  LogRecord record;
  StagedState state = StagedState::staged;
  std::string error;
  std::int64_t received_at_ms = 0;  // when HQ staged it (0: staged before this was kept)
};

// One entry of the outbound feed: the customer as HQ now has it, or (alias set) the
// news that a terminal's GUID now names another customer (duplicate merge).
struct FeedEntry {
  std::int64_t seq = 0;
  std::string channel;  // store id the customer belongs to ("" for HQ-created)
  Customer customer;
  std::optional<Guid> alias;  // when set: `alias` is merged into customer.guid
  // Set by Headquarters::pull for a filtered node when `alias` (of its store) was merged
  // into another store's customer: `customer` then holds only the GUID and account
  // number, and the node receives the mapping, not the customer.
  bool mapping_only = false;
  // Set by Headquarters::pull on an alias entry: the account number `alias` had before
  // it was merged (empty: it had none), which keeps naming customer.guid.
  std::string alias_account;
  // The customer whose GUID is customer.guid was erased (right to erasure): a node
  // deletes its copy. `customer` holds only the GUID. Erasure turns the customer's
  // earlier entries into such entries too, each keeping the mark it had (`mark`).
  bool erased = false;
  // The mark stored with the entry (0: none, an entry appended before marks were
  // stored): drawn at random when it is appended, and kept by an erasure.
  std::uint64_t mark = 0;
};

// A fingerprint of one feed entry, never 0: its stored mark (FeedEntry::mark), random
// per append, or for an entry without one a hash of its seq and content. A terminal
// keeps the mark of its pull cursor and sends it back, so HQ can tell that the cursor
// is a position of its own feed and not of an HQ database it was restored over (also
// when that database appended an identical entry at the same seq again). An entry an
// erasure redacted keeps the mark it had.
std::uint64_t feed_mark(const FeedEntry& e);

// The last write HQ applied to one field of a customer: who, when (HLC), and the
// customer version it produced. Keys are field names ("email") or, for children,
// "address:<guid>:<field>".
struct FieldWrite {
  Hlc hlc;
  std::string node;  // "HQ" for back-office edits
  std::int64_t version = 0;
};

// One identity merge an operator made (`hq merge-customers`): `dropped` became a name
// of `kept`, and so did its account number.
struct MergeRecord {
  std::int64_t id = 0;
  Guid kept;
  Guid dropped;
  std::optional<std::string> kept_account;
  std::optional<std::string> dropped_account;
  std::int64_t at_ms = 0;
};

enum class ConflictPolicy { lww, hq_wins, manual };
std::string_view to_string(ConflictPolicy p);
std::optional<ConflictPolicy> parse_conflict_policy(std::string_view s);

enum class DuplicatePolicy { flag, merge };
std::string_view to_string(DuplicatePolicy p);
std::optional<DuplicatePolicy> parse_duplicate_policy(std::string_view s);

// One journaled conflict: two writes to the same field that did not see each other.
struct ConflictRecord {
  std::int64_t id = 0;
  Guid customer;
  std::string field;
  std::string kept;  // value the customer has after resolution
  std::string lost;  // value that did not win (or is held, under manual)
  FieldWrite kept_write;
  FieldWrite lost_write;
  ConflictPolicy policy = ConflictPolicy::lww;
  std::string outcome;        // e.g. "newest write wins", "HQ edit wins", "held for operator"
  std::string status = "resolved";  // "resolved" | "open"
  std::int64_t created_at_ms = 0;
};

class HqTransaction {
 public:
  virtual ~HqTransaction() = default;

  virtual Result<std::optional<Customer>> customer(const Guid& guid) = 0;
  virtual Result<std::optional<Customer>> customer_by_account(std::string_view account) = 0;
  // Inserts or replaces the customer with all its children. `channel` is recorded on
  // first insert only.
  virtual Status put_customer(const Customer& customer, std::string_view channel) = 0;
  virtual Result<std::string> channel_of(const Guid& customer) = 0;
  // Next number of the account number sequence, e.g. "C000000001".
  virtual Result<std::string> next_account_number() = 0;

  // Highest seq staged for `node` (0 when none).
  virtual Result<std::int64_t> node_cursor(std::string_view node) = 0;
  // For each op id, whether HQ holds that operation from `node` (a resend).
  virtual Result<std::vector<bool>> holds_ops(std::string_view node, std::span<const Guid> op_ids) = 0;
  // For each seq, the id of the operation HQ holds from `node` at that seq (nullopt:
  // none, or pruned after its retention).
  virtual Result<std::vector<std::optional<Guid>>> ops_at(std::string_view node, std::span<const std::int64_t> seqs) = 0;
  // Stages one record (state staged, received at `received_at_ms`) and advances the
  // node's cursor to its seq. The caller guarantees record.seq > node_cursor.
  // false (and nothing written) when its op_id is already staged.
  virtual Result<bool> stage(const LogRecord& record, std::int64_t received_at_ms) = 0;
  // stage() for a run of one node's records with ascending seqs after node_cursor,
  // returning for each whether it was new. The default calls stage()
  // for each; the backends send them in one statement (or one per 64 records).
  virtual Result<std::vector<bool>> stage_all(std::span<const LogRecord> records,
                                              std::int64_t received_at_ms);
  // Up to `limit` staged ops in (node, seq) order, only those in state `staged`.
  virtual Result<std::vector<StagedOp>> staged(std::size_t limit) = 0;
  // Failed ops of one customer in (node, seq) order: for re-synchronization.
  virtual Result<std::vector<StagedOp>> failed_for(const Guid& customer) = 0;
  virtual Status set_state(std::string_view node, std::int64_t seq, StagedState state,
                           std::string_view error) = 0;
  // Real-time requests carried out, by request id (the op id under which the terminal
  // logs the write): a repeated request is answered without doing it again, and the
  // logged operation, when it is pushed, is not applied a second time. A row goes with
  // that logged operation when prune_received() deletes it (a till restored from a
  // backup may send an unsettled request again as long as the operator rule lets it).
  struct RtsRequest {
    std::string node;
    Guid customer;
    std::string result;  // e.g. the loyalty card number a request issued
  };
  virtual Result<std::optional<RtsRequest>> rts_request(const Guid& request) = 0;
  virtual Status put_rts_request(const Guid& request, const RtsRequest& r, std::int64_t at_ms) = 0;
  // For each (node, id), whether it is a real-time request `node` had carried out (a
  // request of another node with the same id does not count).
  virtual Result<std::vector<bool>> rts_requests_done(std::span<const std::pair<std::string, Guid>> requests) = 0;
  // The lead of `node`'s clock over HQ's at its last push (0: within the offset).
  virtual Status note_clock(std::string_view node, std::int64_t ahead_ms, std::int64_t at_ms) = 0;
  // Which (node, customer) pairs have operations waiting for their customer's create.
  virtual Result<std::vector<std::pair<std::string, Guid>>> waiting_keys() = 0;
  // Stages again every operation waiting for `customer`; returns their nodes.
  virtual Result<std::vector<std::string>> restage_waiting(const Guid& customer) = 0;

  // The status view's stored row for `guid`. An async customer whose create is still
  // staged has no stored row: its `pending` row is derived from the staged create by
  // HqStore::sync_statuses() (an upload writes no second, randomly keyed row).
  virtual Result<std::optional<SyncStatusRecord>> sync_status(const Guid& guid) = 0;
  virtual Status put_sync_status(const SyncStatusRecord& record) = 0;

  // Appends to the outbound feed. Feed seqs become visible in ascending order, so a
  // puller never skips an entry: SQLite assigns them at once (one writer at a time);
  // PostgreSQL assigns them at commit under a lock, after every other write.
  virtual Status append_feed(const Customer& customer, std::string_view channel) = 0;
  // Publishes that `alias` (a terminal-made GUID) now names `target`.
  virtual Status append_alias(const Guid& alias, const Customer& target, std::string_view channel) = 0;

  // Duplicate detection: another customer whose normalized e-mail or phone equals
  // `c`'s (the keys are maintained by put_customer). nullopt when none.
  virtual Result<std::optional<Guid>> find_duplicate(const Customer& c) = 0;
  // GUID aliases (duplicate merge): operations on `alias` reach `target`.
  virtual Status put_alias(const Guid& alias, const Guid& target) = 0;
  virtual Result<std::optional<Guid>> alias_target(const Guid& alias) = 0;

  virtual Result<std::optional<FieldWrite>> field_write(const Guid& customer, std::string_view key) = 0;
  virtual Status put_field_write(const Guid& customer, std::string_view key, const FieldWrite& w) = 0;
  virtual Result<std::int64_t> add_conflict(const ConflictRecord& c) = 0;  // returns its id
  virtual Result<std::optional<ConflictRecord>> conflict(std::int64_t id) = 0;
  virtual Status update_conflict(const ConflictRecord& c) = 0;
  virtual Result<std::int64_t> open_conflicts(const Guid& customer) = 0;

  // Tombstones of removed addresses and contacts: a late edit or add of a removed child
  // cannot bring it back. Kept until every terminal HQ knows has pulled past them.
  virtual Result<std::optional<FieldWrite>> tombstone(const Guid& customer, const Guid& child) = 0;
  virtual Status put_tombstone(const Guid& customer, const Guid& child, const FieldWrite& removal) = 0;
  // Records how far `node` has pulled the feed (for tombstone collection) and returns
  // whether the node is registered for filtered pulls (offline data exclusion, D5). The
  // first pull registers the node's choice; a node registered as filtered stays so.
  virtual Result<bool> note_pull(std::string_view node, std::int64_t cursor, bool filtered) = 0;
  // Whether `node` is registered for filtered pulls; false for a node that never pulled.
  // Reads only (a real-time request must not register a node).
  virtual Result<bool> registered_filtered(std::string_view node) = 0;
  // Deletes tombstones every known node has pulled past; returns how many.
  virtual Result<std::int64_t> collect_tombstones() = 0;

  // ---- lifecycle: feed compaction and received-operation retention ----
  // The lowest feed position every node HQ knows has pulled from (a node that pushed
  // but never pulled counts as 0); nullopt when HQ knows no node.
  virtual Result<std::optional<std::int64_t>> min_pull_cursor() = 0;
  // Records that the feed's head (its highest seq) is what it is at `at_ms` and returns
  // it; forgets records older than `keep_after_ms` but the newest of those. These let
  // HQ tell how old a feed position is without storing a time with every entry.
  virtual Result<std::int64_t> note_feed_head(std::int64_t at_ms, std::int64_t keep_after_ms) = 0;
  // The feed's head as recorded at or before `at_ms` (0 when nothing was recorded then).
  virtual Result<std::int64_t> feed_head_at(std::int64_t at_ms) = 0;
  // Deletes the customer snapshots superseded by an entry in (after, through]: every
  // entry (not an alias entry) of such a customer older than its newest entry in that
  // window. Returns how many were deleted.
  virtual Result<std::int64_t> remove_superseded(std::int64_t after, std::int64_t through) = 0;
  // Deletes, per node, the longest run of received operations after its pruned_through
  // that were applied and received before `received_before_ms`, never the one at the
  // node's cursor, at most `limit` in all; advances pruned_through over them. Failed,
  // waiting and staged operations stop the run (they are still HQ's work). The
  // real-time requests logged under their op ids go with them. Returns how many
  // operations were deleted.
  virtual Result<std::int64_t> prune_received(std::int64_t received_before_ms, std::size_t limit) = 0;
  // Received operations of `node` up to `seq` were pruned, the newest HLC among them
  // being `hlc` (both 0: none were).
  struct Pruned {
    std::int64_t seq = 0;
    std::uint64_t hlc = 0;
  };
  virtual Result<Pruned> pruned_through(std::string_view node) = 0;

  // ---- identity merge ----
  // Customer `drop` becomes a name of customer `keep` (the caller then stores `keep`
  // with what it took over): drop's row with its children and match keys is deleted,
  // the field write state and tombstones of its addresses and contacts move to `keep`
  // (its own fields' state goes), GUIDs merged into `drop` now name `keep` (returned,
  // in GUID order), `drop` itself too, and the merge is journaled with both account
  // numbers (`drop`'s then names `keep`).
  virtual Result<std::vector<Guid>> merge_customer(const Guid& drop, const Guid& keep, const MergeRecord& journal) = 0;
  // The customer that `account`, the account number of a customer merged into another,
  // now names (nullopt: no merged customer had it).
  virtual Result<std::optional<Guid>> merged_account(std::string_view account) = 0;

  // ---- right to erasure ----
  // Whether `guid` names a customer HQ erased (or a GUID merged into one).
  virtual Result<bool> is_erased(const Guid& guid) = 0;
  // The GUIDs merged into `target` (duplicates), in GUID order.
  virtual Result<std::vector<Guid>> aliases_of(const Guid& target) = 0;
  // What erase_customer() found and removed or redacted.
  struct Erased {
    std::int64_t customers = 0;  // customers deleted (0 when its create never applied)
    std::int64_t statuses = 0;   // status view rows cleared
    std::int64_t received = 0;   // received operations whose payload was redacted
    std::int64_t feed = 0;       // feed entries turned into erasure entries
    std::int64_t conflicts = 0;  // journaled conflicts whose values were redacted
  };
  // Removes the personal data of customer `guid` (and of the GUIDs in `aliases`, merged
  // into it) from every table: the customer and its children, duplicate match keys,
  // field write state, tombstones, real-time requests, aliases; redacts the payloads of
  // received operations (staged or waiting ones fail with `erased`), the values of
  // journaled conflicts, the status rows' errors and account number, and turns the
  // customer's feed entries into erasure entries keeping their marks. Records every
  // GUID as erased at `at_ms`. The caller appends the erasure entry (append_erasure).
  virtual Result<Erased> erase_customer(const Guid& guid, std::span<const Guid> aliases, std::int64_t at_ms) = 0;
  // Empties the payload of the operation `node` sent at `seq` (an operation for an
  // erased customer that arrived after the erasure).
  virtual Status redact_received(std::string_view node, std::int64_t seq) = 0;
  // Publishes that `guid` was erased, to nodes of `channel` (and unfiltered ones).
  virtual Status append_erasure(const Guid& guid, std::string_view channel) = 0;

  // HQ's persisted settings (HLC, policies), by key. The setting kHlcSetting only ever
  // grows: a backend shared by several HQ processes keeps the maximum of concurrent
  // writes instead of the last one.
  virtual Result<std::optional<std::string>> setting(std::string_view key) = 0;
  virtual Status put_setting(std::string_view key, std::string_view value) = 0;

  virtual Status commit() = 0;
};

class HqStore {
 public:
  virtual ~HqStore() = default;

  virtual Result<std::unique_ptr<HqTransaction>> begin() = 0;

  // The epoch id: changes when HQ's database is replaced, so nodes resync safely.
  virtual const std::string& epoch() const = 0;
  virtual const std::string& number_prefix() const = 0;

  // Feed entries with seq > after, at most `limit`; when `channel` is set, only that
  // channel's customers (offline data exclusion, D5). `cursor_out` receives the seq
  // the node should continue after (past filtered-out entries too).
  virtual Result<std::vector<FeedEntry>> feed_after(std::int64_t after, std::size_t limit,
                                                    const std::optional<std::string>& channel,
                                                    std::int64_t* cursor_out) = 0;
  // HQ's push cursor for `node` as last committed (0 when none), without a transaction.
  virtual Result<std::int64_t> push_cursor(std::string_view node) = 0;
  // Whether HQ holds operation `op` from `node` (received, whatever its state).
  virtual Result<bool> holds_op(std::string_view node, const Guid& op) = 0;
  // Customers matching `text` (every customer for ""), in name order; at most `limit`
  // (0: no limit); with `channel`, only customers of that channel.
  virtual Result<std::vector<Customer>> search(std::string_view text, std::size_t limit,
                                               const std::optional<std::string>& channel) = 0;
  virtual Result<std::vector<Customer>> all_customers_by_guid() = 0;
  // Every customer in ascending GUID order, streamed to `fn` from one snapshot, so a
  // digest of a large HQ needs bounded memory. Stops at the first error `fn` returns.
  // The default calls all_customers_by_guid(); backends override it to page.
  virtual Status for_each_customer_by_guid(const std::function<Status(const Customer&)>& fn);
  // The status view (D12) ordered by creation time, then GUID: the stored rows, plus a
  // `pending` row for each async customer whose create is staged and has no stored row
  // (created and updated when HQ received it).
  virtual Result<std::vector<SyncStatusRecord>> sync_statuses(std::optional<SyncStatus> filter) = 0;
  virtual Result<std::vector<ConflictRecord>> conflicts() = 0;
  // The identity merges operators made, oldest first.
  virtual Result<std::vector<MergeRecord>> merges() = 0;
  // Every node HQ knows (it pushed or pulled): cursors, filter registration, clock lead.
  virtual Result<std::vector<TerminalInfo>> terminals() = 0;
  virtual Result<std::optional<std::string>> setting(std::string_view key) = 0;
  // What HQ received from `node`, in seq order (for export-log).
  virtual Result<std::vector<LogRecord>> received(std::string_view node, std::int64_t after,
                                                  std::size_t limit) = 0;
  // After an erasure: leaves no copy of deleted values in the store's own files where
  // it can (SQLite: checkpoints and truncates the write-ahead log; true when done,
  // false when another connection kept it busy). PostgreSQL: nothing to do here (true);
  // dead rows go at VACUUM (docs/operations.md, "Right to erasure").
  virtual Result<bool> scrub() { return true; }
};

struct SqliteHqOptions {
  bool durable = true;  // synchronous=FULL (else NORMAL)
  int busy_timeout_ms = 5000;
};

// `hq init`: creates a new HQ database with a fresh epoch id. invalid_input when the
// file already holds one.
Status init_sqlite_hq(const std::string& path, std::string_view number_prefix,
                      std::string_view epoch, const SqliteHqOptions& options = {});
// Opens an initialized HQ database.
Result<std::unique_ptr<HqStore>> open_sqlite_hq(const std::string& path,
                                                const SqliteHqOptions& options = {});

// The PostgreSQL backend (pg_hq_store.cpp): `url` is a libpq connection URI,
// e.g. postgresql://tillsync@db.example/hq. Several HQ processes may open the same
// database at once; see docs/operations.md.
// `hq init`: creates the HQ schema in an empty database (invalid_input when it already
// holds one).
Status init_postgres_hq(const std::string& url, std::string_view number_prefix, std::string_view epoch);
// Opens an initialized PostgreSQL HQ, upgrading its schema when this build is newer.
Result<std::unique_ptr<HqStore>> open_postgres_hq(const std::string& url);

}  // namespace tillsync
