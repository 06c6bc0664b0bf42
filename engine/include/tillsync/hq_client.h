// HqClient: a terminal's connection to HQ. It implements HqGateway for real-time calls
// and offers the replication calls (hello, push, pull) the Replicator uses.
//
// Every request is bounded by the timeout given at connect (--rts-timeout-ms), sending
// and waiting for the answer together. A request that could not be sent is
// Code::hq_unreachable; a real-time request sent and not answered in time is
// Code::outcome_unknown (replication requests are idempotent, so for them it is
// hq_unreachable too). After such a failure reachable() says false for a while (1 s,
// doubling up to 30 s while failures go on), then the next request tries HQ again; any
// answer from HQ resets it. Several clients (say the cashier's and a background sync
// thread's) each keep their own.
// Thread-safety: none; one thread uses a client.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tillsync/channel_node.h"
#include "tillsync/hq_gateway.h"
#include "tillsync/operations.h"
#include "tillsync/status.h"

namespace tillsync {

struct HelloReply {
  std::string epoch;
  std::int64_t push_cursor = 0;  // highest seq of the node's log HQ holds (0: none)
  Hlc hq_hlc;                    // HQ's clock reading
  bool holds_acked = true;       // HQ holds the operation hello() named (true when none)
};

struct PushReply {
  std::string epoch;
  std::int64_t acked_seq = 0;
};

struct PullReply {
  std::string epoch;
  // `after` was not a position of HQ's feed (HQ was restored from an older backup):
  // nothing else is set, and the terminal pulls again from the start.
  bool reset = false;
  std::int64_t cursor = 0;
  std::uint64_t cursor_mark = 0;  // send back as after_mark with after = cursor
  Hlc hq_hlc;  // HQ's clock reading
  std::vector<Customer> customers;
  // (alias, target): a terminal-made GUID HQ merged into an existing customer.
  std::vector<std::pair<Guid, Guid>> aliases;
  // HQ ended the page before the limit asked for (its byte or entry bound): pull on.
  bool more = false;
  // (alias, account number): for a filtered node (D5), a GUID of its store HQ merged
  // into another store's customer. The node gets the mapping (the target GUID is in
  // `aliases`), never that customer's data.
  std::vector<std::pair<Guid, std::string>> merged_elsewhere{};
  // With reset: the terminal's position lies in the part of the feed HQ compacted (it
  // was away longer than HQ's feed retention). It pulls from the start again, a
  // snapshot of its scope; HQ did not go back.
  bool compacted = false;
  // Customers HQ erased (right to erasure): the terminal deletes its copy, the GUIDs
  // merged into it, and redacts their operations in its change log. Applied after
  // `customers` (a page never holds both a customer and its erasure).
  std::vector<Guid> erased{};
  // (alias, account number): the account number a GUID in `aliases` had before HQ
  // merged it (hq merge-customers); it names the customer the GUID joined.
  std::vector<std::pair<Guid, std::string>> alias_accounts{};
};

// Why HQ was unreachable, as far as the link can tell.
struct UnreachableCause {
  // A stable word (transport::to_text(UnreachableReason)): "timeout",
  // "unresolvable_host", "connection_refused", "handshake_refused",
  // "server_key_mismatch", "security_mismatch", "handshake_failed".
  std::string reason;
  std::string detail;  // short, e.g. "connection refused by 127.0.0.1:5555"
};

// The replication half of the terminal-HQ conversation. HqClient speaks it over
// ZeroMQ; LocalHqLink (local_hq_link.h) calls a Headquarters in the same process.
//
// Push: `prev` is the seq of the node's log row just before records[0] (the node holds
// nothing between them) and `prev_op` that row's op id (nil: no such row, or unknown). HQ acknowledges the highest seq it holds after its commit; a
// batch whose `prev` is beyond HQ's cursor is a gap (answered with the cursor, nothing
// staged). A record at or below HQ's cursor whose op id HQ does not hold from this node
// is refused with Code::conflict and nothing is staged: the node's database was
// restored from a backup or re-initialised (Replicator recovers, docs/protocol.md). So
// is a batch whose `prev` is at or below HQ's cursor while HQ does not hold `prev_op`.
// Pull: `after_mark` is the cursor_mark HQ returned with `after` (0 for after = 0).
class HqLink {
 public:
  virtual ~HqLink() = default;
  // `acked_op`: the op id of the node's newest acknowledged row (nil: none), at or below
  // `acked_seq`, the node's acknowledged cursor (HQ may have pruned what it received up
  // to there after its retention, and then takes the op as held).
  virtual Result<HelloReply> hello(const std::string& node_id, const Guid& acked_op, std::int64_t acked_seq = 0) = 0;
  virtual Result<PushReply> push(const std::string& node_id, std::int64_t prev, const Guid& prev_op,
                                 const std::vector<LogRecord>& records) = 0;
  // push() in two halves, so that several batches can be on their way while the caller
  // works: start_push() sends a batch, finish_push() returns the reply to the oldest
  // batch started and not finished (HQ answers them in order). A start_push() error
  // means the batch was not sent; finish_push() with nothing started is invalid_input.
  // Do not push() while batches are in flight (HqClient abandons them). The defaults
  // run push() in start_push() and keep its result for finish_push().
  virtual Status start_push(const std::string& node_id, std::int64_t prev, const Guid& prev_op,
                            const std::vector<LogRecord>& records);
  virtual Result<PushReply> finish_push();
  virtual Result<PullReply> pull(const std::string& node_id, std::int64_t after,
                                 std::uint64_t after_mark, std::uint32_t limit, bool filtered) = 0;
  // Why the latest request that failed with hq_unreachable found HQ unreachable;
  // nullopt when the link cannot tell (the default) or none failed.
  virtual std::optional<UnreachableCause> last_unreachable() const { return std::nullopt; }

