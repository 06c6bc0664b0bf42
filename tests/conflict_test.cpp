// Concurrent edits over real sockets: detection, the three policies, the journal, and
// convergence of HQ and terminals. Clocks are manual so "newer" is decided by the test.
#include <gtest/gtest.h>

#include <thread>

#include "support/cluster.h"

namespace tillsync {
namespace {

using testing::HqProcess;
using testing::new_person;
using testing::TempDir;
using testing::Terminal;
using testing::terminal_config;

class ConflictTest : public ::testing::Test {
 protected:
  void start(ConflictPolicy policy, DuplicatePolicy duplicates = DuplicatePolicy::flag) {
    HqServiceOptions o;
    o.job_interval_ms = 3'600'000;  // the tests run the job themselves
    hq = std::make_unique<HqProcess>(hq_location.str(), o);
    hq->hq_options().clock = &hq_clock;
    hq->hq_options().conflict_policy = policy;
    hq->hq_options().duplicate_policy = duplicates;
    hq->start();
    a = std::make_unique<Terminal>(dir.file("a.db"), terminal_config("S001", "T01", hq->endpoint(), testing::kAsyncEverything), 1, &clock_a);
    b = std::make_unique<Terminal>(dir.file("b.db"), terminal_config("S002", "T01", hq->endpoint(), testing::kAsyncEverything), 2, &clock_b);
  }

  // Creates a customer on A and makes it known (converted) everywhere.
  Guid shared_customer() {
    auto out = a->node().create_customer(new_person("Shared", "Customer"));
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    sync_all();
    return out->customer.guid;
  }

  void sync_all() {
    for (int round = 0; round < 2; ++round) {
      ASSERT_TRUE(a->sync().ok());
      ASSERT_TRUE(b->sync().ok());
      ASSERT_TRUE(hq->inspect()->run_sync_job().ok());
    }
    ASSERT_TRUE(a->sync().ok());
    ASSERT_TRUE(b->sync().ok());
  }

  void expect_converged() {
    auto d = hq->inspect()->digest().value();
    EXPECT_EQ(a->node().digest()->hex, d.hex);
    EXPECT_EQ(b->node().digest()->hex, d.hex);
  }

  Customer at_hq(const Guid& g) {
    auto all = hq->inspect()->customers(g.to_string()).value();
    EXPECT_EQ(all.size(), 1u);
    return all.empty() ? Customer{} : all[0];
  }
  std::vector<ConflictRecord> journal() { return hq->inspect()->conflicts().value(); }

  TempDir dir;
  testing::HqLocation hq_location{dir};  // outlives hq
  ManualClock hq_clock{1'700'000'000'000};
  ManualClock clock_a{1'700'000'100'000};
  ManualClock clock_b{1'700'000'200'000};  // B's writes are newer than A's
  std::unique_ptr<HqProcess> hq;
  std::unique_ptr<Terminal> a, b;
};

TEST_F(ConflictTest, ConcurrentWritesToSameFieldAreJournaledAndNewestWinsUnderLww) {
  start(ConflictPolicy::lww);
  const Guid g = shared_customer();
  const std::string id = g.to_string();
  // Both terminals are offline and edit the same field.
  ASSERT_TRUE(a->node().edit_customer(id, {{Field::email, "a@example.com"}}).ok());
  ASSERT_TRUE(b->node().edit_customer(id, {{Field::email, "b@example.com"}}).ok());
  sync_all();
  EXPECT_EQ(at_hq(g).email, "b@example.com");  // B's HLC is newer
  auto j = journal();
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0].customer, g);
  EXPECT_EQ(j[0].field, "email");
  EXPECT_EQ(j[0].kept, "b@example.com");
  EXPECT_EQ(j[0].lost, "a@example.com");
  EXPECT_EQ(j[0].kept_write.node, "S002/T01");
  EXPECT_EQ(j[0].lost_write.node, "S001/T01");
  EXPECT_GT(j[0].kept_write.hlc, j[0].lost_write.hlc);
  EXPECT_EQ(j[0].policy, ConflictPolicy::lww);
  EXPECT_EQ(j[0].status, "resolved");
  expect_converged();
  EXPECT_EQ(a->node().find(id)->email, "b@example.com");
}

