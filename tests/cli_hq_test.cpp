// End-to-end tests of `tillsync hq ...`, store commands against a live `hq serve`,
// `store sync` and `tillsync demo`: they run the real binary (TILLSYNC_BIN), HQ as a
// child process on a free loopback port read back from its "listening on" line.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/hq_backend.h"
#include "support/temp_dir.h"
#include "tillsync/capture.h"
#include "tillsync/headquarters.h"
#include "tillsync/operations.h"

extern char** environ;

namespace {

using nlohmann::json;
using tillsync::testing::TempDir;
using Clock = std::chrono::steady_clock;

// Generous bounds for a loaded machine; reached only when something is broken.
constexpr int kStartTimeoutMs = 30'000;
constexpr int kExitTimeoutMs = 30'000;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// A tillsync process: stdout through a pipe (read by the test), stderr into a file,
// stdin from /dev/null. Killed (SIGKILL) and reaped by the destructor if still running.
class Child {
 public:
  Child(const std::vector<std::string>& args, std::string err_path) : err_path_(std::move(err_path)) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    std::vector<std::string> storage;
    storage.emplace_back(TILLSYNC_BIN);
    storage.insert(storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& s : storage) argv.push_back(s.data());
    argv.push_back(nullptr);
    int rc = ::posix_spawn(&pid_, TILLSYNC_BIN, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      throw std::runtime_error(std::string("posix_spawn failed: ") + std::strerror(rc));
    }
    out_fd_ = fds[0];
  }
  ~Child() {
    if (pid_ > 0 && exit_ < 0) {
      ::kill(pid_, SIGKILL);
      int wstatus = 0;
      while (::waitpid(pid_, &wstatus, 0) < 0 && errno == EINTR) {
      }
    }
    if (out_fd_ >= 0) ::close(out_fd_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  // The next line of stdout (without '\n'); nullopt at end of output or after the timeout.
  std::optional<std::string> read_line(int timeout_ms = kStartTimeoutMs) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        all_out_ += line + "\n";
        return line;
      }
      if (!fill(remaining_ms(deadline))) return std::nullopt;
    }
  }

  // Sends `sig` and waits for the exit; returns the exit code (128+N for a signal, -1
  // when it did not exit in time).
  void signal(int sig) { ::kill(pid_, sig); }
  int signal_and_wait(int sig) {
    ::kill(pid_, sig);
    return wait();
  }

  // Reads stdout to its end and reaps the process.
  int wait(int timeout_ms = kExitTimeoutMs) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (fill(remaining_ms(deadline))) {
    }
    if (remaining_ms(deadline) == 0) return -1;  // the destructor kills it
    all_out_ += buffer_;
    buffer_.clear();
    int wstatus = 0;
    while (::waitpid(pid_, &wstatus, 0) < 0 && errno == EINTR) {
    }
    exit_ = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    return exit_;
  }

  const std::string& out() const { return all_out_; }
  std::string err() const { return read_file(err_path_); }

 private:
  // Appends what arrives within `timeout_ms`; false at end of file or timeout.
  bool fill(int timeout_ms) {
    if (out_fd_ < 0) return false;
    pollfd p{out_fd_, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) return true;
    if (r <= 0) return false;
    char buf[4096];
    ssize_t n = ::read(out_fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) return true;
    if (n <= 0) {
      ::close(out_fd_);
      out_fd_ = -1;
      return false;
    }
    buffer_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  int exit_ = -1;
  std::string err_path_;
  std::string buffer_;
  std::string all_out_;
};

struct RunResult {
  int exit = -1;
  std::string out;
  std::string err;
};

std::string describe(const RunResult& r) {
  return "exit " + std::to_string(r.exit) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

json parse_json(const RunResult& r) {
  try {
    return json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "stdout is not JSON (" << e.what() << ")\n" << describe(r);
    return json::object();
  }
}

bool is_account_number(const json& v, const std::string& prefix = "C") {
  return v.is_string() && std::regex_match(v.get<std::string>(), std::regex(prefix + "[0-9]{9}"));
}

class HqCliTest : public ::testing::Test {
 protected:
  std::string err_file() { return dir_.file("stderr-" + std::to_string(runs_++) + ".txt"); }

  RunResult run(const std::vector<std::string>& args) {
    Child child(args, err_file());
    RunResult r;
    r.exit = child.wait();
    r.out = child.out();
    r.err = child.err();
    return r;
  }

  json ok_json(std::vector<std::string> args) {
    args.emplace_back("--json");
    RunResult r = run(args);
    EXPECT_EQ(r.exit, 0) << describe(r);
    return parse_json(r);
  }

  json error_json(std::vector<std::string> args, int exit) {
    args.emplace_back("--json");
    RunResult r = run(args);
    EXPECT_EQ(r.exit, exit) << describe(r);
    json j = parse_json(r);
    EXPECT_TRUE(j.contains("error")) << describe(r);
    if (!j.contains("error")) return json::object();
    EXPECT_TRUE(j["error"]["code"].is_string());
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    return j["error"];
  }

  void init_hq(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"hq", "init", "--db", hq_db_};
    args.insert(args.end(), extra.begin(), extra.end());
    json j = ok_json(args);
    EXPECT_EQ(j["db"], hq_db_);
  }

  // Starts `hq serve` on a free port; its job is parked unless `job_interval_ms` says
  // otherwise, so the tests run the sync job explicitly.
  void start_hq(const std::string& job_interval_ms = "3600000",
                std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"hq", "serve", "--db", hq_db_, "--listen", "tcp://127.0.0.1:*",
                                  "--job-interval-ms", job_interval_ms};
    args.insert(args.end(), extra.begin(), extra.end());
    hq_ = std::make_unique<Child>(args, err_file());
    auto line = hq_->read_line();
    ASSERT_TRUE(line.has_value()) << "hq serve printed no line; stderr: " << hq_->err();
    const std::string prefix = "listening on ";
    ASSERT_EQ(line->rfind(prefix, 0), 0u) << *line;
    endpoint_ = line->substr(prefix.size());
    ASSERT_TRUE(std::regex_match(endpoint_, std::regex("tcp://127\\.0\\.0\\.1:[0-9]+")))
        << endpoint_;
    ASSERT_NE(endpoint_, "tcp://127.0.0.1:0");
  }

  // SIGTERM to hq serve: it must shut down cleanly with exit 0.
  void stop_hq() {
    ASSERT_TRUE(hq_);
    int code = hq_->signal_and_wait(SIGTERM);
    EXPECT_EQ(code, 0) << "stdout: " << hq_->out() << "\nstderr: " << hq_->err();
    EXPECT_NE(hq_->out().find("stopped"), std::string::npos) << hq_->out();
  }

  std::string terminal_db(const std::string& store) { return dir_.file(store + "-T01.db"); }

  json init_terminal(const std::string& store, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"store",   "init", "--db",       terminal_db(store),
                                     "--store", store,  "--terminal", "T01",
                                     "--hq",    endpoint_};
    args.insert(args.end(), extra.begin(), extra.end());
    return ok_json(args);
  }

  json create(const std::string& store, std::vector<std::string> extra) {
    std::vector<std::string> args = {"store", "create-customer", "--db", terminal_db(store)};
    args.insert(args.end(), extra.begin(), extra.end());
    return ok_json(args);
  }

  json sync(const std::string& store) {
    return ok_json({"store", "sync", "--db", terminal_db(store), "--once"});
  }

  json hq_records(const std::string& status = {}) {
    std::vector<std::string> args = {"hq", "sync-status", "--db", hq_db_};
    if (!status.empty()) {
      args.emplace_back("--status");
      args.push_back(status);
    }
    return ok_json(args)["records"];
  }

  json hq_customers(const std::string& search = {}) {
    std::vector<std::string> args = {"hq", "customers", "--db", hq_db_};
    if (!search.empty()) {
      args.emplace_back("--search");
      args.push_back(search);
    }
    return ok_json(args)["customers"];
  }
  // The account number HQ gave the customer with `guid` ("" when HQ has none).
  std::string hq_account_of(const std::string& guid) {
    for (const json& c : hq_customers())
      if (c["guid"] == guid && c["account_number"].is_string()) return c["account_number"];
    return {};
  }

  json run_job() { return ok_json({"hq", "run-job", "sync-customers", "--db", hq_db_}); }

  TempDir dir_;
  tillsync::testing::HqLocation hq_location_{dir_};  // a file, or a schema (pg variant)
  std::string hq_db_ = hq_location_.str();
  std::unique_ptr<Child> hq_;
  std::string endpoint_;
  int runs_ = 0;
};

