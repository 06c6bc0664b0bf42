// Issue 15: what a terminal and HQ do by themselves when a database is replaced, a
// real-time answer is lost, or HQ comes back after an outage. Real ZeroMQ sockets on
// loopback; HQ's job is parked and run explicitly; the pg-labelled copy runs the same
// tests against PostgreSQL.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <thread>

#include "support/cluster.h"

namespace tillsync {
namespace {

using testing::HqProcess;
using testing::kAsyncEverything;
using testing::new_person;
using testing::TempDir;
using testing::Terminal;
using testing::terminal_config;

constexpr int kParkedJobMs = 3'600'000;
// protocol::MsgType values (engine/src/protocol.h).
constexpr std::uint8_t kHello = 1, kRtsCreate = 2, kRtsAddAddress = 4, kRtsCard = 5;

class RecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HqServiceOptions o;
    o.job_interval_ms = kParkedJobMs;
    o.drop_reply = [this](std::uint8_t type) {
      ++requests[type];
      return drop_next[type].exchange(false);
    };
    hq = std::make_unique<HqProcess>(hq_location.str(), o);
    hq->start();
  }

  std::unique_ptr<Terminal> terminal(const std::string& store, FunctionalityProfile profile = {},
                                     int timeout_ms = 2000) {
    return std::make_unique<Terminal>(dir.file(store + ".db"),
                                      terminal_config(store, "T01", hq->endpoint(), profile, timeout_ms),
                                      std::hash<std::string>{}(store));
  }

  JobReport run_job() {
    auto r = hq->inspect()->run_sync_job();
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? *r : JobReport{};
  }
  // Runs the job until nothing is staged (operations staged again by a create wait for
  // the next transaction).
  JobReport run_job_to_end() {
    JobReport total;
    for (int i = 0; i < 10; ++i) {
      JobReport r = run_job();
      total.applied += r.applied;
      total.converted += r.converted;
      total.failed += r.failed;
      total.waiting = r.waiting;
      if (r.remaining == 0) break;
    }
    return total;
  }
  void sync(Terminal& t) {
    auto s = t.sync();
    ASSERT_TRUE(s.ok()) << t.node().node_id() << ": " << s.status().to_string();
  }
  Customer at_hq(const Guid& g) {
    auto all = hq->inspect()->customers(g.to_string()).value();
    EXPECT_EQ(all.size(), 1u) << g.to_string();
    return all.empty() ? Customer{} : all.front();
  }

  TempDir dir;
  testing::HqLocation hq_location{dir};
  std::unique_ptr<HqProcess> hq;
  // By message type; HQ's thread counts and drops, the test reads and arms.
  std::array<std::atomic<int>, 256> requests{};
  std::array<std::atomic<bool>, 256> drop_next{};
};

