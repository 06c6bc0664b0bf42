#include "field_merge.h"

#include "tillsync/validation.h"

namespace tillsync {
namespace {

constexpr std::string_view kHq = "HQ";

enum class Decision { apply, drop, hold };

struct Planned {
  FieldChange change;
  Decision decision = Decision::apply;
  std::optional<FieldWrite> previous;  // set when the write is concurrent with it
};

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

Result<MergeOutcome> merge_field_changes(HqTransaction& tx, Customer& c,
                                         const std::vector<FieldChange>& changes,
                                         const WriteContext& ctx) {
  const FieldWrite incoming{ctx.hlc, ctx.node, c.version + 1};
  std::vector<Planned> plan;
  Customer merged = c;
  for (const FieldChange& ch : changes) {
    Planned p{ch, Decision::apply, std::nullopt};
    TS_ASSIGN_OR_RETURN(auto stored, tx.field_write(c.guid, field_name(ch.field)));
    const bool concurrent = stored && stored->version > ctx.base_version &&
                            stored->node != ctx.node && merged.get(ch.field) != ch.value;
    if (concurrent) {
      p.decision = decide(incoming, *stored, ctx.policy);
      p.previous = stored;
    }
    if (p.decision == Decision::apply) merged.get(ch.field) = ch.value;
    plan.push_back(std::move(p));
  }
  TS_RETURN_IF_ERROR(validate_customer(merged));

  MergeOutcome out;
  for (const Planned& p : plan) {
    const std::string key(field_name(p.change.field));
    if (p.decision == Decision::apply) {
      out.changed = true;
      TS_RETURN_IF_ERROR(tx.put_field_write(c.guid, key, incoming));
    }
    if (!p.previous) continue;
    ConflictRecord rec;
    rec.customer = c.guid;
    rec.field = key;
    const std::string current = c.get(p.change.field);
    if (p.decision == Decision::apply) {
      rec.kept = p.change.value;
      rec.lost = current;
      rec.kept_write = incoming;
      rec.lost_write = *p.previous;
    } else {
      rec.kept = current;
      rec.lost = p.change.value;
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