// ---------------------------------------------------------------------------
// hq init / help / refusals

TEST_F(HqCliTest, HqHelpListsCommands) {
  RunResult top = run({"--help"});
  EXPECT_EQ(top.exit, 0) << describe(top);
  for (const char* cmd : {"hq", "store", "demo"}) EXPECT_NE(top.out.find(cmd), std::string::npos);
  RunResult hq = run({"hq", "--help"});
  EXPECT_EQ(hq.exit, 0) << describe(hq);
  for (const char* cmd : {"init", "serve", "run-job", "customers", "sync-status", "edit-customer",
                          "resync", "digest", "export-log", "terminals", "compact"}) {
    EXPECT_NE(hq.out.find(cmd), std::string::npos) << cmd;
  }
  RunResult serve = run({"hq", "serve", "--help"});
  EXPECT_EQ(serve.exit, 0) << describe(serve);
  for (const char* flag :
       {"--db", "--listen", "--job-interval-ms", "--conflict-policy", "--duplicates"}) {
    EXPECT_NE(serve.out.find(flag), std::string::npos) << flag;
  }
  RunResult sync = run({"store", "sync", "--help"});
  EXPECT_EQ(sync.exit, 0) << describe(sync);
  EXPECT_NE(sync.out.find("--interval-ms"), std::string::npos);
}

