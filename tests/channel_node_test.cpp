// The terminal's local engine against the single-node domain rules of DESIGN.md §1.
// Tests are named after the rule they prove. HQ is a scripted fake gateway here; the
// real RTS over ZeroMQ is tested in the integration suites.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <map>

#include "support/temp_dir.h"
#include "tillsync/channel_node.h"
#include "tillsync/operations.h"

namespace tillsync {
namespace {

using testing::TempDir;

// A scripted HQ: assigns account numbers, records calls, and can be made to fail.
class FakeHq final : public HqGateway {
 public:
  bool up = true;                     // reachable()
  Status fail_next;                   // returned (once) instead of doing the work
  bool commit_then_timeout = false;   // do the work, then report a timeout (lost reply)
  int calls = 0;
  std::map<Guid, Customer> customers;

  bool reachable() override { return up; }

  Result<RtsAnswer> create_customer(const std::string&, const Guid& request, const Customer& c) override {
    TS_RETURN_IF_ERROR(before_call());
    if (auto done = requests.find(request); done != requests.end()) return after_call(done->second);
    Customer stored = c;
    auto it = customers.find(c.guid);
    if (it == customers.end()) {
      stored.account_number = "C" + std::to_string(100000000 + customers.size() + 1);
      customers[c.guid] = stored;
    } else {
      stored = it->second;
    }
    return after_call(requests[request] = RtsAnswer{stored, Hlc{}, {}});
  }
  Result<RtsAnswer> edit_customer(const std::string&, const Guid& request, const Guid& g, std::int64_t,
                                  const std::vector<FieldChange>& changes) override {
    TS_RETURN_IF_ERROR(before_call());
    if (auto done = requests.find(request); done != requests.end()) return after_call(done->second);
    Customer& c = customers.at(g);
    for (const auto& ch : changes) c.get(ch.field) = ch.value;
    ++c.version;
    return after_call(requests[request] = RtsAnswer{c, Hlc{}, {}});
  }
  Result<RtsAnswer> add_address(const std::string&, const Guid& request, const Guid& g, const Address& a) override {
    TS_RETURN_IF_ERROR(before_call());
    if (auto done = requests.find(request); done != requests.end()) {
      done->second.customer = customers.at(g);
      return after_call(done->second);
    }
    Customer& c = customers.at(g);
    c.addresses.push_back(a);
    return after_call(requests[request] = RtsAnswer{c, Hlc{}, {}});
  }
  Result<RtsAnswer> issue_loyalty_card(const std::string&, const Guid& request, const Guid& g) override {
    TS_RETURN_IF_ERROR(before_call());
    if (auto done = requests.find(request); done != requests.end()) {
      done->second.customer = customers.at(g);
      return after_call(done->second);
    }
    Customer& c = customers.at(g);
    c.loyalty_cards.push_back({"L" + std::to_string(c.loyalty_cards.size() + 1), 42});
    return after_call(requests[request] = RtsAnswer{c, Hlc{}, c.loyalty_cards.back().card_number});
  }

  std::map<Guid, RtsAnswer> requests;  // what each request id did

 private:
  Status before_call() {
    ++calls;
    if (!fail_next.ok()) return std::exchange(fail_next, Status::Ok());
    return Status::Ok();
  }
  Result<RtsAnswer> after_call(RtsAnswer a) {
    if (commit_then_timeout) return Status(Code::outcome_unknown, "RTS call timed out after 2000 ms");
    return a;
  }
};

class NodeTest : public ::testing::Test {
 protected:
  NodeConfig config(FunctionalityProfile profile = {}, bool with_hq = true) {
    NodeConfig c;
    c.store_id = "S001";
    c.terminal_id = "T01";
    if (with_hq) c.hq_endpoint = "tcp://127.0.0.1:1";
    c.profile = profile;
    return c;
  }
  std::unique_ptr<ChannelNode> make(FunctionalityProfile profile = {}, bool with_hq = true,
                                    DefaultCustomer defaults = {}) {
    NodeConfig c = config(profile, with_hq);
    c.default_customer = std::move(defaults);
    ChannelNodeOptions o;
    o.clock = &clock;
    o.seed = 7;
    o.hq = &hq;
    auto node = ChannelNode::create(path(), c, o);
    EXPECT_TRUE(node.ok()) << node.status().to_string();
    return std::move(node).value();
  }
  std::string path() const { return dir.file("terminal.db"); }

