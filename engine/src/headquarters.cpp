#include "tillsync/headquarters.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <span>

#include "apply.h"
#include "field_merge.h"
#include "tillsync/crash_point.h"
#include "tillsync/storage/pg.h"
#include "tillsync/validation.h"

namespace tillsync {
namespace {

// The channel (store) a node belongs to: "S001" for "S001/T01".
std::string channel_of_node(std::string_view node_id) {
  return std::string(node_id.substr(0, node_id.find('/')));
}

// HQ's database is a file or a postgresql:// URL; a libpq keyword=value string would
// otherwise be taken for a file name (and a password put in one). Not repeated back.
Status check_location(const std::string& path) {
  if (!storage::is_keyword_connection_string(path)) return Status::Ok();
  return Status::InvalidInput("db", "db: name a PostgreSQL database by URL, e.g. "
                                    "postgresql://USER@HOST/DB (put the password in ~/.pgpass or PGPASSWORD, "
                                    "not on the command line); keyword=value strings are not accepted");
}

// About the bytes a customer takes on the wire: its text plus a little per item.
std::size_t approximate_size(const Customer& c) {
  std::size_t n = 64;
  for (Field f : all_fields()) n += c.get(f).size() + 8;
  for (const Address& a : c.addresses)
    n += 32 + a.purpose.size() + a.street.size() + a.city.size() + a.state.size() + a.zip.size() + a.country.size();
  for (const Contact& k : c.contacts) n += 32 + k.value.size();
  for (const std::string& a : c.affiliations) n += 8 + a.size();
  for (const LoyaltyCard& l : c.loyalty_cards) n += 16 + l.card_number.size();
  return n;
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
// How far the feed is compacted: entries up to this seq may have been removed as
// superseded (an HQ setting, a decimal seq).
constexpr std::string_view kFeedCompactedKey = "feed_compacted_through";

}  // namespace

struct Headquarters::Impl {
  std::unique_ptr<HqStore> store;
  PhysicalClock* clock;
  HqOptions options;
  // Pulls: each node's registration (true: filtered, D5) and the pull cursor last
  // written for it, as this process knows them. A pull cursor only decides when
  // tombstones and superseded feed entries may go, so it is written when a node has
  // caught up (a pull that returns less than a full page, with a cursor beyond the one
  // written) instead of in a write transaction for every page of a long download. The
  // store keeps the maximum.
  std::map<std::string, bool, std::less<>> pull_registration{};
  std::map<std::string, std::int64_t, std::less<>> noted_pull{};
  std::uint64_t busy_retries = 0;  // transactions run again after Code::busy
  std::map<std::string, std::int64_t, std::less<>> noted_clock{};  // each node's clock lead, as last written
  std::int64_t next_compaction_ms = 0;  // when the sync job compacts next (0: not yet scheduled)

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

  // HQ's clock as last persisted.
  Result<Hlc> stored_hlc() {
    TS_ASSIGN_OR_RETURN(auto stored, store->setting(kHlcSetting));
    return Hlc{stored ? std::stoull(*stored) : 0};
  }

  // The mark of the feed entry at `seq`; nullopt when the feed has none there.
  Result<std::optional<std::uint64_t>> mark_at(std::int64_t seq) {
    TS_ASSIGN_OR_RETURN(auto at, store->feed_after(seq - 1, 1, std::nullopt, nullptr));
    if (at.empty() || at.front().seq != seq) return std::optional<std::uint64_t>{};
    return std::optional<std::uint64_t>{feed_mark(at.front())};
  }

