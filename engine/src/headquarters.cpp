#include "tillsync/headquarters.h"

#include <algorithm>
#include <map>
#include <random>
#include <span>

#include "apply.h"
#include "field_merge.h"
#include "tillsync/storage/pg.h"
#include "tillsync/validation.h"

namespace tillsync {
namespace {

// The channel (store) a node belongs to: "S001" for "S001/T01".
std::string channel_of_node(std::string_view node_id) {
  return std::string(node_id.substr(0, node_id.find('/')));
}

Status not_found(const Guid& guid) {
  return Status::NotFound("customer " + guid.to_string() + " does not exist at HQ");
}

std::string new_epoch() {
  std::random_device rd;
  GuidGenerator g((std::uint64_t{rd()} << 32) ^ rd());
  return g.next().to_string();
}

// Runs `body` (one store transaction) again while the store reports Code::busy: a
// server database aborted it to serialize it with another HQ process, and nothing of
// the aborted attempt was written. `body` must start from scratch each time.
// `retries` counts the runs that were aborted and repeated.
template <typename F>
auto with_retries(std::uint64_t& retries, F&& body) -> decltype(body()) {
  constexpr int kAttempts = 50;
  for (int attempt = 1;; ++attempt) {
    auto r = body();
    if (r.ok() || r.status().code() != Code::busy || attempt == kAttempts) return r;
    ++retries;
  }
}

// A failure of the store (as opposed to a domain outcome of an operation).
bool storage_failure(const Status& s) { return s.code() == Code::internal || s.code() == Code::busy; }

constexpr std::string_view kConflictPolicyKey = "conflict_policy";
constexpr std::string_view kDuplicatePolicyKey = "duplicate_policy";
constexpr std::string_view kBackOffice = "HQ";

}  // namespace

struct Headquarters::Impl {
  std::unique_ptr<HqStore> store;
  PhysicalClock* clock;
  HqOptions options;
  // Pulls: each node's registration (true: filtered, D5) and the pull cursor last
  // written for it, as this process knows them. A pull cursor only decides when
  // tombstones may go, so it is written when a node has caught up (a pull that returns
  // less than a full page, with a cursor beyond the one written) instead of in a write
  // transaction for every page of a long download. The store keeps the maximum.
  std::map<std::string, bool, std::less<>> pull_registration{};
  std::map<std::string, std::int64_t, std::less<>> noted_pull{};
  std::uint64_t busy_retries = 0;  // transactions run again after Code::busy

  Result<bool> note_pull(std::string_view node, std::int64_t after, bool filtered) {
    TS_ASSIGN_OR_RETURN(bool registered, with_retries(busy_retries, [&]() -> Result<bool> {
      TS_ASSIGN_OR_RETURN(auto tx, store->begin());
      TS_ASSIGN_OR_RETURN(bool r, tx->note_pull(node, after, filtered));
      TS_RETURN_IF_ERROR(tx->commit());
      return r;
    }));
    pull_registration[std::string(node)] = registered;
    std::int64_t& noted = noted_pull[std::string(node)];
    noted = std::max(noted, after);
    return registered;
  }

  std::int64_t now() { return clock->now_ms(); }

  // HQ's hybrid logical clock, persisted in the store: merged with every operation HQ
  // applies, ticked for HQ's own writes. Returns the new reading.
  Result<Hlc> tick(HqTransaction& tx, std::optional<Hlc> remote) {
    TS_ASSIGN_OR_RETURN(auto stored, tx.setting(kHlcSetting));
    HybridLogicalClock hlc(*clock, Hlc{stored ? std::stoull(*stored) : 0});
    const Hlc t = remote ? hlc.update(*remote) : hlc.now();
    TS_RETURN_IF_ERROR(tx.put_setting(kHlcSetting, std::to_string(t.value)));
    return t;
  }

  Result<ConflictPolicy> policy(HqTransaction& tx) {
    TS_ASSIGN_OR_RETURN(auto v, tx.setting(kConflictPolicyKey));
    return v ? parse_conflict_policy(*v).value_or(ConflictPolicy::lww) : ConflictPolicy::lww;
  }

