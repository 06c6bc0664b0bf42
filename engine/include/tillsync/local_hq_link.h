// LocalHqLink: a terminal talking to a Headquarters in the same process, without a
// network. The replication path is the same as over ZeroMQ (Headquarters::push/pull);
// used by simulations, property tests, replay and benchmarks.
// Borrowed Headquarters; one thread at a time. A link can be switched "down" to model a
// partition: every call then fails with hq_unreachable.
#pragma once

#include "tillsync/headquarters.h"
#include "tillsync/hq_client.h"

namespace tillsync {

// The reply a terminal gets for a pull, built from HQ's result (shared by the ZeroMQ
// service and the in-process link).
PullReply to_pull_reply(std::string epoch, PullResult result);

class LocalHqLink final : public HqLink {
 public:
  explicit LocalHqLink(Headquarters& hq) : hq_(&hq) {}

  void set_up(bool up) { up_ = up; }
  bool up() const { return up_; }

  Result<HelloReply> hello(const std::string& node_id, const Guid& acked_op, std::int64_t acked_seq = 0) override;
  Result<PushReply> push(const std::string& node_id, std::int64_t prev, const Guid& prev_op,
                         const std::vector<LogRecord>& records) override;
  Result<PullReply> pull(const std::string& node_id, std::int64_t after, std::uint64_t after_mark,
                         std::uint32_t limit, bool filtered) override;

 private:
  Status check() const;
  Headquarters* hq_;
  bool up_ = true;
};

}  // namespace tillsync