  // HQ's hybrid logical clock, persisted in the store: merged with every operation HQ
  // applies, ticked for HQ's own writes. Returns the new reading.
  Result<Hlc> tick(HqTransaction& tx, std::optional<Hlc> remote) {
    TS_ASSIGN_OR_RETURN(auto stored, tx.setting(kHlcSetting));
    HybridLogicalClock hlc(*clock, Hlc{stored ? std::stoull(*stored) : 0});
    // No remote reading moves HQ's clock further ahead of its wall clock than the
    // offset it believes (staged operations are restamped so already).
    const Hlc t = remote ? hlc.update(bounded(*remote, now(), options.max_clock_offset_ms)) : hlc.now();
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

  // A real-time request: carried out once per request id. A repeated id (the terminal
  // did not hear the answer and asks again) is answered with the customer as it is now
  // and what the request did, without doing it again. The customer is read (and, on
  // PostgreSQL, locked) first, so two copies of one request in two HQ processes run one
  // after the other. The reply carries HQ's clock, ticked by the request.
  template <class Body>
  Result<RtsAnswer> rts(std::string_view node, const Guid& request, const Guid& customer, Body&& body) {
    if (request.is_nil()) return Status::InvalidInput("request", "request: a real-time request needs an id");
    return with_retries(busy_retries, [&]() -> Result<RtsAnswer> {
      TS_ASSIGN_OR_RETURN(auto tx, store->begin());
      TS_ASSIGN_OR_RETURN(auto locked, tx->customer(customer));
      if (!locked) {
        // Never recreated, never edited: a request for an erased customer is refused.
        TS_ASSIGN_OR_RETURN(bool gone, tx->is_erased(customer));
        if (gone) return erased(customer);
      }
      TS_RETURN_IF_ERROR(check_scope(*tx, node, customer));
      TS_ASSIGN_OR_RETURN(auto done, tx->rts_request(request));
      RtsAnswer r;
      if (done) {
        if (done->node != node)
          return Status(Code::unauthorized, "request " + request.to_string() + " belongs to another node");
        TS_ASSIGN_OR_RETURN(r.customer, existing(*tx, done->customer));
        r.card_number = done->result;
      } else {
        TS_ASSIGN_OR_RETURN(r, body(*tx));
        // Recorded as long as HQ holds the write the terminal logs under this id (they
        // are pruned together, after the received retention). A request whose logged
        // write HQ already received (a creation asked again after its asynchronous copy
        // was pushed) is not: that copy is applied as what it is.
        TS_ASSIGN_OR_RETURN(auto received, tx->holds_ops(node, std::span<const Guid>(&request, 1)));
        if (received.empty() || !received.front()) {
          TS_RETURN_IF_ERROR(tx->put_rts_request(
              request, HqTransaction::RtsRequest{std::string(node), r.customer.guid, r.card_number}, now()));
        }
      }
      TS_ASSIGN_OR_RETURN(r.hq_hlc, tick(*tx, std::nullopt));
      TS_RETURN_IF_ERROR(tx->commit());
      crash_point("hq.rts.after_commit");  // carried out, not answered
      return r;
    });
  }

  // Alias entries (a GUID merged into customer.guid) get the account number the GUID
  // had (FeedEntry::alias_account). For a filtered node of store `channel`, those that
  // merge a GUID into another store's customer keep only that customer's GUID and
  // account number (FeedEntry::mapping_only).
  Status describe_merges(const std::optional<std::string>& channel, std::vector<FeedEntry>& entries) {
    if (std::none_of(entries.begin(), entries.end(), [](const FeedEntry& e) { return e.alias.has_value(); }))
      return Status::Ok();
    auto reduced = with_retries(busy_retries, [&]() -> Result<bool> {
      TS_ASSIGN_OR_RETURN(auto tx, store->begin());
      for (FeedEntry& e : entries) {
        if (!e.alias || e.erased) continue;
        TS_ASSIGN_OR_RETURN(auto status, tx->sync_status(*e.alias));
        e.alias_account = status && status->account_number ? *status->account_number : std::string();
        if (!channel || e.mapping_only) continue;
        TS_ASSIGN_OR_RETURN(std::string owner, tx->channel_of(e.customer.guid));
        if (owner == *channel) continue;
        Customer mapping;
        mapping.guid = e.customer.guid;
        mapping.account_number = e.customer.account_number;
        e.customer = std::move(mapping);
        e.mapping_only = true;
      }
      TS_RETURN_IF_ERROR(tx->commit());
      return true;
    });
    return reduced.status();
  }

  // A node registered for filtered pulls (D5) reads and writes only its own store's
  // customers in real time too: another store's customer (or a GUID merged into one) is
  // not_found to it, and the request does nothing. A GUID HQ does not know passes (a
  // create). Nodes that never pulled are not registered: their first sync registers them.
  Status check_scope(HqTransaction& tx, std::string_view node, const Guid& customer) {
    TS_ASSIGN_OR_RETURN(bool filtered, tx.registered_filtered(node));
    if (!filtered) return Status::Ok();
    TS_ASSIGN_OR_RETURN(auto c, lookup(tx, customer));
    if (!c) return Status::Ok();
    TS_ASSIGN_OR_RETURN(std::string channel, tx.channel_of(c->guid));
    if (channel == channel_of_node(node)) return Status::Ok();
    return Status::NotFound("customer " + customer.to_string() + " is not one of store " + channel_of_node(node) +
                            "'s customers (this terminal is registered for filtered data, D5)");
  }

  // The version a pushed edit claims its editor had seen, if HQ can believe it. HQ's
  // versions are its own count: a log delivered to another HQ database (a new epoch, a
  // restore, a replay) or in another order carries versions this HQ never produced.
  // Such a claim is not believed: the edit counts as concurrent with every write of
  // another node to the fields it touches (base 0), so the conflict policy decides
  // and journals, and a till cannot skip conflict detection by claiming a version
  // from the future. A real-time edit, which sees this HQ's version, is refused
  // instead (check_base_version).
  static std::int64_t credible_base_version(const Customer& c, std::int64_t base_version) {
    return base_version > c.version ? 0 : base_version;
  }

  // An editor talking to HQ now cannot have seen a version HQ never produced.
  static Status check_base_version(const Customer& c, std::int64_t base_version) {
    if (base_version <= c.version) return Status::Ok();
    return Status::InvalidInput("base_version", "base_version " + std::to_string(base_version) +
                                                    " is above HQ's version " + std::to_string(c.version) +
                                                    " of customer " + c.guid.to_string() +
                                                    ": this terminal's copy is not HQ's (HQ restored from "
                                                    "a backup?); sync, then edit again");
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
    if (!c) {
      TS_ASSIGN_OR_RETURN(bool gone, tx.is_erased(guid));
      if (gone) return erased(guid);
      return not_found(guid);
    }
    return std::move(*c);
  }

  // The customer `id` names: an account number (also one a merge dropped) or a GUID
  // (also one merged into another customer). not_found, or erased.
  Result<Customer> by_id(HqTransaction& tx, std::string_view id) {
    if (auto guid = Guid::parse(id)) return existing(tx, *guid);
    TS_ASSIGN_OR_RETURN(auto c, tx.customer_by_account(id));
    if (c) return std::move(*c);
    TS_ASSIGN_OR_RETURN(auto merged, tx.merged_account(id));
    if (merged) return existing(tx, *merged);
    return Status::NotFound("no customer has account number " + std::string(id));
  }

  static Status erased(const Guid& guid) {
    return Status(Code::erased, "customer " + guid.to_string() +
                                    " was erased (right to erasure): nothing is written for it again");
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
    bool waiting = false;  // with domain not_found: the customer is not at HQ yet
  };

  // What the operations of one job transaction must respect beyond their own content:
  // a terminal's operations on one customer apply in its log's order, also when an
  // earlier one waits for the customer's create (then the later ones wait too) or was
  // staged again by a create in this transaction (then the later ones are left for the
  // next transaction, which takes them in seq order).
  // Also: operations the terminal logged for a real-time request HQ carried out are
  // applied already.
  struct Order {
    std::set<std::pair<std::string, Guid>> waiting;
    std::set<std::pair<std::string, Guid>> deferred;
    std::set<std::pair<std::string, Guid>> done;  // (node, op id)
  };

  Result<Order> order(HqTransaction& tx, std::span<const StagedOp> ops) {
    Order o;
    TS_ASSIGN_OR_RETURN(auto keys, tx.waiting_keys());
    o.waiting.insert(keys.begin(), keys.end());
    std::vector<std::pair<std::string, Guid>> ids;
    for (const StagedOp& op : ops) {
      const OpKind k = op.record.kind;
      if (k == OpKind::customer_create || k == OpKind::customer_update || k == OpKind::address_add ||
          k == OpKind::loyalty_card_issued)
        ids.emplace_back(op.record.node_id, op.record.op_id);
    }
    if (ids.empty()) return o;
    TS_ASSIGN_OR_RETURN(auto done, tx.rts_requests_done(ids));
    for (std::size_t i = 0; i < ids.size(); ++i)
      if (done[i]) o.done.insert(ids[i]);
    return o;
  }

  Result<Applied> apply(HqTransaction& tx, const StagedOp& op, const std::vector<FieldChange>& fixes) {
    const LogRecord& rec = op.record;
    auto decoded = decode_payload(rec.kind, rec.payload);
    if (!decoded.ok()) {
      // A till redacts its log when an erasure reaches it (empty payloads).
      if (rec.payload.empty()) {
        TS_ASSIGN_OR_RETURN(bool gone, redact_if_erased(tx, rec, rec.entity));
        if (gone) return Applied{erased(rec.entity)};
      }
      return Applied{decoded.status()};
    }
    const std::string channel = channel_of_node(rec.node_id);
    Payload& p = *decoded;

    if (auto* created = std::get_if<CustomerCreated>(&p)) {
      Customer c = created->customer;
      if (c.guid != rec.entity) return Applied{Status::CorruptLog("create payload GUID differs from the log row")};
      TS_ASSIGN_OR_RETURN(auto have, lookup(tx, c.guid));
      if (!have) {
        TS_ASSIGN_OR_RETURN(bool gone, redact_if_erased(tx, rec, c.guid));
        if (gone) return Applied{erased(c.guid)};  // never recreated
      }
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
      TS_ASSIGN_OR_RETURN(bool gone, redact_if_erased(tx, rec, rec.entity));
      if (gone) return Applied{erased(rec.entity)};
      // Its create comes from another terminal (after a new epoch or a restore, logs
      // arrive in any order): applied when that create is.
      return Applied{Status::NotFound("waits for customer " + rec.entity.to_string() +
                                      ", whose creation HQ has not received"),
                     false, true};
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
      if (auto* a = std::get_if<AddressRemoved>(&p)) base_version = a->base_version;
      if (auto* k = std::get_if<ContactRemoved>(&p)) base_version = k->base_version;
      base_version = credible_base_version(c, base_version);
      TS_ASSIGN_OR_RETURN(Applied a, apply_child(tx, rec, c, p, fixes, base_version));
      if (!a.domain.ok() || !a.converted) return Applied{a.domain, false};
      TS_RETURN_IF_ERROR(publish(tx, c, channel));
      return Applied{Status::Ok(), false};
    }
    base_version = credible_base_version(c, base_version);
    if (edited_child) {
      TS_ASSIGN_OR_RETURN(auto removal, tx.tombstone(c.guid, *edited_child));
      if (removal) {
        // Removal wins over an edit of the removed child; a concurrent edit is journaled.
        if (removal->version > base_version && removal->node != rec.node_id) {
          TS_RETURN_IF_ERROR(journal_removal(tx, c, *edited_child, "edit of a removed child",
                                             *removal, FieldWrite{rec.hlc, rec.node_id, c.version}));
        }
        // The editor's copy still shows the child: it gets what the customer is.
        TS_RETURN_IF_ERROR(republish(tx, c));
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
    if (merged->changed) {
      TS_RETURN_IF_ERROR(publish(tx, c, channel));
    } else if (merged->conflicts > 0) {
      // The edit lost or is held: the editor's copy shows its own value until told.
      TS_RETURN_IF_ERROR(republish(tx, c));
    }
    return Applied{Status::Ok(), false};
  }

  // An operation on an erased customer (from a till that was offline during the
  // erasure, or one the till redacted when the erasure reached it) fails with `erased`,
  // its payload redacted like those HQ held at the erasure. True when `guid` is erased.
  Result<bool> redact_if_erased(HqTransaction& tx, const LogRecord& rec, const Guid& guid) {
    TS_ASSIGN_OR_RETURN(bool gone, tx.is_erased(guid));
    if (!gone) return false;
    TS_RETURN_IF_ERROR(tx.redact_received(rec.node_id, rec.seq));
    return true;
  }

  // Publishes the customer as HQ has it, unchanged: a terminal whose write HQ did not
  // take (it lost a conflict, is held, lost to a removal, or failed) shows that write
  // in its copy, and converges when it pulls this, without waiting for another change.
  Status republish(HqTransaction& tx, const Customer& c) {
    TS_ASSIGN_OR_RETURN(std::string channel, tx.channel_of(c.guid));
    return tx.append_feed(c, channel);
  }

  // Adds and removals of addresses and contacts. `converted` in the result means "the
  // customer changed" here.
  // `base_version`: the removal's, as HQ believes it (credible_base_version).
  Result<Applied> apply_child(HqTransaction& tx, const LogRecord& rec, Customer& c,
                              const Payload& p, const std::vector<FieldChange>& fixes,
                              std::int64_t base_version) {
    std::optional<Guid> added;
    std::optional<Guid> removed;
    std::vector<std::string> keys;
    if (auto* a = std::get_if<AddressAdded>(&p)) added = a->address.guid;
    if (auto* k = std::get_if<ContactAdded>(&p)) added = k->contact.guid;
    if (auto* a = std::get_if<AddressRemoved>(&p)) {
      removed = a->address;
      for (auto f : {AddressField::purpose, AddressField::street, AddressField::city,
                     AddressField::state, AddressField::zip, AddressField::country})
        keys.push_back(address_key(a->address, f));
    }
    if (auto* k = std::get_if<ContactRemoved>(&p)) {
      removed = k->contact;
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
    // A row opened by an operation waiting for this customer belongs to its creator.
    if (op.record.kind == OpKind::customer_create) r.node_id = op.record.node_id;
    r.account_number = account;
    r.status = status;
    r.last_error = std::string(error);
    r.updated_at_ms = now();
    if (twin) r.twin = twin;
    return tx.put_sync_status(r);
  }

  // Applies one op and records its outcome (state, status view) in `tx`.
  Status apply_and_record(HqTransaction& tx, const StagedOp& op,
                          const std::vector<FieldChange>& fixes, JobReport& report, Order& ord) {
    const LogRecord& rec = op.record;
    const std::pair<std::string, Guid> key{rec.node_id, rec.entity};
    if (ord.deferred.contains(key)) return Status::Ok();  // left staged, for the next transaction
    // A create waits for nothing: it is what the others wait for.
    if (rec.kind != OpKind::customer_create && ord.waiting.contains(key)) {
      return record_waiting(tx, op, "waits for an earlier operation of " + rec.node_id +
                                        " on this customer, which waits for its creation", report);
    }
    if (ord.done.contains({rec.node_id, rec.op_id})) {
      // Written through the real-time service, which answered the terminal.
      TS_RETURN_IF_ERROR(tx.set_state(rec.node_id, rec.seq, StagedState::applied, ""));
      ++report.applied;
      if (rec.kind == OpKind::customer_create) TS_RETURN_IF_ERROR(release_waiting(tx, rec.entity, ord));
      return Status::Ok();
    }
    TS_ASSIGN_OR_RETURN(Hlc merged, tick(tx, rec.hlc));
    (void)merged;
    TS_ASSIGN_OR_RETURN(Applied a, apply(tx, op, fixes));
    if (a.waiting) {
      ord.waiting.insert(key);
      return record_waiting(tx, op, a.domain.message(), report);
    }
    if (a.domain.ok()) {
      TS_RETURN_IF_ERROR(tx.set_state(rec.node_id, rec.seq, StagedState::applied, ""));
      ++report.applied;
      if (a.converted) ++report.converted;
      if (rec.kind == OpKind::customer_create) TS_RETURN_IF_ERROR(release_waiting(tx, rec.entity, ord));
      return Status::Ok();
    }
    if (a.domain.code() == Code::erased) ++report.erased;
    return record_failure(tx, op, a.domain.to_string(), report);
  }

  // The customer `guid` now exists at HQ: operations waiting for it are staged again.
  Status release_waiting(HqTransaction& tx, const Guid& guid, Order& ord) {
    TS_ASSIGN_OR_RETURN(auto nodes, tx.restage_waiting(guid));
    for (std::string& n : nodes) {
      ord.waiting.erase({n, guid});
      ord.deferred.insert({std::move(n), guid});
    }
    return Status::Ok();
  }

  Status record_waiting(HqTransaction& tx, const StagedOp& op, const std::string& why, JobReport& report) {
    const LogRecord& rec = op.record;
    TS_RETURN_IF_ERROR(tx.set_state(rec.node_id, rec.seq, StagedState::waiting, why));
    TS_ASSIGN_OR_RETURN(auto row, tx.sync_status(rec.entity));
    if (!row) TS_RETURN_IF_ERROR(record_status(tx, op, rec.entity, std::nullopt, SyncStatus::pending, why));
    ++report.waiting;
    return Status::Ok();
  }

  // Marks `op` failed with `error` (shown as last_error in the status view), and
  // republishes its customer when HQ has it (the editor's copy shows the failed write).
  Status record_failure(HqTransaction& tx, const StagedOp& op, const std::string& error, JobReport& report) {
    const LogRecord& rec = op.record;
    TS_RETURN_IF_ERROR(tx.set_state(rec.node_id, rec.seq, StagedState::failed, error));
    if (rec.kind != OpKind::customer_create) {
      TS_ASSIGN_OR_RETURN(auto current, lookup(tx, rec.entity));
      if (current) TS_RETURN_IF_ERROR(republish(tx, *current));
    }
    TS_ASSIGN_OR_RETURN(auto row, tx.sync_status(rec.entity));
    // The status view follows async customers: a failed create, or any failure of a
    // customer that is not converted yet.
    if (rec.kind == OpKind::customer_create || (row && row->status != SyncStatus::converted)) {
      TS_RETURN_IF_ERROR(record_status(tx, op, rec.entity, std::nullopt, SyncStatus::failed, error));
    }
    ++report.failed;
    return Status::Ok();
  }

  using Chunk = std::pair<JobReport, std::size_t>;  // outcomes, operations taken

  // Up to `want` staged operations applied in one transaction. A chunk that the store
  // aborts (busy) is run again from scratch, counts included.
  Result<Chunk> run_chunk(std::size_t want) {
    return with_retries(busy_retries, [&]() -> Result<Chunk> {
      JobReport part;
      TS_ASSIGN_OR_RETURN(auto tx, store->begin());
      TS_ASSIGN_OR_RETURN(auto ops, tx->staged(want));
      TS_ASSIGN_OR_RETURN(Order ord, order(*tx, ops));
      for (const StagedOp& op : ops) TS_RETURN_IF_ERROR(apply_and_record(*tx, op, {}, part, ord));
      if (!ops.empty()) crash_point("hq.job.before_commit");
      TS_RETURN_IF_ERROR(tx->commit());
      if (!ops.empty()) crash_point("hq.job.after_commit");
      return Chunk{part, ops.size()};
    });
  }

  // The same operations one transaction each, after a chunk failed because the store
  // refused a write (constraint_violation): the operation whose write is refused (a
  // poison record: a GUID another customer holds, say) is marked failed with the
  // store's message, and every other operation is applied as usual.
  Result<Chunk> run_isolated(std::size_t want) {
    JobReport part;
    std::size_t taken = 0;
    while (taken < want) {
      std::optional<StagedOp> refused;
      Status why;
      TS_ASSIGN_OR_RETURN(std::size_t n, with_retries(busy_retries, [&]() -> Result<std::size_t> {
        JobReport one;
        TS_ASSIGN_OR_RETURN(auto tx, store->begin());
        TS_ASSIGN_OR_RETURN(auto ops, tx->staged(1));
        if (ops.empty()) return std::size_t{0};
        TS_ASSIGN_OR_RETURN(Order ord, order(*tx, ops));
        Status s = apply_and_record(*tx, ops.front(), {}, one, ord);
        if (s.ok()) s = tx->commit();
        if (s.code() == Code::constraint_violation) {
          refused = ops.front();
          why = s;
          return std::size_t{1};
        }
        TS_RETURN_IF_ERROR(s);
        part.applied += one.applied;
        part.converted += one.converted;
        part.failed += one.failed;
        part.waiting += one.waiting;
        part.erased += one.erased;
        return std::size_t{1};
      }));
      if (n == 0) break;
      ++taken;
      if (!refused) continue;
      auto marked = with_retries(busy_retries, [&]() -> Result<bool> {
        JobReport one;
        TS_ASSIGN_OR_RETURN(auto tx, store->begin());
        TS_RETURN_IF_ERROR(record_failure(*tx, *refused, "refused by HQ's storage: " + why.message(), one));
        TS_RETURN_IF_ERROR(tx->commit());
        return true;
      });
      if (!marked.ok()) return marked.status();
      ++part.failed;
    }
    return Chunk{part, taken};
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
  TS_RETURN_IF_ERROR(check_location(path));
  if (storage::is_postgres_url(path)) {
    TS_RETURN_IF_ERROR(init_postgres_hq(path, number_prefix, new_epoch()));
  } else {
    TS_RETURN_IF_ERROR(init_sqlite_hq(path, number_prefix, new_epoch(), {.durable = options.durable}));
  }
  return open(path, options);
}

Result<std::unique_ptr<Headquarters>> Headquarters::open(const std::string& path,
                                                         const HqOptions& options) {
  TS_RETURN_IF_ERROR(check_location(path));
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

Result<RtsAnswer> Headquarters::rts_create(std::string_view node_id, const Guid& request,
                                           const Customer& customer) {
  TS_RETURN_IF_ERROR(validate_customer(customer));
  if (customer.guid.is_nil()) return Status::InvalidInput("guid", "guid: a customer needs a GUID");
  return impl_->rts(node_id, request, customer.guid, [&](HqTransaction& tx) -> Result<RtsAnswer> {
    // The same GUID is the same customer (a request retried under another id, or a
    // GUID HQ merged into another customer): HQ answers with what it has.
    TS_ASSIGN_OR_RETURN(auto have, impl_->lookup(tx, customer.guid));
    if (have) return RtsAnswer{std::move(*have), {}, {}};
    Customer c = customer;
    TS_ASSIGN_OR_RETURN(std::string account, tx.next_account_number());
    c.account_number = account;
    c.version = 1;
    c.loyalty_cards.clear();
    TS_RETURN_IF_ERROR(impl_->publish(tx, c, channel_of_node(node_id)));
    Impl::Order ord;
    TS_RETURN_IF_ERROR(impl_->release_waiting(tx, c.guid, ord));
    // Operations of other terminals that waited for this customer (after a new epoch,
    // logs arrive in any order) left a pending status row: the customer exists now.
    TS_ASSIGN_OR_RETURN(auto row, tx.sync_status(c.guid));
    if (row && row->status == SyncStatus::pending) {
      row->node_id = std::string(node_id);
      row->account_number = c.account_number;
      row->status = SyncStatus::converted;
      row->last_error.clear();
      row->updated_at_ms = impl_->now();
      TS_RETURN_IF_ERROR(tx.put_sync_status(*row));
    }
    return RtsAnswer{std::move(c), {}, {}};
  });
}

Result<RtsAnswer> Headquarters::rts_edit(std::string_view node_id, const Guid& request, const Guid& guid,
                                         std::int64_t base_version,
                                         const std::vector<FieldChange>& changes) {
  if (changes.empty()) return Status::InvalidInput("set", "set: no field changes given");
  return impl_->rts(node_id, request, guid, [&](HqTransaction& tx) -> Result<RtsAnswer> {
    TS_ASSIGN_OR_RETURN(Customer c, impl_->existing(tx, guid));
    std::int64_t base = base_version;
    if (c.guid == guid) {
      TS_RETURN_IF_ERROR(Impl::check_base_version(c, base));
    } else {
      // A GUID merged into `c` (a terminal that has not pulled the merge yet): its
      // version is of the merged customer's copy, as for an operation in the log.
      base = Impl::credible_base_version(c, base);
    }
    TS_ASSIGN_OR_RETURN(Hlc hlc, impl_->tick(tx, std::nullopt));
    TS_ASSIGN_OR_RETURN(MergeOutcome m, impl_->merge(tx, c, field_values(changes), hlc, node_id, base));
    if (m.held > 0) TS_RETURN_IF_ERROR(impl_->mark_conflict(tx, c, node_id));
    if (m.changed) TS_RETURN_IF_ERROR(impl_->publish(tx, c, {}));
    return RtsAnswer{std::move(c), {}, {}};
  });
}

Result<RtsAnswer> Headquarters::rts_add_address(std::string_view node_id, const Guid& request,
                                                const Guid& guid, const Address& address) {
  return impl_->rts(node_id, request, guid, [&](HqTransaction& tx) -> Result<RtsAnswer> {
    TS_ASSIGN_OR_RETURN(Customer c, impl_->existing(tx, guid));
    TS_RETURN_IF_ERROR(apply_to_customer(c, AddressAdded{guid, address}));
    TS_RETURN_IF_ERROR(impl_->publish(tx, c, {}));
    return RtsAnswer{std::move(c), {}, {}};
  });
}

Result<RtsAnswer> Headquarters::rts_issue_loyalty_card(std::string_view node_id, const Guid& request,
                                                       const Guid& guid) {
  return impl_->rts(node_id, request, guid, [&](HqTransaction& tx) -> Result<RtsAnswer> {
    TS_ASSIGN_OR_RETURN(Customer c, impl_->existing(tx, guid));
    if (!c.account_number) return Status(Code::loyalty_requires_synced_customer, "customer has no account number");
    TS_RETURN_IF_ERROR(check_child_count("loyalty_cards", c.loyalty_cards.size() + 1));
    // Card numbers derive from the account number and the request: unique, stable for a
    // repeated request, and never handed out again by an HQ restored from a backup
    // (a counter would restart where the backup left it; the card is in a wallet).
    // Two requests whose ids end alike (one in 2^32) take more of the id.
    static constexpr char kHex[] = "0123456789ABCDEF";
    const std::string raw(request.raw());
    const std::string stem = "L" + c.account_number->substr(impl_->store->number_prefix().size()) + "-";
    std::string number;
    for (std::size_t bytes : {4u, 8u, 16u}) {
      std::string suffix;
      for (std::size_t i = raw.size() - bytes; i < raw.size(); ++i) {
        suffix += kHex[(static_cast<unsigned char>(raw[i]) >> 4) & 0xF];
        suffix += kHex[static_cast<unsigned char>(raw[i]) & 0xF];
      }
      number = stem + suffix;
      if (std::none_of(c.loyalty_cards.begin(), c.loyalty_cards.end(),
                       [&](const LoyaltyCard& held) { return held.card_number == number; }))
        break;
    }
    LoyaltyCard card{number, impl_->now()};
    c.loyalty_cards.push_back(card);
    TS_RETURN_IF_ERROR(impl_->publish(tx, c, {}));
    return RtsAnswer{std::move(c), {}, card.card_number};
  });
}

Result<Headquarters::SearchResult> Headquarters::search(std::string_view node_id, std::string_view text,
                                                        bool filtered) {
  TS_RETURN_IF_ERROR(validate_text("text", text, kMaxTextLength));
  std::size_t characters = 0;
  for (unsigned char b : text) characters += (b & 0xC0) != 0x80 && b != ' ' ? 1 : 0;
  if (characters < kMinSearchText) {
    return Status::InvalidInput("text", "text: a search needs at least " + std::to_string(kMinSearchText) +
                                            " characters (a name, a phone number, an e-mail or an account number)");
  }
  // The node's registration decides as for pulls: once filtered, always filtered.
  bool registered = false;
  if (auto known = impl_->pull_registration.find(node_id); known != impl_->pull_registration.end()) {
    registered = known->second;
  } else {
    TS_ASSIGN_OR_RETURN(registered, impl_->note_pull(node_id, 0, filtered));
  }
  std::optional<std::string> channel;
  if (filtered || registered) channel = channel_of_node(node_id);
  TS_ASSIGN_OR_RETURN(auto found, impl_->store->search(text, kMaxSearchResults + 1, channel));
  SearchResult out;
  out.truncated = found.size() > kMaxSearchResults;
  if (out.truncated) found.resize(kMaxSearchResults);
  out.customers = std::move(found);
  return out;
}

std::uint64_t feed_mark(const FeedEntry& e) {
  if (e.mark != 0) return e.mark;  // stored when appended (kept by an erasure)
  // FNV-1a over the entry's seq, its customer's encoding and its alias.
  std::uint64_t h = 14695981039346656037ull;
  auto mix = [&h](std::string_view bytes) {
    for (char c : bytes) {
      h ^= static_cast<unsigned char>(c);
      h *= 1099511628211ull;
    }
  };
  char seq[8];
  for (int i = 0; i < 8; ++i) seq[i] = static_cast<char>((static_cast<std::uint64_t>(e.seq) >> (8 * i)) & 0xff);
  mix(std::string_view(seq, sizeof seq));
  mix(encode_customer(e.customer));
  if (e.alias) mix(e.alias->raw());
  return h == 0 ? 1 : h;
}

Result<HelloResult> Headquarters::hello(std::string_view node_id, const Guid& acked_op, std::int64_t acked_seq) {
  HelloResult out;
  if (!node_id.empty() && !acked_op.is_nil()) {
    TS_ASSIGN_OR_RETURN(out.holds_acked, impl_->store->holds_op(node_id, acked_op));
    if (!out.holds_acked && acked_seq > 0) {
      TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
      TS_ASSIGN_OR_RETURN(auto pruned, tx->pruned_through(node_id));
      out.holds_acked = acked_seq <= pruned.seq;
    }
  }
  // A plain read: a push of this node committing meanwhile only makes the node resend
  // what HQ then holds, which is harmless.
  if (!node_id.empty()) {
    TS_ASSIGN_OR_RETURN(out.push_cursor, impl_->store->push_cursor(node_id));
  }
  TS_ASSIGN_OR_RETURN(out.hq_hlc, impl_->stored_hlc());
  return out;
}

Result<PushResult> Headquarters::push(std::string_view node_id, std::int64_t prev, const Guid& prev_op,
                                      const std::vector<LogRecord>& records) {
  std::size_t bytes = 0;
  for (const LogRecord& r : records) bytes += r.payload.size();
  if (records.size() > kMaxPushRecords || bytes > kMaxPushBytes) {
    return Status(Code::limit_exceeded, "push: at most " + std::to_string(kMaxPushRecords) + " records and " +
                                            std::to_string(kMaxPushBytes >> 20) + " MiB of payload per batch (" +
                                            std::to_string(records.size()) + " records, " + std::to_string(bytes) +
                                            " bytes sent); nothing was staged");
  }
  for (std::size_t i = 0; i < records.size(); ++i) {
    const LogRecord& r = records[i];
    if (r.node_id != node_id) {
      return Status(Code::unauthorized, "node " + std::string(node_id) +
                                            " may not push operations of node " + r.node_id);
    }
    const std::int64_t before = i == 0 ? prev : records[i - 1].seq;
    if (r.seq <= before || before < 0)
      return Status::InvalidInput("push", "push: record seqs must ascend after prev (" +
                                              std::to_string(before) + ", then " +
                                              std::to_string(r.seq) + ")");
  }
  return with_retries(impl_->busy_retries, [&]() -> Result<PushResult> {
    PushResult result;
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(std::int64_t cursor, tx->node_cursor(node_id));
    // Records at or below the cursor are resends, which HQ must hold by op id: a
    // different operation there means the node's log is not the one HQ received
    // (restored from an older backup, or re-initialised under the same node id). The
    // row before the batch is checked the same way: a batch that continues HQ's cursor
    // by seq alone may have been sent behind one HQ refused, and would put the node's
    // operations out of order.
    std::size_t first = 0;
    while (first < records.size() && records[first].seq <= cursor) ++first;
    const bool check_prev = prev > 0 && prev <= cursor && !prev_op.is_nil();
    if (first > 0 || check_prev) {
      std::vector<Guid> ids;
      std::vector<std::int64_t> seqs;
      std::vector<std::uint64_t> stamps;  // HLCs as the node sent them (0: not sent, prev)
      ids.reserve(first + 1);
      if (check_prev) {
        ids.push_back(prev_op);
        seqs.push_back(prev);
        stamps.push_back(0);
      }
      for (std::size_t i = 0; i < first; ++i) {
        ids.push_back(records[i].op_id);
        seqs.push_back(records[i].seq);
        stamps.push_back(records[i].hlc.value);
      }
      TS_ASSIGN_OR_RETURN(std::vector<bool> held, tx->holds_ops(node_id, ids));
      // Held, but HQ holds another operation at that seq: the node logged it again at a
      // seq it had used for another one (a till restored from a backup settling a
      // request it had sent before), and must renumber.
      TS_ASSIGN_OR_RETURN(std::vector<std::optional<Guid>> at, tx->ops_at(node_id, seqs));
      std::optional<HqTransaction::Pruned> pruned;
      for (std::size_t i = 0; i < ids.size(); ++i) {
        const bool another_there = at[i] && *at[i] != ids[i];
        if (held[i] && !another_there) continue;
        if (!another_there) {
          // HQ applied an operation there and deleted it after its retention. One
          // stamped no later than the newest it deleted is taken for that one (a
          // resend); a newer one was written since, by a copy of the node restored from
          // a backup that lacked the deleted ones (docs/operations.md: restore tills
          // from backups younger than the retention).
          if (!pruned) {
            TS_ASSIGN_OR_RETURN(pruned, tx->pruned_through(node_id));
          }
          if (seqs[i] <= pruned->seq && stamps[i] <= pruned->hlc) continue;
        }
        return Status(Code::conflict,
                      "HQ holds another operation of node " + std::string(node_id) + " at seq " +
                          std::to_string(seqs[i]) + " (HQ has up to seq " +
                          std::to_string(cursor) +
                          "): the terminal's database was restored or re-initialised; it "
                          "renumbers its unacknowledged operations after HQ's cursor");
      }
    }
    result.duplicates = first;
    // The rest continues HQ's cursor unless the node holds rows HQ lacks before it.
    const std::int64_t before = first == 0 ? prev : records[first - 1].seq;
    result.gap = first < records.size() && before > cursor;
    std::span<const LogRecord> run =
        result.gap ? std::span<const LogRecord>() : std::span<const LogRecord>(records.data() + first, records.size() - first);
    // An operation stamped further ahead of HQ's clock than it believes (a till with a
    // wrong clock) is staged as if stamped at its receipt plus that offset: it is
    // applied, ordered where HQ can vouch for, the same way at every replay of what HQ
    // received. How far ahead the till's clock is, is noted for the operator.
    const std::int64_t received = impl_->now();
    const std::int64_t offset = impl_->options.max_clock_offset_ms;
    std::vector<LogRecord> restamped;
    for (std::size_t i = 0; i < run.size(); ++i) {
      const std::int64_t ahead = static_cast<std::int64_t>(run[i].hlc.millis()) - received;
      if (ahead <= offset) continue;
      result.clock_ahead_ms = std::max(result.clock_ahead_ms, ahead);
      if (restamped.empty()) restamped.assign(run.begin(), run.end());
      restamped[i].hlc = bounded(run[i].hlc, received, offset);
    }
    if (!restamped.empty()) run = std::span<const LogRecord>(restamped);
    // Written when it changes (as this process knows it), not with every push.
    auto noted = impl_->noted_clock.find(node_id);
    const bool clock_changed = noted == impl_->noted_clock.end() || noted->second != result.clock_ahead_ms;
    if (!run.empty() && clock_changed) TS_RETURN_IF_ERROR(tx->note_clock(node_id, result.clock_ahead_ms, received));
    // A staged create is its customer's `pending` row in the status view until the job
    // records an outcome (HqStore::sync_statuses): nothing else is written per record.
    TS_ASSIGN_OR_RETURN(std::vector<bool> fresh, tx->stage_all(run, received));
    for (std::size_t i = 0; i < run.size(); ++i) {
      cursor = run[i].seq;
      if (fresh[i]) ++result.staged;
      else ++result.duplicates;
    }
    crash_point("hq.push.before_commit");
    TS_RETURN_IF_ERROR(tx->commit());
    crash_point("hq.push.after_commit");  // committed, not acknowledged
    if (!run.empty() && clock_changed) impl_->noted_clock[std::string(node_id)] = result.clock_ahead_ms;
    // Acknowledged only after the commit above, and only as far as this batch goes: HQ's
    // cursor may lie beyond it on operations of another copy of the node (restores), which
    // the node's own rows at those seqs have not been checked against.
    result.acked_seq = result.gap || records.empty() ? cursor : std::min(cursor, records.back().seq);
    return result;
  });
}

Result<PullResult> Headquarters::pull(std::string_view node_id, std::int64_t after,
                                      std::uint64_t after_mark, std::size_t limit, bool filtered) {
  PullResult out;
  if (after < 0) return Status::InvalidInput("after", "after: a feed position is never negative");
  // The node's cursor must be an entry of this feed, with the content it had when the
  // node pulled it; otherwise HQ's database is older than what the node saw. Nothing
  // is recorded for such a node (its cursor means nothing here).
  if (after > 0) {
    TS_ASSIGN_OR_RETURN(auto mark, impl_->mark_at(after));
    if (!mark || *mark != after_mark) {
      out.reset = true;
      // No entry there, in the part of the feed compaction removes from: the node was
      // away longer than the feed's retention (or its database is older than its last
      // pull). It pulls the compacted feed from 0, a snapshot of its scope.
      if (!mark) {
        TS_ASSIGN_OR_RETURN(auto through, impl_->store->setting(kFeedCompactedKey));
        out.compacted = through && after <= std::stoll(*through);
      }
      TS_ASSIGN_OR_RETURN(out.hq_hlc, impl_->stored_hlc());
      return out;
    }
  }
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
  TS_ASSIGN_OR_RETURN(out.entries,
                      impl_->store->feed_after(after, std::min(limit, kMaxPullEntries), channel, &out.cursor));
  out.more = limit > kMaxPullEntries && out.entries.size() == kMaxPullEntries;
  // A page ends after the entry that passes the byte budget; the node continues there.
  std::size_t page_bytes = 0;
  for (std::size_t i = 0; i < out.entries.size(); ++i) {
    page_bytes += approximate_size(out.entries[i].customer);
    if (page_bytes > kMaxPullBytes && i + 1 < out.entries.size()) {
      out.entries.resize(i + 1);
      out.cursor = out.entries.back().seq;
      out.more = true;
      break;
    }
  }
  // Read after the entries, so that the node's clock resumes above every one of them.
  TS_ASSIGN_OR_RETURN(out.hq_hlc, impl_->stored_hlc());
  if (out.cursor == after) {
    out.cursor_mark = after_mark;
  } else if (!out.entries.empty() && out.entries.back().seq == out.cursor) {
    out.cursor_mark = feed_mark(out.entries.back());
  } else {
    TS_ASSIGN_OR_RETURN(auto mark, impl_->mark_at(out.cursor));
    out.cursor_mark = mark.value_or(0);
  }
  if (!registering && out.entries.size() < limit && after > impl_->noted_pull[std::string(node_id)]) {
    TS_ASSIGN_OR_RETURN(bool still_filtered, impl_->note_pull(node_id, after, registered_filtered));
    (void)still_filtered;
  }
  // Last, after the marks (they fingerprint the stored entries): the account numbers
  // merged GUIDs had, and a GUID of this store merged into another store's customer
  // reaches a filtered node as a mapping only.
  TS_RETURN_IF_ERROR(impl_->describe_merges(channel, out.entries));
  return out;
}

Result<JobReport> Headquarters::run_sync_job(std::size_t max_ops) {
  JobReport report;
  constexpr std::size_t kChunk = 1000;  // ops per transaction
  std::size_t taken = 0;
  while (taken < max_ops) {
    const std::size_t want = std::min(kChunk, max_ops - taken);
    auto first_try = impl_->run_chunk(want);
    // One poison record must not stop every other operation on every pass.
    if (!first_try.ok() && first_try.status().code() == Code::constraint_violation)
      first_try = impl_->run_isolated(want);
    TS_ASSIGN_OR_RETURN(auto chunk, std::move(first_try));
    report.applied += chunk.first.applied;
    report.converted += chunk.first.converted;
    report.failed += chunk.first.failed;
    report.waiting += chunk.first.waiting;
    report.erased += chunk.first.erased;
    taken += chunk.second;
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
  // Operations that arrived for erased customers were redacted: no copy of what they
  // held stays in the store's own files either.
  if (report.erased > 0) {
    TS_ASSIGN_OR_RETURN(bool scrubbed, impl_->store->scrub());
    (void)scrubbed;
  }
  if (impl_->options.compaction_interval_ms > 0) {
    const std::int64_t now = impl_->now();
    if (impl_->next_compaction_ms == 0) {
      impl_->next_compaction_ms = now + impl_->options.compaction_interval_ms;
    } else if (now >= impl_->next_compaction_ms) {
      impl_->next_compaction_ms = now + impl_->options.compaction_interval_ms;
      TS_ASSIGN_OR_RETURN(auto compacted, compact());
      (void)compacted;
    }
  }
  return report;
}

Result<CompactionReport> Headquarters::compact(std::size_t max_rows) {
  const auto bound = static_cast<std::int64_t>(std::max<std::size_t>(max_rows, 1));
  return with_retries(impl_->busy_retries, [&]() -> Result<CompactionReport> {
    CompactionReport r;
    const std::int64_t now = impl_->now();
    const std::int64_t horizon = now - impl_->options.feed_retention_ms;
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(std::int64_t head, tx->note_feed_head(now, horizon));
    TS_ASSIGN_OR_RETURN(std::int64_t aged, tx->feed_head_at(horizon));
    // Below every known node's pull position (not at it: a node names the entry there
    // when it pulls on), or past the retention horizon; never beyond the head, so that
    // every entry appended later is looked at.
    TS_ASSIGN_OR_RETURN(auto pulled, tx->min_pull_cursor());
    const std::int64_t through = std::min(head, std::max(aged, pulled ? *pulled - 1 : head));
    TS_ASSIGN_OR_RETURN(auto done_text, tx->setting(kFeedCompactedKey));
    const std::int64_t done = done_text ? std::stoll(*done_text) : 0;
    r.feed_through = done;
    const std::int64_t upto = std::min(through, done + bound);
    if (upto > done) {
      TS_ASSIGN_OR_RETURN(r.feed_removed, tx->remove_superseded(done, upto));
      TS_RETURN_IF_ERROR(tx->put_setting(kFeedCompactedKey, std::to_string(upto)));
      r.feed_through = upto;
    }
    TS_ASSIGN_OR_RETURN(r.received_removed,
                        tx->prune_received(now - impl_->options.received_retention_ms, max_rows));
    TS_RETURN_IF_ERROR(tx->commit());
    return r;
  });
}

Result<MergeReport> Headquarters::merge_customers(std::string_view keep_id, std::string_view drop_id) {
  return with_retries(impl_->busy_retries, [&]() -> Result<MergeReport> {
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(Customer keep, impl_->by_id(*tx, keep_id));
    TS_ASSIGN_OR_RETURN(Customer drop, impl_->by_id(*tx, drop_id));
    if (keep.guid == drop.guid)
      return Status::InvalidInput("drop", std::string(keep_id) + " and " + std::string(drop_id) +
                                              " are one customer already (" + keep.account_id() + ")");
    MergeReport out;
    out.dropped = drop.guid;
    out.dropped_account = drop.account_number;
    // The kept customer's values stay; what it lacks, the dropped one gives.
    Customer merged = keep;
    for (Field f : all_fields())
      if (merged.get(f).empty()) merged.get(f) = drop.get(f);
    for (const Address& a : drop.addresses) merged.addresses.push_back(a);
    for (const Contact& k : drop.contacts) merged.contacts.push_back(k);
    for (const std::string& a : drop.affiliations)
      if (std::find(merged.affiliations.begin(), merged.affiliations.end(), a) == merged.affiliations.end())
        merged.affiliations.push_back(a);
    for (const LoyaltyCard& l : drop.loyalty_cards) merged.loyalty_cards.push_back(l);
    TS_RETURN_IF_ERROR(validate_customer(merged));
    ++merged.version;
    MergeRecord journal{0, keep.guid, drop.guid, keep.account_number, drop.account_number, impl_->now()};
    TS_ASSIGN_OR_RETURN(std::string drop_channel, tx->channel_of(drop.guid));
    TS_ASSIGN_OR_RETURN(out.renamed, tx->merge_customer(drop.guid, keep.guid, journal));
    TS_ASSIGN_OR_RETURN(std::string channel, tx->channel_of(keep.guid));
    // Terminals: the dropped GUID (and those merged into it) now name the kept customer.
    // Before the kept customer's snapshot: a terminal drops its copy of the dropped one
    // (whose addresses and contacts the kept one now holds) before it stores that, also
    // when a page ends between the two.
    TS_RETURN_IF_ERROR(tx->put_customer(merged, channel));
    TS_RETURN_IF_ERROR(tx->append_alias(drop.guid, merged, drop_channel));
    for (const Guid& g : out.renamed) TS_RETURN_IF_ERROR(tx->append_alias(g, merged, drop_channel));
    TS_RETURN_IF_ERROR(tx->append_feed(merged, channel));
    TS_ASSIGN_OR_RETURN(auto row, tx->sync_status(drop.guid));
    SyncStatusRecord r = row.value_or(SyncStatusRecord{});
    if (!row) {
      r.guid = drop.guid;
      r.node_id = "HQ";
      r.created_at_ms = impl_->now();
    }
    r.account_number = drop.account_number;
    r.status = SyncStatus::duplicate;
    r.last_error = "merged into customer " + merged.account_id() + " (hq merge-customers)";
    r.updated_at_ms = impl_->now();
    r.twin = keep.guid;
    TS_RETURN_IF_ERROR(tx->put_sync_status(r));
    TS_RETURN_IF_ERROR(tx->commit());
    out.kept = std::move(merged);
    return out;
  });
}

Result<std::vector<MergeRecord>> Headquarters::merges() { return impl_->store->merges(); }

Result<ErasureReport> Headquarters::erase_customer(std::string_view id) {
  const auto guid = Guid::parse(id);
  auto report = with_retries(impl_->busy_retries, [&]() -> Result<ErasureReport> {
    ErasureReport out;
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    std::optional<Customer> c;
    if (guid) {
      TS_ASSIGN_OR_RETURN(c, impl_->lookup(*tx, *guid));
    } else {
      TS_ASSIGN_OR_RETURN(Customer found, impl_->by_id(*tx, id));
      c = std::move(found);
    }
    out.customer = c ? c->guid : *guid;
    if (c) out.account_number = c->account_number;
    TS_ASSIGN_OR_RETURN(out.already_erased, tx->is_erased(out.customer));
    TS_ASSIGN_OR_RETURN(out.aliases, tx->aliases_of(out.customer));
    // The erasure goes where the customer went: its store's terminals (and unfiltered
    // ones); a create HQ never applied, to its creator's store.
    TS_ASSIGN_OR_RETURN(std::string channel, tx->channel_of(out.customer));
    TS_ASSIGN_OR_RETURN(auto status, tx->sync_status(out.customer));
    if (channel.empty() && status) channel = channel_of_node(status->node_id);
    TS_ASSIGN_OR_RETURN(out.rows, tx->erase_customer(out.customer, out.aliases, impl_->now()));
    const HqTransaction::Erased& n = out.rows;
    if (!c && !out.already_erased && n.statuses == 0 && n.received == 0 && n.feed == 0)
      return not_found(out.customer);
    // Each GUID merged into it too: a terminal may hold one as a customer of its own
    // (it had not pulled the merge), and the merge entries are erasure entries now.
    if (!out.already_erased) {
      TS_RETURN_IF_ERROR(tx->append_erasure(out.customer, channel));
      for (const Guid& alias : out.aliases) TS_RETURN_IF_ERROR(tx->append_erasure(alias, channel));
    }
    TS_RETURN_IF_ERROR(tx->commit());
    return out;
  });
  if (!report.ok()) return report;
  TS_ASSIGN_OR_RETURN(report->scrubbed, impl_->store->scrub());
  return report;
}

Result<Customer> Headquarters::edit_customer(std::string_view id, const std::vector<FieldChange>& changes) {
  return with_retries(impl_->busy_retries, [&]() -> Result<Customer> {
    if (changes.empty()) return Status::InvalidInput("set", "set: no field changes given");
    TS_ASSIGN_OR_RETURN(auto tx, impl_->store->begin());
    TS_ASSIGN_OR_RETURN(Customer found, impl_->by_id(*tx, id));
    std::optional<Customer> c = std::move(found);
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
    TS_ASSIGN_OR_RETURN(Impl::Order ord, impl_->order(*tx, failed));
    for (const StagedOp& op : failed) {
      // The fixes go with the first failed operation (normally the create).
      const bool use = !fixes_used;
      fixes_used = true;
      TS_RETURN_IF_ERROR(impl_->apply_and_record(*tx, op, use ? fixes : std::vector<FieldChange>{}, report, ord));
    }
    TS_RETURN_IF_ERROR(tx->commit());
    return report;
  });
}

Result<std::vector<SyncStatusRecord>> Headquarters::sync_status(std::optional<SyncStatus> filter) {
  return impl_->store->sync_statuses(filter);
}

Result<std::vector<ConflictRecord>> Headquarters::conflicts() { return impl_->store->conflicts(); }

Result<std::vector<TerminalInfo>> Headquarters::terminals() { return impl_->store->terminals(); }

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
      const std::string replaced = *slot;
      *slot = rec.lost;
      TS_RETURN_IF_ERROR(validate_customer(chosen));
      chosen.version = c.version + 1;
      const FieldWrite operator_write{hlc, std::string(kBackOffice), chosen.version};
      // A write the field got after the conflict is replaced by the operator's choice:
      // never without a journal entry of its own.
      TS_ASSIGN_OR_RETURN(auto latest, tx->field_write(c.guid, rec.field));
      if (latest && latest->version > rec.kept_write.version && replaced != rec.lost) {
        ConflictRecord newer;
        newer.customer = c.guid;
        newer.field = rec.field;
        newer.kept = rec.lost;
        newer.lost = replaced;
        newer.kept_write = operator_write;
        newer.lost_write = *latest;
        newer.policy = rec.policy;
        newer.outcome = "operator's choice (conflict " + std::to_string(id) + ") replaced a newer write";
        newer.status = "resolved";
        newer.created_at_ms = impl_->now();
        TS_ASSIGN_OR_RETURN(std::int64_t journaled, tx->add_conflict(newer));
        (void)journaled;
      }
      TS_RETURN_IF_ERROR(tx->put_field_write(c.guid, rec.field, operator_write));
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
  return impl_->store->search(search_text, 0, std::nullopt);
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
