// Several HQ processes on one PostgreSQL database (label pg).
//
// 200 terminals, spread over N `tillsync hq serve` processes (N = 1, 2, 4), push offline
// backlogs at once from several threads while every HQ process runs the customer sync
// job; then N `hq run-job` processes drain what is left, all at once. Then every
// terminal edits a customer of another store and the same happens again. Checked as
// in the partition harness: every operation staged once and applied once (inbound
// rows, feed entries, versions), every customer converted with a unique account
// number, every terminal's replica equal to HQ's, and the same customers whatever N.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "support/cluster.h"
#include "support/hq_backend.h"
#include "support/process.h"
#include "tillsync/storage/pg.h"

namespace tillsync {
namespace {

using testing::HqLocation;
using testing::Process;
using testing::TempDir;
using testing::Terminal;
using testing::terminal_config;

std::size_t env_size(const char* name, std::size_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// What one run leaves at HQ, without the account numbers (their order depends on
// which HQ process converted first).
struct Outcome {
  std::map<Guid, std::string> customers;  // guid -> name, e-mail, version
  std::size_t ops = 0;
};

class PgScaleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::testing_postgres()) GTEST_SKIP() << "runs only as the pg variant (TILLSYNC_TEST_BACKEND=postgresql)";
  }

  Outcome run(std::size_t hq_processes, std::size_t terminals, std::size_t creates_each) {
    SCOPED_TRACE(std::to_string(hq_processes) + " HQ processes, " + std::to_string(terminals) + " terminals");
    TempDir dir;
    HqLocation db(dir);
    Process init(TILLSYNC_BIN, {"hq", "init", "--db", db.str()}, dir.file("init.err"));
    EXPECT_EQ(init.wait(), 0) << init.err();

    std::vector<std::unique_ptr<Process>> hqs;
    std::vector<std::string> endpoints;
    for (std::size_t i = 0; i < hq_processes; ++i) {
      hqs.push_back(std::make_unique<Process>(
          TILLSYNC_BIN,
          std::vector<std::string>{"hq", "serve", "--db", db.str(), "--listen", "tcp://127.0.0.1:*",
                                   "--job-interval-ms", "5"},
          dir.file("hq" + std::to_string(i) + ".err")));
      auto line = hqs.back()->read_line();
      EXPECT_TRUE(line && line->starts_with("listening on ")) << hqs.back()->err();
      if (!line || !line->starts_with("listening on ")) return {};
      endpoints.push_back(line->substr(13));
    }

    // Terminal i talks to HQ process i % N; all create offline (async mode).
    std::vector<std::unique_ptr<Terminal>> ts;
    std::vector<std::vector<Guid>> own(terminals);
    std::size_t edits = 0;
    for (std::size_t i = 0; i < terminals; ++i) {
      char store[24], term[24];
      std::snprintf(store, sizeof store, "S%03zu", i / 4 + 1);
      std::snprintf(term, sizeof term, "T%02zu", i % 4 + 1);
      ts.push_back(std::make_unique<Terminal>(
          dir.file(std::string(store) + term + ".db"),
          terminal_config(store, term, endpoints[i % hq_processes], testing::kAsyncEverything, 10'000), 1000 + i));
      for (std::size_t k = 0; k < creates_each; ++k) {
        auto c = ts[i]->node().create_customer(
            testing::new_person("F" + std::to_string(i) + "x" + std::to_string(k), "Scale"));
        EXPECT_TRUE(c.ok()) << c.status().to_string();
        if (!c.ok()) return {};
        own[i].push_back(c->customer.guid);
      }
      // An edit of a customer still pending at HQ: it must follow its create.
      auto e = ts[i]->node().edit_customer(own[i][0].to_string(),
                                           {{Field::email, "own" + std::to_string(i) + "@example.com"}});
      EXPECT_TRUE(e.ok()) << e.status().to_string();
      ++edits;
    }

    push_and_drain(ts, db, dir, hq_processes);
    if (HasFailure()) return {};

    // Round two: every terminal edits a field of the first customer of the next store's
    // terminal (converted by another HQ process), while its owner edits another field
    // of it: two nodes' operations on one customer, in different HQ workers.
    for (std::size_t i = 0; i < terminals; ++i) {
      const std::size_t other = (i + 4) % terminals;
      auto e = ts[i]->node().edit_customer(own[other][0].to_string(),
                                           {{Field::phone, "+1555" + std::to_string(1000000 + i)}});
      EXPECT_TRUE(e.ok()) << e.status().to_string();
      auto o = ts[other]->node().edit_customer(own[other][0].to_string(),
                                               {{Field::title, "Dr" + std::to_string(i)}});
      EXPECT_TRUE(o.ok()) << o.status().to_string();
      edits += 2;
    }
    push_and_drain(ts, db, dir, hq_processes);
    if (HasFailure()) return {};

    for (auto& h : hqs) EXPECT_EQ(h->signal_and_wait(SIGTERM), 0) << h->err();

    // Exactly once, from the database itself.
    const std::size_t creates = terminals * creates_each;
    auto pg = storage::PgConnection::open(db.str());
    EXPECT_TRUE(pg.ok()) << pg.status().to_string();
    if (!pg.ok()) return {};
    auto count = [&](const char* sql) { return (*pg)->query_i64(sql).value().value_or(-1); };
    EXPECT_EQ(count("SELECT count(*)::bigint FROM inbound"), static_cast<std::int64_t>(creates + edits));
    EXPECT_EQ(count("SELECT count(*)::bigint FROM inbound WHERE state <> 'applied'"), 0);
    // Each create and each edit (all set new values) publishes exactly one feed entry.
    EXPECT_EQ(count("SELECT count(*)::bigint FROM feed"), static_cast<std::int64_t>(creates + edits));
    EXPECT_EQ(count("SELECT count(DISTINCT account_number)::bigint FROM customers"),
              static_cast<std::int64_t>(creates));
    EXPECT_EQ(count("SELECT count(*)::bigint FROM sync_status WHERE status <> 'converted'"), 0);
    EXPECT_EQ(count("SELECT count(*)::bigint FROM conflicts"), 0);

    auto hq = Headquarters::open(db.str());
    EXPECT_TRUE(hq.ok()) << hq.status().to_string();
    if (!hq.ok()) return {};
    const ContentDigest d = (*hq)->digest().value();
    EXPECT_EQ(d.customers, creates);
    for (auto& t : ts) EXPECT_EQ(t->node().digest()->hex, d.hex);

    Outcome out;
    out.ops = creates + edits;
    for (const Customer& c : (*hq)->customers("").value()) {
      out.customers[c.guid] = c.first_name + "|" + c.email + "|" + c.phone + "|" + c.title + "|v" +
                              std::to_string(c.version);
      EXPECT_TRUE(c.account_number.has_value());
    }
    return out;
  }

  // Every terminal pushes (threads, so HQ processes stage and apply at once), then N
  // `hq run-job` processes drain the staging area together, then every terminal pulls.
  void push_and_drain(std::vector<std::unique_ptr<Terminal>>& ts, const HqLocation& db, const TempDir& dir,
                      std::size_t hq_processes) {
    const std::size_t threads = std::max<std::size_t>(hq_processes, 4);
    std::vector<std::thread> pool;
    std::vector<std::string> errors(threads);
    for (std::size_t w = 0; w < threads; ++w) {
      pool.emplace_back([&, w] {
        for (std::size_t i = w; i < ts.size(); i += threads) {
          for (int attempt = 0;; ++attempt) {
            auto r = ts[i]->sync();
            if (r.ok() && r->pending_ops == 0) break;
            if (attempt == 50) {
              errors[w] = "terminal " + std::to_string(i) + " cannot push: " +
                          (r.ok() ? std::to_string(r->pending_ops) + " pending" : r.status().to_string());
              return;
            }
          }
        }
      });
    }
    for (auto& t : pool) t.join();
    for (const auto& e : errors) EXPECT_EQ(e, "");
    std::vector<std::unique_ptr<Process>> jobs;
    for (std::size_t i = 0; i < hq_processes; ++i) {
      jobs.push_back(std::make_unique<Process>(
          TILLSYNC_BIN, std::vector<std::string>{"hq", "run-job", "sync-customers", "--db", db.str()},
          dir.file("job" + std::to_string(i) + ".err")));
    }
    for (auto& j : jobs) EXPECT_EQ(j->wait(), 0) << j->err();
    // Every HQ job pass has finished and nothing is staged: pull everything.
    for (auto& t : ts) {
      auto r = t->sync();
      EXPECT_TRUE(r.ok()) << r.status().to_string();
    }
  }
};

TEST_F(PgScaleTest, OneTwoAndFourHqProcessesApplyEveryOperationOnceAndAgree) {
  const std::size_t terminals = env_size("TILLSYNC_SCALE_TERMINALS", 200);
  const std::size_t creates = env_size("TILLSYNC_SCALE_CREATES", 3);
  std::optional<Outcome> first;
  for (std::size_t n : {1u, 2u, 4u}) {
    Outcome o = run(n, terminals, creates);
    ASSERT_FALSE(HasFailure());
    EXPECT_EQ(o.customers.size(), terminals * creates);
    if (!first) {
      first = std::move(o);
      continue;
    }
    EXPECT_EQ(o.ops, first->ops);
    EXPECT_TRUE(o.customers == first->customers) << n << " HQ processes ended with other customers than 1";
  }
}

}  // namespace
}  // namespace tillsync