  // Merges keyed value changes into `c` under HQ's conflict policy (field_merge.h).
  Result<MergeOutcome> merge(HqTransaction& tx, Customer& c, const std::vector<ValueChange>& values,
                             Hlc hlc, std::string_view node, std::int64_t base_version) {
    TS_ASSIGN_OR_RETURN(ConflictPolicy p, policy(tx));
    WriteContext ctx{hlc, std::string(node), base_version, p, now()};
    return merge_values(tx, c, values, ctx);
  }

  Status mark_conflict(HqTransaction& tx, const Customer& c, std::string_view node) {
    TS_ASSIGN_OR_RETURN(auto row, tx.sync_status(c.guid));
    SyncStatusRecord r = row.value_or(SyncStatusRecord{});
    if (!row) {
      r.guid = c.guid;
      r.node_id = std::string(node);
      r.created_at_ms = now();
    }
    r.account_number = c.account_number;
    r.status = SyncStatus::conflict;
    r.last_error = "a concurrent edit waits for an operator (hq conflicts / hq resolve)";
    r.updated_at_ms = now();
    return tx.put_sync_status(r);
  }

  // Writes the customer and publishes it on the feed, in the caller's transaction.
  Status publish(HqTransaction& tx, const Customer& c, std::string_view channel) {
    TS_RETURN_IF_ERROR(tx.put_customer(c, channel));
    TS_ASSIGN_OR_RETURN(std::string stored_channel, tx.channel_of(c.guid));
    return tx.append_feed(c, stored_channel);
  }

  // The customer a GUID names: itself, or the customer it was merged into (duplicates).
  Result<std::optional<Customer>> lookup(HqTransaction& tx, const Guid& guid) {
    TS_ASSIGN_OR_RETURN(auto c, tx.customer(guid));
    if (c) return c;
    TS_ASSIGN_OR_RETURN(auto target, tx.alias_target(guid));
    if (!target) return std::optional<Customer>{};
    return tx.customer(*target);
  }

  Result<Customer> existing(HqTransaction& tx, const Guid& guid) {
    TS_ASSIGN_OR_RETURN(auto c, lookup(tx, guid));
    if (!c) return not_found(guid);
    return std::move(*c);
  }

  Result<DuplicatePolicy> duplicates(HqTransaction& tx) {
    TS_ASSIGN_OR_RETURN(auto v, tx.setting(kDuplicatePolicyKey));
    return v ? parse_duplicate_policy(*v).value_or(DuplicatePolicy::flag) : DuplicatePolicy::flag;
  }

  // Duplicate detection at conversion (DESIGN.md §4). Returns true when `c` was merged
  // into an existing customer (policy merge) and must not be created.
  Result<bool> handle_duplicate(HqTransaction& tx, const StagedOp& op, Customer& c,
                                std::string_view channel, std::optional<Guid>& twin_out) {
    TS_ASSIGN_OR_RETURN(auto twin, tx.find_duplicate(c));
    twin_out = twin;
    if (!twin) return false;
    TS_ASSIGN_OR_RETURN(DuplicatePolicy policy, duplicates(tx));
    if (policy == DuplicatePolicy::flag) return false;
    TS_ASSIGN_OR_RETURN(Customer target, existing(tx, *twin));
    TS_RETURN_IF_ERROR(tx.put_alias(c.guid, target.guid));
    TS_RETURN_IF_ERROR(tx.append_alias(c.guid, target, channel));
    TS_RETURN_IF_ERROR(record_status(tx, op, c.guid, target.account_number, SyncStatus::duplicate,
                                     "merged into existing customer " + target.account_id(), target.guid));
    return true;
  }

  // Outcome of applying one staged operation: OK, or a domain error that marks the
  // operation (and its customer's status) failed. Storage errors abort the pass.
  struct Applied {
    Status domain;        // non-OK: the op failed at HQ
    bool converted = false;
  };

