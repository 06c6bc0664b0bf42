#include "tillsync/channel_node.h"

#include <algorithm>
#include <sys/stat.h>

#include "apply.h"
#include "customer_table.h"
#include "log_retention.h"
#include "node_schema.h"
#include "tillsync/crash_point.h"
#include "tillsync/storage/change_log.h"
#include "tillsync/storage/database.h"
#include "tillsync/validation.h"

namespace tillsync {

std::string_view to_string(CreationMode m) { return m == CreationMode::sync ? "sync" : "async"; }

namespace {

storage::DatabaseOptions db_options(const ChannelNodeOptions& o, bool create) {
  storage::DatabaseOptions d;
  d.synchronous = o.durability == Durability::full ? storage::Synchronous::full
                                                   : storage::Synchronous::normal;
  d.busy_timeout_ms = o.busy_timeout_ms;
  d.create_if_missing = create;
  return d;
}

// At most a century: a retention beyond it is "keep everything" with extra steps, and
// the horizon stays far from the clock's range.
constexpr std::int64_t kMaxLogRetentionMs = 36'500LL * 24 * 3600 * 1000;

Status validate_log_retention(const std::optional<std::int64_t>& ms) {
  if (ms && (*ms < 0 || *ms > kMaxLogRetentionMs))
    return Status::InvalidInput("log_retention", "log_retention: must be between 0 and 36500 days");
  return Status::Ok();
}

Status validate_config(const NodeConfig& c) {
  if (!is_valid_id(c.store_id))
    return Status::InvalidInput("store", "store: '" + c.store_id +
                                             "' must be 1-32 letters, digits, '-' or '_'");
  if (!is_valid_id(c.terminal_id))
    return Status::InvalidInput("terminal", "terminal: '" + c.terminal_id +
                                                "' must be 1-32 letters, digits, '-' or '_'");
  if (c.rts_timeout_ms <= 0 || c.rts_timeout_ms > 600'000)
    return Status::InvalidInput("rts_timeout_ms",
                                "rts_timeout_ms: must be between 1 and 600000 milliseconds");
  if (c.hq_endpoint) TS_RETURN_IF_ERROR(validate_text("hq", *c.hq_endpoint, kMaxTextLength));
  TS_RETURN_IF_ERROR(validate_log_retention(c.log_retention_ms));
  const DefaultCustomer& d = c.default_customer;
  TS_RETURN_IF_ERROR(validate_field(Field::customer_group, d.customer_group));
  TS_RETURN_IF_ERROR(validate_field(Field::receipt_option, d.receipt_option));
  TS_RETURN_IF_ERROR(validate_field(Field::receipt_email, d.receipt_email));
  TS_RETURN_IF_ERROR(validate_field(Field::currency, d.currency));
  TS_RETURN_IF_ERROR(validate_field(Field::language, d.language));
  for (const auto& a : d.affiliations) TS_RETURN_IF_ERROR(validate_affiliation(a, "default_affiliation"));
  return Status::Ok();
}

std::string default_purpose(CustomerType t) {
  return t == CustomerType::organization ? "business" : "home";
}

// The D9 fields an async customer may carry only with enhanced_async_customer.
Status check_enhanced_fields(const Customer& c, const FunctionalityProfile& p) {
  if (p.enhanced_async_customer) return Status::Ok();
  auto disabled = [](const char* field) {
    return Status::FeatureDisabled(
        field, std::string(field) +
                   ": not available for customers created asynchronously unless the "
                   "enhanced_async_customer feature is on");
  };
  if (!c.title.empty()) return disabled("title");
  if (!c.affiliations.empty()) return disabled("affiliations");
  for (const Contact& k : c.contacts)
    return disabled(k.kind == ContactKind::email ? "secondary_email" : "secondary_phone");
  return Status::Ok();
}

}  // namespace

struct ChannelNode::Impl {
  std::unique_ptr<storage::Database> db;
  NodeConfig config;
  HqGateway* hq = nullptr;
  PhysicalClock* clock = nullptr;
  HybridLogicalClock hlc;
  GuidGenerator guids;

  // Customers, addresses and contacts: random version 4 GUIDs (DESIGN.md §3).
  Guid new_guid() { return guids.next(); }
  // Operation ids: time-ordered (version 7), so HQ's op_id index grows at its right edge
  // instead of dirtying a random page per staged operation.
  Guid new_op_id() { return guids.next_time_ordered(clock->now_ms()); }

  Impl(std::unique_ptr<storage::Database> d, NodeConfig c, const ChannelNodeOptions& o, Hlc last)
      : db(std::move(d)),
        config(std::move(c)),
        hq(o.hq),
        clock(o.clock != nullptr ? o.clock : &SystemClock::instance()),
        hlc(*clock, last),
        guids(o.seed) {}

  CustomerTable customers() { return CustomerTable(*db); }

  // HQ is reachable for this call: a gateway exists, the manual switch is off, and the
  // gateway's last contact did not fail.
  bool online(const CallOptions& call) const {
    return !call.offline && hq != nullptr && config.hq_endpoint.has_value() && hq->reachable();
  }

