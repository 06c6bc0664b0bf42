// Partition simulation (DESIGN.md §3, §6; docs/testing.md): HQ and 2-4 terminals behind
// faulty links, a seeded schedule of customer operations (sync and async creations,
// edits, addresses), syncs, partial runs of HQ's customer sync job, network faults,
// heals, and restarts of terminals and of HQ (objects dropped and reopened from their
// database files).
//
// A link models the network per terminal, for replication (HqLink) and for real-time
// calls (HqGateway) alike:
//   up            every call goes through;
//   down          every request is lost (partition both ways);
//   replies_lost  HQ handles and commits every request, every reply is lost (one-way
//                 partition towards the terminal);
//   flaky         each request may be lost, duplicated (HQ handles it twice), or
//                 handled with its reply lost.
// Lost messages surface as Code::hq_unreachable, as over ZeroMQ.
//
// Invariants, checked during the run and at the end:
//  - an operation acknowledged to a terminal is at HQ (HQ's received log has its seq);
//  - after healing, HQ's received log of each node equals the node's log: same seqs,
//    same op_ids, nothing twice; every terminal's log is fully acknowledged;
//  - every customer created on any terminal exists at HQ exactly once, with an account
//    number, and the terminals show it synced;
//  - every async customer's status row is converted, or failed with a reason;
//  - the status view agrees with the data: a converted row names a customer with that
//    account number and GUID;
//  - HQ and every terminal have equal content digests.
//
// In-process (no sockets): 150 seeds take about 15 s in a Debug build. A failing seed prints how
// to re-run it alone: TILLSYNC_PARTITION_SEED=N. TILLSYNC_PARTITION_SEEDS=N runs seeds
// 1..N (the `soak` label runs thousands).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>

#include "support/hq_backend.h"
#include "support/temp_dir.h"
#include "tillsync/channel_node.h"
#include "tillsync/headquarters.h"
#include "tillsync/local_hq_link.h"
#include "tillsync/replicator.h"

namespace tillsync {
namespace {

using testing::TempDir;

enum class Net { up, down, replies_lost, flaky };

// One terminal's network to HQ. `hq` points at the Sim's HQ slot, so an HQ restart is
// seen by every link.
class FaultyLink final : public HqLink, public HqGateway {
 public:
  FaultyLink(std::unique_ptr<Headquarters>* hq, std::mt19937_64* rng) : hq_(hq), rng_(rng) {}

  Net net = Net::up;
  std::uint64_t lost_requests = 0, lost_replies = 0, duplicated = 0;

  bool reachable() override { return reachable_; }

  Result<RtsAnswer> create_customer(const std::string& node, const Guid& request, const Customer& c) override {
    return call([&] { return hq().rts_create(node, request, c); }, true);
  }
  Result<RtsAnswer> edit_customer(const std::string& node, const Guid& request, const Guid& customer,
                                  std::int64_t base, const std::vector<FieldChange>& changes) override {
    return call([&] { return hq().rts_edit(node, request, customer, base, changes); }, true);
  }
  Result<RtsAnswer> add_address(const std::string& node, const Guid& request, const Guid& customer,
                                const Address& address) override {
    return call([&] { return hq().rts_add_address(node, request, customer, address); }, true);
  }
  Result<RtsAnswer> issue_loyalty_card(const std::string& node, const Guid& request,
                                       const Guid& customer) override {
    return call([&] { return hq().rts_issue_loyalty_card(node, request, customer); }, true);
  }

  Result<HelloReply> hello(const std::string& node, const Guid& acked_op) override {
    return call([&]() -> Result<HelloReply> {
      TS_ASSIGN_OR_RETURN(HelloResult r, hq().hello(node, acked_op));
      return HelloReply{hq().epoch(), r.push_cursor, r.hq_hlc, r.holds_acked};
    });
  }
  Result<PushReply> push(const std::string& node, std::int64_t prev,
                         const std::vector<LogRecord>& records) override {
    return call([&]() -> Result<PushReply> {
      TS_ASSIGN_OR_RETURN(PushResult r, hq().push(node, prev, records));
      return PushReply{hq().epoch(), r.acked_seq};
    });
  }
  Result<PullReply> pull(const std::string& node, std::int64_t after, std::uint64_t after_mark,
                         std::uint32_t limit, bool filtered) override {
    return call([&]() -> Result<PullReply> {
      TS_ASSIGN_OR_RETURN(PullResult r, hq().pull(node, after, after_mark, limit, filtered));
      return to_pull_reply(hq().epoch(), std::move(r));
    });
  }

