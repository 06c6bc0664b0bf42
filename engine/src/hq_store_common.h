// Pieces both HQ backends (sqlite_hq_store.cpp, pg_hq_store.cpp) share, so the two
// stay one implementation of the same semantics.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "tillsync/hq_store.h"
#include "tillsync/operations.h"
#include "tillsync/validation.h"

namespace tillsync {

// Duplicate detection keys of a customer's main contacts: "e:<normalized e-mail>" and
// "p:<normalized phone>".
inline std::vector<std::string> duplicate_match_keys(const Customer& c) {
  std::vector<std::string> keys;
  if (std::string e = normalize_email(c.email); !e.empty()) keys.push_back("e:" + e);
  if (std::string p = normalize_phone(c.phone); !p.empty()) keys.push_back("p:" + p);
  return keys;
}

inline const char* staged_state_name(StagedState s) {
  switch (s) {
    case StagedState::staged: return "staged";
    case StagedState::applied: return "applied";
    case StagedState::failed: return "failed";
    case StagedState::waiting: return "waiting";
  }
  return "staged";
}

inline StagedState parse_staged_state(std::string_view s) {
  if (s == "applied") return StagedState::applied;
  if (s == "failed") return StagedState::failed;
  if (s == "waiting") return StagedState::waiting;
  return StagedState::staged;
}

// HqStore::terminals(): every node HQ knows (it pushed or pulled), with its cursors,
// filter registration and clock lead. The same text on both backends.
inline constexpr std::string_view kTerminalsQuery =
    "SELECT n.node_id, coalesce(c.cursor, 0), p.cursor, coalesce(p.filtered, 0), "
    "coalesce(k.ahead_ms, 0), coalesce(k.at_ms, 0), coalesce(c.pruned_through, 0) "
    "FROM (SELECT node_id FROM node_cursors UNION SELECT node_id FROM node_pulls) n "
    "LEFT JOIN node_cursors c ON c.node_id = n.node_id "
    "LEFT JOIN node_pulls p ON p.node_id = n.node_id "
    "LEFT JOIN node_clocks k ON k.node_id = n.node_id ORDER BY n.node_id";

// The lowest feed position every known node pulled from (a node that pushed but never
// pulled counts as 0); NULL when HQ knows no node.
inline constexpr std::string_view kMinPullCursorQuery =
    "SELECT min(coalesce(p.cursor, 0)) "
    "FROM (SELECT node_id FROM node_cursors UNION SELECT node_id FROM node_pulls) n "
    "LEFT JOIN node_pulls p ON p.node_id = n.node_id";

// The seqs of one node's received operations a pruning pass looks at: after what was
// pruned, before the node's cursor (the operation there is kept: a node names it when
// it pushes on), at most `budget` of them.
inline std::int64_t prune_scan_end(std::int64_t cursor, std::int64_t pruned, std::int64_t budget) {
  return std::min(cursor - 1, pruned + budget);
}

// The mark stored with a feed entry when it is appended (feed_mark()): random, never 0.
// An HQ database restored from a backup that appends an identical entry at the same seq
// again gives it another mark, so a terminal that had pulled the lost entry is reset
// rather than continuing after entries it never saw.
inline std::int64_t new_feed_mark() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uint64_t m = 0;
  while (m == 0) m = rng();
  return static_cast<std::int64_t>(m);
}

// One feed row as FeedEntry: an empty payload is an erasure entry (only the customer's
// GUID), `alias_raw` empty when the row has none, `mark` 0 when the row keeps none.
inline Result<FeedEntry> read_feed_entry(std::int64_t seq, std::string channel, std::string_view payload,
                                         std::string_view alias_raw, std::string_view customer_raw,
                                         std::int64_t mark) {
  FeedEntry e;
  e.seq = seq;
  e.channel = std::move(channel);
  if (payload.empty()) {
    auto guid = Guid::from_raw(customer_raw);
    if (!guid) return Status::CorruptLog("feed entry " + std::to_string(seq) + " names a malformed customer GUID");
    e.customer.guid = *guid;
    e.erased = true;
  } else {
    TS_ASSIGN_OR_RETURN(e.customer, decode_customer(payload));
  }
  if (!alias_raw.empty()) e.alias = Guid::from_raw(alias_raw);
  e.mark = static_cast<std::uint64_t>(mark);
  return e;
}

// Right to erasure: what stands where an erased customer's data was.
inline constexpr std::string_view kErasedError = "customer erased (right to erasure)";
inline constexpr std::string_view kErasedValue = "(erased)";

// The largest number an account number's nine digits hold.
inline constexpr long long kMaxAccountNumber = 999'999'999;

// "C000000042" for prefix "C" and n = 42.
inline std::string format_account_number(std::string_view prefix, long long n) {
  char digits[24];
  std::snprintf(digits, sizeof digits, "%09lld", n);
  return std::string(prefix) + digits;
}

}  // namespace tillsync