  Result<Customer> find(std::string_view id) {
    CustomerTable t = customers();
    const auto guid = Guid::parse(id);
    if (guid) {
      TS_ASSIGN_OR_RETURN(auto c, t.get(*guid));
      if (c) return std::move(*c);
    } else {
      TS_ASSIGN_OR_RETURN(auto c, t.by_account(id));
      if (c) return std::move(*c);
    }
    // A GUID HQ merged into another customer (a duplicate, hq merge-customers), or the
    // account number that GUID had, names that customer.
    TS_ASSIGN_OR_RETURN(auto st, db->prepare(
        guid ? "SELECT target, account_number FROM guid_aliases WHERE alias = ?1"
             : "SELECT target, account_number FROM guid_aliases WHERE alias_account = ?1 LIMIT 1"));
    if (guid) {
      st.bind_blob(1, guid->raw());
    } else {
      st.bind(1, id);
    }
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (row) {
      if (auto target = Guid::from_raw(st.column_blob(0))) {
        TS_ASSIGN_OR_RETURN(auto merged, t.get(*target));
        if (merged) return std::move(*merged);
      }
      // Merged into another store's customer, which this (filtered) terminal does not hold.
      if (const std::string account = st.column_text(1); !account.empty())
        return Status::NotFound("customer " + std::string(id) + " was merged at HQ into account " + account +
                                " of another store; this terminal holds only its own store's customers");
    }
    return Status::NotFound("customer '" + std::string(id) + "' not found on this terminal");
  }

  // Appends one operation to the change log and advances the persisted HLC, inside
  // the caller's transaction. `op_id`: the id of the real-time request it records.
  Status log(storage::Transaction& txn, const Payload& payload, std::optional<Guid> op_id = std::nullopt) {
    // Another process (a replicator) may have advanced the persisted clock past HQ's.
    TS_ASSIGN_OR_RETURN(std::int64_t persisted, node_db::get_int(*db, node_db::key::hlc, 0));
    if (static_cast<std::uint64_t>(persisted) > hlc.last().value)
      hlc = HybridLogicalClock(*clock, Hlc{static_cast<std::uint64_t>(persisted)});
    const Hlc ts = hlc.now();
    storage::LogRow row;
    row.op_id = std::string((op_id ? *op_id : new_op_id()).raw());
    row.entity = std::string(entity_of(payload).raw());
    row.kind = static_cast<int>(kind_of(payload));
    row.hlc = ts.value;
    row.node_id = config.node_id();
    row.payload = encode_payload(payload);
    storage::ChangeLog change_log(*db);
    TS_ASSIGN_OR_RETURN(auto seq, change_log.append(txn, row));
    (void)seq;
    return node_db::put_int(txn, node_db::key::hlc, static_cast<std::int64_t>(ts.value));
  }

  // ---- real-time requests (sync mode) ----
  // Every HQ-answered write is logged under its request id, like an async one, so that
  // a new HQ database gets it back; HQ does not apply it twice (it knows the id).

  // What a request asks, without the GUIDs made for it: the same thing asked again
  // (a cashier repeating a command that got no answer) has the same content.
  static std::string content_of(const Payload& p) {
    Payload q = p;
    std::visit(
        [](auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, CustomerCreated>) {
            v.customer.guid = Guid{};
            for (Address& a : v.customer.addresses) a.guid = Guid{};
            for (Contact& k : v.customer.contacts) k.guid = Guid{};
          } else if constexpr (std::is_same_v<T, AddressAdded>) {
            v.address.guid = Guid{};
          } else if constexpr (std::is_same_v<T, LoyaltyCardIssued>) {
            v.card = {};
          }
        },
        q);
    return std::string(1, static_cast<char>(kind_of(q))) + encode_payload(q);
  }

  Result<RtsAnswer> send(const Guid& request, const Payload& p) {
    const std::string node = config.node_id();
    if (const auto* c = std::get_if<CustomerCreated>(&p)) return hq->create_customer(node, request, c->customer);
    if (const auto* u = std::get_if<CustomerUpdated>(&p))
      return hq->edit_customer(node, request, u->customer, u->base_version, u->changes);
    if (const auto* a = std::get_if<AddressAdded>(&p)) return hq->add_address(node, request, a->customer, a->address);
    if (const auto* l = std::get_if<LoyaltyCardIssued>(&p)) return hq->issue_loyalty_card(node, request, l->customer);
    return Status::Internal("not a real-time request");
  }