 private:
  Headquarters& hq() { return **hq_; }

  // Four draws per call whatever the state, so one call's faults don't shift the next.
  // `rts`: a lost reply is outcome_unknown (the request reached HQ), as over ZeroMQ.
  template <typename F>
  auto call(F&& f, bool rts = false) -> decltype(f()) {
    const std::uint64_t a = (*rng_)(), b = (*rng_)(), c = (*rng_)(), d = (*rng_)();
    (void)d;
    const bool flaky = net == Net::flaky;
    if (net == Net::down || (flaky && a % 5 == 0)) {
      ++lost_requests;
      reachable_ = false;
      return Status::HqUnreachable("request lost (simulated partition)");
    }
    auto r = f();
    if (flaky && b % 5 == 0) {  // delivered twice: HQ handles it again
      ++duplicated;
      r = f();
    }
    if (net == Net::replies_lost || (flaky && c % 5 == 0)) {
      ++lost_replies;
      reachable_ = false;
      if (rts) return Status(Code::outcome_unknown, "reply lost (simulated partition)");
      return Status::HqUnreachable("reply lost (simulated partition)");
    }
    reachable_ = true;
    return r;
  }

  std::unique_ptr<Headquarters>* hq_;
  std::mt19937_64* rng_;
  bool reachable_ = true;
};

struct Sim {
  struct Terminal {
    std::string id;
    std::string path;
    bool async_mode = false;
    std::unique_ptr<ManualClock> clock;
    std::unique_ptr<FaultyLink> link;
    std::unique_ptr<ChannelNode> node;
    std::unique_ptr<Replicator> replicator;
    ReplicatorOptions replicator_options;
    std::int64_t acked_seen = 0;  // highest acked_seq observed (never goes back)
    std::vector<Guid> known;      // customers this terminal may edit
  };

