// `tillsync netsim` end to end: HQ, the netsim in front of it and a terminal, all real
// processes of TILLSYNC_BIN on free loopback ports read back from "listening on" lines.
#include <signal.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/process.h"
#include "support/temp_dir.h"

namespace {

using nlohmann::json;
using tillsync::testing::Process;
using tillsync::testing::TempDir;

class NetsimCliTest : public ::testing::Test {
 protected:
  std::unique_ptr<Process> spawn(const std::vector<std::string>& args) {
    return std::make_unique<Process>(TILLSYNC_BIN, args, dir_.file("err-" + std::to_string(runs_++) + ".txt"));
  }
  std::pair<int, std::string> run(const std::vector<std::string>& args) {
    auto p = spawn(args);
    const int code = p->wait();
    return {code, p->out() + "\nstderr: " + p->err()};
  }
  // Starts a long-running command and returns the endpoint of its "listening on" line.
  std::string listening(Process& p) {
    auto line = p.read_line();
    EXPECT_TRUE(line.has_value()) << p.err();
    if (!line || line->rfind("listening on ", 0) != 0) {
      ADD_FAILURE() << line.value_or("<nothing>");
      return {};
    }
    return line->substr(13);
  }

  TempDir dir_;
  int runs_ = 0;
};

TEST_F(NetsimCliTest, TerminalReachesHqThroughNetsimWhichReportsItsCounters) {
  const std::string hq_db = dir_.file("hq.db"), t_db = dir_.file("t.db");
  ASSERT_EQ(run({"hq", "init", "--db", hq_db}).first, 0);
  auto hq = spawn({"hq", "serve", "--db", hq_db, "--listen", "tcp://127.0.0.1:*"});
  const std::string hq_endpoint = listening(*hq);
  ASSERT_FALSE(hq_endpoint.empty());
  auto net = spawn({"netsim", "--listen", "tcp://127.0.0.1:*", "--forward", hq_endpoint,
                    "--duplicate", "0.5", "--delay-ms", "0-5", "--seed", "3"});
  const std::string net_endpoint = listening(*net);
  ASSERT_FALSE(net_endpoint.empty());
  EXPECT_NE(net_endpoint, hq_endpoint);

  auto init = run({"store", "init", "--db", t_db, "--store", "S001", "--terminal", "T01", "--hq",
                   net_endpoint, "--json"});
  ASSERT_EQ(init.first, 0) << init.second;
  auto created = run({"store", "create-customer", "--db", t_db, "--first-name", "Net", "--last-name",
                      "Sim", "--json"});
  ASSERT_EQ(created.first, 0) << created.second;
  const json c = json::parse(created.second.substr(0, created.second.find("\nstderr: ")));
  EXPECT_EQ(c["mode"], "sync");  // answered through the netsim
  EXPECT_TRUE(c["account_number"].is_string());

  EXPECT_EQ(net->signal_and_wait(SIGTERM), 0) << net->err();
  EXPECT_NE(net->out().find("stopped: to HQ"), std::string::npos) << net->out();
  EXPECT_EQ(hq->signal_and_wait(SIGTERM), 0) << hq->err();
  // Duplicates are harmless: exactly one customer at HQ.
  auto customers = run({"hq", "customers", "--db", hq_db, "--json"});
  ASSERT_EQ(customers.first, 0);
  EXPECT_EQ(json::parse(customers.second.substr(0, customers.second.find("\nstderr: ")))["customers"].size(), 1u);
}

TEST_F(NetsimCliTest, BadOptionsAreUsageErrors) {
  EXPECT_EQ(run({"netsim", "--listen", "tcp://127.0.0.1:*"}).first, 2);  // --forward missing
  EXPECT_EQ(run({"netsim", "--listen", "tcp://127.0.0.1:*", "--forward", "tcp://127.0.0.1:1",
                 "--drop", "1.5"}).first, 2);
  EXPECT_EQ(run({"netsim", "--listen", "tcp://127.0.0.1:*", "--forward", "tcp://127.0.0.1:1",
                 "--delay-ms", "9-3"}).first, 2);
  EXPECT_EQ(run({"netsim", "--listen", "nowhere", "--forward", "tcp://127.0.0.1:1"}).first, 3);
  auto help = run({"netsim", "--help"});
  EXPECT_EQ(help.first, 0);
  for (const char* flag : {"--listen", "--forward", "--drop", "--duplicate", "--delay-ms", "--seed"}) {
    EXPECT_NE(help.second.find(flag), std::string::npos) << flag;
  }
}

}  // namespace
