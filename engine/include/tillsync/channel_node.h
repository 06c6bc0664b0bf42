// ChannelNode: the terminal's local engine, embedded by POS software.
//
// It owns the terminal's SQLite database: the functionality profile and default
// customer (D2, D5, D8-D11), the local customer replica and the append-only change log.
// Every local change writes its domain rows and its log row in one transaction.
// Work that needs HQ goes through the injected HqGateway; when HQ is unreachable (no
// gateway, CallOptions::offline, or the gateway reports Code::hq_unreachable) creation
// falls back to async (D4) and other HQ-bound operations fail with hq_unreachable.
//
// Ownership: create()/open() return the only owner of the node; the PhysicalClock and
// HqGateway in the options are borrowed and must outlive it.
// Thread-safety: none; use a node from one thread at a time. Several processes may open
// the same database file (WAL mode, busy timeout).
// Errors: Status codes of DESIGN.md §5; on any error nothing is written.
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
#include "tillsync/operations.h"
#include "tillsync/status.h"

namespace tillsync {

struct NodeConfig {
  std::string store_id;     // e.g. "S001"
  std::string terminal_id;  // e.g. "T01"
  std::optional<std::string> hq_endpoint;  // nullopt: no HQ, always offline
  int rts_timeout_ms = 2000;               // bound on every request to HQ
  // CurveZMQ (both or neither): the directory with this terminal's key pair
  // (public.key, secret.key; see `tillsync keygen`) and HQ's public key (Z85 text).
  // Unset: plaintext connection to HQ.
  std::optional<std::string> key_dir;
  std::optional<std::string> hq_public_key;
  // Log retention (DESIGN.md §3; docs/operations.md, *Log retention*). nullopt (the
  // default): the whole change log is kept. Otherwise, after each successful sync, rows
  // that HQ acknowledged more than this long ago and that were written more than this
  // long ago are deleted, a prefix of the log at a time; the newest acknowledged row and
  // every unacknowledged one stay. Keep it longer than the age of the oldest HQ backup
  // you would restore: operations compacted here cannot be pushed to HQ again.
  std::optional<std::int64_t> log_retention_ms;
  FunctionalityProfile profile;
  DefaultCustomer default_customer;

  std::string node_id() const { return store_id + "/" + terminal_id; }
  bool operator==(const NodeConfig&) const = default;
};

enum class Durability { normal, full };

struct ChannelNodeOptions {
  PhysicalClock* clock = nullptr;      // nullptr: the system clock
  std::optional<std::uint64_t> seed;  // GUID generator seed; nullopt: random
  HqGateway* hq = nullptr;            // nullptr: HQ unreachable
  Durability durability = Durability::full;
  int busy_timeout_ms = 5000;
};

// Input of create_customer(). Unset optional values come from the default customer
// (D11); addresses without a purpose get "home" (person) or "business" (organization).
struct NewCustomer {
  std::optional<CustomerType> type;  // nullopt: org_name given -> organization, else template
  std::string first_name, middle_name, last_name, org_name;
  std::string title, email, phone;
  std::optional<std::string> language, currency, customer_group, receipt_option, receipt_email;
  std::vector<std::string> affiliations;
  std::vector<std::string> secondary_emails;
  std::vector<std::string> secondary_phones;
  std::vector<Address> addresses;  // GUIDs are assigned by the node
};

struct CallOptions {
  bool offline = false;  // the manual offline switch, for this call
};

enum class CreationMode { sync, async };
std::string_view to_string(CreationMode m);

struct CreateOutcome {
  Customer customer;
  CreationMode mode = CreationMode::async;
  // Why a sync-mode creation became async (D4), empty otherwise; and its stable code:
  // "offline_mode", "no_hq", "hq_unreachable" (not sent), "no_answer" (sent, no answer
  // in time: HQ may have created it, and then knows it by its GUID), "hq_busy".
  std::string fallback_reason;
  std::string fallback_code;
};

struct NodeStatus {
  std::string node_id;
  bool online = false;  // outcome of the last HQ contact
  std::int64_t pending_ops = 0;  // log operations HQ has not acknowledged
  std::int64_t last_seq = 0;
  std::int64_t acked_seq = 0;
  // The change log this terminal holds: seqs first_seq..last_seq (first_seq 0 when it
  // is empty), log_rows rows; the log retention compacted it through compacted_through
  // (0: never), last at compacted_at_ms.
  std::int64_t first_seq = 0;
  std::int64_t log_rows = 0;
  std::int64_t compacted_through = 0;
  std::optional<std::int64_t> compacted_at_ms;
  // The last time HQ lacked operations this log had compacted (HQ restored from a
  // backup older than the retention, or replaced): seqs lost_from..lost_to, found at
  // lost_at_ms (unset: never).
  std::int64_t lost_from = 0, lost_to = 0;
  std::optional<std::int64_t> lost_at_ms;
  std::int64_t pulled_seq = 0;
  std::optional<std::int64_t> last_sync_at_ms;
  std::string last_error;
  // The last sync that found HQ unreachable, unless HQ answered since: when, and why
  // when the transport could tell: a stable word (UnreachableCause::reason, e.g.
  // "connection_refused"; empty when unknown) and a short explanation.
  std::optional<std::int64_t> unreachable_at_ms;
  std::string unreachable_reason;
  std::string unreachable_detail;
  // What the terminal last did by itself to recover from a restore (its own database
  // or HQ's from an older backup, a new HQ); empty when never.
  std::string last_recovery;
  // Customers from HQ's feed this terminal could not store (kept aside; the next
  // entry of the same customer that applies replaces them), and the latest error.
  std::int64_t set_aside = 0;
  std::string set_aside_error;
  // Real-time requests sent without an answer, to be settled with HQ (reconcile()).
  std::int64_t unsettled_requests = 0;
};

class ChannelNode {
 public:
  ~ChannelNode();
  ChannelNode(const ChannelNode&) = delete;
  ChannelNode& operator=(const ChannelNode&) = delete;