  // Stores HQ's answer to `request` and logs the write under the request id, in one
  // transaction. Returns the customer as stored.
  Result<Customer> settle(const Guid& request, Payload p, const RtsAnswer& a, std::string_view note = {}) {
    if (auto* l = std::get_if<LoyaltyCardIssued>(&p)) {
      l->card = LoyaltyCard{a.card_number, 0};
      for (const LoyaltyCard& card : a.customer.loyalty_cards)
        if (card.card_number == a.card_number) l->card = card;
    }
    const Guid asked = entity_of(p);
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    if (a.customer.guid != asked) {
      // HQ merged the GUID asked for into this customer: it names that one here too.
      TS_ASSIGN_OR_RETURN(auto st, db->prepare(
          "INSERT OR REPLACE INTO guid_aliases(alias, target) VALUES(?1, ?2)"));
      st.bind_blob(1, asked.raw()).bind_blob(2, a.customer.guid.raw());
      TS_RETURN_IF_ERROR(st.run());
      TS_RETURN_IF_ERROR(customers().remove(txn, asked));
    }
    // HQ carried the request out whatever this copy can store: a customer this terminal
    // cannot store yet (another local customer still holds an address or contact HQ
    // moved to it in an identity merge this terminal has not pulled) is set aside like
    // a feed entry, and stored after the pull that brings the merge.
    TS_RETURN_IF_ERROR(db->exec("SAVEPOINT rts_answer"));
    auto stored = customers().upsert_from_hq(txn, a.customer);
    if (!stored.ok() && stored.status().code() != Code::constraint_violation) return stored.status();
    if (!stored.ok()) {
      TS_RETURN_IF_ERROR(db->exec("ROLLBACK TO rts_answer"));
      TS_RETURN_IF_ERROR(node_db::set_aside(txn, a.customer, stored.status().to_string(), clock->now_ms()));
    }
    TS_RETURN_IF_ERROR(db->exec("RELEASE rts_answer"));
    TS_RETURN_IF_ERROR(merge_clock(txn, a.hq_hlc));
    TS_ASSIGN_OR_RETURN(auto logged, db->prepare("SELECT 1 FROM change_log WHERE op_id = ?1"));
    logged.bind_blob(1, request.raw());
    TS_ASSIGN_OR_RETURN(bool already, logged.step());
    if (!already) TS_RETURN_IF_ERROR(log(txn, p, request));
    {
      TS_ASSIGN_OR_RETURN(auto st, db->prepare("INSERT OR IGNORE INTO rts_applied(op_id) VALUES(?1)"));
      st.bind_blob(1, request.raw());
      TS_RETURN_IF_ERROR(st.run());
    }
    {
      TS_ASSIGN_OR_RETURN(auto st, db->prepare(
          "UPDATE rts_requests SET state = 'done', note = ?2, at_ms = ?3 WHERE request = ?1"));
      st.bind_blob(1, request.raw()).bind(2, note).bind(3, clock->now_ms());
      TS_RETURN_IF_ERROR(st.run());
    }
    TS_RETURN_IF_ERROR(txn.commit());
    return a.customer;
  }

  // HQ's clock as an answer carried it: later local writes order after it.
  Status merge_clock(storage::Transaction& txn, Hlc hq_hlc) {
    hq_hlc = bounded(hq_hlc, 0, kLatestSaneHlcMs);
    TS_ASSIGN_OR_RETURN(std::int64_t persisted, node_db::get_int(*db, node_db::key::hlc, 0));
    if (static_cast<std::int64_t>(hq_hlc.value) <= persisted) return Status::Ok();
    return node_db::put_int(txn, node_db::key::hlc, static_cast<std::int64_t>(hq_hlc.value));
  }

  // A request sent without an answer: kept to be settled with HQ at the next contact.
  Status remember_unknown(const Guid& request, const Payload& p) {
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    TS_ASSIGN_OR_RETURN(auto st, db->prepare(
        "INSERT OR IGNORE INTO rts_requests(request, kind, customer, content, payload, state, note, at_ms) "
        "VALUES(?1, ?2, ?3, ?4, ?5, 'unknown', '', ?6)"));
    st.bind_blob(1, request.raw()).bind(2, static_cast<std::int64_t>(kind_of(p)));
    st.bind_blob(3, entity_of(p).raw()).bind_blob(4, content_of(p)).bind_blob(5, encode_payload(p));
    st.bind(6, clock->now_ms());
    TS_RETURN_IF_ERROR(st.run());
    return txn.commit();
  }

  struct Earlier {
    Guid request;
    Payload payload;
    bool settled = false;  // done: HQ carried it out and this terminal stored the answer
  };
  static constexpr std::int64_t kRememberMs = 24 * 3600 * 1000;

  // The same request made earlier without an answer (or settled in the last day).
  Result<std::optional<Earlier>> earlier(const Payload& p) {
    TS_ASSIGN_OR_RETURN(auto st, db->prepare(
        "SELECT request, payload, state FROM rts_requests WHERE content = ?1 AND kind = ?2 "
        "AND state IN ('unknown', 'done') AND at_ms >= ?3 ORDER BY at_ms DESC LIMIT 1"));
    st.bind_blob(1, content_of(p)).bind(2, static_cast<std::int64_t>(kind_of(p)));
    st.bind(3, clock->now_ms() - kRememberMs);
    TS_ASSIGN_OR_RETURN(bool row, st.step());
    if (!row) return std::optional<Earlier>{};
    auto request = Guid::from_raw(st.column_blob(0));
    TS_ASSIGN_OR_RETURN(Payload earlier_payload, decode_payload(kind_of(p), st.column_blob(1)));
    if (!request) return Status::CorruptLog("rts_requests row has a malformed request id");
    return std::optional<Earlier>{Earlier{*request, std::move(earlier_payload), st.column_text(2) == "done"}};
  }

  static Status unknown_outcome(const Status& s, std::string_view what) {
    return Status(Code::outcome_unknown,
                  std::string(what) + " was sent to HQ but no answer came in time (" + s.message() +
                      "): HQ may have carried it out. The terminal settles it with HQ at its next "
                      "contact (store sync); repeating the same command does not do it twice");
  }