TEST_F(HqCliTest, HqInitTwiceFails) {
  ok_json({"hq", "init", "--db", hq_db_});
  json err = error_json({"hq", "init", "--db", hq_db_}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  // The first HQ is intact.
  EXPECT_EQ(ok_json({"hq", "digest", "--db", hq_db_})["customers"], 0);

  err = error_json({"hq", "init", "--db", dir_.file("other.db"), "--number-prefix", "c-1"}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"], "number-prefix");
}

TEST_F(HqCliTest, PostgresUrlsGiveClearErrorsWithoutThePassword) {
  // Nothing listens on loopback port 1: the connection is refused at once.
  RunResult r = run({"hq", "customers", "--db", "postgresql://tillsync:s3cret@127.0.0.1:1/hq"});
  EXPECT_EQ(r.exit, 1) << describe(r);
  EXPECT_NE(r.err.find("cannot connect to PostgreSQL"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("postgresql://tillsync@127.0.0.1:1/hq"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("s3cret"), std::string::npos) << r.err;
  if (tillsync::testing::testing_postgres()) {
    // A reachable database without an HQ in it.
    EXPECT_EQ(error_json({"hq", "serve", "--db", hq_db_, "--listen", "tcp://127.0.0.1:*"}, 3)["code"],
              "not_a_tillsync_database");
  }
}

// Issue 17, item 5: no form of a PostgreSQL password is printed, by init or serve or
// any other command; a keyword=value string is refused, never taken for a file name.
TEST_F(HqCliTest, NoFormOfAPostgresPasswordIsEverPrinted) {
  for (const std::string& url : {std::string("postgresql://till:s3cret@127.0.0.1:1/hq"),
                                 std::string("postgresql://till@127.0.0.1:1/hq?sslmode=disable&password=s3cret"),
                                 std::string("postgres://:s3cret@127.0.0.1:1/hq?PassWord=s3cret&sslpassword=s3cret")}) {
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"hq", "init", "--db", url}, {"hq", "serve", "--db", url, "--listen", "tcp://127.0.0.1:*"},
          {"hq", "customers", "--db", url, "--json"}}) {
      RunResult r = run(args);
      EXPECT_NE(r.exit, 0) << describe(r);
      EXPECT_EQ((r.out + r.err).find("s3cret"), std::string::npos) << describe(r);
    }
  }
  const std::string keywords = "host=127.0.0.1 port=1 dbname=hq password=s3cret";
  for (const char* cmd : {"init", "customers"}) {
    RunResult r = run({"hq", cmd, "--db", keywords, "--json"});
    EXPECT_EQ(r.exit, 3) << describe(r);
    EXPECT_NE(r.out.find("by URL"), std::string::npos) << describe(r);
    EXPECT_EQ((r.out + r.err).find("s3cret"), std::string::npos) << describe(r);
  }
  EXPECT_FALSE(std::filesystem::exists(keywords));
}

// Issue 17, item 4: without keys HQ listens on loopback only, unless told
// --insecure-plaintext; a plaintext terminal says so at every sync and in its status.
TEST_F(HqCliTest, PlaintextIsADecision) {
  init_hq();
  for (const char* endpoint : {"tcp://0.0.0.0:*", "tcp://*:*", "tcp://192.0.2.1:*", "tcp://eth0:*"}) {
    json e = error_json({"hq", "serve", "--db", hq_db_, "--listen", endpoint}, 3);
    EXPECT_EQ(e["code"], "invalid_input") << endpoint;
    EXPECT_NE(e["message"].get<std::string>().find("--insecure-plaintext"), std::string::npos) << e;
  }
  // With the flag the check is passed: binding an address this machine does not have
  // (TEST-NET-1) is what fails then; nothing listens beyond loopback.
  RunResult lab = run({"hq", "serve", "--db", hq_db_, "--listen", "tcp://192.0.2.1:*", "--insecure-plaintext"});
  EXPECT_NE(lab.exit, 0) << describe(lab);
  EXPECT_EQ(lab.err.find("--insecure-plaintext"), std::string::npos) << describe(lab);

  ASSERT_NO_FATAL_FAILURE(start_hq());  // tcp://127.0.0.1:*: loopback needs no flag
  init_terminal("S001");
  RunResult s = run({"store", "sync", "--db", terminal_db("S001"), "--once"});
  EXPECT_EQ(s.exit, 0) << describe(s);
  EXPECT_NE(s.err.find("PLAINTEXT"), std::string::npos) << describe(s);
  EXPECT_NE(s.out.find("(plaintext)"), std::string::npos) << describe(s);
  EXPECT_EQ(sync("S001")["encrypted"], false);
  RunResult status = run({"store", "status", "--db", terminal_db("S001")});
  EXPECT_NE(status.out.find("encryption:      NONE"), std::string::npos) << describe(status);
}

TEST_F(HqCliTest, HqCommandsRefuseNonTillsyncDatabase) {
  std::string notes = dir_.file("notes.txt");
  {
    std::ofstream f(notes);
    f << "not an HQ database, just notes from the back office\n";
  }
  EXPECT_EQ(error_json({"hq", "serve", "--db", notes, "--listen", "tcp://127.0.0.1:*"}, 3)["code"],
            "not_a_tillsync_database");
  EXPECT_EQ(error_json({"hq", "customers", "--db", notes}, 3)["code"], "not_a_tillsync_database");
  EXPECT_EQ(read_file(notes), "not an HQ database, just notes from the back office\n");

  // A terminal's database is not an HQ database either.
  ok_json({"store", "init", "--db", terminal_db("S001"), "--store", "S001", "--terminal", "T01"});
  EXPECT_EQ(
      error_json({"hq", "serve", "--db", terminal_db("S001"), "--listen", "tcp://127.0.0.1:*"}, 3)
          ["code"],
      "not_a_tillsync_database");
  // A missing one.
  EXPECT_EQ(error_json({"hq", "serve", "--db", dir_.file("missing.db"), "--listen",
                        "tcp://127.0.0.1:*"},
                       3)["code"],
            "not_found");
}

TEST_F(HqCliTest, HqServeRefusesBadOptions) {
  init_hq();
  EXPECT_EQ(run({"hq", "serve", "--db", hq_db_, "--listen", "tcp://127.0.0.1:*",
                 "--conflict-policy", "coin-toss"})
                .exit,
            2);
  EXPECT_EQ(run({"hq", "serve", "--db", hq_db_, "--listen", "tcp://127.0.0.1:*",
                 "--duplicates", "maybe"})
                .exit,
            2);
  EXPECT_EQ(error_json({"hq", "serve", "--db", hq_db_, "--listen", "127.0.0.1:5555"}, 3)["field"],
            "listen");
  EXPECT_EQ(run({"hq", "run-job", "reindex", "--db", hq_db_}).exit, 2);
  EXPECT_EQ(run({"hq", "sync-status", "--db", hq_db_, "--status", "lost"}).exit, 2);
  EXPECT_EQ(run({"hq", "resolve", "--db", hq_db_, "1", "--keep", "both"}).exit, 2);
  EXPECT_EQ(error_json({"hq", "resolve", "--db", hq_db_, "7", "--keep", "kept"}, 3)["code"],
            "not_found");
  EXPECT_EQ(ok_json({"hq", "conflicts", "--db", hq_db_})["conflicts"].size(), 0u);
}

TEST_F(HqCliTest, ManualConflictPolicyHoldsEditUntilResolved) {
  init_hq();
  start_hq("3600000", {"--conflict-policy", "manual"});
  init_terminal("S001", {"--async-edits"});
  init_terminal("S002", {"--async-edits"});
  json c = create("S001", {"--first-name", "Ada", "--last-name", "Lovelace"});
  const std::string account = c["account_number"];
  sync("S002");  // S002 learns the customer
  ok_json({"store", "edit-customer", "--db", terminal_db("S001"), account, "--set",
           "email=one@example.com", "--offline"});
  ok_json({"store", "edit-customer", "--db", terminal_db("S002"), account, "--set",
           "email=two@example.com", "--offline"});
  sync("S001");
  run_job();
  sync("S002");
  run_job();
  json conflicts = ok_json({"hq", "conflicts", "--db", hq_db_})["conflicts"];
  ASSERT_EQ(conflicts.size(), 1u) << conflicts;
  EXPECT_EQ(conflicts[0]["status"], "open");
  EXPECT_EQ(conflicts[0]["field"], "email");
  EXPECT_EQ(conflicts[0]["kept"], "one@example.com");
  EXPECT_EQ(conflicts[0]["lost"], "two@example.com");
  EXPECT_EQ(conflicts[0]["policy"], "manual");
  EXPECT_EQ(hq_records("conflict").size(), 1u);

  json resolved = ok_json({"hq", "resolve", "--db", hq_db_,
                           std::to_string(conflicts[0]["id"].get<std::int64_t>()), "--keep", "lost"});
  EXPECT_EQ(resolved["status"], "resolved");
  EXPECT_EQ(resolved["kept"], "two@example.com");
  sync("S001");
  sync("S002");
  EXPECT_EQ(ok_json({"store", "show", "--db", terminal_db("S001"), account})["email"],
            "two@example.com");
  EXPECT_EQ(ok_json({"store", "digest", "--db", terminal_db("S001")}),
            ok_json({"hq", "digest", "--db", hq_db_}));
  EXPECT_EQ(ok_json({"store", "digest", "--db", terminal_db("S002")}),
            ok_json({"hq", "digest", "--db", hq_db_}));
  EXPECT_EQ(hq_records("conflict").size(), 0u);
  stop_hq();
}

// ---------------------------------------------------------------------------
// Terminals against a live `hq serve`

TEST_F(HqCliTest, SyncModeCreateGetsAccountNumberAtOnce) {
  init_hq({"--number-prefix", "K"});
  start_hq();
  init_terminal("S001");
  json c = create("S001", {"--first-name", "Ada", "--last-name", "Lovelace", "--email",
                           "ada@example.com"});
  EXPECT_EQ(c["mode"], "sync");
  EXPECT_FALSE(c.contains("fallback_reason")) << c;
  EXPECT_TRUE(is_account_number(c["account_number"], "K")) << c;
  EXPECT_EQ(c["account_id"], c["account_number"]);
  EXPECT_EQ(c["sync_state"], "synced");

  // D1: searchable through HQ immediately, with the terminal's GUID.
  json found = hq_customers("LOVELACE");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0]["guid"], c["guid"]);
  EXPECT_EQ(found[0]["account_id"], c["account_number"]);

  // Other real-time calls of a sync-mode terminal (D7, D10): through HQ.
  json carded = ok_json({"store", "issue-loyalty-card", "--db", terminal_db("S001"),
                         c["account_number"]});
  ASSERT_EQ(carded["loyalty_cards"].size(), 1u) << carded;
  EXPECT_TRUE(carded.contains("issued_card"));
  json addressed = ok_json({"store", "add-address", "--db", terminal_db("S001"), c["guid"],
                            "--address", "12 St James's Sq;London;;SW1Y 4LB;GB"});
  ASSERT_EQ(addressed["addresses"].size(), 1u);
  EXPECT_EQ(hq_customers("LOVELACE")[0]["addresses"].size(), 1u);
  EXPECT_EQ(error_json({"store", "add-address", "--db", terminal_db("S001"), c["guid"],
                        "--address", "1 Dock Rd;London;;E1 1AA;GB", "--offline"},
                       4)["code"],
            "hq_unreachable");

  // --offline: the manual switch; HQ is not contacted and the customer waits.
  json offline = create("S001", {"--first-name", "Alan", "--last-name", "Turing", "--offline"});
  EXPECT_EQ(offline["mode"], "async");
  EXPECT_EQ(offline["account_id"], "Pending sync");
  EXPECT_NE(offline["fallback_reason"].get<std::string>().find("offline"), std::string::npos);
  EXPECT_EQ(hq_customers().size(), 1u);

  // The sync-mode terminal's offline customer converges through sync + job. Its three
  // real-time writes are in its log too (a new HQ database would get them back); HQ
  // knows their request ids and applies none of them twice.
  EXPECT_EQ(sync("S001")["pushed"], 4);
  EXPECT_EQ(run_job()["converted"], 1);
  sync("S001");
  json shown = ok_json({"store", "show", "--db", terminal_db("S001"), offline["guid"]});
  EXPECT_TRUE(is_account_number(shown["account_number"], "K")) << shown;
  stop_hq();
}

