// The fault proxy (transport/fault_proxy.h) on its own, and terminals talking to a real
// HQ service through it: drops, duplicates, delays (reordering) and partitions one way
// and both ways. After the network heals, every operation is applied at HQ exactly once
// and HQ and terminals hold the same content.
//
// No sleeps: terminals use short request timeouts (150 ms) and retry sync in bounded
// loops; HQ's job is parked and run explicitly.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "support/cluster.h"
#include "tillsync/transport/fault_proxy.h"
#include "tillsync/transport/socket.h"

namespace tillsync {
namespace {

using testing::HqProcess;
using testing::new_person;
using testing::TempDir;
using testing::Terminal;
using testing::terminal_config;
using transport::DirectionPolicy;
using transport::FaultDecider;
using transport::FaultPolicy;
using transport::FaultProxy;
using transport::FaultProxyOptions;

constexpr int kParkedJobMs = 3'600'000;
constexpr int kTimeoutMs = 150;
constexpr int kMaxAttempts = 200;  // bound on retries; reached only when broken

transport::ClientOptions client_options(int timeout_ms) {
  transport::ClientOptions o;
  o.timeout_ms = timeout_ms;
  return o;
}

DirectionPolicy dropping(double drop) {
  DirectionPolicy p;
  p.drop = drop;
  return p;
}

DirectionPolicy duplicating(double duplicate) {
  DirectionPolicy p;
  p.duplicate = duplicate;
  return p;
}

std::unique_ptr<FaultProxy> start_proxy(const std::string& forward, std::uint64_t seed,
                                        FaultPolicy policy = {}) {
  FaultProxyOptions o;
  o.forward = forward;
  o.seed = seed;
  o.policy = policy;
  auto p = FaultProxy::start(o);
  EXPECT_TRUE(p.ok()) << p.status().to_string();
  return p.ok() ? std::move(p).value() : nullptr;
}

// ---- the decision procedure ----------------------------------------------------------

TEST(FaultDecider, SameSeedSameDecisionsDifferentSeedDifferent) {
  const DirectionPolicy p{.drop = 0.3, .duplicate = 0.3, .delay_min_ms = 5, .delay_max_ms = 50};
  FaultDecider a(42), b(42), c(43);
  int differences = 0, drops = 0, dups = 0;
  for (int i = 0; i < 2000; ++i) {
    auto x = a.decide(p), y = b.decide(p), z = c.decide(p);
    ASSERT_EQ(x.drop, y.drop);
    ASSERT_EQ(x.copies, y.copies);
    ASSERT_EQ(x.delay_ms[0], y.delay_ms[0]);
    ASSERT_EQ(x.delay_ms[1], y.delay_ms[1]);
    if (x.drop != z.drop || x.copies != z.copies || x.delay_ms[0] != z.delay_ms[0]) ++differences;
    drops += x.drop;
    dups += x.copies == 2;
    if (!x.drop) {
      EXPECT_GE(x.delay_ms[0], 5);
      EXPECT_LE(x.delay_ms[0], 50);
    }
  }
  EXPECT_GT(differences, 1000);
  EXPECT_NEAR(drops, 600, 120);       // 30 % of 2000
  EXPECT_NEAR(dups, 1400 * 3 / 10, 120);  // 30 % of the survivors
}

TEST(FaultDecider, EveryMessageConsumesTheSameDrawsWhateverThePolicy) {
  // Changing the policy for some messages never shifts the decisions of later ones.
  const DirectionPolicy p{.drop = 0.5, .duplicate = 0.5, .delay_min_ms = 0, .delay_max_ms = 9};
  const DirectionPolicy partitioned{.partitioned = true};
  FaultDecider a(7), b(7);
  for (int i = 0; i < 500; ++i) {
    auto x = a.decide(p);
    auto y = b.decide(i % 3 == 0 ? partitioned : p);
    if (i % 3 == 0) {
      EXPECT_TRUE(y.drop);
      continue;
    }
    ASSERT_EQ(x.drop, y.drop) << i;
    ASSERT_EQ(x.copies, y.copies) << i;
    ASSERT_EQ(x.delay_ms[0], y.delay_ms[0]) << i;
  }
}

TEST(FaultProxy, RejectsBadPolicyAndEndpoints) {
  FaultProxyOptions o;
  o.forward = "tcp://127.0.0.1:1";
  o.policy.to_hq.drop = 1.5;
  EXPECT_EQ(FaultProxy::start(o).status().code(), Code::invalid_input);
  o.policy = {};
  o.policy.to_terminal.delay_min_ms = 10;
  o.policy.to_terminal.delay_max_ms = 5;
  EXPECT_EQ(FaultProxy::start(o).status().code(), Code::invalid_input);
  o.policy = {};
  o.listen = "nonsense";
  EXPECT_EQ(FaultProxy::start(o).status().code(), Code::invalid_input);
  o.listen = "tcp://127.0.0.1:*";
  o.forward = "";
  EXPECT_EQ(FaultProxy::start(o).status().code(), Code::invalid_input);
}

// ---- raw request/reply through the proxy ---------------------------------------------

// A ROUTER server in a thread that answers every request with the sender's routing id
// and counts requests.
class EchoServer {
 public:
  EchoServer() {
    auto s = transport::Server::bind(ctx_, "tcp://127.0.0.1:*");
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    server_.emplace(std::move(s).value());
    endpoint_ = server_->endpoint();
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        auto r = server_->receive(20);
        if (!r.ok() || !*r) continue;
        ++requests_;
        (void)server_->reply(**r, 1, (*r)->peer);
      }
    });
  }
  ~EchoServer() {
    stop_.store(true);
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  int requests() const { return requests_.load(); }

 private:
  transport::Context ctx_;
  std::optional<transport::Server> server_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

TEST(FaultProxy, ForwardsEachClientThroughItsOwnPeerAndRepliesBack) {
  EchoServer server;
  auto proxy = start_proxy(server.endpoint(), 1);
  ASSERT_TRUE(proxy);
  EXPECT_NE(proxy->endpoint(), "tcp://127.0.0.1:*");
  transport::Context ctx;
  auto a = transport::Client::connect(ctx, proxy->endpoint(), client_options(5000)).value();
  auto b = transport::Client::connect(ctx, proxy->endpoint(), client_options(5000)).value();
  auto ra = a.call(1, "hello");
  auto rb = b.call(1, "hello");
  ASSERT_TRUE(ra.ok()) << ra.status().to_string();
  ASSERT_TRUE(rb.ok()) << rb.status().to_string();
  EXPECT_NE(ra->body, rb->body);  // HQ saw two distinct peers
  auto ra2 = a.call(1, "again");
  ASSERT_TRUE(ra2.ok());
  EXPECT_EQ(ra2->body, ra->body);  // and the same peer for the same client
  auto st = proxy->stats();
  EXPECT_EQ(st.clients, 2u);
  EXPECT_EQ(st.to_hq.forwarded, 3u);
  EXPECT_EQ(st.to_terminal.forwarded, 3u);
  EXPECT_EQ(st.to_hq.dropped + st.to_terminal.dropped, 0u);
  EXPECT_TRUE(proxy->stop().ok());
  EXPECT_TRUE(proxy->stop().ok());  // idempotent
}

TEST(FaultProxy, DuplicatesDropsDelaysAndPartitionsAtRunTime) {
  EchoServer server;
  auto proxy = start_proxy(server.endpoint(), 3);
  ASSERT_TRUE(proxy);
  transport::Context ctx;
  auto c = transport::Client::connect(ctx, proxy->endpoint(), client_options(5000)).value();

  // Every request duplicated: HQ gets two, the client one reply (the second is stale).
  ASSERT_TRUE(proxy->set_policy({duplicating(1.0), {}}).ok());
  ASSERT_TRUE(c.call(1, "dup").ok());
  EXPECT_EQ(proxy->stats().to_hq.duplicated, 1u);
  EXPECT_EQ(proxy->stats().to_hq.forwarded, 2u);

  // Delayed both ways: still answered, counted as delayed.
  ASSERT_TRUE(proxy->set_policy(FaultPolicy::symmetric({.delay_min_ms = 5, .delay_max_ms = 20})).ok());
  ASSERT_TRUE(c.call(1, "slow").ok());
  EXPECT_EQ(proxy->stats().to_hq.delayed, 1u);
  EXPECT_GE(proxy->stats().to_terminal.delayed, 1u);

  // Replies partitioned: the request reaches HQ, the client times out.
  ASSERT_TRUE(proxy->set_policy({}).ok());
  proxy->partition(false, true);
  const int before = server.requests();
  auto lost = c.call(1, "one-way", 100);
  EXPECT_EQ(lost.status().code(), Code::hq_unreachable);
  EXPECT_GT(proxy->stats().to_terminal.dropped, 0u);
  // Requests partitioned too.
  proxy->partition(true, true);
  EXPECT_EQ(c.call(1, "both", 100).status().code(), Code::hq_unreachable);
  EXPECT_GT(proxy->stats().to_hq.dropped, 0u);
  proxy->heal();
  EXPECT_FALSE(proxy->policy().to_hq.partitioned);
  ASSERT_TRUE(c.call(1, "healed", 5000).ok());
  EXPECT_GE(server.requests(), before + 2);  // "one-way" and "healed"

  // Everything dropped.
  ASSERT_TRUE(proxy->set_policy({dropping(1.0), {}}).ok());
  EXPECT_EQ(c.call(1, "gone", 100).status().code(), Code::hq_unreachable);
}

// ---- terminals and HQ through the proxy ----------------------------------------------

class FaultyNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HqServiceOptions o;
    o.job_interval_ms = kParkedJobMs;
    hq = std::make_unique<HqProcess>(dir.file("hq.db"), o);
    hq->start();
  }

  std::unique_ptr<Terminal> terminal(const std::string& store, const std::string& endpoint,
                                     FunctionalityProfile profile = {}) {
    return std::make_unique<Terminal>(dir.file(store + ".db"),
                                      terminal_config(store, "T01", endpoint, profile, kTimeoutMs),
                                      std::hash<std::string>{}(store));
  }

  // Retries sync until one whole round (push everything, pull everything) succeeds.
  void sync_until_done(Terminal& t) {
    for (int i = 0; i < kMaxAttempts; ++i) {
      auto r = t.sync();
      if (r.ok() && r->pending_ops == 0) return;
      if (!r.ok()) {
        ASSERT_EQ(r.status().code(), Code::hq_unreachable) << r.status().to_string();
      }
    }
    FAIL() << t.node().node_id() << " never completed a sync in " << kMaxAttempts << " attempts";
  }

  void run_job() {
    auto r = hq->inspect()->run_sync_job();
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->failed, 0u);
  }

  // HQ received the terminal's whole log, each operation once, with the same seqs.
  void expect_exactly_once(Terminal& t) {
    auto h = hq->inspect();
    auto received = h->store().received(t.node().node_id(), 0, 1'000'000).value();
    auto log = t.node().read_log(0, 1'000'000).value();
    ASSERT_EQ(received.size(), log.size()) << t.node().node_id();
    std::set<Guid> ops;
    for (std::size_t i = 0; i < log.size(); ++i) {
      EXPECT_EQ(received[i].seq, log[i].seq);
      EXPECT_EQ(received[i].op_id, log[i].op_id);
      EXPECT_TRUE(ops.insert(received[i].op_id).second) << "op applied twice";
    }
    EXPECT_EQ(t.node().status()->acked_seq, static_cast<std::int64_t>(log.size()));
  }

  void expect_converged(std::initializer_list<Terminal*> terminals, std::size_t customers) {
    auto h = hq->inspect();
    const auto d = h->digest().value();
    EXPECT_EQ(d.customers, customers);
    EXPECT_EQ(h->customers("").value().size(), customers);
    for (const auto& s : h->sync_status(std::nullopt).value()) {
      EXPECT_EQ(s.status, SyncStatus::converted) << s.guid.to_string() << " " << s.last_error;
    }
    for (Terminal* t : terminals) {
      EXPECT_EQ(t->node().digest()->hex, d.hex) << t->node().node_id();
      for (const auto& c : t->node().search("").value()) EXPECT_TRUE(c.synced()) << c.display_name();
    }
  }

  TempDir dir;
  std::unique_ptr<HqProcess> hq;
};