  // One real-time write: the same request as an earlier unanswered one is sent again
  // under its id (HQ carries an id out once), also while the gateway still waits to
  // retry HQ after that failure: the cashier asked again; otherwise a new request.
  Result<Customer> rts_write(Payload p, const CallOptions& call, std::string_view what) {
    TS_ASSIGN_OR_RETURN(auto before, earlier(p));
    const bool retry = before && !before->settled;
    if (call.offline || hq == nullptr || !config.hq_endpoint || !retry) {
      TS_RETURN_IF_ERROR(require_online(call, what));
    }
    Guid request = new_op_id();
    if (before) {
      if (before->settled) {
        // Settled since: this terminal already has HQ's answer.
        return find(entity_of(before->payload).to_string());
      }
      request = before->request;
      p = before->payload;
    }
    auto answer = send(request, p);
    if (answer.ok()) return settle(request, p, *answer);
    if (answer.status().code() == Code::outcome_unknown) {
      TS_RETURN_IF_ERROR(remember_unknown(request, p));
      return unknown_outcome(answer.status(), what);
    }
    return answer.status();
  }

  // Settles requests sent without an answer: each is sent again under its id.
  Result<std::int64_t> reconcile() {
    if (hq == nullptr || !config.hq_endpoint) return std::int64_t{0};
    // Settled ones are kept a day (a repeated command is recognised), then dropped.
    {
      TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
      TS_ASSIGN_OR_RETURN(auto st, db->prepare("DELETE FROM rts_requests WHERE state != 'unknown' AND at_ms < ?1"));
      st.bind(1, clock->now_ms() - kRememberMs);
      TS_RETURN_IF_ERROR(st.run());
      TS_RETURN_IF_ERROR(txn.commit());
    }
    std::vector<std::pair<Guid, Payload>> open;
    {
      TS_ASSIGN_OR_RETURN(auto st, db->prepare(
          "SELECT request, kind, payload FROM rts_requests WHERE state = 'unknown' ORDER BY at_ms, request"));
      for (;;) {
        TS_ASSIGN_OR_RETURN(bool row, st.step());
        if (!row) break;
        auto request = Guid::from_raw(st.column_blob(0));
        auto kind = op_kind_from_int(static_cast<int>(st.column_int64(1)));
        if (!request || !kind) return Status::CorruptLog("rts_requests row is malformed");
        TS_ASSIGN_OR_RETURN(Payload p, decode_payload(*kind, st.column_blob(2)));
        open.emplace_back(*request, std::move(p));
      }
    }
    std::int64_t settled = 0;
    for (auto& [request, p] : open) {
      auto answer = send(request, p);
      const std::string what = std::string(to_string(kind_of(p))) + " request " + request.to_string() +
                               " for customer " + entity_of(p).to_string();
      if (answer.ok()) {
        TS_ASSIGN_OR_RETURN(Customer c, settle(request, p, *answer, "settled with HQ at a later contact"));
        (void)c;
        TS_RETURN_IF_ERROR(note_recovery(what + ", sent without an answer earlier, is carried out at HQ"));
        ++settled;
        continue;
      }
      const Code code = answer.status().code();
      if (code == Code::hq_unreachable || code == Code::outcome_unknown || code == Code::busy) break;
      // HQ refused it (e.g. the customer no longer exists): nothing was done.
      TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
      TS_ASSIGN_OR_RETURN(auto st, db->prepare(
          "UPDATE rts_requests SET state = 'failed', note = ?2, at_ms = ?3 WHERE request = ?1"));
      st.bind_blob(1, request.raw()).bind(2, answer.status().to_string()).bind(3, clock->now_ms());
      TS_RETURN_IF_ERROR(st.run());
      TS_RETURN_IF_ERROR(txn.commit());
      TS_RETURN_IF_ERROR(note_recovery(what + ", sent without an answer earlier, was refused by HQ: " +
                                       answer.status().to_string()));
    }
    return settled;
  }

  Status note_recovery(const std::string& what) {
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    TS_RETURN_IF_ERROR(node_db::put(txn, node_db::key::last_recovery, what));
    return txn.commit();
  }

  Customer build(const NewCustomer& in) {
    const DefaultCustomer& d = config.default_customer;
    Customer c;
    c.guid = new_guid();
    if (in.type) {
      c.type = *in.type;
    } else if (!in.org_name.empty()) {
      c.type = CustomerType::organization;
    } else if (!in.first_name.empty() || !in.last_name.empty()) {
      c.type = CustomerType::person;
    } else {
      c.type = d.type;
    }
    c.first_name = in.first_name;
    c.middle_name = in.middle_name;
    c.last_name = in.last_name;
    c.org_name = in.org_name;
    c.title = in.title;
    c.email = in.email;
    c.phone = in.phone;
    c.language = in.language.value_or(d.language);
    c.currency = in.currency.value_or(d.currency);
    c.customer_group = in.customer_group.value_or(d.customer_group);
    c.receipt_option = in.receipt_option.value_or(d.receipt_option);
    // D11: the template's receipt e-mail only when none was given.
    c.receipt_email = in.receipt_email && !in.receipt_email->empty() ? *in.receipt_email : d.receipt_email;
    c.affiliations = in.affiliations;
    for (const auto& e : in.secondary_emails) c.contacts.push_back({new_guid(), ContactKind::email, e});
    for (const auto& p : in.secondary_phones) c.contacts.push_back({new_guid(), ContactKind::phone, p});
    for (Address a : in.addresses) {
      a.guid = new_guid();
      if (a.purpose.empty()) a.purpose = default_purpose(c.type);
      c.addresses.push_back(std::move(a));
    }
    c.version = 1;
    return c;
  }