TEST_F(HqCliTest, AsyncCustomerConvertsThroughSyncAndJob) {
  init_hq();
  start_hq();
  init_terminal("S001");
  init_terminal("S002", {"--async-mode"});
  json ada = create("S001", {"--first-name", "Ada", "--last-name", "Lovelace"});
  ASSERT_EQ(ada["mode"], "sync");

  json grace = create("S002", {"--first-name", "Grace", "--last-name", "Hopper", "--email",
                               "grace@example.com"});
  EXPECT_EQ(grace["mode"], "async");
  EXPECT_EQ(grace["account_id"], "Pending sync");
  const std::string guid = grace["guid"];

  json pushed = sync("S002");
  EXPECT_EQ(pushed["pushed"], 1);
  EXPECT_EQ(pushed["pending_ops"], 0);
  EXPECT_GE(pushed["pulled"].get<int>(), 1);  // Ada, from store S001
  json pending = hq_records("pending");
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0]["guid"], guid);
  EXPECT_EQ(pending[0]["node"], "S002/T01");
  EXPECT_TRUE(pending[0]["account_number"].is_null());
  for (const char* key : {"status", "last_error", "created_at", "updated_at"}) {
    EXPECT_TRUE(pending[0].contains(key)) << key;
  }
  EXPECT_EQ(ok_json({"store", "show", "--db", terminal_db("S002"), guid})["account_id"],
            "Pending sync");

  json job = run_job();
  EXPECT_EQ(job["converted"], 1);
  EXPECT_EQ(job["applied"], 1);
  EXPECT_EQ(job["failed"], 0);
  EXPECT_EQ(job["remaining"], 0);

  json pulled = sync("S002");
  EXPECT_EQ(pulled["pushed"], 0);
  EXPECT_GE(pulled["pulled"].get<int>(), 1);
  json shown = ok_json({"store", "show", "--db", terminal_db("S002"), guid});
  EXPECT_TRUE(is_account_number(shown["account_id"])) << shown;
  EXPECT_EQ(shown["sync_state"], "synced");
  // The account number also works as the ID now.
  EXPECT_EQ(ok_json({"store", "show", "--db", terminal_db("S002"), shown["account_number"]})["guid"],
            guid);

  json converted = hq_records("converted");
  ASSERT_EQ(converted.size(), 1u);
  EXPECT_EQ(converted[0]["account_number"], shown["account_number"]);
  EXPECT_TRUE(hq_records("failed").empty());
  json found = hq_customers("grace@EXAMPLE");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0]["account_id"], shown["account_number"]);
  EXPECT_EQ(hq_customers().size(), 2u);

  // Human output for an operator.
  RunResult table = run({"hq", "sync-status", "--db", hq_db_});
  EXPECT_EQ(table.exit, 0) << describe(table);
  EXPECT_NE(table.out.find("converted"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("S002/T01"), std::string::npos) << table.out;

  // Everyone converges.
  sync("S001");
  json hq_digest = ok_json({"hq", "digest", "--db", hq_db_});
  EXPECT_EQ(hq_digest["customers"], 2);
  EXPECT_EQ(ok_json({"store", "digest", "--db", terminal_db("S001")}), hq_digest);
  EXPECT_EQ(ok_json({"store", "digest", "--db", terminal_db("S002")}), hq_digest);
  stop_hq();
}