  Result<Applied> apply(HqTransaction& tx, const StagedOp& op, const std::vector<FieldChange>& fixes) {
    const LogRecord& rec = op.record;
    auto decoded = decode_payload(rec.kind, rec.payload);
    if (!decoded.ok()) return Applied{decoded.status()};
    const std::string channel = channel_of_node(rec.node_id);
    Payload& p = *decoded;

    if (auto* created = std::get_if<CustomerCreated>(&p)) {
      Customer c = created->customer;
      if (c.guid != rec.entity) return Applied{Status::CorruptLog("create payload GUID differs from the log row")};
      TS_ASSIGN_OR_RETURN(auto have, lookup(tx, c.guid));
      if (have && have->guid != c.guid) return Applied{Status::Ok(), false};  // merged before
      if (have) {
        // Already created, e.g. by an RTS call whose reply was lost before the
        // terminal fell back to async (D4): the same GUID is the same customer.
        TS_RETURN_IF_ERROR(record_status(tx, op, c.guid, have->account_number, SyncStatus::converted, ""));
        return Applied{Status::Ok(), false};
      }
      for (const FieldChange& f : fixes) c.get(f.field) = f.value;
      Status valid = validate_customer(c);
      if (!valid.ok()) return Applied{valid};
      std::optional<Guid> twin;
      TS_ASSIGN_OR_RETURN(bool merged, handle_duplicate(tx, op, c, channel, twin));
      if (merged) return Applied{Status::Ok(), true};
      TS_ASSIGN_OR_RETURN(std::string account, tx.next_account_number());
      c.account_number = account;
      c.version = 1;
      c.loyalty_cards.clear();
      TS_RETURN_IF_ERROR(publish(tx, c, channel));
      if (twin) {
        TS_ASSIGN_OR_RETURN(Customer other, existing(tx, *twin));
        TS_RETURN_IF_ERROR(record_status(tx, op, c.guid, c.account_number, SyncStatus::duplicate,
                                         "same e-mail or phone as customer " + other.account_id(), twin));
      } else {
        TS_RETURN_IF_ERROR(record_status(tx, op, c.guid, c.account_number, SyncStatus::converted, ""));
      }
      return Applied{Status::Ok(), true};
    }

    TS_ASSIGN_OR_RETURN(auto have, lookup(tx, rec.entity));
    if (!have) {
      return Applied{Status::NotFound("customer " + rec.entity.to_string() +
                                      " has not been converted at HQ")};
    }
    Customer c = std::move(*have);
    // Field edits (the customer's, an address's, a contact's) merge per field; adds and
    // removals of children go through tombstones so a removal is never undone.
    std::vector<ValueChange> values;
    std::int64_t base_version = 0;
    std::optional<Guid> edited_child;
    if (auto* upd = std::get_if<CustomerUpdated>(&p)) {
      values = field_values(upd->changes);
      base_version = upd->base_version;
    } else if (auto* au = std::get_if<AddressUpdated>(&p)) {
      for (const AddressFieldChange& ch : au->changes) values.push_back({address_key(au->address, ch.field), ch.value});
      base_version = au->base_version;
      edited_child = au->address;
    } else if (auto* cu = std::get_if<ContactUpdated>(&p)) {
      values.push_back({contact_key(cu->contact), cu->value});
      base_version = cu->base_version;
      edited_child = cu->contact;
    } else {
      TS_ASSIGN_OR_RETURN(Applied a, apply_child(tx, rec, c, p, fixes));
      if (!a.domain.ok() || !a.converted) return Applied{a.domain, false};
      TS_RETURN_IF_ERROR(publish(tx, c, channel));
      return Applied{Status::Ok(), false};
    }
    if (edited_child) {
      TS_ASSIGN_OR_RETURN(auto removal, tx.tombstone(c.guid, *edited_child));
      if (removal) {
        // Removal wins over an edit of the removed child; a concurrent edit is journaled.
        if (removal->version > base_version && removal->node != rec.node_id) {
          TS_RETURN_IF_ERROR(journal_removal(tx, c, *edited_child, "edit of a removed child",
                                             *removal, FieldWrite{rec.hlc, rec.node_id, c.version}));
        }
        return Applied{Status::Ok(), false};
      }
    }
    for (ValueChange& v : field_values(fixes)) values.push_back(std::move(v));
    auto merged = merge(tx, c, values, rec.hlc, rec.node_id, base_version);
    if (!merged.ok()) {
      if (storage_failure(merged.status())) return merged.status();
      return Applied{merged.status()};
    }
    if (merged->held > 0) TS_RETURN_IF_ERROR(mark_conflict(tx, c, rec.node_id));
    if (!merged->changed) return Applied{Status::Ok(), false};
    TS_RETURN_IF_ERROR(publish(tx, c, channel));
    return Applied{Status::Ok(), false};
  }