// Item 3: a new HQ database gets every terminal's log again, in whatever order the
// terminals come back. An edit of a customer another terminal created waits for that
// create instead of failing for good; sync-mode (real-time) writes come back too.
TEST_F(RecoveryTest, NewEpochGetsEveryWriteBackWhateverOrderTheTerminalsComeIn) {
  auto a = terminal("S001", kAsyncEverything);
  auto b = terminal("S002", kAsyncEverything);
  auto c = terminal("S003");  // sync mode: creation, edit, address and card through RTS
  auto x = a->node().create_customer(new_person("Xavier", "Created-By-A"));
  ASSERT_TRUE(x.ok());
  sync(*a);
  run_job();
  sync(*b);
  ASSERT_TRUE(b->node().edit_customer(x->customer.guid.to_string(), {{Field::email, "xavier@b.example"}}).ok());
  sync(*b);
  auto y = c->node().create_customer(new_person("Yolanda", "Real-Time"));
  ASSERT_TRUE(y.ok());
  ASSERT_EQ(y->mode, CreationMode::sync);
  const std::string y_id = y->customer.guid.to_string();
  ASSERT_TRUE(c->node().edit_customer(y_id, {{Field::phone, "+1 555 0101"}}).ok());
  ASSERT_TRUE(c->node().add_address(y_id, {{}, "", "1 Sync St", "Austin", "TX", "", "US"}).ok());
  ASSERT_TRUE(c->node().issue_loyalty_card(y_id).ok());
  sync(*c);
  run_job_to_end();
  for (Terminal* t : {a.get(), b.get(), c.get()}) sync(*t);

  // HQ's database is lost; a new one (new epoch) comes up on the same address.
  const std::string endpoint = hq->endpoint();
  hq->stop();
  hq_location.wipe();
  hq->start(endpoint);
  sync(*b);  // B's edit of X arrives before X's create
  JobReport first = run_job_to_end();
  EXPECT_EQ(first.failed, 0u);
  EXPECT_EQ(first.waiting, 1u);
  sync(*c);
  sync(*a);
  JobReport second = run_job_to_end();
  EXPECT_EQ(second.failed, 0u);
  EXPECT_EQ(second.waiting, 0u);
  EXPECT_TRUE(hq->inspect()->sync_status(SyncStatus::failed)->empty());
  EXPECT_EQ(at_hq(x->customer.guid).email, "xavier@b.example");
  Customer yy = at_hq(y->customer.guid);
  EXPECT_EQ(yy.phone, "+1 555 0101");
  EXPECT_EQ(yy.addresses.size(), 1u);
  ASSERT_EQ(yy.loyalty_cards.size(), 1u);  // the card number the customer holds
  EXPECT_EQ(yy.loyalty_cards[0].card_number, c->node().find(y_id)->loyalty_cards.at(0).card_number);
  for (Terminal* t : {a.get(), b.get(), c.get()}) sync(*t);
  const std::string digest = hq->inspect()->digest()->hex;
  for (Terminal* t : {a.get(), b.get(), c.get()}) EXPECT_EQ(t->node().digest()->hex, digest) << t->node().node_id();
}

// Item 7: a real-time call HQ carried out whose answer was lost is reported as such
// (outcome_unknown, not hq_unreachable), and repeating it does not do it twice.
TEST_F(RecoveryTest, RepeatingAnUnansweredAddressOrCardDoesNotDoItTwice) {
  auto t = terminal("S001");
  auto c = t->node().create_customer(new_person("Ana", "Retry"));
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->mode, CreationMode::sync);
  const std::string id = *c->customer.account_number;
  const Address address{{}, "", "7 Lost Reply Rd", "Lisbon", "", "", "PT"};

  drop_next[kRtsAddAddress] = true;
  auto lost = t->node().add_address(id, address);
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), Code::outcome_unknown) << lost.status().to_string();
  EXPECT_EQ(at_hq(c->customer.guid).addresses.size(), 1u);  // HQ had stored it
  EXPECT_EQ(t->node().status()->unsettled_requests, 1);
  auto again = t->node().add_address(id, address);  // the cashier tries again
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(again->addresses.size(), 1u);
  EXPECT_EQ(at_hq(c->customer.guid).addresses.size(), 1u);
  EXPECT_EQ(t->node().status()->unsettled_requests, 0);

  drop_next[kRtsCard] = true;
  EXPECT_EQ(t->node().issue_loyalty_card(id).status().code(), Code::outcome_unknown);
  auto card = t->node().issue_loyalty_card(id);
  ASSERT_TRUE(card.ok()) << card.status().to_string();
  EXPECT_EQ(card->loyalty_cards.size(), 1u);
  EXPECT_EQ(at_hq(c->customer.guid).loyalty_cards.size(), 1u);
  // And the logged writes are not applied a second time when pushed.
  sync(*t);
  EXPECT_EQ(run_job().applied, 3u);
  EXPECT_EQ(at_hq(c->customer.guid).addresses.size(), 1u);
  EXPECT_EQ(at_hq(c->customer.guid).loyalty_cards.size(), 1u);
}