  // `store init`: creates the database at `path` (mode 0600) with `config`. Fails with
  // invalid_input if the file already holds a terminal database.
  static Result<std::unique_ptr<ChannelNode>> create(const std::string& path,
                                                     const NodeConfig& config,
                                                     const ChannelNodeOptions& options = {});
  // Opens an initialized terminal database. not_found when missing,
  // not_a_tillsync_database / unsupported_version when it cannot be used.
  static Result<std::unique_ptr<ChannelNode>> open(const std::string& path,
                                                   const ChannelNodeOptions& options = {});

  const NodeConfig& config() const;
  std::string node_id() const { return config().node_id(); }
  // Replaces the HQ gateway (borrowed; nullptr: HQ unreachable). Lets an application
  // open the node first and then connect to config().hq_endpoint.
  void attach_hq(HqGateway* hq);
  // Sets NodeConfig::log_retention_ms (nullopt: keep the whole log). Rows HQ
  // acknowledged before retention was turned on count as acknowledged now. A replicator
  // already running on the database reads the setting at its next sync.
  Status set_log_retention(std::optional<std::int64_t> retention_ms);

  // D1/D4/D5/D9/D11/D13.
  Result<CreateOutcome> create_customer(const NewCustomer& input, CallOptions call = {});
  // D8. `id` is an account number or a GUID.
  Result<Customer> edit_customer(std::string_view id, const std::vector<FieldChange>& changes,
                                 CallOptions call = {});
  // D10.
  Result<Customer> add_address(std::string_view id, const Address& address, CallOptions call = {});
  // D7.
  Result<Customer> issue_loyalty_card(std::string_view id, CallOptions call = {});

  // Real-time calls that reached HQ's side but got no answer in time end with
  // Code::outcome_unknown and are remembered: the same command repeated sends the
  // same request again (HQ carries a request out once), and reconcile() sends every
  // remembered one again, storing and logging HQ's answer. Returns how many settled;
  // stops (without error) at the first that gets no answer. `store sync` calls it.
  Result<std::int64_t> reconcile();

  // Edits and removals of addresses (need async_customer_addresses) and secondary
  // contacts (need async_customer_edits; on a pending customer also
  // enhanced_async_customer). They are logged and replicated; removals leave tombstones
  // at HQ, and a removal concurrent with an edit wins and is journaled there.
  Result<Customer> update_address(std::string_view id, const Guid& address,
                                  const std::vector<AddressFieldChange>& changes);
  Result<Customer> remove_address(std::string_view id, const Guid& address);
  Result<Customer> add_contact(std::string_view id, ContactKind kind, const std::string& value);
  Result<Customer> update_contact(std::string_view id, const Guid& contact, const std::string& value);
  Result<Customer> remove_contact(std::string_view id, const Guid& contact);

  Result<Customer> find(std::string_view id);
  // Case-insensitive match on names, e-mail, phone, account number and GUID; an empty
  // text lists every customer. Ordered by display name, then GUID.
  Result<std::vector<Customer>> search(std::string_view text);

  Result<NodeStatus> status();
  Result<ContentDigest> digest();
  // Log rows with seq > after_seq, at most `limit`, in seq order.
  Result<std::vector<LogRecord>> read_log(std::int64_t after_seq, std::size_t limit);

 private:
  struct Impl;
  explicit ChannelNode(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tillsync