  static NewCustomer person(std::string first = "Ada", std::string last = "Lovelace") {
    NewCustomer n;
    n.first_name = std::move(first);
    n.last_name = std::move(last);
    return n;
  }

  std::int64_t log_rows(ChannelNode& node) {
    auto rows = node.read_log(0, 1000);
    EXPECT_TRUE(rows.ok());
    return static_cast<std::int64_t>(rows->size());
  }
  std::size_t customer_count(ChannelNode& node) {
    auto all = node.search("");
    EXPECT_TRUE(all.ok());
    return all->size();
  }

  TempDir dir;
  ManualClock clock;
  FakeHq hq;
};

// ---- D1: sync and async creation ------------------------------------------------

TEST_F(NodeTest, D1_SyncCreationGetsAccountNumberFromHqAndSendsTerminalGuid) {
  auto node = make();
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->mode, CreationMode::sync);
  ASSERT_TRUE(out->customer.account_number.has_value());
  EXPECT_EQ(out->customer.account_id(), *out->customer.account_number);
  ASSERT_EQ(hq.customers.size(), 1u);
  EXPECT_EQ(hq.customers.begin()->first, out->customer.guid);  // HQ got the terminal's GUID
  // A sync creation is logged too, under its request id (HQ knows it and does not apply
  // it twice; a new HQ database gets it back).
  EXPECT_EQ(log_rows(*node), 1);
  EXPECT_EQ(node->read_log(0, 1)->at(0).op_id, hq.requests.begin()->first);
  auto found = node->find(*out->customer.account_number);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->guid, out->customer.guid);
}

TEST_F(NodeTest, D1_AsyncCreationWritesLocallyWithGuidAndNoHqCall) {
  auto node = make({.async_customer_creation = true});
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->mode, CreationMode::async);
  EXPECT_FALSE(out->customer.account_number.has_value());
  EXPECT_FALSE(out->customer.guid.is_nil());
  EXPECT_EQ(hq.calls, 0);
  auto log = node->read_log(0, 10);
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 1u);
  EXPECT_EQ((*log)[0].kind, OpKind::customer_create);
  EXPECT_EQ((*log)[0].entity, out->customer.guid);
  EXPECT_EQ((*log)[0].node_id, "S001/T01");
  auto payload = decode_payload((*log)[0].kind, (*log)[0].payload);
  ASSERT_TRUE(payload.ok());
  EXPECT_EQ(std::get<CustomerCreated>(*payload).customer, out->customer);
}

// ---- D2: the mode is a persisted profile option, off by default -------------------

TEST_F(NodeTest, D2_AsyncModeIsProfileOptionDefaultOffAndPersisted) {
  EXPECT_FALSE(FunctionalityProfile{}.async_customer_creation);
  {
    auto node = make({.async_customer_creation = true});
  }
  ChannelNodeOptions o;
  o.clock = &clock;
  o.hq = &hq;
  auto reopened = ChannelNode::open(path(), o);
  ASSERT_TRUE(reopened.ok()) << reopened.status().to_string();
  EXPECT_TRUE((*reopened)->config().profile.async_customer_creation);
  auto out = (*reopened)->create_customer(person());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->mode, CreationMode::async);
  EXPECT_EQ(hq.calls, 0);
}

// ---- D3: Pending sync ---------------------------------------------------------------

TEST_F(NodeTest, D3_AsyncCustomerShowsPendingSyncNeverTheGuid) {
  auto node = make({.async_customer_creation = true});
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->customer.account_id(), "Pending sync");
  EXPECT_EQ(std::string(kPendingSync), "Pending sync");
  EXPECT_EQ(out->customer.account_id().find(out->customer.guid.to_string()), std::string::npos);
  auto shown = node->find(out->customer.guid.to_string());
  ASSERT_TRUE(shown.ok());
  EXPECT_EQ(shown->account_id(), "Pending sync");
}