  explicit Sim(std::uint64_t seed) : rng(seed), dir(/*in_memory=*/true), hq_clock(1'700'000'000'000) {
    auto h = Headquarters::init(hq_path, "C", hq_options());
    EXPECT_TRUE(h.ok()) << h.status().to_string();
    hq = std::move(h).value();
    const int n = 2 + static_cast<int>(rng() % 3);  // 2..4 terminals
    for (int i = 0; i < n; ++i) {
      Terminal t;
      t.id = "S00" + std::to_string(i + 1) + "/T01";
      t.path = dir.file("t" + std::to_string(i) + ".db");
      t.async_mode = rng() % 2 == 0;
      t.clock = std::make_unique<ManualClock>(1'700'000'000'000 +
                                              static_cast<std::int64_t>(rng() % 600'000) - 300'000);
      t.link = std::make_unique<FaultyLink>(&hq, &rng);
      t.replicator_options = {.push_batch = 1 + rng() % 6,
                              .pull_batch = 1 + static_cast<std::uint32_t>(rng() % 6),
                              .clock = t.clock.get()};
      NodeConfig cfg;
      cfg.store_id = "S00" + std::to_string(i + 1);
      cfg.terminal_id = "T01";
      cfg.hq_endpoint = "inproc://hq";
      cfg.profile = {.async_customer_creation = t.async_mode, .async_customer_addresses = true,
                     .async_customer_edits = true};
      auto node = ChannelNode::create(t.path, cfg, node_options(t));
      EXPECT_TRUE(node.ok()) << node.status().to_string();
      if (!node.ok()) return;
      t.node = std::move(node).value();
      auto r = Replicator::open(t.path, *t.link, t.replicator_options);
      EXPECT_TRUE(r.ok()) << r.status().to_string();
      t.replicator = std::move(r).value();
      terminals.push_back(std::move(t));
    }
  }

  HqOptions hq_options() {
    return {.clock = &hq_clock, .conflict_policy = ConflictPolicy::lww, .durable = false};
  }

  ChannelNodeOptions node_options(Terminal& t) {
    ChannelNodeOptions o;
    o.clock = t.clock.get();
    o.seed = rng();  // a fresh GUID stream on every open: GUIDs are never reused
    o.hq = t.link.get();
    o.durability = Durability::normal;
    return o;
  }

  // ---- schedule steps ----

  void create(Terminal& t) {
    NewCustomer in;
    in.first_name = "F" + std::to_string(++counter);
    in.last_name = "L" + std::to_string(counter);
    if (rng() % 3 == 0) in.addresses.push_back({{}, "", "Street " + std::to_string(counter), "Town", "", "", "US"});
    auto out = t.node->create_customer(in);
    ASSERT_TRUE(out.ok()) << out.status().to_string();
    created[out->customer.guid] = {t.id, out->mode};
    t.known.push_back(out->customer.guid);
    if (!t.async_mode && out->mode == CreationMode::async) ++fallbacks;
  }

  void edit(Terminal& t) {
    if (t.known.empty()) return create(t);
    const Guid g = t.known[rng() % t.known.size()];
    static constexpr Field kFields[] = {Field::last_name, Field::middle_name, Field::customer_group};
    const Field f = kFields[rng() % 3];
    const std::string value = (f == Field::customer_group ? "G" : "V") + std::to_string(++counter);
    auto r = t.node->edit_customer(g.to_string(), {{f, value}});
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }

  void add_address(Terminal& t) {
    if (t.known.empty()) return create(t);
    const Guid g = t.known[rng() % t.known.size()];
    auto r = t.node->add_address(g.to_string(), {{}, "", "Road " + std::to_string(++counter), "City", "", "", "DE"});
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }

  // One sync attempt. Success or hq_unreachable (a fault); anything else is a bug.
  bool sync(Terminal& t) {
    auto r = t.replicator->sync_once();
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::hq_unreachable) << t.id << ": " << r.status().to_string();
    }
    check_acked(t);
    if (r.ok()) {
      for (const Customer& c : t.node->search("").value()) {
        if (std::find(t.known.begin(), t.known.end(), c.guid) == t.known.end()) t.known.push_back(c.guid);
      }
    }
    return r.ok();
  }

  // Acknowledged means committed at HQ: HQ's received log holds the acked seq, and the
  // terminal's cursor never moves back (also across restarts).
  void check_acked(Terminal& t) {
    const std::int64_t acked = t.node->status()->acked_seq;
    EXPECT_GE(acked, t.acked_seen) << t.id << ": acknowledged cursor went back";
    t.acked_seen = std::max(t.acked_seen, acked);
    if (acked == 0) return;
    auto at_hq = hq->store().received(t.id, acked - 1, 1);
    ASSERT_TRUE(at_hq.ok()) << at_hq.status().to_string();
    ASSERT_EQ(at_hq->size(), 1u) << t.id << ": seq " << acked << " acknowledged but not at HQ";
    EXPECT_EQ((*at_hq)[0].seq, acked);
  }

  void run_job(std::size_t max_ops) {
    auto r = hq->run_sync_job(max_ops);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
  }

  void restart_terminal(Terminal& t) {
    t.replicator.reset();
    t.node.reset();
    auto node = ChannelNode::open(t.path, node_options(t));
    ASSERT_TRUE(node.ok()) << node.status().to_string();
    t.node = std::move(node).value();
    auto r = Replicator::open(t.path, *t.link, t.replicator_options);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    t.replicator = std::move(r).value();
    ++restarts;
  }

  void restart_hq() {
    hq.reset();
    auto h = Headquarters::open(hq_path, hq_options());
    ASSERT_TRUE(h.ok()) << h.status().to_string();
    hq = std::move(h).value();
    ++restarts;
  }

  // ---- end state ----