TEST_F(ConflictTest, LwwOutcomeDoesNotDependOnArrivalOrder) {
  start(ConflictPolicy::lww);
  const Guid g = shared_customer();
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::phone, "111"}}).ok());
  ASSERT_TRUE(b->node().edit_customer(g.to_string(), {{Field::phone, "222"}}).ok());
  // B's (newer) edit reaches HQ first this time.
  ASSERT_TRUE(b->sync().ok());
  ASSERT_TRUE(hq->inspect()->run_sync_job().ok());
  sync_all();
  EXPECT_EQ(at_hq(g).phone, "222");
  ASSERT_EQ(journal().size(), 1u);
  EXPECT_EQ(journal()[0].kept, "222");
  expect_converged();
}

TEST_F(ConflictTest, NonOverlappingFieldEditsMergeWithoutConflict) {
  start(ConflictPolicy::lww);
  const Guid g = shared_customer();
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::email, "a@example.com"}}).ok());
  ASSERT_TRUE(b->node().edit_customer(g.to_string(), {{Field::phone, "555 0100"}}).ok());
  sync_all();
  Customer c = at_hq(g);
  EXPECT_EQ(c.email, "a@example.com");
  EXPECT_EQ(c.phone, "555 0100");
  EXPECT_TRUE(journal().empty());
  expect_converged();
}

TEST_F(ConflictTest, SequentialEditsThatSawEachOtherAreNotConflicts) {
  start(ConflictPolicy::lww);
  const Guid g = shared_customer();
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::email, "first@example.com"}}).ok());
  sync_all();  // B sees A's edit
  ASSERT_TRUE(b->node().edit_customer(g.to_string(), {{Field::email, "second@example.com"}}).ok());
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::phone, "1"}}).ok());
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::phone, "2"}}).ok());  // same node, in order
  sync_all();
  EXPECT_EQ(at_hq(g).email, "second@example.com");
  EXPECT_EQ(at_hq(g).phone, "2");
  EXPECT_TRUE(journal().empty());
  expect_converged();
}

TEST_F(ConflictTest, TerminalEditConcurrentWithBackOfficeEditUnderHqWins) {
  start(ConflictPolicy::hq_wins);
  const Guid g = shared_customer();
  // A (offline) edits the e-mail; meanwhile HQ's back office edits it too. A's clock is
  // far ahead, so under lww A would win; under hq-wins the back office does.
  clock_a.advance(10'000'000);
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::email, "till@example.com"}}).ok());
  auto office = hq->inspect()->edit_customer(g.to_string(), {{Field::email, "office@example.com"}});
  ASSERT_TRUE(office.ok()) << office.status().to_string();
  sync_all();
  EXPECT_EQ(at_hq(g).email, "office@example.com");
  auto j = journal();
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0].kept_write.node, "HQ");
  EXPECT_EQ(j[0].lost, "till@example.com");
  EXPECT_EQ(j[0].policy, ConflictPolicy::hq_wins);
  expect_converged();
}

TEST_F(ConflictTest, TerminalEditConcurrentWithBackOfficeEditUnderLwwTakesNewest) {
  start(ConflictPolicy::lww);
  const Guid g = shared_customer();
  clock_a.advance(10'000'000);
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::email, "till@example.com"}}).ok());
  ASSERT_TRUE(hq->inspect()->edit_customer(g.to_string(), {{Field::email, "office@example.com"}}).ok());
  sync_all();
  EXPECT_EQ(at_hq(g).email, "till@example.com");
  ASSERT_EQ(journal().size(), 1u);
  EXPECT_EQ(journal()[0].lost, "office@example.com");
  expect_converged();
}