// ---- D4: automatic fallback to async -------------------------------------------------

TEST_F(NodeTest, D4_NoHqConfiguredFallsBackToAsync) {
  auto node = make({}, /*with_hq=*/false);
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->mode, CreationMode::async);
  EXPECT_EQ(out->fallback_reason, "no HQ configured");
  EXPECT_EQ(hq.calls, 0);
  EXPECT_EQ(log_rows(*node), 1);
}

TEST_F(NodeTest, D4_ManualOfflineSwitchFallsBackToAsync) {
  auto node = make();
  auto out = node->create_customer(person(), {.offline = true});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->mode, CreationMode::async);
  EXPECT_EQ(hq.calls, 0);
  EXPECT_FALSE(out->customer.account_number.has_value());
}

TEST_F(NodeTest, D4_TerminalOfflineFallsBackToAsync) {
  auto node = make();
  hq.up = false;
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->mode, CreationMode::async);
  EXPECT_EQ(hq.calls, 0);
}

TEST_F(NodeTest, D4_RtsCommunicationErrorFallsBackToAsyncWithSameGuid) {
  auto node = make();
  hq.fail_next = Status::HqUnreachable("RTS call timed out after 2000 ms");
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->mode, CreationMode::async);
  EXPECT_NE(out->fallback_reason.find("timed out"), std::string::npos);
  EXPECT_EQ(hq.calls, 1);
  EXPECT_TRUE(hq.customers.empty());
  auto log = node->read_log(0, 10);
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 1u);
  EXPECT_EQ((*log)[0].entity, out->customer.guid);
}

TEST_F(NodeTest, D4_HqBusyFallsBackToAsyncButOtherHqErrorsAreReturned) {
  auto node = make();
  hq.fail_next = Status(Code::busy, "the request lost to other HQ processes 50 times");
  auto busy = node->create_customer(person());
  ASSERT_TRUE(busy.ok()) << busy.status().to_string();
  EXPECT_EQ(busy->mode, CreationMode::async);
  EXPECT_NE(busy->fallback_reason.find("HQ is busy"), std::string::npos);
  EXPECT_EQ(node->read_log(0, 10)->size(), 1u);

  hq.fail_next = Status::Internal("HQ's disk is full");
  auto refused = node->create_customer(person());
  EXPECT_EQ(refused.status().code(), Code::internal);
  EXPECT_EQ(node->read_log(0, 10)->size(), 1u);  // nothing written for it
  EXPECT_TRUE(hq.customers.empty());
}

TEST_F(NodeTest, D4_TimeoutAfterHqCommittedKeepsTheGuidSoHqCanDeduplicate) {
  auto node = make();
  hq.commit_then_timeout = true;  // HQ stored it, the reply was lost
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->mode, CreationMode::async);
  ASSERT_EQ(hq.customers.size(), 1u);
  // The async create carries the GUID HQ already has: HQ treats it as applied.
  auto log = node->read_log(0, 10);
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 1u);
  EXPECT_EQ(hq.customers.begin()->first, (*log)[0].entity);
}

TEST_F(NodeTest, D4_DomainRefusalFromHqIsNotAFallback) {
  auto node = make();
  hq.fail_next = Status::InvalidInput("email", "email: rejected by HQ");
  auto out = node->create_customer(person());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::invalid_input);
  EXPECT_EQ(customer_count(*node), 0u);
  EXPECT_EQ(log_rows(*node), 0);
}

// ---- D5: filter_shared_customer_tables ------------------------------------------------

TEST_F(NodeTest, D5_OfflineCreationBlockedWritesNothing) {
  auto node = make({.filter_shared_customer_tables = true});
  auto out = node->create_customer(person(), {.offline = true});
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::offline_creation_blocked);
  EXPECT_EQ(customer_count(*node), 0u);
  EXPECT_EQ(log_rows(*node), 0);
}

TEST_F(NodeTest, D5_RtsFailureWithFilterIsBlockedToo) {
  auto node = make({.filter_shared_customer_tables = true});
  hq.fail_next = Status::HqUnreachable("connection refused");
  auto out = node->create_customer(person());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::offline_creation_blocked);
  EXPECT_EQ(customer_count(*node), 0u);
}