TEST_F(FaultyNetworkTest, DropsAndDuplicatesBothWaysApplyEveryOperationOnce) {
  auto proxy = start_proxy(hq->endpoint(), 11,
                           FaultPolicy::symmetric({.drop = 0.2, .duplicate = 0.3}));
  ASSERT_TRUE(proxy);
  auto t = terminal("S001", proxy->endpoint(),
                    {.async_customer_creation = true, .async_customer_edits = true});
  std::vector<Guid> made;
  for (int i = 0; i < 15; ++i) {
    auto c = t->node().create_customer(new_person("Drop" + std::to_string(i), "Dup"));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    made.push_back(c->customer.guid);
    if (i % 3 == 0) {
      auto e = t->node().edit_customer(made[0].to_string(), {{Field::middle_name, "M" + std::to_string(i)}});
      ASSERT_TRUE(e.ok()) << e.status().to_string();
    }
    if (i % 5 == 4) {
      ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
    }
  }
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
  run_job();
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
  expect_exactly_once(*t);
  expect_converged({t.get()}, 15);
  auto st = proxy->stats();
  EXPECT_GT(st.to_hq.dropped + st.to_terminal.dropped, 0u);
  EXPECT_GT(st.to_hq.duplicated + st.to_terminal.duplicated, 0u);
}

