// A small cluster for integration tests: one HQ serving on a real loopback socket in a
// background thread, and terminals (ChannelNode + HqClient + Replicator) talking to it.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "support/hq_backend.h"
#include "support/temp_dir.h"
#include "tillsync/channel_node.h"
#include "tillsync/hq_client.h"
#include "tillsync/hq_service.h"
#include "tillsync/replicator.h"
#include "tillsync/storage/database.h"

namespace tillsync::testing {

// HQ in a thread. Stopped (and joined) by stop() or the destructor.
class HqProcess {
 public:
  HqProcess(std::string db_path, HqServiceOptions options = {}) : db_(std::move(db_path)), options_(std::move(options)) {}
  ~HqProcess() { stop(); }

  // Creates the database on first use, binds (on `listen`, default any free port) and
  // starts serving.
  void start(const std::string& listen = "tcp://127.0.0.1:*") {
    auto hq = Headquarters::open(db_, hq_options_);
    if (!hq.ok() && (hq.status().code() == Code::not_found ||
                     hq.status().code() == Code::not_a_tillsync_database))
      hq = Headquarters::init(db_, "C", hq_options_);
    ASSERT_TRUE(hq.ok()) << hq.status().to_string();
    options_.listen = listen;
    auto svc = HqService::start(std::move(hq).value(), options_);
    ASSERT_TRUE(svc.ok()) << svc.status().to_string();
    service_ = std::move(svc).value();
    endpoint_ = service_->endpoint();
    thread_ = std::thread([this] { run_status_ = service_->run(); });
  }
  void stop() {
    if (!service_) return;
    service_->stop();
    thread_.join();
    EXPECT_TRUE(run_status_.ok()) << run_status_.to_string();
    last_stats_ = service_->stats();
    service_.reset();
  }
  // The service's counters as it stopped (read once its thread has ended).
  const HqServiceStats& service_stats() const { return last_stats_; }
  bool running() const { return service_ != nullptr; }
  HqService& service() { return *service_; }
  const std::string& endpoint() const { return endpoint_; }
  const std::string& db() const { return db_; }
  HqServiceOptions& options() { return options_; }
  HqOptions& hq_options() { return hq_options_; }

  // A separate connection to the HQ database, for inspection while it serves.
  std::unique_ptr<Headquarters> inspect() {
    auto hq = Headquarters::open(db_, {.clock = hq_options_.clock});
    EXPECT_TRUE(hq.ok()) << hq.status().to_string();
    return hq.ok() ? std::move(hq).value() : nullptr;
  }

 private:
  std::string db_;
  HqServiceOptions options_;
  HqOptions hq_options_;
  std::unique_ptr<HqService> service_;
  HqServiceStats last_stats_;
  std::thread thread_;
  Status run_status_;
  std::string endpoint_;
};

// A terminal: its node, a connection to HQ and a replicator on the same database.
class Terminal {
 public:
  Terminal(const std::string& db_path, NodeConfig config, std::uint64_t seed,
           PhysicalClock* clock = nullptr)
      : db_(db_path), seed_(seed), clock_(clock) {
    ChannelNodeOptions o;
    o.seed = seed;
    o.clock = clock;
    auto node = ChannelNode::create(db_path, config, o);
    EXPECT_TRUE(node.ok()) << node.status().to_string();
    node_ = std::move(node).value();
    connect();
  }

  // Simulates a till restart: drops every object and opens the database again.
  void restart() {
    replicator_.reset();
    node_.reset();
    client_.reset();
    ChannelNodeOptions o;
    o.seed = seed_ + 1000;
    o.clock = clock_;
    auto node = ChannelNode::open(db_, o);
    ASSERT_TRUE(node.ok()) << node.status().to_string();
    node_ = std::move(node).value();
    connect();
  }

  // The till's disk replaced by a backup taken with backup_to(): every object is
  // dropped, the files are replaced, and the database is opened again.
  void restore_from(const std::string& backup) {
    replicator_.reset();
    node_.reset();
    client_.reset();
    for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(db_ + suffix);
    std::filesystem::copy_file(backup, db_, std::filesystem::copy_options::overwrite_existing);
    restart();
  }
  // A consistent copy of the terminal's database (SQLite VACUUM INTO), as a nightly
  // backup takes it while the till runs.
  void backup_to(const std::string& file) {
    auto db = storage::Database::open(db_, {});
    ASSERT_TRUE(db.ok()) << db.status().to_string();
    std::filesystem::remove(file);
    Status s = (*db)->exec("VACUUM INTO '" + file + "'");
    ASSERT_TRUE(s.ok()) << s.to_string();
  }

  ChannelNode& node() { return *node_; }
  Result<SyncReport> sync() { return replicator_->sync_once(); }
  Replicator& replicator() { return *replicator_; }

 private:
  void connect() {
    if (node_->config().hq_endpoint) {
      auto keys = load_curve_keys(node_->config());
      ASSERT_TRUE(keys.ok()) << keys.status().to_string();
      auto c = HqClient::connect(*node_->config().hq_endpoint, node_->config().rts_timeout_ms, *keys);
      ASSERT_TRUE(c.ok()) << c.status().to_string();
      client_ = std::move(c).value();
      node_->attach_hq(client_.get());
      auto r = Replicator::open(db_, *client_, {.clock = clock_});
      ASSERT_TRUE(r.ok()) << r.status().to_string();
      replicator_ = std::move(r).value();
    }
  }

  std::string db_;
  std::uint64_t seed_;
  PhysicalClock* clock_;
  std::unique_ptr<HqClient> client_;
  std::unique_ptr<ChannelNode> node_;
  std::unique_ptr<Replicator> replicator_;
};

// Creations, addresses and edits all asynchronous (written to the log, replicated).
inline constexpr FunctionalityProfile kAsyncEverything{.async_customer_creation = true,
                                                       .async_customer_addresses = true,
                                                       .async_customer_edits = true};

inline NodeConfig terminal_config(const std::string& store, const std::string& terminal,
                                  const std::string& hq, FunctionalityProfile profile = {},
                                  int timeout_ms = 2000) {
  NodeConfig c;
  c.store_id = store;
  c.terminal_id = terminal;
  c.hq_endpoint = hq;
  c.rts_timeout_ms = timeout_ms;
  c.profile = profile;
  return c;
}

// A valid person customer with the store defaults' values, for tests that build what a
// terminal (or a hostile one) sends without going through a ChannelNode.
inline Customer plain_customer(const Guid& guid, const std::string& first, const std::string& last) {
  Customer c;
  c.guid = guid;
  c.first_name = first;
  c.last_name = last;
  c.language = "en-us";
  c.currency = "USD";
  c.customer_group = "RETAIL";
  c.receipt_option = "print";
  return c;
}

inline NewCustomer new_person(const std::string& first, const std::string& last) {
  NewCustomer n;
  n.first_name = first;
  n.last_name = last;
  return n;
}

}  // namespace tillsync::testing