TEST_F(NodeTest, D5_NoHqConfiguredWithFilterIsBlocked) {
  auto node = make({.async_customer_creation = true, .filter_shared_customer_tables = true},
                   /*with_hq=*/false);
  auto out = node->create_customer(person());
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::offline_creation_blocked);
  EXPECT_EQ(log_rows(*node), 0);
}

TEST_F(NodeTest, D5_OnlineAsyncCreationStillWorks) {
  auto node = make({.async_customer_creation = true, .filter_shared_customer_tables = true});
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->mode, CreationMode::async);
  EXPECT_EQ(hq.calls, 0);
  EXPECT_EQ(log_rows(*node), 1);
}

// ---- D7: loyalty cards -----------------------------------------------------------------

TEST_F(NodeTest, D7_LoyaltyCardRefusedForPendingCustomerBeforeAnyHqCall) {
  auto node = make({.async_customer_creation = true});
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok());
  auto card = node->issue_loyalty_card(out->customer.guid.to_string());
  ASSERT_FALSE(card.ok());
  EXPECT_EQ(card.status().code(), Code::loyalty_requires_synced_customer);
  EXPECT_EQ(hq.calls, 0);
}

TEST_F(NodeTest, D7_LoyaltyCardForSyncedCustomerGoesThroughHq) {
  auto node = make();
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok());
  auto card = node->issue_loyalty_card(*out->customer.account_number);
  ASSERT_TRUE(card.ok()) << card.status().to_string();
  ASSERT_EQ(card->loyalty_cards.size(), 1u);
  auto again = node->find(*out->customer.account_number);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->loyalty_cards.size(), 1u);
}

TEST_F(NodeTest, D7_LoyaltyCardOfflineIsHqUnreachable) {
  auto node = make();
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok());
  const int calls = hq.calls;
  auto card = node->issue_loyalty_card(*out->customer.account_number, {.offline = true});
  ASSERT_FALSE(card.ok());
  EXPECT_EQ(card.status().code(), Code::hq_unreachable);
  EXPECT_EQ(hq.calls, calls);
}

// ---- D8: edits -------------------------------------------------------------------------

TEST_F(NodeTest, D8_PendingCustomerNotEditableWithoutAsyncEdits) {
  auto node = make({.async_customer_creation = true});
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok());
  auto edited = node->edit_customer(out->customer.guid.to_string(), {{Field::email, "a@b.co"}});
  ASSERT_FALSE(edited.ok());
  EXPECT_EQ(edited.status().code(), Code::pending_customer_not_editable);
  EXPECT_EQ(log_rows(*node), 1);
}

TEST_F(NodeTest, D8_SyncedCustomerEditGoesThroughRts) {
  auto node = make();
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok());
  auto edited = node->edit_customer(*out->customer.account_number, {{Field::email, "ada@example.com"}});
  ASSERT_TRUE(edited.ok()) << edited.status().to_string();
  EXPECT_EQ(edited->email, "ada@example.com");
  EXPECT_EQ(hq.customers.at(out->customer.guid).email, "ada@example.com");
  EXPECT_EQ(log_rows(*node), 2);  // the create and the edit, under their request ids
  auto offline = node->edit_customer(*out->customer.account_number, {{Field::phone, "555 1234"}},
                                     {.offline = true});
  ASSERT_FALSE(offline.ok());
  EXPECT_EQ(offline.status().code(), Code::hq_unreachable);
}