TEST_F(FaultyNetworkTest, DelaysReorderMessagesAndSyncCreatesStayUnique) {
  auto proxy = start_proxy(hq->endpoint(), 12,
                           FaultPolicy::symmetric({.duplicate = 0.2, .delay_min_ms = 0, .delay_max_ms = 120}));
  ASSERT_TRUE(proxy);
  // Sync mode: some RTS calls time out behind the delays (HQ may have committed them)
  // and fall back to async with the same GUID.
  auto t = terminal("S001", proxy->endpoint());
  int async_fallbacks = 0;
  for (int i = 0; i < 12; ++i) {
    auto c = t->node().create_customer(new_person("Slow" + std::to_string(i), "Net"));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    async_fallbacks += c->mode == CreationMode::async;
  }
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
  run_job();
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
  expect_exactly_once(*t);
  expect_converged({t.get()}, 12);
  EXPECT_GT(proxy->stats().to_hq.delayed, 0u);
  RecordProperty("async_fallbacks", async_fallbacks);
}

TEST_F(FaultyNetworkTest, PartitionTowardsHqThenHeal) {
  auto proxy = start_proxy(hq->endpoint(), 13);
  ASSERT_TRUE(proxy);
  auto t = terminal("S001", proxy->endpoint());
  proxy->partition(/*to_hq=*/true, /*to_terminal=*/false);
  for (int i = 0; i < 5; ++i) {
    auto c = t->node().create_customer(new_person("Cut" + std::to_string(i), "Off"));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->mode, CreationMode::async);  // D4
  }
  auto failed = t->sync();
  EXPECT_EQ(failed.status().code(), Code::hq_unreachable);
  EXPECT_TRUE(hq->inspect()->customers("").value().empty());  // nothing got through
  proxy->heal();
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
  run_job();
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
  expect_exactly_once(*t);
  expect_converged({t.get()}, 5);
}