  // Adds and removals of addresses and contacts. `converted` in the result means "the
  // customer changed" here.
  Result<Applied> apply_child(HqTransaction& tx, const LogRecord& rec, Customer& c,
                              const Payload& p, const std::vector<FieldChange>& fixes) {
    std::optional<Guid> added;
    std::optional<Guid> removed;
    std::vector<std::string> keys;
    std::int64_t base_version = 0;
    if (auto* a = std::get_if<AddressAdded>(&p)) added = a->address.guid;
    if (auto* k = std::get_if<ContactAdded>(&p)) added = k->contact.guid;
    if (auto* a = std::get_if<AddressRemoved>(&p)) {
      removed = a->address;
      base_version = a->base_version;
      for (auto f : {AddressField::purpose, AddressField::street, AddressField::city,
                     AddressField::state, AddressField::zip, AddressField::country})
        keys.push_back(address_key(a->address, f));
    }
    if (auto* k = std::get_if<ContactRemoved>(&p)) {
      removed = k->contact;
      base_version = k->base_version;
      keys.push_back(contact_key(k->contact));
    }
    if (added) {
      TS_ASSIGN_OR_RETURN(auto gone, tx.tombstone(c.guid, *added));
      if (gone) return Applied{Status::Ok(), false};  // never resurrect a removed child
    }
    const std::int64_t before = c.version;
    Status s = apply_to_customer(c, p, fixes);
    if (!s.ok()) return Applied{s};
    if (removed) {
      const FieldWrite removal{rec.hlc, rec.node_id, c.version};
      // Edits of the child the remover had not seen lose; each is journaled.
      for (const std::string& key : keys) {
        TS_ASSIGN_OR_RETURN(auto edit, tx.field_write(c.guid, key));
        if (edit && edit->version > base_version && edit->node != rec.node_id)
          TS_RETURN_IF_ERROR(journal_removal(tx, c, *removed, "removal of " + key, removal, *edit));
      }
      TS_RETURN_IF_ERROR(tx.put_tombstone(c.guid, *removed, removal));
    }
    return Applied{Status::Ok(), c.version != before};
  }

  // Journals a removal that won over an edit it did not see (or that did not see it).
  Status journal_removal(HqTransaction& tx, const Customer& c, const Guid& child,
                         std::string_view what, const FieldWrite& removal, const FieldWrite& edit) {
    TS_ASSIGN_OR_RETURN(ConflictPolicy p, policy(tx));
    ConflictRecord rec;
    rec.customer = c.guid;
    rec.field = "child:" + child.to_string();
    rec.kept = "(removed)";
    rec.lost = std::string(what);
    rec.kept_write = removal;
    rec.lost_write = edit;
    rec.policy = p;
    rec.outcome = "removal wins";
    rec.status = "resolved";
    rec.created_at_ms = now();
    TS_ASSIGN_OR_RETURN(auto id, tx.add_conflict(rec));
    (void)id;
    return Status::Ok();
  }



  // The status row of `guid` after `op`: created (by op's node, when HQ received op)
  // if the view has none yet.
  Status record_status(HqTransaction& tx, const StagedOp& op, const Guid& guid,
                       const std::optional<std::string>& account, SyncStatus status,
                       std::string_view error, std::optional<Guid> twin = std::nullopt) {
    TS_ASSIGN_OR_RETURN(auto row, tx.sync_status(guid));
    SyncStatusRecord r = row.value_or(SyncStatusRecord{});
    if (!row) {
      r.guid = guid;
      r.node_id = op.record.node_id;
      r.created_at_ms = op.received_at_ms > 0 ? op.received_at_ms : now();
    }
    r.account_number = account;
    r.status = status;
    r.last_error = std::string(error);
    r.updated_at_ms = now();
    if (twin) r.twin = twin;
    return tx.put_sync_status(r);
  }