TEST_F(ConflictTest, ManualPolicyHoldsTheOperationUntilAnOperatorResolves) {
  start(ConflictPolicy::manual);
  const Guid g = shared_customer();
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::email, "a@example.com"}}).ok());
  ASSERT_TRUE(b->node().edit_customer(g.to_string(), {{Field::email, "b@example.com"},
                                                      {Field::phone, "555"}}).ok());
  ASSERT_TRUE(a->sync().ok());
  ASSERT_TRUE(hq->inspect()->run_sync_job().ok());
  sync_all();
  // A's write arrived first and stands; B's e-mail is held, B's phone applied.
  EXPECT_EQ(at_hq(g).email, "a@example.com");
  EXPECT_EQ(at_hq(g).phone, "555");
  auto j = journal();
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0].status, "open");
  EXPECT_EQ(j[0].lost, "b@example.com");
  auto held = hq->inspect()->sync_status(SyncStatus::conflict).value();
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].guid, g);

  auto resolved = hq->inspect()->resolve_conflict(j[0].id, /*keep_lost=*/true);
  ASSERT_TRUE(resolved.ok()) << resolved.status().to_string();
  EXPECT_EQ(resolved->kept, "b@example.com");
  EXPECT_EQ(resolved->status, "resolved");
  EXPECT_EQ(at_hq(g).email, "b@example.com");
  EXPECT_TRUE(hq->inspect()->sync_status(SyncStatus::conflict)->empty());
  sync_all();
  EXPECT_EQ(a->node().find(g.to_string())->email, "b@example.com");  // reached every terminal
  expect_converged();
  auto again = hq->inspect()->resolve_conflict(j[0].id, true);
  EXPECT_EQ(again.status().code(), Code::conflict);
  EXPECT_EQ(hq->inspect()->resolve_conflict(999, true).status().code(), Code::not_found);
}

TEST_F(ConflictTest, ManualResolveKeepingCurrentValue) {
  start(ConflictPolicy::manual);
  const Guid g = shared_customer();
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::last_name, "Alpha"}}).ok());
  ASSERT_TRUE(b->node().edit_customer(g.to_string(), {{Field::last_name, "Beta"}}).ok());
  sync_all();
  auto j = journal();
  ASSERT_EQ(j.size(), 1u);
  const std::string current = at_hq(g).last_name;
  ASSERT_TRUE(hq->inspect()->resolve_conflict(j[0].id, /*keep_lost=*/false).ok());
  EXPECT_EQ(at_hq(g).last_name, current);
  sync_all();
  expect_converged();
}

// Issue 15, item 7: keeping the held value replaces whatever the field holds now; a
// write made after the conflict is never replaced without its own journal entry.
TEST_F(ConflictTest, KeepingTheHeldValueJournalsTheNewerWriteItReplaces) {
  start(ConflictPolicy::manual);
  const Guid g = shared_customer();
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::email, "a@example.com"}}).ok());
  ASSERT_TRUE(b->node().edit_customer(g.to_string(), {{Field::email, "b@example.com"}}).ok());
  ASSERT_TRUE(a->sync().ok());
  ASSERT_TRUE(hq->inspect()->run_sync_job().ok());
  sync_all();
  auto j = journal();
  ASSERT_EQ(j.size(), 1u);
  ASSERT_EQ(j[0].lost, "b@example.com");
  hq_clock.advance(1000);
  ASSERT_TRUE(hq->inspect()->edit_customer(g.to_string(), {{Field::email, "office@example.com"}}).ok());

  auto resolved = hq->inspect()->resolve_conflict(j[0].id, /*keep_lost=*/true);
  ASSERT_TRUE(resolved.ok()) << resolved.status().to_string();
  EXPECT_EQ(at_hq(g).email, "b@example.com");
  j = journal();
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[1].field, "email");
  EXPECT_EQ(j[1].kept, "b@example.com");
  EXPECT_EQ(j[1].lost, "office@example.com");
  EXPECT_EQ(j[1].lost_write.node, "HQ");
  EXPECT_NE(j[1].outcome.find("replaced a newer write"), std::string::npos) << j[1].outcome;
  sync_all();
  expect_converged();
}