  // D11 with D9: template affiliations are copied where affiliations are allowed.
  void inherit_affiliations(Customer& c, CreationMode mode) {
    if (mode == CreationMode::async && !config.profile.enhanced_async_customer) return;
    for (const auto& a : config.default_customer.affiliations) {
      if (std::find(c.affiliations.begin(), c.affiliations.end(), a) == c.affiliations.end())
        c.affiliations.push_back(a);
    }
  }

  Result<CreateOutcome> create_async(Customer c, bool is_online, std::string fallback_reason,
                                     std::string fallback_code, std::optional<Guid> op_id = std::nullopt) {
    // D5: with offline data exclusion, nothing is created while offline.
    if (!is_online && config.profile.filter_shared_customer_tables) {
      return Status(Code::offline_creation_blocked,
                    "customers cannot be created offline on this terminal "
                    "(filter_shared_customer_tables is on)" +
                        (fallback_reason.empty() ? std::string() : ": " + fallback_reason));
    }
    TS_RETURN_IF_ERROR(check_enhanced_fields(c, config.profile));
    inherit_affiliations(c, CreationMode::async);
    c.account_number.reset();
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    TS_RETURN_IF_ERROR(customers().insert(txn, c));
    TS_RETURN_IF_ERROR(log(txn, CustomerCreated{c}, op_id));
    crash_point("node.create.before_commit");
    TS_RETURN_IF_ERROR(txn.commit());
    crash_point("node.create.after_commit");
    return CreateOutcome{std::move(c), CreationMode::async, std::move(fallback_reason), std::move(fallback_code)};
  }

  Result<CreateOutcome> create(const NewCustomer& in, const CallOptions& call) {
    Customer c = build(in);
    TS_RETURN_IF_ERROR(validate_customer(c));
    const bool is_online = online(call);
    if (config.profile.async_customer_creation) return create_async(std::move(c), is_online, {}, {});

    // Sync mode (D1): HQ assigns the account number now. Any reason HQ cannot be
    // reached turns this into an async creation with the same GUID (D4), and so does
    // `busy`: HQ's shared database turned the request away (nothing was written) and
    // the till must keep registering customers. Other errors are HQ's answer.
    Customer request = c;
    inherit_affiliations(request, CreationMode::sync);
    Payload p = CustomerCreated{request};
    // The same customer asked for before without an answer is the same request, sent
    // again under its id (also while the gateway waits to retry HQ: the cashier asked).
    TS_ASSIGN_OR_RETURN(auto before, earlier(p));
    const bool retry = before && !before->settled && !call.offline && hq != nullptr && config.hq_endpoint;
    if (!is_online && !retry) {
      return create_async(std::move(c), false, call.offline ? "terminal is in offline mode"
                                                : !config.hq_endpoint ? "no HQ configured"
                                                                      : "HQ unreachable",
                          call.offline ? "offline_mode" : !config.hq_endpoint ? "no_hq" : "hq_unreachable");
    }
    Guid id = new_op_id();
    if (before) {
      if (before->settled) {
        TS_ASSIGN_OR_RETURN(Customer stored, find(entity_of(before->payload).to_string()));
        return CreateOutcome{std::move(stored), CreationMode::sync, {}, {}};
      }
      id = before->request;
      p = before->payload;
      c = std::get<CustomerCreated>(p).customer;
    }
    auto reply = send(id, p);
    if (reply.ok()) {
      TS_ASSIGN_OR_RETURN(Customer stored, settle(id, p, *reply));
      return CreateOutcome{std::move(stored), CreationMode::sync, {}, {}};
    }
    const Code code = reply.status().code();
    if (code != Code::hq_unreachable && code != Code::busy && code != Code::outcome_unknown) return reply.status();
    const std::string reason =
        code == Code::busy ? "HQ is busy: " + reply.status().message() : reply.status().message();
    const std::string reason_code = code == Code::busy              ? "hq_busy"
                                    : code == Code::outcome_unknown ? "no_answer"
                                                                    : "hq_unreachable";
    // Logged under the request id: if HQ did carry the request out, it knows the id and
    // does not apply the async create again; the account number comes with the pull.
    auto fallback = create_async(c, false, reason, reason_code, id);
    if (!fallback.ok() && code == Code::outcome_unknown) {
      // No async fallback here (D5, D9), yet HQ may have created the customer: it is
      // settled with HQ at the next contact, never created twice.
      TS_RETURN_IF_ERROR(remember_unknown(id, p));
      return Status(Code::outcome_unknown,
                    "creating the customer was sent to HQ but no answer came in time, and this "
                    "terminal cannot create it offline (" + fallback.status().message() +
                        "): HQ may have created it. The terminal settles it with HQ at its next "
                        "contact (store sync); repeating the same creation does not create a second customer");
    }
    return fallback;
  }

  Status require_online(const CallOptions& call, std::string_view what) {
    if (online(call)) return Status::Ok();
    std::string why = call.offline ? "the terminal is in offline mode"
                      : !config.hq_endpoint ? "no HQ is configured"
                                            : "HQ is unreachable";
    return Status::HqUnreachable(std::string(what) + " needs HQ, but " + why);
  }