  // Applies one op and records its outcome (state, status view) in `tx`.
  Status apply_and_record(HqTransaction& tx, const StagedOp& op,
                          const std::vector<FieldChange>& fixes, JobReport& report) {
    const LogRecord& rec = op.record;
    TS_ASSIGN_OR_RETURN(Hlc merged, tick(tx, rec.hlc));
    (void)merged;
    TS_ASSIGN_OR_RETURN(Applied a, apply(tx, op, fixes));
    if (a.domain.ok()) {
      TS_RETURN_IF_ERROR(tx.set_state(rec.node_id, rec.seq, StagedState::applied, ""));
      ++report.applied;
      if (a.converted) ++report.converted;
      return Status::Ok();
    }
    const std::string error = a.domain.to_string();
    TS_RETURN_IF_ERROR(tx.set_state(rec.node_id, rec.seq, StagedState::failed, error));
    TS_ASSIGN_OR_RETURN(auto row, tx.sync_status(rec.entity));
    // The status view follows async customers: a failed create, or any failure of a
    // customer that is not converted yet.
    if (rec.kind == OpKind::customer_create || (row && row->status != SyncStatus::converted)) {
      TS_RETURN_IF_ERROR(record_status(tx, op, rec.entity, std::nullopt, SyncStatus::failed, error));
    }
    ++report.failed;
    return Status::Ok();
  }
};

Headquarters::Headquarters(std::unique_ptr<HqStore> store, const HqOptions& options)
    : impl_(std::make_unique<Impl>(Impl{std::move(store),
                                        options.clock ? options.clock : &SystemClock::instance(),
                                        options})) {}
Headquarters::~Headquarters() = default;

Result<std::unique_ptr<Headquarters>> Headquarters::init(const std::string& path,
                                                         std::string_view number_prefix,
                                                         const HqOptions& options) {
  if (number_prefix.empty() || number_prefix.size() > 8 ||
      !std::all_of(number_prefix.begin(), number_prefix.end(),
                   [](char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); })) {
    return Status::InvalidInput("number_prefix",
                                "number_prefix: must be 1-8 upper-case letters or digits");
  }
  if (storage::is_postgres_url(path)) {
    TS_RETURN_IF_ERROR(init_postgres_hq(path, number_prefix, new_epoch()));
  } else {
    TS_RETURN_IF_ERROR(init_sqlite_hq(path, number_prefix, new_epoch(), {.durable = options.durable}));
  }
  return open(path, options);
}

Result<std::unique_ptr<Headquarters>> Headquarters::open(const std::string& path,
                                                         const HqOptions& options) {
  TS_ASSIGN_OR_RETURN(auto store, storage::is_postgres_url(path)
                                       ? open_postgres_hq(path)
                                       : open_sqlite_hq(path, {.durable = options.durable}));
  if (options.conflict_policy || options.duplicate_policy) {
    std::uint64_t retries = 0;
    TS_ASSIGN_OR_RETURN(bool done, with_retries(retries, [&]() -> Result<bool> {
      TS_ASSIGN_OR_RETURN(auto tx, store->begin());
      if (options.conflict_policy)
        TS_RETURN_IF_ERROR(tx->put_setting(kConflictPolicyKey, to_string(*options.conflict_policy)));
      if (options.duplicate_policy)
        TS_RETURN_IF_ERROR(tx->put_setting(kDuplicatePolicyKey, to_string(*options.duplicate_policy)));
      TS_RETURN_IF_ERROR(tx->commit());
      return true;
    }));
    (void)done;
  }
  return std::make_unique<Headquarters>(std::move(store), options);
}

const std::string& Headquarters::epoch() const { return impl_->store->epoch(); }
std::uint64_t Headquarters::busy_retries() const { return impl_->busy_retries; }
HqStore& Headquarters::store() { return *impl_->store; }

Result<Customer> Headquarters::rts_create(std::string_view node_id, const Customer& customer) {
  return with_retries(impl_->busy_retries, [&]() -> Result<Customer> {
    TS_RETURN_IF_ERROR(validate_customer(customer));
    if (customer.guid.is_nil()) return Status::InvalidInput("guid", "guid: a customer needs a GUID");
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(auto have, tx->customer(customer.guid));
    if (have) return std::move(*have);  // a retried request: same GUID, same customer
    Customer c = customer;
    TS_ASSIGN_OR_RETURN(std::string account, tx->next_account_number());
    c.account_number = account;
    c.version = 1;
    c.loyalty_cards.clear();
    TS_RETURN_IF_ERROR(impl_->publish(*tx, c, channel_of_node(node_id)));
    TS_RETURN_IF_ERROR(tx->commit());
    return c;
  });
}