// Item 7: a sync-mode create whose answer was lost, on a terminal that may not fall
// back to async (D5): no customer is created twice; the next contact settles it.
TEST_F(RecoveryTest, UnansweredCreateThatCannotFallBackIsSettledAtTheNextContact) {
  auto t = terminal("S001", {.filter_shared_customer_tables = true});
  drop_next[kRtsCreate] = true;
  auto lost = t->node().create_customer(new_person("Filtered", "Store"));
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), Code::outcome_unknown) << lost.status().to_string();
  EXPECT_EQ(hq->inspect()->customers("").value().size(), 1u);  // HQ had created it
  EXPECT_TRUE(t->node().search("").value().empty());
  auto settled = t->node().reconcile();  // what `store sync` does first
  ASSERT_TRUE(settled.ok()) << settled.status().to_string();
  EXPECT_EQ(*settled, 1);
  auto mine = t->node().search("").value();
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_TRUE(mine[0].synced());
  EXPECT_NE(t->node().status()->last_recovery.find("carried out at HQ"), std::string::npos);
  // The cashier repeating the creation gets that customer, not a second one.
  auto repeated = t->node().create_customer(new_person("Filtered", "Store"));
  ASSERT_TRUE(repeated.ok()) << repeated.status().to_string();
  EXPECT_EQ(repeated->customer.guid, mine[0].guid);
  EXPECT_EQ(hq->inspect()->customers("").value().size(), 1u);
}

// Item 7: a request that gets no answer costs one timeout, not a reachability probe
// and then the call.
TEST_F(RecoveryTest, AnUnansweredCreateSendsOneRequestNoProbe) {
  auto t = terminal("S001", {}, 1000);
  drop_next[kRtsCreate] = true;
  auto out = t->node().create_customer(new_person("One", "Request"));
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->mode, CreationMode::async);
  EXPECT_EQ(out->fallback_code, "no_answer");
  EXPECT_EQ(requests[kRtsCreate].load(), 1);
  EXPECT_EQ(requests[kHello].load(), 0);
}

// Item 8: the cashier's client and a background sync thread's client are two
// HqClients. After HQ comes back, the cashier's sync-mode work succeeds again without
// a restart, once its short retry delay has passed (a manual clock here).
TEST_F(RecoveryTest, CashierClientWorksAgainAfterAnOutageWithoutRestarting) {
  ManualClock clock;
  const std::string db = dir.file("till.db");
  NodeConfig config = terminal_config("S001", "T01", hq->endpoint(), {});
  auto node = ChannelNode::create(db, config, {.clock = &clock, .seed = 5}).value();
  auto cashier = HqClient::connect(hq->endpoint(), {.timeout_ms = 2000, .clock = &clock}).value();
  auto background = HqClient::connect(hq->endpoint(), {.timeout_ms = 2000, .clock = &clock}).value();
  node->attach_hq(cashier.get());
  auto replicator = Replicator::open(db, *background, {.clock = &clock}).value();

  auto before = node->create_customer(new_person("Before", "Outage"));
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->mode, CreationMode::sync);
  const std::string endpoint = hq->endpoint();
  hq->stop();
  auto during = node->create_customer(new_person("During", "Outage"));
  ASSERT_TRUE(during.ok());
  EXPECT_EQ(during->mode, CreationMode::async);
  EXPECT_FALSE(cashier->reachable());
  EXPECT_EQ(replicator->sync_once().status().code(), Code::hq_unreachable);

  hq->start(endpoint);
  ASSERT_TRUE(replicator->sync_once().ok());  // the background thread notices first
  // Within the retry delay the cashier does not wait for HQ...
  auto quick = node->create_customer(new_person("Quick", "Async"));
  ASSERT_TRUE(quick.ok());
  EXPECT_EQ(quick->mode, CreationMode::async);
  // ...and after it, sync-mode work goes to HQ again.
  clock.advance(30'001);
  auto after = node->create_customer(new_person("After", "Outage"));
  ASSERT_TRUE(after.ok()) << after.status().to_string();
  EXPECT_EQ(after->mode, CreationMode::sync);
  const std::string id = *after->customer.account_number;
  EXPECT_TRUE(node->edit_customer(id, {{Field::email, "after@example.com"}}).ok());
  EXPECT_TRUE(node->issue_loyalty_card(id).ok());
  EXPECT_TRUE(cashier->reachable());
}