  Result<Customer> edit(std::string_view id, const std::vector<FieldChange>& changes,
                        const CallOptions& call) {
    if (changes.empty()) return Status::InvalidInput("set", "set: no field changes given");
    TS_ASSIGN_OR_RETURN(Customer current, find(id));
    Customer edited = current;
    for (const FieldChange& ch : changes) edited.get(ch.field) = ch.value;
    TS_RETURN_IF_ERROR(validate_customer(edited));

    if (config.profile.async_customer_edits) {
      // D9: a title on a customer that is still pending needs the enhanced feature.
      if (!current.synced() && edited.title != current.title && !edited.title.empty())
        TS_RETURN_IF_ERROR(check_enhanced_fields(edited, config.profile));
      // The version stays the HQ version this terminal last saw: HQ uses it to tell
      // concurrent edits from ones that saw each other. Read again inside the write
      // transaction: a pull (another connection, `store sync --watch`) may have
      // committed since, and its values must not be overwritten with stale ones.
      TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
      TS_ASSIGN_OR_RETURN(Customer fresh, find(current.guid.to_string()));
      Customer result = fresh;
      for (const FieldChange& ch : changes) result.get(ch.field) = ch.value;
      TS_RETURN_IF_ERROR(validate_customer(result));
      TS_RETURN_IF_ERROR(customers().update_scalars(txn, result));
      TS_RETURN_IF_ERROR(log(txn, CustomerUpdated{fresh.guid, fresh.version, changes}));
      TS_RETURN_IF_ERROR(txn.commit());
      return result;
    }
    if (!current.synced()) {
      return Status(Code::pending_customer_not_editable,
                    "customer is pending sync and cannot be edited until HQ assigns its account "
                    "number (async_customer_edits is off)");
    }
    return rts_write(CustomerUpdated{current.guid, current.version, changes}, call, "editing a customer");
  }

  Result<Customer> add_address(std::string_view id, Address address, const CallOptions& call) {
    TS_ASSIGN_OR_RETURN(Customer current, find(id));
    if (address.purpose.empty()) address.purpose = default_purpose(current.type);
    TS_RETURN_IF_ERROR(validate_address(address, "address"));
    address.guid = new_guid();
    {
      // The customer with it must still be valid (D13: at most 50 addresses).
      Customer with = current;
      TS_RETURN_IF_ERROR(apply_to_customer(with, AddressAdded{current.guid, address}, {}, false));
    }

    if (config.profile.async_customer_addresses) {
      TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
      TS_RETURN_IF_ERROR(customers().add_address(txn, current.guid, address));
      TS_RETURN_IF_ERROR(log(txn, AddressAdded{current.guid, address}));
      TS_RETURN_IF_ERROR(txn.commit());
      return find(current.guid.to_string());
    }
    if (!current.synced()) {
      return Status::FeatureDisabled(
          "address",
          "address: a customer pending sync can get addresses only at creation unless the "
          "async_customer_addresses feature is on");
    }
    return rts_write(AddressAdded{current.guid, address}, call, "adding an address");
  }

  Result<Customer> issue_loyalty_card(std::string_view id, const CallOptions& call) {
    TS_ASSIGN_OR_RETURN(Customer current, find(id));
    // D7: checked locally, before any HQ call.
    if (!current.synced()) {
      return Status(Code::loyalty_requires_synced_customer,
                    "a loyalty card can be issued only after the customer's account number has "
                    "been synced from HQ");
    }
    TS_RETURN_IF_ERROR(check_child_count("loyalty_cards", current.loyalty_cards.size() + 1));
    return rts_write(LoyaltyCardIssued{current.guid, {}}, call, "issuing a loyalty card");
  }

  // Applies a child operation locally and logs it, in one transaction, on the customer
  // as it is inside that transaction (a pull may have committed since `current` was
  // read).
  Result<Customer> log_child(const Customer& current, const Payload& payload) {
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    TS_ASSIGN_OR_RETURN(Customer next, find(current.guid.to_string()));
    TS_RETURN_IF_ERROR(apply_to_customer(next, payload, {}, /*bump_version=*/false));
    TS_RETURN_IF_ERROR(customers().upsert(txn, next));
    TS_RETURN_IF_ERROR(log(txn, payload));
    TS_RETURN_IF_ERROR(txn.commit());
    return next;
  }

  Status require_feature(bool on, const char* field, const char* feature) {
    if (on) return Status::Ok();
    return Status::FeatureDisabled(field, std::string(field) + ": needs the " + feature +
                                              " feature on this terminal");
  }

  template <class T>
  static Status require_child(const std::vector<T>& items, const Guid& g, const char* what) {
    for (const T& x : items) {
      if (x.guid == g) return Status::Ok();
    }
    return Status::NotFound(std::string(what) + " " + g.to_string() + " not found on this customer");
  }