TEST_F(HqCliTest, BackOfficeEditReachesTerminals) {
  init_hq();
  start_hq();
  init_terminal("S001");
  json c = create("S001", {"--first-name", "Ada", "--last-name", "Lovelace"});
  const std::string account = c["account_number"];

  json edited = ok_json({"hq", "edit-customer", "--db", hq_db_, account, "--set",
                         "email=ada@lovelace.example", "--set", "phone=+44 20 7946 0000"});
  EXPECT_EQ(edited["account_id"], account);
  EXPECT_EQ(edited["email"], "ada@lovelace.example");

  sync("S001");
  json shown = ok_json({"store", "show", "--db", terminal_db("S001"), account});
  EXPECT_EQ(shown["email"], "ada@lovelace.example");
  EXPECT_EQ(shown["phone"], "+44 20 7946 0000");
  EXPECT_EQ(ok_json({"store", "digest", "--db", terminal_db("S001")}),
            ok_json({"hq", "digest", "--db", hq_db_}));

  // Refusals: unknown customer, bad value, bad --set.
  EXPECT_EQ(
      error_json({"hq", "edit-customer", "--db", hq_db_, "C999999999", "--set", "title=Dr"}, 3)
          ["code"],
      "not_found");
  json err = error_json({"hq", "edit-customer", "--db", hq_db_, account, "--set", "email=nope"}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"], "email");
  EXPECT_EQ(
      error_json({"hq", "edit-customer", "--db", hq_db_, account, "--set", "shoe_size=44"}, 3)
          ["field"],
      "shoe_size");
  EXPECT_EQ(ok_json({"hq", "customers", "--db", hq_db_})["customers"][0]["email"],
            "ada@lovelace.example");
  stop_hq();
}

TEST_F(HqCliTest, ExportLogWritesWhatHqReceived) {
  init_hq();
  start_hq();
  init_terminal("S002", {"--async-mode", "--async-edits"});
  std::string guid = create("S002", {"--first-name", "Grace", "--last-name", "Hopper"})["guid"];
  create("S002", {"--org-name", "Contoso Ltd"});
  ok_json({"store", "edit-customer", "--db", terminal_db("S002"), guid, "--set", "phone=555 0100"});
  EXPECT_EQ(sync("S002")["pushed"], 3);

  std::string out = dir_.file("S002-at-hq.tslog");
  json j = ok_json({"hq", "export-log", "--db", hq_db_, "--node", "S002/T01", "--out", out});
  EXPECT_EQ(j["records"], 3);
  EXPECT_EQ(j["node"], "S002/T01");
  EXPECT_EQ(j["first_seq"], 1);
  EXPECT_EQ(j["last_seq"], 3);

  auto reader = tillsync::CaptureReader::open(out);
  ASSERT_TRUE(reader.ok()) << reader.status().to_string();
  EXPECT_EQ(reader->header().node_id, "S002/T01");
  EXPECT_EQ(reader->header().first_seq, 1);
  std::int64_t expected_seq = 1;
  for (;;) {
    auto rec = reader->next();
    ASSERT_TRUE(rec.ok()) << rec.status().to_string();
    if (!rec->has_value()) break;
    EXPECT_EQ((*rec)->seq, expected_seq++);
    EXPECT_EQ((*rec)->node_id, "S002/T01");
    EXPECT_TRUE(tillsync::decode_payload((*rec)->kind, (*rec)->payload).ok());
  }
  EXPECT_EQ(expected_seq, 4);

  // The terminal's own export holds the same records.
  std::string own = dir_.file("S002-own.tslog");
  ok_json({"store", "export-log", "--db", terminal_db("S002"), "--out", own});
  EXPECT_EQ(read_file(own).size(), read_file(out).size());

  std::string none = dir_.file("none.tslog");
  EXPECT_EQ(error_json({"hq", "export-log", "--db", hq_db_, "--node", "S404/T01", "--out", none},
                       3)["code"],
            "not_found");
  EXPECT_FALSE(std::filesystem::exists(none));
  EXPECT_EQ(error_json({"hq", "export-log", "--db", hq_db_, "--node", "S002", "--out", none}, 3)
                ["field"],
            "node");
  stop_hq();
}

// Issue 18, item 2: `hq compact` deletes applied operations past the retention (never
// the one at the terminal's cursor); `hq terminals` and `hq export-log` say from which
// seq HQ still holds the terminal's log.
TEST_F(HqCliTest, CompactDeletesAppliedOperationsAndExportLogSaysWhatHqStillHolds) {
  init_hq();
  start_hq();
  init_terminal("S002", {"--async-mode", "--async-edits"});
  std::string guid = create("S002", {"--first-name", "Grace", "--last-name", "Hopper"})["guid"];
  create("S002", {"--org-name", "Contoso Ltd"});
  ok_json({"store", "edit-customer", "--db", terminal_db("S002"), guid, "--set", "phone=555 0100"});
  EXPECT_EQ(sync("S002")["pushed"], 3);
  stop_hq();
  ok_json({"hq", "run-job", "sync-customers", "--db", hq_db_});

  EXPECT_EQ(ok_json({"hq", "compact", "--db", hq_db_})["received_removed"], 0);  // within 30 days
  json c = ok_json({"hq", "compact", "--db", hq_db_, "--received-retention-days", "0"});
  EXPECT_EQ(c["received_removed"], 2);
  json t = ok_json({"hq", "terminals", "--db", hq_db_});
  ASSERT_EQ(t["terminals"].size(), 1u);
  EXPECT_EQ(t["terminals"][0]["pruned_through"], 2);

  std::string out = dir_.file("S002-pruned.tslog");
  json j = ok_json({"hq", "export-log", "--db", hq_db_, "--node", "S002/T01", "--out", out});
  EXPECT_EQ(j["records"], 1);
  EXPECT_EQ(j["first_seq"], 3);
  EXPECT_EQ(j["pruned_through"], 2);
  RunResult human = run({"hq", "export-log", "--db", hq_db_, "--node", "S002/T01", "--out", out});
  EXPECT_NE(human.out.find("HQ holds seqs 3-3"), std::string::npos) << describe(human);
}

// Issue 18, item 5, from the command line: `hq erase-customer` by account number, the
// terminal drops its copy at its next sync, and no file the commands wrote (HQ's
// database on SQLite, the till's, a capture exported afterwards) holds the erased
// name, e-mail or phone.
TEST_F(HqCliTest, EraseCustomerLeavesNoTraceInTheFilesTheCommandsWrote) {
  init_hq();
  start_hq();
  init_terminal("S002", {"--async-mode", "--async-edits"});
  const std::vector<std::string> erased_values{"Erasmina", "Forgettable", "erasmina@example.net", "5550142424"};
  std::string guid = create("S002", {"--first-name", "Erasmina", "--last-name", "Forgettable", "--email",
                                     "erasmina@example.net", "--phone", "+15550142424"})["guid"];
  std::string other = create("S002", {"--first-name", "Kept", "--last-name", "Around"})["guid"];
  sync("S002");
  run_job();
  sync("S002");
  const std::string account = hq_account_of(guid);
  ASSERT_TRUE(is_account_number(account)) << hq_customers().dump();

  json e = ok_json({"hq", "erase-customer", "--db", hq_db_, account});
  EXPECT_EQ(e["guid"], guid);
  EXPECT_EQ(e["account_number"], account);
  EXPECT_EQ(e["already_erased"], false);
  EXPECT_EQ(e["customer_deleted"], true);
  EXPECT_GE(e["received_redacted"], 1);
  EXPECT_GE(e["feed_redacted"], 1);
  RunResult again = run({"hq", "erase-customer", "--db", hq_db_, guid});
  EXPECT_EQ(again.exit, 0) << describe(again);
  EXPECT_NE(again.out.find("was erased before"), std::string::npos) << describe(again);
  EXPECT_EQ(error_json({"hq", "erase-customer", "--db", hq_db_, "C999999999"}, 3)["code"], "not_found");
  EXPECT_EQ(run({"hq", "erase-customer", "--db", hq_db_}).exit, 2);

  sync("S002");
  EXPECT_EQ(run({"store", "show", "--db", terminal_db("S002"), guid}).exit, 3);
  EXPECT_EQ(run({"store", "show", "--db", terminal_db("S002"), other}).exit, 0);
  ok_json({"store", "export-log", "--db", terminal_db("S002"), "--out", dir_.file("till.tslog")});
  ok_json({"hq", "export-log", "--db", hq_db_, "--node", "S002/T01", "--out", dir_.file("hq.tslog")});
  stop_hq();
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_.path())) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (const std::string& v : erased_values)
      EXPECT_EQ(bytes.find(v), std::string::npos) << entry.path().filename() << " holds " << v;
  }
}