TEST_F(NodeTest, D8_AsyncEditsLogBothPendingAndSyncedCustomers) {
  auto node = make({.async_customer_edits = true});
  auto synced = node->create_customer(person("Grace", "Hopper"));
  auto pending = node->create_customer(person(), {.offline = true});
  ASSERT_TRUE(synced.ok());
  ASSERT_TRUE(pending.ok());
  const int calls = hq.calls;
  auto e1 = node->edit_customer(*synced->customer.account_number, {{Field::last_name, "Murray"}},
                                {.offline = true});
  auto e2 = node->edit_customer(pending->customer.guid.to_string(), {{Field::phone, "+1 555 0100"}});
  ASSERT_TRUE(e1.ok()) << e1.status().to_string();
  ASSERT_TRUE(e2.ok()) << e2.status().to_string();
  EXPECT_EQ(hq.calls, calls);  // no RTS
  EXPECT_EQ(e1->version, synced->customer.version);  // still the HQ version it saw
  auto log = node->read_log(0, 10);
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 4u);  // sync create (logged), pending create, two updates
  auto upd = decode_payload((*log)[2].kind, (*log)[2].payload);
  ASSERT_TRUE(upd.ok());
  const auto& u = std::get<CustomerUpdated>(*upd);
  EXPECT_EQ(u.customer, synced->customer.guid);
  EXPECT_EQ(u.base_version, synced->customer.version);
  ASSERT_EQ(u.changes.size(), 1u);
  EXPECT_EQ(u.changes[0].value, "Murray");
  EXPECT_EQ(node->find(pending->customer.guid.to_string())->phone, "+1 555 0100");
}

TEST_F(NodeTest, D8_InvalidEditWritesNothing) {
  auto node = make({.async_customer_edits = true});
  auto out = node->create_customer(person(), {.offline = true});
  ASSERT_TRUE(out.ok());
  auto edited = node->edit_customer(out->customer.guid.to_string(), {{Field::first_name, ""}});
  ASSERT_FALSE(edited.ok());
  EXPECT_EQ(edited.status().code(), Code::invalid_input);
  EXPECT_EQ(edited.status().field(), "first_name");
  EXPECT_EQ(log_rows(*node), 1);
  EXPECT_EQ(node->find(out->customer.guid.to_string())->first_name, "Ada");
}

// ---- D9: enhanced async customer ---------------------------------------------------------

TEST_F(NodeTest, D9_EnhancedFieldsRejectedForAsyncCustomerWhenFeatureOff) {
  auto node = make({.async_customer_creation = true});
  NewCustomer with_title = person();
  with_title.title = "Dr.";
  NewCustomer with_affiliation = person();
  with_affiliation.affiliations = {"Staff"};
  NewCustomer with_email = person();
  with_email.secondary_emails = {"second@example.com"};
  NewCustomer with_phone = person();
  with_phone.secondary_phones = {"555 0101"};
  for (const auto& [input, field] : std::vector<std::pair<NewCustomer, std::string>>{
           {with_title, "title"},
           {with_affiliation, "affiliations"},
           {with_email, "secondary_email"},
           {with_phone, "secondary_phone"}}) {
    auto out = node->create_customer(input);
    ASSERT_FALSE(out.ok()) << field;
    EXPECT_EQ(out.status().code(), Code::feature_disabled) << field;
    EXPECT_EQ(out.status().field(), field);
  }
  EXPECT_EQ(customer_count(*node), 0u);
  EXPECT_EQ(log_rows(*node), 0);
}

TEST_F(NodeTest, D9_EnhancedFieldsCapturedWhenFeatureOn) {
  auto node = make({.async_customer_creation = true, .enhanced_async_customer = true});
  NewCustomer in = person();
  in.title = "Dr.";
  in.affiliations = {"Staff"};
  in.secondary_emails = {"second@example.com"};
  in.secondary_phones = {"555 0101"};
  auto out = node->create_customer(in);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  auto c = node->find(out->customer.guid.to_string());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->title, "Dr.");
  EXPECT_EQ(c->affiliations, std::vector<std::string>{"Staff"});
  ASSERT_EQ(c->contacts.size(), 2u);
  EXPECT_EQ(c->contacts[0].kind, ContactKind::email);
  EXPECT_EQ(c->contacts[1].value, "555 0101");
}

TEST_F(NodeTest, D9_EnhancedFieldsAllowedInSyncMode) {
  auto node = make();
  NewCustomer in = person();
  in.title = "Dr.";
  in.affiliations = {"Staff"};
  auto out = node->create_customer(in);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->mode, CreationMode::sync);
  EXPECT_EQ(out->customer.title, "Dr.");
}

// ---- D10: async addresses ---------------------------------------------------------------