// Item 7: `rts_create` names the customer a GUID was merged into, and a request id is
// carried out once also when sent to HQ twice.
TEST_F(RecoveryTest, RealTimeCreateHonoursAliasesAndRequestIds) {
  auto h = hq->inspect();
  GuidGenerator g(31);
  Customer first = testing::plain_customer(g.next(), "Dup", "Licate");
  first.email = "dup@example.com";
  auto made = h->rts_create("S001/T01", g.next(), first);
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  const Guid merged = g.next();
  ASSERT_TRUE(h->store().begin().ok());
  {
    auto tx = h->store().begin().value();
    ASSERT_TRUE(tx->put_alias(merged, first.guid).ok());
    ASSERT_TRUE(tx->commit().ok());
  }
  Customer again = first;
  again.guid = merged;
  auto aliased = h->rts_create("S001/T01", g.next(), again);
  ASSERT_TRUE(aliased.ok()) << aliased.status().to_string();
  EXPECT_EQ(aliased->customer.guid, first.guid);
  EXPECT_EQ(h->customers("").value().size(), 1u);

  const Guid request = g.next();
  auto card1 = h->rts_issue_loyalty_card("S001/T01", request, first.guid);
  auto card2 = h->rts_issue_loyalty_card("S001/T01", request, first.guid);
  ASSERT_TRUE(card1.ok() && card2.ok());
  EXPECT_EQ(card1->card_number, card2->card_number);
  EXPECT_EQ(card2->customer.loyalty_cards.size(), 1u);
  EXPECT_EQ(h->rts_issue_loyalty_card("S002/T01", request, first.guid).status().code(), Code::unauthorized);
}

// Item 5: clocks. HQ's clock is a manual one; each terminal has its own.
class ClockTest : public RecoveryTest {
 protected:
  static constexpr std::int64_t kT = 2'000'000'000'000;
  static constexpr std::int64_t kHour = 3'600'000;
  void SetUp() override {
    HqServiceOptions o;
    o.job_interval_ms = kParkedJobMs;
    hq = std::make_unique<HqProcess>(hq_location.str(), o);
    hq->hq_options().clock = &hq_clock;
    hq->start();
  }
  std::unique_ptr<Terminal> terminal_at(const std::string& store, ManualClock& clock, FunctionalityProfile profile) {
    return std::make_unique<Terminal>(dir.file(store + ".db"),
                                      terminal_config(store, "T01", hq->endpoint(), profile), 7, &clock);
  }
  Hlc hq_hlc() { return hq->inspect()->hello("").value().hq_hlc; }

  ManualClock hq_clock{kT};
};