 private:
  std::deque<Result<PushReply>> started_;  // the defaults' results, oldest first
};

// CurveZMQ settings of a terminal: its own key pair and HQ's public key (Z85).
struct HqCurveKeys {
  std::string public_key;
  std::string secret_key;
  std::string hq_public_key;
};

// The CurveZMQ keys a terminal's configuration names: nullopt when it has none;
// invalid_input when only one half is set or the key files are missing or malformed.
Result<std::optional<HqCurveKeys>> load_curve_keys(const NodeConfig& config);

struct HqClientOptions {
  int timeout_ms = 2000;
  // With keys, the connection is encrypted and authenticated; HQ refusing the key
  // shows as hq_unreachable (the handshake never completes; last_unreachable() says
  // handshake_refused).
  std::optional<HqCurveKeys> curve{};
  // reachable() is false for this long after a failed request, doubling per further
  // failure up to max_retry_after_ms.
  int retry_after_ms = 1000;
  int max_retry_after_ms = 30'000;
  PhysicalClock* clock = nullptr;  // for the retry delay; nullptr: the system clock
};

class HqClient final : public HqGateway, public HqLink {
 public:
  static Result<std::unique_ptr<HqClient>> connect(const std::string& endpoint, const HqClientOptions& options);
  static Result<std::unique_ptr<HqClient>> connect(const std::string& endpoint, int timeout_ms,
                                                   const std::optional<HqCurveKeys>& curve = std::nullopt);
  ~HqClient() override;

  // Never waits: true unless a request failed within the retry delay.
  bool reachable() override;
  Result<RtsAnswer> create_customer(const std::string& node_id, const Guid& request,
                                    const Customer& customer) override;
  Result<RtsAnswer> edit_customer(const std::string& node_id, const Guid& request, const Guid& customer,
                                  std::int64_t base_version,
                                  const std::vector<FieldChange>& changes) override;
  Result<RtsAnswer> add_address(const std::string& node_id, const Guid& request, const Guid& customer,
                                const Address& address) override;
  Result<RtsAnswer> issue_loyalty_card(const std::string& node_id, const Guid& request,
                                       const Guid& customer) override;

  // HQ's customer master, searched for this node: `text` needs at least 3 characters
  // (invalid_input), at most 50 customers come back (`truncated`: more matched), and a
  // node that is `filtered` (D5), or registered so at HQ, sees only its own store's.
  struct SearchResult {
    std::vector<Customer> customers;
    bool truncated = false;
  };
  Result<SearchResult> search(const std::string& node_id, const std::string& text, bool filtered = false);
  Result<HelloReply> hello(const std::string& node_id, const Guid& acked_op, std::int64_t acked_seq = 0) override;
  Result<PushReply> push(const std::string& node_id, std::int64_t prev, const Guid& prev_op,
                         const std::vector<LogRecord>& records) override;
  Status start_push(const std::string& node_id, std::int64_t prev, const Guid& prev_op,
                    const std::vector<LogRecord>& records) override;
  Result<PushReply> finish_push() override;
  Result<PullReply> pull(const std::string& node_id, std::int64_t after, std::uint64_t after_mark,
                         std::uint32_t limit, bool filtered) override;
  // From the transport (transport::Client::last_failure()).
  std::optional<UnreachableCause> last_unreachable() const override;
  const std::string& endpoint() const;

 private:
  struct Impl;
  explicit HqClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tillsync
