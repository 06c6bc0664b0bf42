// The terminal's view of HQ's real-time service (RTS).
//
// A ChannelNode calls these for sync-mode work (D1, D7, D8, D10). Implementations must
// report every communication failure or timeout as Code::hq_unreachable, and only
// that: the node relies on it to fall back to async creation (D4). Domain refusals
// keep their own codes. An implementation is used by one thread at a time.
#pragma once

#include <string>
#include <vector>

#include "tillsync/domain.h"
#include "tillsync/status.h"

namespace tillsync {

class HqGateway {
 public:
  virtual ~HqGateway() = default;

  // Cheap and non-blocking: false when the last contact with HQ failed, so an async
  // creation can tell that the terminal is offline (D5) without an extra round trip.
  virtual bool reachable() = 0;

  // Creates `customer` (with its terminal-made GUID) at HQ; returns it as HQ stored
  // it, account number included. Idempotent on the GUID.
  virtual Result<Customer> create_customer(const std::string& node_id, const Customer& customer) = 0;
  // Edits a synced customer; `base_version` is the version the terminal had seen.
  virtual Result<Customer> edit_customer(const std::string& node_id, const Guid& customer,
                                         std::int64_t base_version,
                                         const std::vector<FieldChange>& changes) = 0;
  virtual Result<Customer> add_address(const std::string& node_id, const Guid& customer,
                                       const Address& address) = 0;
  virtual Result<Customer> issue_loyalty_card(const std::string& node_id, const Guid& customer) = 0;
};

}  // namespace tillsync