TEST_F(NodeTest, D10_AddressesOfPendingCustomerOnlyAtCreationWhenFeatureOff) {
  auto node = make({.async_customer_creation = true});
  NewCustomer in = person();
  in.addresses.push_back({{}, "", "1 Main St", "Springfield", "IL", "62701", "US"});
  auto out = node->create_customer(in);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  ASSERT_EQ(out->customer.addresses.size(), 1u);
  auto added = node->add_address(out->customer.guid.to_string(),
                                 {{}, "", "2 Side St", "Springfield", "", "", "US"});
  ASSERT_FALSE(added.ok());
  EXPECT_EQ(added.status().code(), Code::feature_disabled);
  EXPECT_EQ(log_rows(*node), 1);
}

TEST_F(NodeTest, D10_AddressOfSyncedCustomerGoesThroughRtsWhenFeatureOff) {
  auto node = make();
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok());
  auto added = node->add_address(*out->customer.account_number,
                                 {{}, "", "2 Side St", "Springfield", "", "", "US"});
  ASSERT_TRUE(added.ok()) << added.status().to_string();
  EXPECT_EQ(hq.customers.at(out->customer.guid).addresses.size(), 1u);
  EXPECT_EQ(log_rows(*node), 2);  // the create and the address, under their request ids
  auto offline = node->add_address(*out->customer.account_number,
                                   {{}, "", "3 Side St", "Springfield", "", "", "US"},
                                   {.offline = true});
  ASSERT_FALSE(offline.ok());
  EXPECT_EQ(offline.status().code(), Code::hq_unreachable);
}

TEST_F(NodeTest, D10_AsyncAddressesLoggedForPendingAndSyncedCustomers) {
  auto node = make({.async_customer_addresses = true});
  auto synced = node->create_customer(person("Grace", "Hopper"));
  auto pending = node->create_customer(person(), {.offline = true});
  ASSERT_TRUE(synced.ok());
  ASSERT_TRUE(pending.ok());
  const int calls = hq.calls;
  for (const Customer* c : {&synced->customer, &pending->customer}) {
    auto added = node->add_address(c->guid.to_string(), {{}, "", "9 Elm", "Dover", "", "", "GB"},
                                   {.offline = true});
    ASSERT_TRUE(added.ok()) << added.status().to_string();
    ASSERT_EQ(added->addresses.size(), 1u);
    EXPECT_EQ(added->addresses[0].purpose, "home");
  }
  EXPECT_EQ(hq.calls, calls);
  auto log = node->read_log(0, 10);
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 4u);  // sync create (logged), pending create, two addresses
  EXPECT_EQ((*log)[2].kind, OpKind::address_add);
  EXPECT_EQ((*log)[3].kind, OpKind::address_add);
}

// ---- D11: default customer -------------------------------------------------------------

TEST_F(NodeTest, D11_NewCustomerCopiesTheStoreDefaultCustomer) {
  DefaultCustomer d;
  d.customer_group = "LOYAL";
  d.receipt_option = "email";
  d.receipt_email = "receipts@store.example";
  d.currency = "EUR";
  d.language = "de-de";
  d.affiliations = {"Walk-in"};
  auto node = make({.async_customer_creation = true, .enhanced_async_customer = true}, true, d);
  NewCustomer in = person();
  in.addresses.push_back({{}, "", "1 Main St", "Berlin", "", "10115", "DE"});
  auto out = node->create_customer(in);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  const Customer& c = out->customer;
  EXPECT_EQ(c.type, CustomerType::person);
  EXPECT_EQ(c.customer_group, "LOYAL");
  EXPECT_EQ(c.receipt_option, "email");
  EXPECT_EQ(c.receipt_email, "receipts@store.example");
  EXPECT_EQ(c.currency, "EUR");
  EXPECT_EQ(c.language, "de-de");
  EXPECT_EQ(c.affiliations, std::vector<std::string>{"Walk-in"});
  EXPECT_EQ(c.addresses.at(0).purpose, "home");

  NewCustomer given = person("Alan", "Turing");
  given.receipt_email = "alan@example.com";
  given.currency = "GBP";
  auto out2 = node->create_customer(given);
  ASSERT_TRUE(out2.ok());
  EXPECT_EQ(out2->customer.receipt_email, "alan@example.com");  // only when none was given
  EXPECT_EQ(out2->customer.currency, "GBP");
}