TEST_F(FaultyNetworkTest, RepliesPartitionedHqCommitsButTerminalNeverHearsThenHeal) {
  auto proxy = start_proxy(hq->endpoint(), 14);
  ASSERT_TRUE(proxy);
  auto t = terminal("S001", proxy->endpoint());
  auto first = t->node().create_customer(new_person("Whole", "Line"));
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  EXPECT_EQ(first->mode, CreationMode::sync);
  proxy->partition(/*to_hq=*/false, /*to_terminal=*/true);
  // The next RTS create reaches HQ and commits; its reply is lost, so the terminal falls
  // back to async with the same GUID. Later ones stay local until HQ answers again.
  for (int i = 0; i < 4; ++i) {
    auto c = t->node().create_customer(new_person("Half" + std::to_string(i), "Open"));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->mode, CreationMode::async);
  }
  EXPECT_EQ(hq->inspect()->customers("").value().size(), 2u);
  // Sync never hears back (its first request, the epoch ping, goes unanswered).
  EXPECT_EQ(t->sync().status().code(), Code::hq_unreachable);
  EXPECT_EQ(t->node().status()->acked_seq, 0);
  proxy->heal();
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
  run_job();
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
  expect_exactly_once(*t);
  expect_converged({t.get()}, 5);
}

TEST_F(FaultyNetworkTest, LossyRepliesOnlyAcksOfCommittedPushesAreLost) {
  // Only the way back loses messages: HQ commits pushes whose acks never arrive, and
  // the terminal resends them.
  transport::DirectionPolicy back;
  back.drop = 0.25;
  auto proxy = start_proxy(hq->endpoint(), 17, {DirectionPolicy{}, back});
  ASSERT_TRUE(proxy);
  auto t = terminal("S001", proxy->endpoint(), {.async_customer_creation = true});
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(t->node().create_customer(new_person("Echo" + std::to_string(i), "Lost")).ok());
    if (i % 3 == 2) {
      ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
    }
  }
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
  run_job();
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*t));
  expect_exactly_once(*t);
  expect_converged({t.get()}, 10);
  EXPECT_EQ(proxy->stats().to_hq.dropped, 0u);
  EXPECT_GT(proxy->stats().to_terminal.dropped, 0u);
}