// Issue 18, item 6, from the command line: `hq merge-customers KEEP DROP`, journaled
// in `hq merges`; DROP's account number names KEEP afterwards; the terminal shows KEEP
// under DROP's GUID and account number after its next sync.
TEST_F(HqCliTest, MergeCustomersMakesTheDroppedCustomerANameOfTheKeptOne) {
  init_hq();
  start_hq();
  init_terminal("S002", {"--async-mode", "--async-edits"});
  std::string keep = create("S002", {"--first-name", "Grace", "--last-name", "Hopper", "--email", "grace@example.org"})["guid"];
  std::string drop = create("S002", {"--first-name", "Grace", "--last-name", "B. Hopper", "--phone", "+1 555 0100"})["guid"];
  sync("S002");
  run_job();
  sync("S002");
  const std::string keep_account = hq_account_of(keep), drop_account = hq_account_of(drop);
  ASSERT_TRUE(is_account_number(keep_account) && is_account_number(drop_account));
  EXPECT_EQ(run({"hq", "merge-customers", "--db", hq_db_, keep_account}).exit, 2);
  EXPECT_EQ(error_json({"hq", "merge-customers", "--db", hq_db_, keep_account, keep}, 3)["code"], "invalid_input");
  EXPECT_EQ(error_json({"hq", "merge-customers", "--db", hq_db_, keep_account, "C999999999"}, 3)["code"], "not_found");

  json m = ok_json({"hq", "merge-customers", "--db", hq_db_, keep_account, drop_account});
  EXPECT_EQ(m["customer"]["guid"], keep);
  EXPECT_EQ(m["customer"]["phone"], "+1 555 0100");  // filled from DROP
  EXPECT_EQ(m["dropped_guid"], drop);
  EXPECT_EQ(m["dropped_account"], drop_account);
  json journal = ok_json({"hq", "merges", "--db", hq_db_});
  ASSERT_EQ(journal["merges"].size(), 1u);
  EXPECT_EQ(journal["merges"][0]["kept_account"], keep_account);
  EXPECT_EQ(journal["merges"][0]["dropped_account"], drop_account);
  // DROP's account number names KEEP at HQ.
  json edited = ok_json({"hq", "edit-customer", "--db", hq_db_, drop_account, "--set", "title=Rear Admiral"});
  EXPECT_EQ(edited["guid"], keep);
  EXPECT_EQ(hq_customers().size(), 1u);

  sync("S002");
  json shown = ok_json({"store", "show", "--db", terminal_db("S002"), drop});
  EXPECT_EQ(shown["guid"], keep);
  EXPECT_EQ(shown["title"], "Rear Admiral");
  // DROP's account number (the customer's old card) names KEEP at the till too.
  json by_account = ok_json({"store", "show", "--db", terminal_db("S002"), drop_account});
  EXPECT_EQ(by_account["guid"], keep);
  EXPECT_EQ(by_account["account_number"], keep_account);
}

TEST_F(HqCliTest, StoppedHqMeansHqUnreachable) {
  init_hq();
  start_hq();
  // A timeout long enough for a loaded machine (sanitizers, PostgreSQL) while HQ runs;
  // once HQ is stopped each command waits it out once.
  init_terminal("S001", {"--rts-timeout-ms", "2000"});
  create("S001", {"--first-name", "Ada", "--last-name", "Lovelace"});
  sync("S001");
  stop_hq();

  // D4: sync-mode creation falls back to async when HQ does not answer.
  json c = create("S001", {"--first-name", "Alan", "--last-name", "Turing"});
  EXPECT_EQ(c["mode"], "async");
  EXPECT_EQ(c["account_id"], "Pending sync");
  EXPECT_TRUE(c.contains("fallback_reason"));

  json err = error_json({"store", "sync", "--db", terminal_db("S001"), "--once"}, 4);
  EXPECT_EQ(err["code"], "hq_unreachable");
  EXPECT_NE(err["message"].get<std::string>().find(endpoint_), std::string::npos) << err;
  json status = ok_json({"store", "status", "--db", terminal_db("S001")});
  EXPECT_EQ(status["online"], false);
  EXPECT_EQ(status["pending_ops"], 1);
  EXPECT_FALSE(status["last_error"].is_null());

  // Synced-customer edits need HQ (D8 without async edits).
  std::string account = ok_json({"store", "customers", "--db", terminal_db("S001"), "--search",
                                 "Lovelace"})["customers"][0]["account_number"];
  EXPECT_EQ(error_json({"store", "edit-customer", "--db", terminal_db("S001"), account, "--set",
                        "title=Countess"},
                       4)["code"],
            "hq_unreachable");

  // HQ serves again from the same database (on a new port): a new terminal works.
  start_hq();
  init_terminal("S003");
  EXPECT_EQ(create("S003", {"--org-name", "Contoso Ltd"})["mode"], "sync");
  stop_hq();
}