// Issue 15, item 7: of two operators resolving one conflict at the same moment, one
// succeeds and the other is told it is already resolved.
TEST_F(ConflictTest, TwoConcurrentResolvesOfOneConflictExactlyOneSucceeds) {
  start(ConflictPolicy::manual);
  const Guid g = shared_customer();
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::email, "a@example.com"}}).ok());
  ASSERT_TRUE(b->node().edit_customer(g.to_string(), {{Field::email, "b@example.com"}}).ok());
  sync_all();
  auto j = journal();
  ASSERT_EQ(j.size(), 1u);
  auto first = hq->inspect();
  auto second = hq->inspect();
  Result<ConflictRecord> r1 = Status::Internal("not run"), r2 = Status::Internal("not run");
  std::thread t1([&] { r1 = first->resolve_conflict(j[0].id, true); });
  std::thread t2([&] { r2 = second->resolve_conflict(j[0].id, false); });
  t1.join();
  t2.join();
  EXPECT_NE(r1.ok(), r2.ok()) << r1.status().to_string() << " / " << r2.status().to_string();
  const Status& refused = r1.ok() ? r2.status() : r1.status();
  EXPECT_EQ(refused.code(), Code::conflict) << refused.to_string();
  EXPECT_EQ(journal().size(), 1u);
  EXPECT_EQ(journal()[0].status, "resolved");
}

// Issue 15, item 4: a terminal whose edit HQ does not take (it loses under lww, or is
// held under manual) converges without waiting for another change of the customer,
// also when the edit was made between its push and its pull (`store sync --watch`).
class LosingEditTest : public ConflictTest, public ::testing::WithParamInterface<ConflictPolicy> {};

TEST_P(LosingEditTest, TheLosersCopyConvergesWithoutAnotherChange) {
  start(GetParam());
  const Guid g = shared_customer();
  ASSERT_TRUE(b->node().edit_customer(g.to_string(), {{Field::email, "b@example.com"}}).ok());
  ASSERT_TRUE(b->sync().ok());
  ASSERT_TRUE(hq->inspect()->run_sync_job().ok());  // B's edit is HQ's version 2
  // A's sync round: its push (nothing), then the cashier edits (A still has version
  // 1), then its pull (version 2, with the unacknowledged edit on top).
  ASSERT_TRUE(a->replicator().push_all().ok());
  ASSERT_TRUE(a->node().edit_customer(g.to_string(), {{Field::email, "a@example.com"}}).ok());
  ASSERT_TRUE(a->replicator().pull_all().ok());
  EXPECT_EQ(a->node().find(g.to_string())->email, "a@example.com");
  ASSERT_TRUE(a->sync().ok());
  ASSERT_TRUE(hq->inspect()->run_sync_job().ok());  // A's older edit loses, or is held
  EXPECT_EQ(at_hq(g).email, "b@example.com");
  ASSERT_TRUE(a->sync().ok());
  EXPECT_EQ(a->node().find(g.to_string())->email, "b@example.com");
  expect_converged();
}

INSTANTIATE_TEST_SUITE_P(Policies, LosingEditTest,
                         ::testing::Values(ConflictPolicy::lww, ConflictPolicy::manual),
                         [](const auto& p) { return std::string(p.param == ConflictPolicy::lww ? "lww" : "manual"); });

TEST_F(ConflictTest, EditOfPendingCustomerBeforeConversionReachesConvertedCustomer) {
  start(ConflictPolicy::lww);
  auto out = a->node().create_customer(new_person("Pending", "Edit"));
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE(a->node().edit_customer(out->customer.guid.to_string(), {{Field::middle_name, "Q"}}).ok());
  ASSERT_FALSE(a->node().edit_customer(out->customer.guid.to_string(), {{Field::email, "bad"}}).ok());
  sync_all();
  EXPECT_EQ(at_hq(out->customer.guid).middle_name, "Q");
  EXPECT_TRUE(journal().empty());
  expect_converged();
}