TEST_F(FaultyNetworkTest, OneStorePartitionedBothWaysWhileAnotherSyncsThenHeal) {
  auto pa = start_proxy(hq->endpoint(), 15);
  auto pb = start_proxy(hq->endpoint(), 16, FaultPolicy::symmetric({.drop = 0.1}));
  ASSERT_TRUE(pa && pb);
  const FunctionalityProfile async{.async_customer_creation = true};
  auto a = terminal("S001", pa->endpoint(), async);
  auto b = terminal("S002", pb->endpoint(), async);
  pa->partition(true, true);
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(a->node().create_customer(new_person("Island" + std::to_string(i), "A")).ok());
    ASSERT_TRUE(b->node().create_customer(new_person("Main" + std::to_string(i), "B")).ok());
  }
  EXPECT_EQ(a->sync().status().code(), Code::hq_unreachable);
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*b));
  run_job();
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*b));
  EXPECT_EQ(hq->inspect()->customers("").value().size(), 6u);
  EXPECT_EQ(pa->stats().to_hq.forwarded, 0u);
  // A restart while cut off changes nothing.
  a->restart();
  EXPECT_EQ(a->node().status()->pending_ops, 6);
  pa->heal();
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*a));
  run_job();
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*a));
  ASSERT_NO_FATAL_FAILURE(sync_until_done(*b));
  expect_exactly_once(*a);
  expect_exactly_once(*b);
  expect_converged({a.get(), b.get()}, 12);
}

}  // namespace
}  // namespace tillsync