// Issue 15: the till's disk restored from a backup, tried as a new user would. HQ ends
// with 9 customers, the till too, none Pending sync; `store status` tells what the till
// did by itself.
TEST_F(HqCliTest, TillRestoredFromItsNightlyBackupLosesNoCustomer) {
  init_hq();
  start_hq();
  init_terminal("S001", {"--async-mode"});
  const std::string db = terminal_db("S001");
  auto create_n = [&](int from, int to) {
    for (int i = from; i <= to; ++i) create("S001", {"--first-name", "P" + std::to_string(i), "--last-name", "Restore"});
  };
  create_n(1, 3);
  sync("S001");
  run_job();
  EXPECT_EQ(hq_customers().size(), 3u);
  // The nightly backup: the file alone (each command checkpoints its WAL on close).
  std::filesystem::copy_file(db, dir_.file("backup.db"));
  create_n(4, 5);
  sync("S001");
  run_job();
  EXPECT_EQ(hq_customers().size(), 5u);
  for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(db + suffix);
  std::filesystem::copy_file(dir_.file("backup.db"), db, std::filesystem::copy_options::overwrite_existing);
  create_n(6, 9);
  sync("S001");
  run_job();
  json last = sync("S001");
  EXPECT_EQ(last["pending_ops"], 0);
  EXPECT_EQ(hq_customers().size(), 9u);
  json mine = ok_json({"store", "customers", "--db", db})["customers"];
  EXPECT_EQ(mine.size(), 9u);
  for (const json& c : mine) EXPECT_NE(c["account_id"], "Pending sync") << c.dump();
  json status = ok_json({"store", "status", "--db", db});
  EXPECT_TRUE(status["last_recovery"].is_string()) << status.dump();
  EXPECT_EQ(run_job()["applied"], 0);  // nothing left, nothing applied twice
  // HQ's view of the till: it holds its log up to the renumbered last seq.
  json terminals = ok_json({"hq", "terminals", "--db", hq_db_})["terminals"];
  ASSERT_EQ(terminals.size(), 1u) << terminals.dump();
  EXPECT_EQ(terminals[0]["node"], "S001/T01");
  EXPECT_EQ(terminals[0]["push_cursor"], status["last_seq"]);
  EXPECT_EQ(terminals[0]["clock_ahead_ms"], 0);
  stop_hq();
}

TEST_F(HqCliTest, ServeJobConvertsContinuously) {
  init_hq();
  start_hq("20");
  init_terminal("S002", {"--async-mode"});
  std::string guid = create("S002", {"--first-name", "Grace", "--last-name", "Hopper"})["guid"];
  EXPECT_EQ(sync("S002")["pushed"], 1);
  // No `hq run-job`: the service converts on its own. Poll the status view (each poll is
  // a full command run), bounded by a generous deadline.
  const auto deadline = Clock::now() + std::chrono::milliseconds(kExitTimeoutMs);
  json converted = json::array();
  while (converted.empty() && Clock::now() < deadline) converted = hq_records("converted");
  ASSERT_EQ(converted.size(), 1u);
  EXPECT_EQ(converted[0]["guid"], guid);
  sync("S002");
  EXPECT_EQ(ok_json({"store", "show", "--db", terminal_db("S002"), guid})["account_number"],
            converted[0]["account_number"]);
  stop_hq();
}

TEST_F(HqCliTest, SyncWatchReplicatesUntilSigterm) {
  init_hq();
  start_hq();
  // Nothing is down here: a long timeout, so that the first round is the push on any
  // machine, not a timeout.
  init_terminal("S002", {"--async-mode", "--rts-timeout-ms", "10000"});
  create("S002", {"--first-name", "Grace", "--last-name", "Hopper"});

  {
    Child watch({"store", "sync", "--db", terminal_db("S002"), "--watch", "--interval-ms", "20",
                 "--json"},
                err_file());
    auto line = watch.read_line();
    ASSERT_TRUE(line.has_value()) << watch.err();
    json event = json::parse(*line);
    EXPECT_EQ(event["pushed"], 1) << event;
    EXPECT_EQ(event["pending_ops"], 0) << event;
    EXPECT_TRUE(event.contains("time"));
    EXPECT_EQ(watch.signal_and_wait(SIGTERM), 0) << watch.err();
  }
  EXPECT_EQ(hq_records("pending").size(), 1u);
  stop_hq();

  // HQ gone: --watch reports the failure once and keeps going until stopped.
  Child watch({"store", "sync", "--db", terminal_db("S002"), "--watch", "--interval-ms", "20",
               "--json"},
              err_file());
  auto line = watch.read_line();
  ASSERT_TRUE(line.has_value()) << watch.err();
  json event = json::parse(*line);
  EXPECT_EQ(event["error"]["code"], "hq_unreachable") << event;
  EXPECT_EQ(watch.signal_and_wait(SIGINT), 0) << watch.err();
}

TEST_F(HqCliTest, SyncWithoutHqConfiguredExitsFour) {
  ok_json({"store", "init", "--db", terminal_db("S001"), "--store", "S001", "--terminal", "T01"});
  json err = error_json({"store", "sync", "--db", terminal_db("S001"), "--watch"}, 4);
  EXPECT_EQ(err["code"], "hq_unreachable");
  EXPECT_NE(err["message"].get<std::string>().find("no HQ"), std::string::npos) << err;
  EXPECT_EQ(run({"store", "sync", "--db", terminal_db("S001"), "--interval-ms", "5"}).exit, 2);
}

// ---------------------------------------------------------------------------
// hq resync: a record that failed conversion is fixed and retried.

TEST_F(HqCliTest, ResyncFixesFailedRecord) {
  init_hq();
  // A terminal of an older release uploaded a customer whose e-mail HQ refuses.
  tillsync::Customer bad;
  bad.guid = *tillsync::Guid::parse("3f2b8c1e-5d4a-4c3b-9a8e-1f2d3c4b5a69");
  bad.first_name = "Grace";
  bad.last_name = "Hopper";
  bad.email = "grace at example";
  tillsync::LogRecord rec;
  rec.seq = 1;
  rec.op_id = *tillsync::Guid::parse("00000000-0000-4000-8000-000000000001");
  rec.entity = bad.guid;
  rec.kind = tillsync::OpKind::customer_create;
  rec.hlc = tillsync::Hlc::make(1'700'000'000'000, 0);
  rec.node_id = "S009/T01";
  rec.payload = tillsync::encode_payload(tillsync::CustomerCreated{bad});
  {
    auto hq = tillsync::Headquarters::open(hq_db_);
    ASSERT_TRUE(hq.ok()) << hq.status().to_string();
    auto pushed = (*hq)->push("S009/T01", rec.seq - 1, tillsync::Guid{}, {rec});
    ASSERT_TRUE(pushed.ok()) << pushed.status().to_string();
  }
  json job = run_job();
  EXPECT_EQ(job["failed"], 1);
  EXPECT_EQ(job["converted"], 0);
  json failed = hq_records("failed");
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0]["guid"], "3f2b8c1e-5d4a-4c3b-9a8e-1f2d3c4b5a69");
  EXPECT_NE(failed[0]["last_error"].get<std::string>().find("email"), std::string::npos)
      << failed[0];

  EXPECT_EQ(error_json({"hq", "resync", "--db", hq_db_, "not-a-guid"}, 3)["field"], "guid");
  EXPECT_EQ(error_json({"hq", "resync", "--db", hq_db_, "00000000-0000-4000-8000-0000000000ff"}, 3)
                ["code"],
            "not_found");

  json fixed = ok_json({"hq", "resync", "--db", hq_db_, "3f2b8c1e-5d4a-4c3b-9a8e-1f2d3c4b5a69",
                        "--set", "email=grace@example.com"});
  EXPECT_EQ(fixed["converted"], 1);
  EXPECT_EQ(fixed["failed"], 0);
  EXPECT_EQ(fixed["record"]["status"], "converted");
  EXPECT_TRUE(is_account_number(fixed["record"]["account_number"])) << fixed;
  EXPECT_TRUE(hq_records("failed").empty());
  json found = hq_customers("Hopper");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0]["email"], "grace@example.com");
}