NewCustomer with_email(const std::string& first, const std::string& email) {
  NewCustomer n = new_person(first, "Twin");
  n.email = email;
  return n;
}

TEST_F(ConflictTest, DuplicateFlagCreatesBothAndListsTheTwin) {
  start(ConflictPolicy::lww, DuplicatePolicy::flag);
  auto first = a->node().create_customer(with_email("Ada", "ada@example.com"));
  ASSERT_TRUE(first.ok());
  sync_all();
  auto second = b->node().create_customer(with_email("Adah", "ADA@Example.com"));
  ASSERT_TRUE(second.ok()) << second.status().to_string();
  sync_all();
  EXPECT_EQ(hq->inspect()->customers("").value().size(), 2u);
  auto dup = hq->inspect()->sync_status(SyncStatus::duplicate).value();
  ASSERT_EQ(dup.size(), 1u);
  EXPECT_EQ(dup[0].guid, second->customer.guid);
  ASSERT_TRUE(dup[0].twin.has_value());
  EXPECT_EQ(*dup[0].twin, first->customer.guid);
  EXPECT_TRUE(dup[0].account_number.has_value());
  EXPECT_TRUE(b->node().find(second->customer.guid.to_string())->synced());
  expect_converged();
}

TEST_F(ConflictTest, DuplicateMergeLinksTheGuidToTheExistingAccount) {
  start(ConflictPolicy::lww, DuplicatePolicy::merge);
  auto first = a->node().create_customer(with_email("Grace", "grace@example.com"));
  ASSERT_TRUE(first.ok());
  sync_all();
  const std::string account = *a->node().find(first->customer.guid.to_string())->account_number;
  NewCustomer twin = new_person("Grace", "Hopper");
  twin.phone = "555 0100";
  twin.email = "Grace@Example.com";
  auto second = b->node().create_customer(twin);
  ASSERT_TRUE(second.ok());
  const std::string alias = second->customer.guid.to_string();
  // An edit made on the merged GUID before the terminal heard of the merge.
  ASSERT_TRUE(b->node().edit_customer(alias, {{Field::middle_name, "Brewster"}}).ok());
  sync_all();
  auto all = hq->inspect()->customers("").value();
  ASSERT_EQ(all.size(), 1u);  // linked, not created
  EXPECT_EQ(all[0].middle_name, "Brewster");  // the alias's operation reached it
  auto dup = hq->inspect()->sync_status(SyncStatus::duplicate).value();
  ASSERT_EQ(dup.size(), 1u);
  EXPECT_EQ(dup[0].account_number, account);
  // The terminal shows the existing account number for the GUID it created.
  auto shown = b->node().find(alias);
  ASSERT_TRUE(shown.ok()) << shown.status().to_string();
  EXPECT_EQ(shown->account_id(), account);
  // Later operations on either GUID reach the same customer.
  ASSERT_TRUE(b->node().edit_customer(alias, {{Field::phone, "555 0199"}}).ok());
  ASSERT_TRUE(a->node().edit_customer(first->customer.guid.to_string(), {{Field::last_name, "Murray"}}).ok());
  sync_all();
  Customer c = hq->inspect()->customers("").value().at(0);
  EXPECT_EQ(c.phone, "555 0199");
  EXPECT_EQ(c.last_name, "Murray");
  expect_converged();
}