  void heal_and_settle() {
    for (auto& t : terminals) t.link->net = Net::up;
    // Push everything, convert everything, pull everything: twice, so conversions
    // triggered by the last pushes are distributed too.
    for (int round = 0; round < 2; ++round) {
      for (auto& t : terminals) ASSERT_TRUE(sync(t)) << t.id << " cannot sync after heal";
      run_job(1'000'000);
    }
    for (auto& t : terminals) ASSERT_TRUE(sync(t)) << t.id << " cannot sync after heal";
  }

  void check_invariants() {
    // Every node's log is at HQ exactly once, in the same order, fully acknowledged.
    std::set<Guid> all_ops;
    for (auto& t : terminals) {
      auto log = t.node->read_log(0, 1'000'000).value();
      auto received = hq->store().received(t.id, 0, 1'000'000).value();
      ASSERT_EQ(received.size(), log.size()) << t.id << ": HQ has a different number of operations";
      for (std::size_t i = 0; i < log.size(); ++i) {
        ASSERT_EQ(received[i].seq, log[i].seq) << t.id;
        ASSERT_EQ(received[i].op_id, log[i].op_id) << t.id << " seq " << log[i].seq;
        ASSERT_TRUE(all_ops.insert(log[i].op_id).second) << "op_id received twice";
      }
      auto st = t.node->status().value();
      EXPECT_EQ(st.acked_seq, st.last_seq) << t.id;
      EXPECT_EQ(st.pending_ops, 0) << t.id;
    }
    // Nothing lost, nothing doubled, everything has an account number.
    auto at_hq = hq->customers("").value();
    std::map<Guid, const Customer*> by_guid;
    for (const Customer& c : at_hq) {
      EXPECT_TRUE(by_guid.emplace(c.guid, &c).second) << "customer twice at HQ: " << c.guid.to_string();
      EXPECT_TRUE(c.synced()) << c.guid.to_string() << " has no account number";
    }
    EXPECT_EQ(at_hq.size(), created.size());
    for (const auto& [guid, origin] : created) {
      EXPECT_TRUE(by_guid.count(guid)) << "customer created on " << origin.first << " ("
                                       << to_string(origin.second) << ") lost: " << guid.to_string();
    }
    // Status view: converted rows name real customers; failures carry a reason.
    std::map<Guid, SyncStatusRecord> status;
    for (const auto& s : hq->sync_status(std::nullopt).value()) {
      if (s.status == SyncStatus::failed) {
        EXPECT_FALSE(s.last_error.empty()) << s.guid.to_string() << " failed without a reason";
      } else {
        EXPECT_EQ(s.status, SyncStatus::converted) << s.guid.to_string() << ": " << to_string(s.status);
      }
      if (s.status == SyncStatus::converted) {
        EXPECT_TRUE(s.account_number.has_value()) << s.guid.to_string();
        auto it = by_guid.find(s.guid);
        EXPECT_TRUE(it != by_guid.end() && it->second->account_number == s.account_number)
            << "status row " << s.guid.to_string() << " disagrees with the customer table";
      }
      status.emplace(s.guid, s);
    }
    for (const auto& [guid, origin] : created) {
      if (origin.second != CreationMode::async) continue;
      // An async creation whose RTS call had committed before the reply was lost is
      // already a (sync) customer at HQ; every other one has its status row.
      const bool rts_committed = !terminal(origin.first).async_mode;
      if (!rts_committed) {
        EXPECT_TRUE(status.count(guid)) << "async customer without a status row: " << guid.to_string();
      }
    }
    // Same content everywhere; terminals show account numbers.
    const auto digest = hq->digest().value();
    for (auto& t : terminals) {
      EXPECT_EQ(t.node->digest()->hex, digest.hex) << t.id;
      for (const Customer& c : t.node->search("").value()) {
        EXPECT_TRUE(c.synced()) << t.id << ": " << c.guid.to_string() << " still Pending sync";
      }
    }
  }

  Terminal& terminal(const std::string& id) {
    for (auto& t : terminals) {
      if (t.id == id) return t;
    }
    return terminals.front();
  }

