// The terminal's view of HQ's real-time service (RTS).
//
// A ChannelNode calls these for sync-mode work (D1, D7, D8, D10). Every request names a
// request id: the op id under which the terminal logs the write once HQ answers. HQ
// carries a request id out once; asked again, it answers with the customer as it is
// now and what the request did, without doing it twice.
// Errors: Code::hq_unreachable when the request was not sent (HQ certainly did not
// carry it out, e.g. no connection); Code::outcome_unknown when it was sent and no
// answer came in time (HQ may have carried it out; sending it again with the same id
// settles it). The node relies on both to fall back to async creation (D4). Domain
// refusals keep their own codes. An implementation is used by one thread at a time.
#pragma once

#include <string>
#include <vector>

#include "tillsync/clock.h"
#include "tillsync/domain.h"
#include "tillsync/status.h"

namespace tillsync {

// The answer to a real-time request.
struct RtsAnswer {
  Customer customer;        // as HQ has it after the request
  Hlc hq_hlc;               // HQ's clock: the terminal's later writes order after it
  std::string card_number;  // the loyalty card the request issued ("" otherwise)
};

class HqGateway {
 public:
  virtual ~HqGateway() = default;

  // Cheap and non-blocking: false for a while after a contact with HQ failed, so a
  // creation can go async (and a filtered terminal refuse it, D5) without waiting for
  // a timeout each time; afterwards the next request tries HQ again.
  virtual bool reachable() = 0;

  // Creates `customer` (with its terminal-made GUID) at HQ; returns it as HQ stored
  // it, account number included. Idempotent on the GUID too.
  virtual Result<RtsAnswer> create_customer(const std::string& node_id, const Guid& request,
                                            const Customer& customer) = 0;
  // Edits a synced customer; `base_version` is the version the terminal had seen.
  virtual Result<RtsAnswer> edit_customer(const std::string& node_id, const Guid& request,
                                          const Guid& customer, std::int64_t base_version,
                                          const std::vector<FieldChange>& changes) = 0;
  virtual Result<RtsAnswer> add_address(const std::string& node_id, const Guid& request,
                                        const Guid& customer, const Address& address) = 0;
  virtual Result<RtsAnswer> issue_loyalty_card(const std::string& node_id, const Guid& request,
                                               const Guid& customer) = 0;
};

}  // namespace tillsync