// D5 and duplicates: a filtered till's customer merged into another store's customer
// reaches that till as a GUID -> account number mapping, never as the other store's data.
TEST_F(ConflictTest, MergeIntoAnotherStoresCustomerReachesAFilteredTillAsAMappingOnly) {
  start(ConflictPolicy::lww, DuplicatePolicy::merge);
  auto theirs = a->node().create_customer(with_email("Grace", "grace@example.com"));  // store S001
  ASSERT_TRUE(theirs.ok());
  sync_all();
  const std::string account = *a->node().find(theirs->customer.guid.to_string())->account_number;
  Terminal filtered(dir.file("f.db"),
                    terminal_config("S003", "T01", hq->endpoint(),
                                    {.async_customer_creation = true, .filter_shared_customer_tables = true}),
                    3, &clock_b);
  ASSERT_TRUE(filtered.sync().ok());  // registers S003/T01 filtered
  auto mine = filtered.node().create_customer(with_email("Gracie", "GRACE@example.com"));
  ASSERT_TRUE(mine.ok());
  const std::string alias = mine->customer.guid.to_string();
  ASSERT_TRUE(filtered.sync().ok());
  sync_all();  // the job merges S003's customer into S001's
  auto pulled = filtered.sync();
  ASSERT_TRUE(pulled.ok()) << pulled.status().to_string();
  ASSERT_EQ(hq->inspect()->customers("").value().size(), 1u);
  // The filtered till holds no customer of another store: not the one it made (merged
  // away), not the one it was merged into.
  EXPECT_TRUE(filtered.node().search("").value().empty());
  EXPECT_TRUE(filtered.node().search("grace").value().empty());
  auto shown = filtered.node().find(alias);
  ASSERT_EQ(shown.status().code(), Code::not_found);
  EXPECT_NE(shown.status().message().find(account), std::string::npos) << shown.status().message();
  // An unfiltered till of another store gets the customer whole, as before.
  EXPECT_EQ(b->node().find(alias)->account_id(), account);
  EXPECT_EQ(b->node().find(alias)->first_name, "Grace");
}

class RemovalTest : public ConflictTest {
 protected:
  std::pair<Guid, Guid> customer_with_address() {
    NewCustomer in = new_person("Has", "Address");
    in.addresses.push_back({{}, "", "1 Main St", "Springfield", "", "", "US"});
    auto out = a->node().create_customer(in);
    EXPECT_TRUE(out.ok()) << out.status().to_string();
    sync_all();
    return {out->customer.guid, out->customer.addresses.at(0).guid};
  }
  std::optional<FieldWrite> tombstone(const Guid& c, const Guid& child) {
    auto h = hq->inspect();
    auto tx = h->store().begin().value();
    return tx->tombstone(c, child).value();
  }
};

TEST_F(RemovalTest, RemovalConcurrentWithEditWinsAndIsJournaled) {
  start(ConflictPolicy::lww);
  auto [g, addr] = customer_with_address();
  ASSERT_TRUE(a->node().remove_address(g.to_string(), addr).ok());
  clock_b.advance(10'000'000);  // the edit is even newer: removal still wins
  ASSERT_TRUE(b->node().update_address(g.to_string(), addr, {{AddressField::city, "Shelbyville"}}).ok());
  sync_all();
  EXPECT_TRUE(at_hq(g).addresses.empty());
  auto j = journal();
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0].field, "child:" + addr.to_string());
  EXPECT_EQ(j[0].kept, "(removed)");
  EXPECT_EQ(j[0].outcome, "removal wins");
  EXPECT_EQ(j[0].kept_write.node, "S001/T01");
  expect_converged();
  EXPECT_TRUE(b->node().find(g.to_string())->addresses.empty());
}

TEST_F(RemovalTest, EditAppliedBeforeAConcurrentRemovalStillLoses) {
  start(ConflictPolicy::lww);
  auto [g, addr] = customer_with_address();
  ASSERT_TRUE(b->node().update_address(g.to_string(), addr, {{AddressField::zip, "99999"}}).ok());
  ASSERT_TRUE(a->node().remove_address(g.to_string(), addr).ok());
  ASSERT_TRUE(b->sync().ok());  // the edit reaches HQ first
  ASSERT_TRUE(hq->inspect()->run_sync_job().ok());
  sync_all();
  EXPECT_TRUE(at_hq(g).addresses.empty());
  ASSERT_EQ(journal().size(), 1u);
  EXPECT_EQ(journal()[0].kept, "(removed)");
  expect_converged();
}