Result<Customer> Headquarters::rts_edit(std::string_view node_id, const Guid& guid,
                                        std::int64_t base_version,
                                        const std::vector<FieldChange>& changes) {
  return with_retries(impl_->busy_retries, [&]() -> Result<Customer> {
    if (changes.empty()) return Status::InvalidInput("set", "set: no field changes given");
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(Customer c, impl_->existing(*tx, guid));
    TS_ASSIGN_OR_RETURN(Hlc hlc, impl_->tick(*tx, std::nullopt));
    TS_ASSIGN_OR_RETURN(MergeOutcome m, impl_->merge(*tx, c, field_values(changes), hlc, node_id, base_version));
    if (m.held > 0) TS_RETURN_IF_ERROR(impl_->mark_conflict(*tx, c, node_id));
    if (m.changed) TS_RETURN_IF_ERROR(impl_->publish(*tx, c, {}));
    TS_RETURN_IF_ERROR(tx->commit());
    return c;
  });
}

Result<Customer> Headquarters::rts_add_address(std::string_view, const Guid& guid,
                                               const Address& address) {
  return with_retries(impl_->busy_retries, [&]() -> Result<Customer> {
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(Customer c, impl_->existing(*tx, guid));
    TS_RETURN_IF_ERROR(apply_to_customer(c, AddressAdded{guid, address}));
    TS_RETURN_IF_ERROR(impl_->publish(*tx, c, {}));
    TS_RETURN_IF_ERROR(tx->commit());
    return c;
  });
}

Result<Customer> Headquarters::rts_issue_loyalty_card(std::string_view, const Guid& guid) {
  return with_retries(impl_->busy_retries, [&]() -> Result<Customer> {
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(Customer c, impl_->existing(*tx, guid));
    if (!c.account_number) return Status(Code::loyalty_requires_synced_customer, "customer has no account number");
    // Card numbers derive from the account number, so they are unique and stable.
    c.loyalty_cards.push_back(
        {"L" + c.account_number->substr(impl_->store->number_prefix().size()) + "-" +
             std::to_string(c.loyalty_cards.size() + 1),
         impl_->now()});
    TS_RETURN_IF_ERROR(impl_->publish(*tx, c, {}));
    TS_RETURN_IF_ERROR(tx->commit());
    return c;
  });
}

Result<std::vector<Customer>> Headquarters::search(std::string_view text) {
  return impl_->store->search(text);
}

Result<PushResult> Headquarters::push(std::string_view node_id, const std::vector<LogRecord>& records) {
  return with_retries(impl_->busy_retries, [&]() -> Result<PushResult> {
    for (const LogRecord& r : records) {
      if (r.node_id != node_id) {
        return Status(Code::unauthorized, "node " + std::string(node_id) +
                                              " may not push operations of node " + r.node_id);
      }
    }
    PushResult result;
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(std::int64_t cursor, tx->node_cursor(node_id));
    // The run of records that continues the node's cursor: what HQ already has is a
    // duplicate, a record after a missing seq stops the batch (the node resends from
    // our cursor).
    std::size_t first = 0;
    while (first < records.size() && records[first].seq <= cursor) ++first;
    std::size_t end = first;
    while (end < records.size() && records[end].seq == cursor + 1 + static_cast<std::int64_t>(end - first)) ++end;
    result.duplicates = first;
    result.gap = end < records.size();
    const std::span<const LogRecord> run(records.data() + first, end - first);
    // A staged create is its customer's `pending` row in the status view until the job
    // records an outcome (HqStore::sync_statuses): nothing else is written per record.
    TS_ASSIGN_OR_RETURN(std::vector<bool> fresh, tx->stage_all(run, impl_->now()));
    for (std::size_t i = 0; i < run.size(); ++i) {
      cursor = run[i].seq;
      if (fresh[i]) ++result.staged;
      else ++result.duplicates;
    }
    TS_RETURN_IF_ERROR(tx->commit());
    result.acked_seq = cursor;  // acknowledged only after the commit above
    return result;
  });
}