// ---------------------------------------------------------------------------
// demo

TEST_F(HqCliTest, DemoJsonConverges) {
  std::string dir = dir_.file("demo");
  json j = ok_json({"demo", "--dir", dir});
  EXPECT_EQ(j["converged"], true);
  EXPECT_EQ(j["customers"], 5);
  ASSERT_EQ(j["terminal_digests"].size(), 2u);
  for (const json& d : j["terminal_digests"]) EXPECT_EQ(d, j["hq_digest"]);
  EXPECT_EQ(j["dir"], dir);
  // The databases are kept and usable with the ordinary commands.
  EXPECT_EQ(ok_json({"hq", "digest", "--db", dir + "/hq.db"})["digest"], j["hq_digest"]);
  json converted = ok_json({"hq", "sync-status", "--db", dir + "/hq.db", "--status",
                            "converted"})["records"];
  EXPECT_EQ(converted.size(), 3u);

  // The same directory again: refused, nothing overwritten.
  EXPECT_EQ(error_json({"demo", "--dir", dir}, 3)["field"], "dir");
}

TEST_F(HqCliTest, DemoNarratesForStoreIt) {
  RunResult r = run({"demo", "--dir", dir_.file("demo-human")});
  ASSERT_EQ(r.exit, 0) << describe(r);
  for (const char* text : {"Step 1.", "Pending sync", "sync mode", "All three are equal",
                           "tillsync hq customers --db"}) {
    EXPECT_NE(r.out.find(text), std::string::npos) << text << "\n" << r.out;
  }
  EXPECT_TRUE(r.err.empty()) << r.err;
}

// ---------------------------------------------------------------------------
// CurveZMQ: keygen, hq serve --keys --allowlist, store init --keys --hq-public-key

TEST_F(HqCliTest, CurveKeysAllowlistAndRevocationBySighup) {
  const std::string hq_keys = dir_.file("hq-keys"), t_keys = dir_.file("t01-keys"),
                    rogue_keys = dir_.file("rogue-keys");
  json k = ok_json({"keygen", "--out", hq_keys});
  EXPECT_EQ(k["public_key"].get<std::string>().size(), 40u);
  EXPECT_EQ(std::filesystem::status(hq_keys + "/secret.key").permissions() &
                std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_EQ(error_json({"keygen", "--out", hq_keys}, 3)["code"], "invalid_input");  // no overwrite
  const std::string t_pub = ok_json({"keygen", "--out", t_keys})["public_key"];
  ok_json({"keygen", "--out", rogue_keys});
  const std::string allowlist = dir_.file("allowlist");
  std::ofstream(allowlist) << "# admitted terminals\nS001/T01 " << t_pub << "\n";

  init_hq();
  ASSERT_NO_FATAL_FAILURE(start_hq("3600000", {"--keys", hq_keys, "--allowlist", allowlist}));
  const std::string hq_pub = hq_keys + "/public.key";
  init_terminal("S001", {"--keys", t_keys, "--hq-public-key", hq_pub, "--rts-timeout-ms", "1000"});
  json c = create("S001", {"--first-name", "Ada", "--last-name", "Lovelace"});
  EXPECT_EQ(c["mode"], "sync");
  EXPECT_TRUE(is_account_number(c["account_number"]));
  EXPECT_EQ(sync("S001")["pending_ops"], 0);
  RunResult human = run({"store", "sync", "--db", terminal_db("S001"), "--once"});
  EXPECT_EQ(human.exit, 0) << describe(human);
  EXPECT_EQ(human.err.find("PLAINTEXT"), std::string::npos) << describe(human);
  EXPECT_EQ(sync("S001")["encrypted"], true);

  // A terminal whose key is not on the allowlist: HQ unreachable, nothing written.
  init_terminal("S002", {"--keys", rogue_keys, "--hq-public-key", hq_pub, "--rts-timeout-ms", "300"});
  EXPECT_EQ(create("S002", {"--first-name", "Rogue", "--last-name", "Device"})["mode"], "async");
  EXPECT_EQ(error_json({"store", "sync", "--db", terminal_db("S002"), "--once"}, 4)["code"],
            "hq_unreachable");
  // Keys given by halves are refused at init.
  EXPECT_EQ(error_json({"store", "init", "--db", dir_.file("half.db"), "--store", "S003",
                        "--terminal", "T01", "--hq", endpoint_, "--keys", t_keys},
                       3)["code"],
            "invalid_input");

  // Revocation: empty the allowlist, SIGHUP; S001 is locked out without a restart.
  std::ofstream(allowlist, std::ios::trunc) << "# nobody\n";
  hq_->signal(SIGHUP);
  int exit = 0;
  for (int i = 0; i < 20 && exit != 4; ++i) {
    exit = run({"store", "sync", "--db", terminal_db("S001"), "--once", "--json"}).exit;
  }
  EXPECT_EQ(exit, 4);
  EXPECT_EQ(hq_customers().size(), 1u);
  stop_hq();
  EXPECT_EQ(hq_->err().find("PLAINTEXT"), std::string::npos) << hq_->err();
  EXPECT_NE(hq_->err().find("allowlist reloaded"), std::string::npos) << hq_->err();
}

TEST_F(HqCliTest, ServeWithoutKeysWarnsAboutPlaintext) {
  init_hq();
  ASSERT_NO_FATAL_FAILURE(start_hq());
  stop_hq();
  EXPECT_NE(hq_->err().find("PLAINTEXT"), std::string::npos) << hq_->err();
}

}  // namespace