TEST_F(RemovalTest, ConcurrentAddressFieldEditsUseLastWriterWins) {
  start(ConflictPolicy::lww);
  auto [g, addr] = customer_with_address();
  ASSERT_TRUE(a->node().update_address(g.to_string(), addr, {{AddressField::street, "2 Main St"}}).ok());
  ASSERT_TRUE(b->node().update_address(g.to_string(), addr, {{AddressField::street, "3 Main St"},
                                                             {AddressField::zip, "12345"}}).ok());
  sync_all();
  Customer c = at_hq(g);
  ASSERT_EQ(c.addresses.size(), 1u);
  EXPECT_EQ(c.addresses[0].street, "3 Main St");  // B is newer
  EXPECT_EQ(c.addresses[0].zip, "12345");
  ASSERT_EQ(journal().size(), 1u);
  EXPECT_EQ(journal()[0].field, "address:" + addr.to_string() + ":street");
  expect_converged();
}

TEST_F(RemovalTest, TombstoneKeptUntilEveryTerminalPulledPastIt) {
  start(ConflictPolicy::lww);
  auto [g, addr] = customer_with_address();
  ASSERT_TRUE(a->node().remove_address(g.to_string(), addr).ok());
  ASSERT_TRUE(a->sync().ok());
  ASSERT_TRUE(hq->inspect()->run_sync_job().ok());
  ASSERT_TRUE(a->sync().ok());  // A pulled past the removal; B has not
  ASSERT_TRUE(hq->inspect()->run_sync_job().ok());
  EXPECT_TRUE(tombstone(g, addr).has_value());
  ASSERT_TRUE(b->sync().ok());  // B pulls past it: the removal's news reached everyone
  ASSERT_TRUE(a->sync().ok());
  ASSERT_TRUE(b->sync().ok());
  ASSERT_TRUE(hq->inspect()->run_sync_job().ok());
  EXPECT_FALSE(tombstone(g, addr).has_value());
  expect_converged();
}

TEST_F(RemovalTest, ContactEditsAndRemovals) {
  start(ConflictPolicy::lww);
  auto out = a->node().create_customer(new_person("With", "Contact"));
  ASSERT_TRUE(out.ok());
  sync_all();
  const std::string id = out->customer.guid.to_string();
  auto added = a->node().add_contact(id, ContactKind::phone, "555 0001");
  ASSERT_TRUE(added.ok()) << added.status().to_string();
  const Guid contact = added->contacts.at(0).guid;
  sync_all();
  ASSERT_EQ(b->node().find(id)->contacts.size(), 1u);
  ASSERT_TRUE(b->node().update_contact(id, contact, "555 0002").ok());
  ASSERT_TRUE(a->node().remove_contact(id, contact).ok());
  sync_all();
  EXPECT_TRUE(at_hq(out->customer.guid).contacts.empty());
  ASSERT_EQ(journal().size(), 1u);
  expect_converged();
  EXPECT_EQ(a->node().update_contact(id, contact, "x").status().code(), Code::not_found);
}

TEST_F(RemovalTest, ChildEditsNeedTheirFeatures) {
  start(ConflictPolicy::lww);
  NodeConfig cfg = terminal_config("S009", "T01", hq->endpoint());
  auto plain = std::make_unique<Terminal>(dir.file("plain.db"), cfg, 9);
  auto out = plain->node().create_customer(new_person("No", "Features"));
  ASSERT_TRUE(out.ok());
  const std::string id = out->customer.guid.to_string();
  EXPECT_EQ(plain->node().remove_address(id, Guid{}).status().code(), Code::feature_disabled);
  EXPECT_EQ(plain->node().add_contact(id, ContactKind::email, "a@b.co").status().code(), Code::feature_disabled);
}

}  // namespace
}  // namespace tillsync
