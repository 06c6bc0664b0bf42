#include "tillsync/local_hq_link.h"

#include <algorithm>
#include <map>

namespace tillsync {

Status LocalHqLink::check() const {
  return up_ ? Status::Ok() : Status::HqUnreachable("HQ is partitioned away from this terminal");
}

Result<HelloReply> LocalHqLink::hello(const std::string& node_id, const Guid& acked_op, std::int64_t acked_seq) {
  TS_RETURN_IF_ERROR(check());
  TS_ASSIGN_OR_RETURN(HelloResult r, hq_->hello(node_id, acked_op, acked_seq));
  return HelloReply{hq_->epoch(), r.push_cursor, r.hq_hlc, r.holds_acked};
}

Result<PushReply> LocalHqLink::push(const std::string& node_id, std::int64_t prev, const Guid& prev_op,
                                    const std::vector<LogRecord>& records) {
  TS_RETURN_IF_ERROR(check());
  TS_ASSIGN_OR_RETURN(PushResult r, hq_->push(node_id, prev, prev_op, records));
  return PushReply{hq_->epoch(), r.acked_seq};
}

Result<PullReply> LocalHqLink::pull(const std::string& node_id, std::int64_t after,
                                    std::uint64_t after_mark, std::uint32_t limit, bool filtered) {
  TS_RETURN_IF_ERROR(check());
  TS_ASSIGN_OR_RETURN(PullResult r, hq_->pull(node_id, after, after_mark, limit, filtered));
  return to_pull_reply(hq_->epoch(), std::move(r));
}

PullReply to_pull_reply(std::string epoch, PullResult result) {
  PullReply out{std::move(epoch), result.reset, result.cursor, result.cursor_mark, result.hq_hlc, {}, {}, result.more};
  out.compacted = result.compacted;
  out.customers.reserve(result.entries.size());
  // A customer merged into another later in this page (an operator's merge) is not
  // sent: the node applies a page's merges before its customers, and would store the
  // merged customer again next to the one now holding its addresses and contacts.
  std::map<Guid, std::int64_t> merged_at;
  for (const auto& e : result.entries)
    if (e.alias) merged_at[*e.alias] = std::max(merged_at[*e.alias], e.seq);
  for (auto& e : result.entries) {
    if (e.erased) {
      out.erased.push_back(e.customer.guid);
      continue;
    }
    if (e.alias) out.aliases.emplace_back(*e.alias, e.customer.guid);
    if (e.alias && !e.alias_account.empty()) out.alias_accounts.emplace_back(*e.alias, e.alias_account);
    if (e.mapping_only && e.alias) {
      out.merged_elsewhere.emplace_back(*e.alias, e.customer.account_number.value_or(""));
      continue;
    }
    // Also the snapshot a merge entry carries (the customer merged into, itself merged
    // on later in this page).
    auto m = merged_at.find(e.customer.guid);
    if (m != merged_at.end() && m->second > e.seq) continue;
    out.customers.push_back(std::move(e.customer));
  }
  return out;
}

}  // namespace tillsync