  std::mt19937_64 rng;
  TempDir dir;
  ManualClock hq_clock;
  testing::HqLocation hq_path{dir};
  std::unique_ptr<Headquarters> hq;
  std::vector<Terminal> terminals;
  std::map<Guid, std::pair<std::string, CreationMode>> created;  // guid -> (node, mode)
  int counter = 0;
  int fallbacks = 0;
  int restarts = 0;
};

struct Totals {
  std::uint64_t customers = 0, fallbacks = 0, restarts = 0;
  std::uint64_t lost_requests = 0, lost_replies = 0, duplicated = 0;
};

void run_schedule(std::uint64_t seed, Totals& totals) {
  SCOPED_TRACE("partition seed " + std::to_string(seed) +
               " (re-run alone: TILLSYNC_PARTITION_SEED=" + std::to_string(seed) +
               " ctest --test-dir BUILD -R PartitionSimulation --output-on-failure)");
  Sim sim(seed);
  ASSERT_FALSE(sim.terminals.empty());
  const int steps = 40 + static_cast<int>(sim.rng() % 60);
  for (int i = 0; i < steps && !::testing::Test::HasFatalFailure(); ++i) {
    auto& t = sim.terminals[sim.rng() % sim.terminals.size()];
    t.clock->advance(static_cast<std::int64_t>(sim.rng() % 100));
    sim.hq_clock.advance(static_cast<std::int64_t>(sim.rng() % 50));
    const std::uint64_t roll = sim.rng() % 100;
    if (roll < 22) {
      sim.create(t);
    } else if (roll < 34) {
      sim.edit(t);
    } else if (roll < 40) {
      sim.add_address(t);
    } else if (roll < 62) {
      sim.sync(t);
    } else if (roll < 72) {
      sim.run_job(1 + sim.rng() % 8);
    } else if (roll < 88) {
      t.link->net = static_cast<Net>(sim.rng() % 4);  // partition, one-way, flaky or heal
    } else if (roll < 96) {
      sim.restart_terminal(t);
    } else {
      sim.restart_hq();
    }
  }
  if (::testing::Test::HasFatalFailure()) return;
  ASSERT_NO_FATAL_FAILURE(sim.heal_and_settle());
  sim.check_invariants();
  totals.customers += sim.created.size();
  totals.fallbacks += static_cast<std::uint64_t>(sim.fallbacks);
  totals.restarts += static_cast<std::uint64_t>(sim.restarts);
  for (auto& t : sim.terminals) {
    totals.lost_requests += t.link->lost_requests;
    totals.lost_replies += t.link->lost_replies;
    totals.duplicated += t.link->duplicated;
  }
}

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

TEST(PartitionSimulation, SeededFaultSchedulesLoseNothingAndDoubleNothing) {
  Totals totals;
  if (std::getenv("TILLSYNC_PARTITION_SEED") != nullptr) {
    run_schedule(env_number("TILLSYNC_PARTITION_SEED", 1), totals);
    return;
  }
  const std::uint64_t n = env_number("TILLSYNC_PARTITION_SEEDS", 150);
  std::uint64_t seed = 1;
  for (; seed <= n && !HasFailure(); ++seed) run_schedule(seed, totals);
  std::printf(
      "%llu seeded schedules: %llu customers, %llu sync creations fell back to async, "
      "%llu restarts, %llu requests lost, %llu replies lost after HQ handled them, %llu "
      "requests handled twice\n",
      static_cast<unsigned long long>(seed - 1), static_cast<unsigned long long>(totals.customers),
      static_cast<unsigned long long>(totals.fallbacks), static_cast<unsigned long long>(totals.restarts),
      static_cast<unsigned long long>(totals.lost_requests),
      static_cast<unsigned long long>(totals.lost_replies),
      static_cast<unsigned long long>(totals.duplicated));
  // The schedules must actually exercise the faults, or this test proves little.
  EXPECT_GT(totals.lost_replies, n);
  EXPECT_GT(totals.duplicated, n / 4);
  EXPECT_GT(totals.fallbacks, n / 10);
  EXPECT_GT(totals.restarts, n);
}

}  // namespace
}  // namespace tillsync
