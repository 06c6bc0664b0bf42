#include "field_merge.h"

#include "tillsync/validation.h"

namespace tillsync {
namespace {

constexpr std::string_view kHq = "HQ";

enum class Decision { apply, drop, hold };

Decision decide(const FieldWrite& incoming, const FieldWrite& stored, ConflictPolicy policy) {
  switch (policy) {
    case ConflictPolicy::manual:
      return Decision::hold;
    case ConflictPolicy::hq_wins:
      if (stored.node == kHq && incoming.node != kHq) return Decision::drop;
      if (incoming.node == kHq && stored.node != kHq) return Decision::apply;
      [[fallthrough]];
    case ConflictPolicy::lww:
      return newer(incoming, stored) ? Decision::apply : Decision::drop;
  }
  return Decision::apply;
}

std::string outcome_text(Decision d, ConflictPolicy policy) {
  if (d == Decision::hold) return "held for an operator";
  switch (policy) {
    case ConflictPolicy::hq_wins:
      return d == Decision::apply ? "incoming write wins (HQ edit or newest)"
                                  : "stored write wins (HQ edit or newest)";
    default:
      return d == Decision::apply ? "incoming write wins (newest)" : "stored write wins (newest)";
  }
}

}  // namespace

bool newer(const FieldWrite& a, const FieldWrite& b) {
  if (a.hlc != b.hlc) return a.hlc > b.hlc;
  return a.node > b.node;
}

std::string address_key(const Guid& address, AddressField f) {
  return "address:" + address.to_string() + ":" + std::string(to_string(f));
}

std::string contact_key(const Guid& contact) { return "contact:" + contact.to_string() + ":value"; }

std::string* value_slot(Customer& c, std::string_view key) {
  // "<kind>:<36-char guid>:<name>"
  auto child = [&](std::string_view prefix) -> std::optional<std::pair<Guid, std::string_view>> {
    if (key.substr(0, prefix.size()) != prefix || key.size() < prefix.size() + 38) return std::nullopt;
    auto g = Guid::parse(key.substr(prefix.size(), 36));
    if (!g || key[prefix.size() + 36] != ':') return std::nullopt;
    return std::make_pair(*g, key.substr(prefix.size() + 37));
  };
  if (auto a = child("address:")) {
    auto f = parse_address_field(a->second);
    if (!f) return nullptr;
    for (Address& addr : c.addresses) {
      if (addr.guid == a->first) return &address_field(addr, *f);
    }
    return nullptr;
  }
  if (auto k = child("contact:")) {
    for (Contact& contact : c.contacts) {
      if (contact.guid == k->first) return &contact.value;
    }
    return nullptr;
  }
  if (auto f = parse_field(key)) return &c.get(*f);
  return nullptr;
}

std::vector<ValueChange> field_values(const std::vector<FieldChange>& changes) {
  std::vector<ValueChange> values;
  values.reserve(changes.size());
  for (const FieldChange& ch : changes) values.push_back({std::string(field_name(ch.field)), ch.value});
  return values;
}

Result<MergeOutcome> merge_values(HqTransaction& tx, Customer& c,
                                  const std::vector<ValueChange>& changes, const WriteContext& ctx) {
  struct Planned {
    const ValueChange* change;
    Decision decision = Decision::apply;
    std::optional<FieldWrite> previous;  // set when the write is concurrent with it
    std::string current;                 // the value before this write
  };
  const FieldWrite incoming{ctx.hlc, ctx.node, c.version + 1};
  std::vector<Planned> plan;
  Customer merged = c;
  for (const ValueChange& ch : changes) {
    std::string* slot = value_slot(merged, ch.key);
    if (slot == nullptr) continue;
    Planned p{&ch, Decision::apply, std::nullopt, *slot};
    TS_ASSIGN_OR_RETURN(auto stored, tx.field_write(c.guid, ch.key));
    // A node's own later write saw its earlier one, unless its clock went back: a node
    // restored from an older backup writes with an older HLC than what HQ already has
    // from it, and that write did not see the newer one.
    const bool sequential_same_node = stored && stored->node == ctx.node && !(ctx.hlc < stored->hlc);
    const bool concurrent = stored && stored->version > ctx.base_version && !sequential_same_node &&
                            *slot != ch.value;
    if (concurrent) {
      p.decision = decide(incoming, *stored, ctx.policy);
      p.previous = stored;
    }
    if (p.decision == Decision::apply) *slot = ch.value;
    plan.push_back(std::move(p));
  }
  TS_RETURN_IF_ERROR(validate_customer(merged));

  MergeOutcome out;
  for (const Planned& p : plan) {
    if (p.decision == Decision::apply) {
      out.changed = true;
      TS_RETURN_IF_ERROR(tx.put_field_write(c.guid, p.change->key, incoming));
    }
    if (!p.previous) continue;
    ConflictRecord rec;
    rec.customer = c.guid;
    rec.field = p.change->key;
    if (p.decision == Decision::apply) {
      rec.kept = p.change->value;
      rec.lost = p.current;
      rec.kept_write = incoming;
      rec.lost_write = *p.previous;
    } else {
      rec.kept = p.current;
      rec.lost = p.change->value;
      rec.kept_write = *p.previous;
      rec.lost_write = incoming;
    }
    rec.policy = ctx.policy;
    rec.outcome = outcome_text(p.decision, ctx.policy);
    rec.status = p.decision == Decision::hold ? "open" : "resolved";
    rec.created_at_ms = ctx.now_ms;
    TS_ASSIGN_OR_RETURN(auto id, tx.add_conflict(rec));
    (void)id;
    ++out.conflicts;
    if (p.decision == Decision::hold) ++out.held;
  }
  if (out.changed) {
    merged.version = c.version + 1;
    c = std::move(merged);
  }
  return out;
}

}  // namespace tillsync