TEST_F(ClockTest, ATillWhoseClockRunsAnHourAheadLosesNothingAndIsReported) {
  ManualClock fast{kT + kHour}, right{kT};
  auto a = terminal_at("S001", fast, kAsyncEverything);
  auto b = terminal_at("S002", right, kAsyncEverything);
  auto x = b->node().create_customer(new_person("Clock", "Skew"));
  ASSERT_TRUE(x.ok());
  sync(*b);
  run_job();
  sync(*a);
  sync(*b);
  ASSERT_TRUE(a->node().edit_customer(x->customer.guid.to_string(), {{Field::email, "a@example.com"}}).ok());
  sync(*a);
  EXPECT_EQ(run_job().applied, 1u);  // applied: a wrong clock loses nothing
  EXPECT_EQ(at_hq(x->customer.guid).email, "a@example.com");
  // Staged as if stamped at its receipt plus the offset (recorded: replays agree).
  auto received = hq->inspect()->store().received("S001/T01", 0, 10).value();
  ASSERT_FALSE(received.empty());
  EXPECT_EQ(received.back().hlc.millis(), static_cast<std::uint64_t>(kT + 300'000));
  EXPECT_LE(hq_hlc().millis(), static_cast<std::uint64_t>(kT + 300'000));
  auto terminals = hq->inspect()->terminals().value();
  ASSERT_EQ(terminals.size(), 2u);
  EXPECT_EQ(terminals[0].node_id, "S001/T01");
  EXPECT_GT(terminals[0].clock_ahead_ms, kHour - 60'000);
  EXPECT_EQ(terminals[1].clock_ahead_ms, 0);

  // Ten minutes later a till with a right clock edits the same field, not having seen
  // A's edit: its write is newer than where HQ placed A's, so it wins under lww.
  hq_clock.advance(10 * 60'000);
  right.advance(10 * 60'000);
  ASSERT_TRUE(b->node().edit_customer(x->customer.guid.to_string(), {{Field::email, "b@example.com"}}).ok());
  sync(*b);
  run_job();
  EXPECT_EQ(at_hq(x->customer.guid).email, "b@example.com");
  sync(*a);
  sync(*b);
  EXPECT_EQ(a->node().digest()->hex, hq->inspect()->digest()->hex);
}

TEST_F(ClockTest, NoMessageMovesAClockToItsLimit) {
  GuidGenerator g(5);
  const Customer c = testing::plain_customer(g.next(), "Far", "Future");
  LogRecord r;
  r.seq = 1;
  r.op_id = g.next();
  r.entity = c.guid;
  r.kind = OpKind::customer_create;
  r.hlc = Hlc::make(Hlc::kMaxMillis, 0xffff);  // the largest HLC there is
  r.node_id = "S009/T01";
  r.payload = encode_payload(CustomerCreated{c});
  auto client = HqClient::connect(hq->endpoint(), 2000).value();
  ASSERT_TRUE(client->push("S009/T01", 0, Guid{}, {r}).ok());
  EXPECT_EQ(run_job().converted, 1u);
  EXPECT_LE(hq_hlc().millis(), static_cast<std::uint64_t>(kT + 300'000));
  // A terminal following HQ's clock stays far from the limit too.
  ManualClock clock{kT};
  auto t = terminal_at("S001", clock, kAsyncEverything);
  sync(*t);
  ASSERT_TRUE(t->node().create_customer(new_person("After", "Limit")).ok());
  auto log = t->node().read_log(0, 10).value();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_LT(log[0].hlc.millis(), static_cast<std::uint64_t>(kT + kHour));
}

TEST_F(ClockTest, ATerminalsClockNeverGoesBackAndFollowsHqsRealTimeAnswers) {
  ManualClock clock{kT - kHour};  // an hour behind HQ
  auto t = terminal_at("S001", clock, {.async_customer_edits = true});
  auto c = t->node().create_customer(new_person("Real", "Time"));  // sync mode: through HQ
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c->mode, CreationMode::sync);
  // The next local write orders after HQ's answer, although this till's clock is behind.
  ASSERT_TRUE(t->node().edit_customer(c->customer.guid.to_string(), {{Field::phone, "555 0100"}}).ok());
  auto log = t->node().read_log(0, 10).value();
  ASSERT_EQ(log.size(), 2u);
  EXPECT_GE(log[1].hlc.millis(), static_cast<std::uint64_t>(kT));
  // The wall clock jumps back a day: the next write still orders after the last.
  clock.set(kT - 25 * kHour);
  ASSERT_TRUE(t->node().edit_customer(c->customer.guid.to_string(), {{Field::phone, "555 0101"}}).ok());
  log = t->node().read_log(0, 10).value();
  ASSERT_EQ(log.size(), 3u);
  EXPECT_GT(log[2].hlc, log[1].hlc);
}

}  // namespace
}  // namespace tillsync