Result<PullResult> Headquarters::pull(std::string_view node_id, std::int64_t after,
                                      std::size_t limit, bool filtered) {
  PullResult out;
  std::optional<std::string> channel;
  if (filtered) channel = channel_of_node(node_id);
  auto known = impl_->pull_registration.find(node_id);
  // First pull of this node here, or a node becoming filtered: registered at once.
  const bool registering = known == impl_->pull_registration.end() || (!known->second && filtered);
  bool registered_filtered = false;
  if (registering) {
    TS_ASSIGN_OR_RETURN(registered_filtered, impl_->note_pull(node_id, after, filtered));
  } else {
    registered_filtered = known->second;
  }
  // A node that ever pulled with offline data exclusion stays excluded: a till
  // reconfigured (or stolen) cannot ask for other channels' customers.
  if (registered_filtered && !filtered)
    return Status(Code::unauthorized, "node " + std::string(node_id) +
                                          " is registered for filtered pulls (offline data "
                                          "exclusion); an unfiltered pull is refused");
  TS_ASSIGN_OR_RETURN(out.entries, impl_->store->feed_after(after, limit, channel, &out.cursor));
  if (!registering && out.entries.size() < limit && after > impl_->noted_pull[std::string(node_id)]) {
    TS_ASSIGN_OR_RETURN(bool still_filtered, impl_->note_pull(node_id, after, registered_filtered));
    (void)still_filtered;
  }
  TS_ASSIGN_OR_RETURN(auto stored, impl_->store->setting(kHlcSetting));
  out.hq_hlc = Hlc{stored ? std::stoull(*stored) : 0};
  return out;
}

Result<JobReport> Headquarters::run_sync_job(std::size_t max_ops) {
  JobReport report;
  constexpr std::size_t kChunk = 1000;  // ops per transaction
  while (report.applied + report.failed < max_ops) {
    const std::size_t want = std::min(kChunk, max_ops - report.applied - report.failed);
    // A chunk that the store aborts (busy) is run again from scratch, counts included.
    TS_ASSIGN_OR_RETURN(auto chunk, with_retries(impl_->busy_retries, [&]() -> Result<std::pair<JobReport, std::size_t>> {
      JobReport part;
      TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
      TS_ASSIGN_OR_RETURN(auto ops, tx->staged(want));
      for (const StagedOp& op : ops) TS_RETURN_IF_ERROR(impl_->apply_and_record(*tx, op, {}, part));
      TS_RETURN_IF_ERROR(tx->commit());
      return std::pair{part, ops.size()};
    }));
    report.applied += chunk.first.applied;
    report.converted += chunk.first.converted;
    report.failed += chunk.first.failed;
    if (chunk.second < want) break;
  }
  TS_ASSIGN_OR_RETURN(report.remaining, with_retries(impl_->busy_retries, [&]() -> Result<std::size_t> {
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(auto left, tx->staged(1));
    // Only with nothing staged: a staged edit of a removed child must still meet its
    // tombstone (and be journaled) even if every node has pulled past the removal.
    if (left.empty()) {
      TS_ASSIGN_OR_RETURN(auto collected, tx->collect_tombstones());
      (void)collected;
    }
    TS_RETURN_IF_ERROR(tx->commit());
    return left.size();
  }));
  return report;
}

Result<Customer> Headquarters::edit_customer(std::string_view id, const std::vector<FieldChange>& changes) {
  return with_retries(impl_->busy_retries, [&]() -> Result<Customer> {
    if (changes.empty()) return Status::InvalidInput("set", "set: no field changes given");
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    std::optional<Customer> c;
    if (auto guid = Guid::parse(id)) {
      TS_ASSIGN_OR_RETURN(c, tx->customer(*guid));
    } else {
      TS_ASSIGN_OR_RETURN(c, tx->customer_by_account(id));
    }
    if (!c) return Status::NotFound("customer '" + std::string(id) + "' does not exist at HQ");
    // A back-office edit sees HQ's current state: it is never concurrent with what HQ
    // has applied, only with channel edits still on their way.
    TS_ASSIGN_OR_RETURN(Hlc hlc, impl_->tick(*tx, std::nullopt));
    TS_ASSIGN_OR_RETURN(MergeOutcome m, impl_->merge(*tx, *c, field_values(changes), hlc, kBackOffice, c->version));
    if (m.changed) TS_RETURN_IF_ERROR(impl_->publish(*tx, *c, {}));
    TS_RETURN_IF_ERROR(tx->commit());
    return std::move(*c);
  });
}

