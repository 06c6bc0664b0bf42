// Per-field merging at HQ (DESIGN.md §4): detects concurrent writes to the same field,
// resolves them under the conflict policy, and journals every conflict.
//
// A write is concurrent with the last write HQ applied to a field when that write
// produced a customer version newer than the version the editor had seen, and came from
// another node. Non-concurrent writes always apply (the editor saw what it replaces).
#pragma once

#include <cstdint>
#include <vector>

#include "tillsync/domain.h"
#include "tillsync/hq_store.h"
#include "tillsync/status.h"

namespace tillsync {

struct WriteContext {
  Hlc hlc;                       // the write's HLC
  std::string node;              // "S001/T01", or "HQ" for back-office edits
  std::int64_t base_version = 0;  // customer version the editor had seen
  ConflictPolicy policy = ConflictPolicy::lww;
  std::int64_t now_ms = 0;
};

// One value a write changes, by key: a field name ("email"), "address:<guid>:<field>"
// or "contact:<guid>:value".
struct ValueChange {
  std::string key;
  std::string value;
};

std::string address_key(const Guid& address, AddressField f);
std::string contact_key(const Guid& contact);
// The string `key` names inside `c`; nullptr when it names nothing (a removed child).
std::string* value_slot(Customer& c, std::string_view key);

struct MergeOutcome {
  bool changed = false;        // at least one field took the new value
  std::int64_t conflicts = 0;  // journal entries written
  std::int64_t held = 0;       // changes held for an operator (manual policy)
};

// Customer field changes as keyed values.
std::vector<ValueChange> field_values(const std::vector<FieldChange>& changes);

// Applies `changes` to `c` under `ctx`; keys naming nothing (a removed child) are
// skipped. Validates the resulting customer first: on a domain error nothing is written
// and `c` is unchanged. Otherwise writes the per-key write states and journal entries in
// `tx` and bumps `c.version` when something changed.
Result<MergeOutcome> merge_values(HqTransaction& tx, Customer& c,
                                  const std::vector<ValueChange>& changes, const WriteContext& ctx);

// True when write `a` beats write `b` under last-writer-wins: (HLC, node) order.
bool newer(const FieldWrite& a, const FieldWrite& b);

}  // namespace tillsync