TEST_F(NodeTest, D11_OrganizationAddressDefaultsToBusiness) {
  auto node = make({.async_customer_creation = true});
  NewCustomer in;
  in.org_name = "Contoso Ltd";
  in.addresses.push_back({{}, "", "1 Harbour Rd", "Seattle", "WA", "98101", "US"});
  auto out = node->create_customer(in);
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->customer.type, CustomerType::organization);
  EXPECT_EQ(out->customer.addresses.at(0).purpose, "business");
}

TEST_F(NodeTest, D11_TemplateAffiliationsNeedEnhancedFeatureForAsyncCustomers) {
  DefaultCustomer d;
  d.affiliations = {"Walk-in"};
  auto node = make({.async_customer_creation = true}, true, d);
  auto out = node->create_customer(person());
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_TRUE(out->customer.affiliations.empty());
}

// ---- D13: bad input never corrupts state ------------------------------------------------

TEST_F(NodeTest, D13_ValidationErrorNamesFieldAndWritesNothing) {
  auto node = make({.async_customer_creation = true});
  NewCustomer bad = person();
  bad.email = "not-an-email";
  auto out = node->create_customer(bad);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), Code::invalid_input);
  EXPECT_EQ(out.status().field(), "email");
  EXPECT_NE(out.status().message().find("email"), std::string::npos);

  NewCustomer control = person("Ada\x07", "Lovelace");
  auto out2 = node->create_customer(control);
  ASSERT_FALSE(out2.ok());
  EXPECT_EQ(out2.status().field(), "first_name");

  NewCustomer missing;
  auto out3 = node->create_customer(missing);
  ASSERT_FALSE(out3.ok());
  EXPECT_EQ(out3.status().code(), Code::invalid_input);

  NewCustomer bad_address = person();
  bad_address.addresses.push_back({{}, "", "1 Main", "Town", "", "", "USAX"});
  auto out4 = node->create_customer(bad_address);
  ASSERT_FALSE(out4.ok());
  EXPECT_EQ(out4.status().field(), "addresses[0].country");

  EXPECT_EQ(customer_count(*node), 0u);
  EXPECT_EQ(log_rows(*node), 0);
  EXPECT_EQ(hq.calls, 0);
}

// ---- Node lifecycle, search, status, clock ---------------------------------------------------

TEST_F(NodeTest, SearchMatchesNamesEmailPhoneAccountAndGuidCaseInsensitively) {
  auto node = make();
  NewCustomer a = person("Ada", "Lovelace");
  a.email = "ada@example.com";
  a.phone = "+44 20 7946 0000";
  auto ada = node->create_customer(a);
  auto grace = node->create_customer(person("Grace", "Hopper"), {.offline = true});
  ASSERT_TRUE(ada.ok());
  ASSERT_TRUE(grace.ok());
  auto names = [&](std::string_view text) {
    std::vector<std::string> out;
    for (const auto& c : node->search(text).value()) out.push_back(c.first_name);
    return out;
  };
  EXPECT_EQ(names("LOVE"), std::vector<std::string>{"Ada"});
  EXPECT_EQ(names("EXAMPLE.com"), std::vector<std::string>{"Ada"});
  EXPECT_EQ(names("7946"), std::vector<std::string>{"Ada"});
  EXPECT_EQ(names(ada->customer.account_number->substr(3)), std::vector<std::string>{"Ada"});
  EXPECT_EQ(names(grace->customer.guid.to_string().substr(24)), std::vector<std::string>{"Grace"});
  EXPECT_EQ(names("%"), std::vector<std::string>{});  // LIKE metacharacters are literal
  EXPECT_EQ(names("").size(), 2u);
}

TEST_F(NodeTest, FindUnknownIdIsNotFound) {
  auto node = make();
  auto c = node->find("C999999999");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::not_found);
  auto g = node->find("00000000-0000-4000-8000-000000000000");
  EXPECT_EQ(g.status().code(), Code::not_found);
}