Result<JobReport> Headquarters::resync(const Guid& guid, const std::vector<FieldChange>& fixes) {
  return with_retries(impl_->busy_retries, [&]() -> Result<JobReport> {
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(auto failed, tx->failed_for(guid));
    if (failed.empty())
      return Status::NotFound("customer " + guid.to_string() + " has no failed records to re-synchronize");
    JobReport report;
    bool fixes_used = false;
    for (const StagedOp& op : failed) {
      // The fixes go with the first failed operation (normally the create).
      const bool use = !fixes_used;
      fixes_used = true;
      TS_RETURN_IF_ERROR(impl_->apply_and_record(*tx, op, use ? fixes : std::vector<FieldChange>{}, report));
    }
    TS_RETURN_IF_ERROR(tx->commit());
    return report;
  });
}

Result<std::vector<SyncStatusRecord>> Headquarters::sync_status(std::optional<SyncStatus> filter) {
  return impl_->store->sync_statuses(filter);
}

Result<std::vector<ConflictRecord>> Headquarters::conflicts() { return impl_->store->conflicts(); }

Result<ConflictPolicy> Headquarters::conflict_policy() {
  TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
  return impl_->policy(*tx);
}

Result<DuplicatePolicy> Headquarters::duplicate_policy() {
  TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
  return impl_->duplicates(*tx);
}

Result<ConflictRecord> Headquarters::resolve_conflict(std::int64_t id, bool keep_lost) {
  return with_retries(impl_->busy_retries, [&]() -> Result<ConflictRecord> {
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(auto found, tx->conflict(id));
    if (!found) return Status::NotFound("conflict " + std::to_string(id) + " does not exist");
    ConflictRecord rec = std::move(*found);
    if (rec.status != "open")
      return Status(Code::conflict, "conflict " + std::to_string(id) + " is already resolved");
    TS_ASSIGN_OR_RETURN(Customer c, impl_->existing(*tx, rec.customer));
    if (keep_lost) {
      // The operator's choice is a new HQ write that sees the current state.
      TS_ASSIGN_OR_RETURN(Hlc hlc, impl_->tick(*tx, std::nullopt));
      Customer chosen = c;
      std::string* slot = value_slot(chosen, rec.field);
      if (slot == nullptr)
        return Status::NotFound("conflict " + std::to_string(id) + ": " + rec.field + " no longer exists");
      *slot = rec.lost;
      TS_RETURN_IF_ERROR(validate_customer(chosen));
      chosen.version = c.version + 1;
      TS_RETURN_IF_ERROR(tx->put_field_write(c.guid, rec.field, FieldWrite{hlc, std::string(kBackOffice), chosen.version}));
      TS_RETURN_IF_ERROR(impl_->publish(*tx, chosen, {}));
      std::swap(rec.kept, rec.lost);
      std::swap(rec.kept_write, rec.lost_write);
      rec.outcome = "operator kept the held value";
      c = std::move(chosen);
    } else {
      rec.outcome = "operator kept the current value";
    }
    rec.status = "resolved";
    TS_RETURN_IF_ERROR(tx->update_conflict(rec));
    TS_ASSIGN_OR_RETURN(std::int64_t still_open, tx->open_conflicts(c.guid));
    TS_ASSIGN_OR_RETURN(auto row, tx->sync_status(c.guid));
    if (still_open == 0 && row && row->status == SyncStatus::conflict) {
      row->status = SyncStatus::converted;
      row->last_error.clear();
      row->updated_at_ms = impl_->now();
      TS_RETURN_IF_ERROR(tx->put_sync_status(*row));
    }
    TS_RETURN_IF_ERROR(tx->commit());
    return rec;
  });
}

Result<std::vector<Customer>> Headquarters::customers(std::string_view search_text) {
  return impl_->store->search(search_text);
}

Result<ContentDigest> Headquarters::digest() {
  DigestBuilder b;
  TS_RETURN_IF_ERROR(impl_->store->for_each_customer_by_guid([&b](const Customer& c) {
    b.add(c);
    return Status::Ok();
  }));
  return b.finish();
}

}  // namespace tillsync
