// HqClient: a terminal's connection to HQ. It implements HqGateway for real-time calls
// and offers the replication calls (push, pull) the Replicator uses.
//
// Every request is bounded by the timeout given at connect (--rts-timeout-ms); a
// timeout or any communication failure is Code::hq_unreachable and marks the
// connection unreachable until a later call succeeds.
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

struct PushReply {
  std::string epoch;
  std::int64_t acked_seq = 0;
};

struct PullReply {
  std::string epoch;
  std::int64_t cursor = 0;
  Hlc hq_hlc;  // HQ's clock reading
  std::vector<Customer> customers;
  // (alias, target): a terminal-made GUID HQ merged into an existing customer.
  std::vector<std::pair<Guid, Guid>> aliases;
};

// The replication half of the terminal-HQ conversation. HqClient speaks it over
// ZeroMQ; LocalHqLink (local_hq_link.h) calls a Headquarters in the same process.
class HqLink {
 public:
  virtual ~HqLink() = default;
  virtual Result<std::string> ping(const std::string& node_id) = 0;  // HQ's epoch
  virtual Result<PushReply> push(const std::string& node_id, const std::vector<LogRecord>& records) = 0;
  // push() in two halves, so that several batches can be on their way while the caller
  // works: start_push() sends a batch, finish_push() returns the reply to the oldest
  // batch started and not finished (HQ answers them in order). A start_push() error
  // means the batch was not sent; finish_push() with nothing started is invalid_input.
  // Do not push() while batches are in flight (HqClient abandons them). The defaults
  // run push() in start_push() and keep its result for finish_push().
  virtual Status start_push(const std::string& node_id, const std::vector<LogRecord>& records);
  virtual Result<PushReply> finish_push();
  virtual Result<PullReply> pull(const std::string& node_id, std::int64_t after, std::uint32_t limit,
                                 bool filtered) = 0;

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

class HqClient final : public HqGateway, public HqLink {
 public:
  // With `curve`, the connection is encrypted and authenticated; HQ refusing the key
  // shows as hq_unreachable (the handshake never completes).
  static Result<std::unique_ptr<HqClient>> connect(const std::string& endpoint, int timeout_ms,
                                                   const std::optional<HqCurveKeys>& curve = std::nullopt);
  ~HqClient() override;

  // Probes HQ once (bounded by the timeout) when nothing is known yet; afterwards the
  // outcome of the last call.
  bool reachable() override;
  Result<Customer> create_customer(const std::string& node_id, const Customer& customer) override;
  Result<Customer> edit_customer(const std::string& node_id, const Guid& customer,
                                 std::int64_t base_version,
                                 const std::vector<FieldChange>& changes) override;
  Result<Customer> add_address(const std::string& node_id, const Guid& customer,
                               const Address& address) override;
  Result<Customer> issue_loyalty_card(const std::string& node_id, const Guid& customer) override;

  Result<std::vector<Customer>> search(const std::string& node_id, const std::string& text);
  Result<std::string> ping(const std::string& node_id) override;
  Result<PushReply> push(const std::string& node_id, const std::vector<LogRecord>& records) override;
  Status start_push(const std::string& node_id, const std::vector<LogRecord>& records) override;
  Result<PushReply> finish_push() override;
  Result<PullReply> pull(const std::string& node_id, std::int64_t after, std::uint32_t limit,
                         bool filtered) override;
  const std::string& endpoint() const;

 private:
  struct Impl;
  explicit HqClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tillsync