  Result<NodeStatus> status() {
    NodeStatus s;
    s.node_id = config.node_id();
    storage::ChangeLog change_log(*db);
    TS_ASSIGN_OR_RETURN(s.acked_seq, node_db::get_int(*db, node_db::key::acked_seq, 0));
    TS_ASSIGN_OR_RETURN(s.pulled_seq, node_db::get_int(*db, node_db::key::pulled_seq, 0));
    TS_ASSIGN_OR_RETURN(s.last_seq, change_log.last_seq());
    TS_ASSIGN_OR_RETURN(s.pending_ops, change_log.count_after(s.acked_seq));
    TS_ASSIGN_OR_RETURN(log_retention::Extent held, log_retention::extent(*db));
    s.first_seq = held.first_seq;
    s.log_rows = held.rows;
    s.compacted_through = held.compacted_through;
    s.compacted_at_ms = held.compacted_at_ms;
    s.lost_from = held.lost_from;
    s.lost_to = held.lost_to;
    s.lost_at_ms = held.lost_at_ms;
    TS_ASSIGN_OR_RETURN(std::int64_t online_flag, node_db::get_int(*db, node_db::key::online, 0));
    s.online = online_flag != 0;
    TS_ASSIGN_OR_RETURN(std::int64_t at, node_db::get_int(*db, node_db::key::last_sync_at, 0));
    if (at > 0) s.last_sync_at_ms = at;
    TS_ASSIGN_OR_RETURN(auto err, node_db::get(*db, node_db::key::last_error));
    s.last_error = err.value_or("");
    TS_ASSIGN_OR_RETURN(std::int64_t unreachable_at, node_db::get_int(*db, node_db::key::unreachable_at, 0));
    if (unreachable_at > 0) {
      s.unreachable_at_ms = unreachable_at;
      TS_ASSIGN_OR_RETURN(auto reason, node_db::get(*db, node_db::key::unreachable_reason));
      s.unreachable_reason = reason.value_or("");
      TS_ASSIGN_OR_RETURN(auto detail, node_db::get(*db, node_db::key::unreachable_detail));
      s.unreachable_detail = detail.value_or("");
    }
    TS_ASSIGN_OR_RETURN(auto recovery, node_db::get(*db, node_db::key::last_recovery));
    s.last_recovery = recovery.value_or("");
    TS_ASSIGN_OR_RETURN(auto unsettled, db->query_int("SELECT count(*) FROM rts_requests WHERE state = 'unknown'"));
    s.unsettled_requests = unsettled.value_or(0);
    TS_ASSIGN_OR_RETURN(auto aside, db->query_int("SELECT count(*) FROM set_aside"));
    s.set_aside = aside.value_or(0);
    if (s.set_aside > 0) {
      TS_ASSIGN_OR_RETURN(auto st, db->prepare("SELECT error FROM set_aside ORDER BY at_ms DESC LIMIT 1"));
      TS_ASSIGN_OR_RETURN(bool row, st.step());
      if (row) s.set_aside_error = st.column_text(0);
    }
    return s;
  }
};

ChannelNode::ChannelNode(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChannelNode::~ChannelNode() = default;

Result<std::unique_ptr<ChannelNode>> ChannelNode::create(const std::string& path,
                                                         const NodeConfig& config,
                                                         const ChannelNodeOptions& options) {
  TS_RETURN_IF_ERROR(validate_config(config));
  TS_ASSIGN_OR_RETURN(auto db, storage::Database::open(path, db_options(options, true)));
  TS_ASSIGN_OR_RETURN(auto version, db->query_int("PRAGMA user_version"));
  if (version.value_or(0) != 0) {
    // Either already a terminal (refuse to overwrite it) or something else entirely.
    TS_RETURN_IF_ERROR(storage::upgrade(*db, node_db::schema()));
    return Status::InvalidInput("db", "db: " + path + " is already an initialized terminal "
                                          "database; refusing to overwrite it");
  }
  TS_RETURN_IF_ERROR(storage::migrate(*db, node_db::schema()));
  {
    TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
    TS_RETURN_IF_ERROR(node_db::write_config(txn, config));
    TS_RETURN_IF_ERROR(txn.commit());
  }
  return open(path, options);
}

Result<std::unique_ptr<ChannelNode>> ChannelNode::open(const std::string& path,
                                                       const ChannelNodeOptions& options) {
  TS_ASSIGN_OR_RETURN(auto db, storage::Database::open(path, db_options(options, false)));
  TS_RETURN_IF_ERROR(storage::upgrade(*db, node_db::schema()));
  TS_ASSIGN_OR_RETURN(NodeConfig config, node_db::read_config(*db));
  // Resume the HLC above everything this node has issued, whatever the wall clock says.
  TS_ASSIGN_OR_RETURN(std::int64_t last, node_db::get_int(*db, node_db::key::hlc, 0));
  auto impl = std::make_unique<Impl>(std::move(db), std::move(config), options,
                                     Hlc{static_cast<std::uint64_t>(last)});
  return std::unique_ptr<ChannelNode>(new ChannelNode(std::move(impl)));
}

const NodeConfig& ChannelNode::config() const { return impl_->config; }

Result<Customer> ChannelNode::update_address(std::string_view id, const Guid& address,
                                             const std::vector<AddressFieldChange>& changes) {
  TS_RETURN_IF_ERROR(impl_->require_feature(impl_->config.profile.async_customer_addresses,
                                            "address", "async_customer_addresses"));
  if (changes.empty()) return Status::InvalidInput("address", "address: no changes given");
  TS_ASSIGN_OR_RETURN(Customer c, impl_->find(id));
  TS_RETURN_IF_ERROR(Impl::require_child(c.addresses, address, "address"));
  return impl_->log_child(c, AddressUpdated{c.guid, c.version, address, changes});
}

Result<Customer> ChannelNode::remove_address(std::string_view id, const Guid& address) {
  TS_RETURN_IF_ERROR(impl_->require_feature(impl_->config.profile.async_customer_addresses,
                                            "address", "async_customer_addresses"));
  TS_ASSIGN_OR_RETURN(Customer c, impl_->find(id));
  TS_RETURN_IF_ERROR(Impl::require_child(c.addresses, address, "address"));
  return impl_->log_child(c, AddressRemoved{c.guid, address, c.version});
}

Result<Customer> ChannelNode::add_contact(std::string_view id, ContactKind kind, const std::string& value) {
  TS_RETURN_IF_ERROR(impl_->require_feature(impl_->config.profile.async_customer_edits, "contact",
                                            "async_customer_edits"));
  TS_ASSIGN_OR_RETURN(Customer c, impl_->find(id));
  if (!c.synced()) {
    TS_RETURN_IF_ERROR(impl_->require_feature(impl_->config.profile.enhanced_async_customer,
                                              "contact", "enhanced_async_customer"));
  }
  Contact k{impl_->new_guid(), kind, value};
  Customer with = c;  // validates the contact and the count (D13: at most 50)
  TS_RETURN_IF_ERROR(apply_to_customer(with, ContactAdded{c.guid, k}, {}, false));
  return impl_->log_child(c, ContactAdded{c.guid, k});
}

Result<Customer> ChannelNode::update_contact(std::string_view id, const Guid& contact,
                                             const std::string& value) {
  TS_RETURN_IF_ERROR(impl_->require_feature(impl_->config.profile.async_customer_edits, "contact",
                                            "async_customer_edits"));
  TS_ASSIGN_OR_RETURN(Customer c, impl_->find(id));
  TS_RETURN_IF_ERROR(Impl::require_child(c.contacts, contact, "contact"));
  return impl_->log_child(c, ContactUpdated{c.guid, c.version, contact, value});
}

Result<Customer> ChannelNode::remove_contact(std::string_view id, const Guid& contact) {
  TS_RETURN_IF_ERROR(impl_->require_feature(impl_->config.profile.async_customer_edits, "contact",
                                            "async_customer_edits"));
  TS_ASSIGN_OR_RETURN(Customer c, impl_->find(id));
  TS_RETURN_IF_ERROR(Impl::require_child(c.contacts, contact, "contact"));
  return impl_->log_child(c, ContactRemoved{c.guid, contact, c.version});
}

void ChannelNode::attach_hq(HqGateway* hq) { impl_->hq = hq; }

Status ChannelNode::set_log_retention(std::optional<std::int64_t> retention_ms) {
  TS_RETURN_IF_ERROR(validate_log_retention(retention_ms));
  storage::Database& db = *impl_->db;
  TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(db));
  // Read inside the transaction: another process may have changed it.
  TS_ASSIGN_OR_RETURN(auto before, node_db::log_retention(db));
  TS_RETURN_IF_ERROR(node_db::put(txn, node_db::key::log_retention_ms,
                                  retention_ms ? std::to_string(*retention_ms) : std::string()));
  if (!retention_ms) {
    TS_RETURN_IF_ERROR(log_retention::stop(txn));
  } else if (!before) {
    TS_RETURN_IF_ERROR(log_retention::start(txn, impl_->clock->now_ms()));
  }
  TS_RETURN_IF_ERROR(txn.commit());
  impl_->config.log_retention_ms = retention_ms;
  return Status::Ok();
}

Result<CreateOutcome> ChannelNode::create_customer(const NewCustomer& input, CallOptions call) {
  return impl_->create(input, call);
}

Result<Customer> ChannelNode::edit_customer(std::string_view id,
                                            const std::vector<FieldChange>& changes,
                                            CallOptions call) {
  return impl_->edit(id, changes, call);
}

Result<Customer> ChannelNode::add_address(std::string_view id, const Address& address,
                                          CallOptions call) {
  return impl_->add_address(id, address, call);
}

Result<Customer> ChannelNode::issue_loyalty_card(std::string_view id, CallOptions call) {
  return impl_->issue_loyalty_card(id, call);
}

Result<Customer> ChannelNode::find(std::string_view id) { return impl_->find(id); }

Result<std::int64_t> ChannelNode::reconcile() { return impl_->reconcile(); }

Result<std::vector<Customer>> ChannelNode::search(std::string_view text) {
  return impl_->customers().search(text);
}

Result<NodeStatus> ChannelNode::status() { return impl_->status(); }

Result<ContentDigest> ChannelNode::digest() {
  DigestBuilder b;
  TS_RETURN_IF_ERROR(impl_->customers().for_each_by_guid([&b](const Customer& c) {
    b.add(c);
    return Status::Ok();
  }));
  return b.finish();
}

Result<std::vector<LogRecord>> ChannelNode::read_log(std::int64_t after_seq, std::size_t limit) {
  storage::ChangeLog change_log(*impl_->db);
  TS_ASSIGN_OR_RETURN(auto rows, change_log.read_after(after_seq, limit));
  std::vector<LogRecord> out;
  out.reserve(rows.size());
  for (auto& r : rows) {
    LogRecord rec;
    rec.seq = r.seq;
    auto op = Guid::from_raw(r.op_id);
    auto entity = Guid::from_raw(r.entity);
    auto kind = op_kind_from_int(r.kind);
    if (!op || !entity || !kind)
      return Status::CorruptLog("change log row " + std::to_string(r.seq) + " is malformed");
    rec.op_id = *op;
    rec.entity = *entity;
    rec.kind = *kind;
    rec.hlc = Hlc{r.hlc};
    rec.node_id = std::move(r.node_id);
    rec.payload = std::move(r.payload);
    out.push_back(std::move(rec));
  }
  return out;
}

}  // namespace tillsync