TEST_F(NodeTest, StatusCountsPendingOperations) {
  auto node = make({.async_customer_creation = true});
  ASSERT_TRUE(node->create_customer(person()).ok());
  ASSERT_TRUE(node->create_customer(person("Grace", "Hopper")).ok());
  auto s = node->status();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->node_id, "S001/T01");
  EXPECT_EQ(s->pending_ops, 2);
  EXPECT_EQ(s->last_seq, 2);
  EXPECT_EQ(s->acked_seq, 0);
  EXPECT_FALSE(s->last_sync_at_ms.has_value());
}

TEST_F(NodeTest, LogSeqIsDenseAndHlcIncreasesAcrossRestartEvenWhenClockJumpsBack) {
  {
    auto node = make({.async_customer_creation = true});
    ASSERT_TRUE(node->create_customer(person()).ok());
    ASSERT_TRUE(node->create_customer(person()).ok());
  }
  clock.advance(-3'600'000);  // wall clock jumps back an hour
  ChannelNodeOptions o;
  o.clock = &clock;
  auto node = ChannelNode::open(path(), o);
  ASSERT_TRUE(node.ok());
  ASSERT_TRUE((*node)->create_customer(person()).ok());
  auto log = (*node)->read_log(0, 10);
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 3u);
  for (std::size_t i = 0; i < log->size(); ++i) {
    EXPECT_EQ((*log)[i].seq, static_cast<std::int64_t>(i + 1));
    if (i > 0) {
      EXPECT_GT((*log)[i].hlc, (*log)[i - 1].hlc);
    }
  }
}

TEST_F(NodeTest, CreateRefusesToOverwriteAnExistingTerminal) {
  { auto node = make(); }
  auto again = ChannelNode::create(path(), config());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), Code::invalid_input);
}

TEST_F(NodeTest, CreateValidatesIdsAndDefaults) {
  NodeConfig c = config();
  c.store_id = "S/1";
  EXPECT_EQ(ChannelNode::create(path(), c).status().field(), "store");
  c = config();
  c.default_customer.receipt_email = "nope";
  EXPECT_EQ(ChannelNode::create(dir.file("b.db"), c).status().field(), "receipt_email");
}

TEST_F(NodeTest, OpenMissingFileIsNotFoundAndDatabaseIsPrivate) {
  auto missing = ChannelNode::open(dir.file("missing.db"));
  EXPECT_EQ(missing.status().code(), Code::not_found);
  auto node = make();
  struct stat st {};
  ASSERT_EQ(::stat(path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(NodeTest, DigestEqualForSameContentAndChangesWithContent) {
  auto node = make({.async_customer_creation = true});
  auto d0 = node->digest();
  ASSERT_TRUE(d0.ok());
  EXPECT_EQ(d0->customers, 0u);
  ASSERT_TRUE(node->create_customer(person()).ok());
  auto d1 = node->digest();
  auto d2 = node->digest();
  ASSERT_TRUE(d1.ok());
  EXPECT_EQ(d1->hex, d2->hex);
  EXPECT_NE(d1->hex, d0->hex);
  EXPECT_EQ(d1->customers, 1u);
  EXPECT_EQ(d1->hex.size(), 40u);
}

// The digest streams customers in pages of 1000: across page boundaries it must see
// each customer exactly once, in GUID order, exactly like a digest of the whole list.
TEST_F(NodeTest, DigestOverSeveralPagesEqualsDigestOfTheWholeTable) {
  auto node = make({.async_customer_creation = true});
  for (int i = 0; i < 2345; ++i) {
    ASSERT_TRUE(node->create_customer(person("P" + std::to_string(i), "Paged")).ok());
  }
  auto all = node->search("");
  ASSERT_TRUE(all.ok());
  std::sort(all->begin(), all->end(), [](const Customer& a, const Customer& b) { return a.guid < b.guid; });
  DigestBuilder whole;
  for (const Customer& c : *all) whole.add(c);
  const ContentDigest expected = whole.finish();
  auto streamed = node->digest();
  ASSERT_TRUE(streamed.ok()) << streamed.status().to_string();
  EXPECT_EQ(streamed->customers, 2345u);
  EXPECT_EQ(*streamed, expected);
}

}  // namespace
}  // namespace tillsync
