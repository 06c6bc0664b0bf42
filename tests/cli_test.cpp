// End-to-end tests of the `tillsync store ...` command line: they run the real binary
// (TILLSYNC_BIN) and check its stdout, stderr and exit code against DESIGN.md §5.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/temp_dir.h"
#include "tillsync/capture.h"
#include "tillsync/channel_node.h"
#include "tillsync/headquarters.h"
#include "tillsync/local_hq_link.h"
#include "tillsync/replicator.h"
#include "tillsync/transport/socket.h"

extern char** environ;

namespace {

using nlohmann::json;
using tillsync::testing::TempDir;

struct RunResult {
  int exit = -1;
  std::string out;
  std::string err;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs the tillsync binary with `args`; stdout through a pipe, stderr into a file (so
// neither can fill up and block the child), stdin from /dev/null.
RunResult run_tillsync(const std::vector<std::string>& args, const std::string& err_path) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);

  std::vector<std::string> storage;
  storage.reserve(args.size() + 1);
  storage.emplace_back(TILLSYNC_BIN);
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);

  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, TILLSYNC_BIN, &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    throw std::runtime_error(std::string("posix_spawn failed: ") + std::strerror(rc));
  }
  RunResult result;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) {
      result.out.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fds[0]);
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  result.exit = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
  result.err = read_file(err_path);
  return result;
}

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

std::size_t count_lines(const std::string& s) {
  std::size_t n = 0;
  for (char c : s) n += (c == '\n') ? 1 : 0;
  return n;
}

class CliTest : public ::testing::Test {
 protected:
  RunResult run(std::vector<std::string> args) {
    return run_tillsync(args, dir_.file("stderr-" + std::to_string(runs_++) + ".txt"));
  }

  // Runs a command expected to succeed with --json and returns its JSON.
  json ok_json(std::vector<std::string> args) {
    args.emplace_back("--json");
    RunResult r = run(args);
    EXPECT_EQ(r.exit, 0) << describe(r);
    return parse_json(r);
  }

  // Runs a command expected to fail with `exit` and returns its error object.
  json error_json(std::vector<std::string> args, int exit) {
    args.emplace_back("--json");
    RunResult r = run(args);
    EXPECT_EQ(r.exit, exit) << describe(r);
    json j = parse_json(r);
    EXPECT_TRUE(j.contains("error")) << describe(r);
    if (!j.contains("error")) return json::object();
    EXPECT_TRUE(j["error"]["code"].is_string());
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    return j["error"];
  }

  json init(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"store",   "init", "--db",       db_,
                                     "--store", "S001", "--terminal", "T01"};
    args.insert(args.end(), extra.begin(), extra.end());
    return ok_json(args);
  }

  json create(std::vector<std::string> extra) {
    std::vector<std::string> args = {"store", "create-customer", "--db", db_};
    args.insert(args.end(), extra.begin(), extra.end());
    return ok_json(args);
  }

  json create_person(const std::string& first = "Alice", const std::string& last = "Smith") {
    return create({"--first-name", first, "--last-name", last});
  }

  json customers(const std::string& search = {}) {
    std::vector<std::string> args = {"store", "customers", "--db", db_};
    if (!search.empty()) {
      args.emplace_back("--search");
      args.push_back(search);
    }
    return ok_json(args)["customers"];
  }

  json status() { return ok_json({"store", "status", "--db", db_}); }
  json digest() { return ok_json({"store", "digest", "--db", db_}); }

  TempDir dir_;
  std::string db_ = dir_.file("terminal.db");
  int runs_ = 0;
};

void expect_pending_customer(const json& c) {
  EXPECT_EQ(c["account_id"], "Pending sync");
  EXPECT_TRUE(c["account_number"].is_null());
  EXPECT_EQ(c["sync_state"], "pending");
  ASSERT_TRUE(c["guid"].is_string());
  EXPECT_EQ(c["guid"].get<std::string>().size(), 36u);
  EXPECT_NE(c["account_id"], c["guid"]);  // D3
}

// ---------------------------------------------------------------------------
// Help and usage errors

TEST_F(CliTest, CliHelpExitsZeroAndExplainsCommands) {
  RunResult top = run({"--help"});
  EXPECT_EQ(top.exit, 0) << describe(top);
  EXPECT_NE(top.out.find("store"), std::string::npos);
  EXPECT_NE(top.out.find("--json"), std::string::npos);

  RunResult store = run({"store", "--help"});
  EXPECT_EQ(store.exit, 0) << describe(store);
  for (const char* cmd :
       {"init", "create-customer", "edit-customer", "add-address", "issue-loyalty-card",
        "customers", "show", "status", "set-log-retention", "digest", "export-log", "sync"}) {
    EXPECT_NE(store.out.find(cmd), std::string::npos) << cmd;
  }

  RunResult create = run({"store", "create-customer", "--help"});
  EXPECT_EQ(create.exit, 0) << describe(create);
  for (const char* flag : {"--db", "--first-name", "--last-name", "--org-name", "--email",
                           "--phone", "--title", "--affiliation", "--secondary-email",
                           "--secondary-phone", "--address", "--offline", "--json"}) {
    EXPECT_NE(create.out.find(flag), std::string::npos) << flag;
  }
  RunResult init = run({"store", "init", "--help"});
  EXPECT_EQ(init.exit, 0) << describe(init);
  for (const char* flag :
       {"--store", "--terminal", "--hq", "--async-mode", "--filter-shared-customer-tables",
        "--enhanced-async", "--async-addresses", "--async-edits", "--rts-timeout-ms",
        "--default-customer-group", "--default-affiliation"}) {
    EXPECT_NE(init.out.find(flag), std::string::npos) << flag;
  }
}

TEST_F(CliTest, CliUsageErrorsExitTwo) {
  init();
  // Missing --db.
  RunResult no_db = run({"store", "status"});
  EXPECT_EQ(no_db.exit, 2) << describe(no_db);
  EXPECT_TRUE(no_db.out.empty());
  EXPECT_EQ(count_lines(no_db.err), 1u) << no_db.err;
  EXPECT_EQ(no_db.err.rfind("tillsync: error: ", 0), 0u) << no_db.err;
  EXPECT_NE(no_db.err.find("--db"), std::string::npos) << no_db.err;

  // Unknown flag.
  EXPECT_EQ(run({"store", "status", "--db", db_, "--bogus"}).exit, 2);
  // No command at all, unknown command.
  EXPECT_EQ(run({}).exit, 2);
  EXPECT_EQ(run({"store"}).exit, 2);
  EXPECT_EQ(run({"store", "frobnicate"}).exit, 2);
  // Neither a person's name nor an organization name.
  EXPECT_EQ(run({"store", "create-customer", "--db", db_, "--email", "a@b.com"}).exit, 2);
  // Both forms of name.
  EXPECT_EQ(run({"store", "create-customer", "--db", db_, "--first-name", "A", "--last-name", "B",
                 "--org-name", "Acme"})
                .exit,
            2);
  // Missing ID / --set.
  EXPECT_EQ(run({"store", "show", "--db", db_}).exit, 2);
  EXPECT_EQ(run({"store", "edit-customer", "--db", db_, "some-id"}).exit, 2);
  // --once and --watch together.
  EXPECT_EQ(run({"store", "sync", "--db", db_, "--once", "--watch"}).exit, 2);
  // Nothing was created by any of these.
  EXPECT_TRUE(customers().empty());
}

TEST_F(CliTest, CliUsageErrorUnderJsonPrintsUsageCode) {
  json err = error_json({"store", "status"}, 2);
  EXPECT_EQ(err["code"], "usage");
  err = error_json({"store", "status", "--db", db_, "--unknown-flag"}, 2);
  EXPECT_EQ(err["code"], "usage");
}

TEST_F(CliTest, CliJsonAcceptedAnywhere) {
  init();
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--json", "store", "status", "--db", db_},
        std::vector<std::string>{"store", "--json", "status", "--db", db_},
        std::vector<std::string>{"store", "status", "--json", "--db", db_},
        std::vector<std::string>{"store", "status", "--db", db_, "--json"}}) {
    RunResult r = run(args);
    EXPECT_EQ(r.exit, 0) << describe(r);
    json j = parse_json(r);
    EXPECT_EQ(j["node"], "S001/T01");
  }
}

// ---------------------------------------------------------------------------
// init

TEST_F(CliTest, CliInitPrintsStatus) {
  json j = init({"--hq", "tcp://127.0.0.1:5555", "--rts-timeout-ms", "1500"});
  EXPECT_EQ(j["node"], "S001/T01");
  EXPECT_EQ(j["online"], false);
  EXPECT_EQ(j["pending_ops"], 0);
  EXPECT_EQ(j["acked_seq"], 0);
  EXPECT_EQ(j["pulled_seq"], 0);
  EXPECT_TRUE(j["last_sync_at"].is_null());
  EXPECT_TRUE(j["last_error"].is_null());

  // The configuration is kept in the database.
  json s = status();
  EXPECT_EQ(s["node"], "S001/T01");
  EXPECT_EQ(s["hq"], "tcp://127.0.0.1:5555");
  EXPECT_EQ(s["rts_timeout_ms"], 1500);
}

TEST_F(CliTest, CliInitHumanOutputNamesTerminal) {
  RunResult r = run({"store", "init", "--db", db_, "--store", "S001", "--terminal", "T01"});
  EXPECT_EQ(r.exit, 0) << describe(r);
  EXPECT_NE(r.out.find("S001/T01"), std::string::npos) << r.out;
  EXPECT_TRUE(r.err.empty()) << r.err;
}

TEST_F(CliTest, CliInitRejectsBadIdentifiers) {
  json err = error_json({"store", "init", "--db", db_, "--store", "S/01", "--terminal", "T01"}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"], "store");
  err = error_json(
      {"store", "init", "--db", db_, "--store", "S001", "--terminal", std::string(33, 'T')}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"], "terminal");
  err = error_json({"store", "init", "--db", db_, "--store", "", "--terminal", "T01"}, 3);
  EXPECT_EQ(err["field"], "store");
  err = error_json({"store", "init", "--db", db_, "--store", "S001", "--terminal", "T01", "--hq",
                    "hq.example.com"},
                   3);
  EXPECT_EQ(err["field"], "hq");
  // Nothing was created: the database does not exist.
  EXPECT_EQ(error_json({"store", "status", "--db", db_}, 3)["code"], "not_found");
}

TEST_F(CliTest, CliInitRejectsBadOptionValues) {
  EXPECT_EQ(run({"store", "init", "--db", db_, "--store", "S001", "--terminal", "T01",
                 "--rts-timeout-ms", "0"})
                .exit,
            2);
  EXPECT_EQ(run({"store", "init", "--db", db_, "--store", "S001", "--terminal", "T01",
                 "--default-customer-type", "robot"})
                .exit,
            2);
  json err = error_json({"store", "init", "--db", db_, "--store", "S001", "--terminal", "T01",
                         "--default-receipt-email", "not-an-email"},
                        3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"], "default-receipt-email");
}

TEST_F(CliTest, CliInitTwiceFails) {
  init();
  json err = error_json({"store", "init", "--db", db_, "--store", "S002", "--terminal", "T09"}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(status()["node"], "S001/T01");
}

// ---------------------------------------------------------------------------
// create-customer

TEST_F(CliTest, CliD4CreatePersonWithoutHqFallsBackToAsync) {
  init();
  json c = create({"--first-name", "Alice", "--middle-name", "B", "--last-name", "Smith", "--email",
                   "alice@example.com", "--phone", "+1 555-0100"});
  expect_pending_customer(c);
  EXPECT_EQ(c["mode"], "async");
  ASSERT_TRUE(c.contains("fallback_reason"));
  EXPECT_FALSE(c["fallback_reason"].get<std::string>().empty());
  EXPECT_EQ(c["type"], "person");
  EXPECT_EQ(c["first_name"], "Alice");
  EXPECT_EQ(c["middle_name"], "B");
  EXPECT_EQ(c["last_name"], "Smith");
  EXPECT_EQ(c["org_name"], "");
  EXPECT_EQ(c["email"], "alice@example.com");
  EXPECT_EQ(c["phone"], "+1 555-0100");
  for (const char* key : {"title", "language", "currency", "customer_group", "receipt_option",
                          "receipt_email", "version"}) {
    EXPECT_TRUE(c.contains(key)) << key;
  }
  EXPECT_TRUE(c["addresses"].is_array());
  EXPECT_TRUE(c["contacts"].is_array());
  EXPECT_TRUE(c["affiliations"].is_array());
  ASSERT_TRUE(c["loyalty_cards"].is_array());
  EXPECT_TRUE(c["loyalty_cards"].empty());
}

TEST_F(CliTest, CliD1AsyncModeCreatesWithoutFallbackReason) {
  init({"--async-mode"});
  json c = create_person();
  expect_pending_customer(c);
  EXPECT_EQ(c["mode"], "async");
  EXPECT_FALSE(c.contains("fallback_reason"));
}

TEST_F(CliTest, CliCreateOrganizationWithBusinessAddress) {
  init({"--async-mode"});
  json c = create({"--org-name", "Contoso Ltd", "--address", "1 Main St;Springfield;IL;62701;US"});
  expect_pending_customer(c);
  EXPECT_EQ(c["type"], "organization");
  EXPECT_EQ(c["org_name"], "Contoso Ltd");
  ASSERT_EQ(c["addresses"].size(), 1u);
  const json& a = c["addresses"][0];
  EXPECT_EQ(a["purpose"], "business");  // D11
  EXPECT_EQ(a["street"], "1 Main St");
  EXPECT_EQ(a["city"], "Springfield");
  EXPECT_EQ(a["state"], "IL");
  EXPECT_EQ(a["zip"], "62701");
  EXPECT_EQ(a["country"], "US");
  EXPECT_EQ(a["guid"].get<std::string>().size(), 36u);
}

TEST_F(CliTest, CliD11DefaultCustomerIsCopied) {
  init({"--async-mode", "--enhanced-async", "--default-customer-group", "VIP", "--default-currency",
        "EUR", "--default-language", "fr-fr", "--default-receipt-option", "email",
        "--default-receipt-email", "receipts@example.com", "--default-affiliation", "Staff"});
  json c = create(
      {"--first-name", "Jean", "--last-name", "Dupont", "--address", "2 Rue X;Paris;;75001;FR"});
  EXPECT_EQ(c["customer_group"], "VIP");
  EXPECT_EQ(c["currency"], "EUR");
  EXPECT_EQ(c["language"], "fr-fr");
  EXPECT_EQ(c["receipt_option"], "email");
  EXPECT_EQ(c["receipt_email"], "receipts@example.com");
  EXPECT_EQ(c["affiliations"], json::array({"Staff"}));
  ASSERT_EQ(c["addresses"].size(), 1u);
  EXPECT_EQ(c["addresses"][0]["purpose"], "home");

  // Values given at creation win over the template.
  json own =
      create({"--first-name", "Ana", "--last-name", "Lopez", "--currency", "USD", "--receipt-email",
              "ana@example.com", "--address", "3 Calle Y;Madrid;;28001;ES;delivery"});
  EXPECT_EQ(own["currency"], "USD");
  EXPECT_EQ(own["receipt_email"], "ana@example.com");
  EXPECT_EQ(own["customer_group"], "VIP");
  EXPECT_EQ(own["addresses"][0]["purpose"], "delivery");
}

TEST_F(CliTest, CliD9EnhancedFieldsCaptured) {
  init({"--async-mode", "--enhanced-async"});
  json c = create({"--first-name", "Alice", "--last-name", "Smith", "--title", "Dr.",
                   "--affiliation", "Staff", "--affiliation", "Senior", "--secondary-email",
                   "alice.work@example.com", "--secondary-phone", "555 0101"});
  EXPECT_EQ(c["title"], "Dr.");
  EXPECT_EQ(c["affiliations"].size(), 2u);
  ASSERT_EQ(c["contacts"].size(), 2u);
  std::vector<std::string> kinds;
  for (const json& ct : c["contacts"]) {
    kinds.push_back(ct["kind"].get<std::string>());
    EXPECT_EQ(ct["guid"].get<std::string>().size(), 36u);
  }
  std::sort(kinds.begin(), kinds.end());
  EXPECT_EQ(kinds, (std::vector<std::string>{"email", "phone"}));
}

TEST_F(CliTest, CliD9EnhancedFieldsRejectedWhenFeatureOff) {
  init({"--async-mode"});
  json err = error_json({"store", "create-customer", "--db", db_, "--first-name", "A",
                         "--last-name", "B", "--title", "Dr."},
                        3);
  EXPECT_EQ(err["code"], "feature_disabled");
  EXPECT_TRUE(customers().empty());
}

TEST_F(CliTest, CliD5OfflineCreationBlockedWritesNothing) {
  init({"--filter-shared-customer-tables", "--hq", "tcp://127.0.0.1:5555"});
  json err = error_json({"store", "create-customer", "--db", db_, "--first-name", "Alice",
                         "--last-name", "Smith", "--offline"},
                        3);
  EXPECT_EQ(err["code"], "offline_creation_blocked");
  EXPECT_TRUE(customers().empty());
  EXPECT_EQ(status()["pending_ops"], 0);
}

TEST_F(CliTest, CliD13ValidationErrorsNameTheFieldAndWriteNothing) {
  init({"--async-mode"});
  json err = error_json({"store", "create-customer", "--db", db_, "--first-name", "Alice",
                         "--last-name", "Smith", "--email", "not-an-email"},
                        3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"], "email");
  EXPECT_NE(err["message"].get<std::string>().find("email"), std::string::npos);

  err = error_json({"store", "create-customer", "--db", db_, "--first-name", "Al\x01ice",
                    "--last-name", "Smith"},
                   3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"], "first_name");

  err = error_json({"store", "create-customer", "--db", db_, "--first-name", std::string(101, 'a'),
                    "--last-name", "Smith"},
                   3);
  EXPECT_EQ(err["field"], "first_name");

  err = error_json({"store", "create-customer", "--db", db_, "--first-name", "A", "--last-name",
                    "B", "--address", "only;two"},
                   3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"].get<std::string>().rfind("addresses[0]", 0), 0u) << err;

  err = error_json({"store", "create-customer", "--db", db_, "--first-name", "A", "--last-name",
                    "B", "--address", "1 Main;Town;;1;US", "--address", "2 Main;Town;;1;USAX"},
                   3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"].get<std::string>().rfind("addresses[1]", 0), 0u) << err;

  EXPECT_TRUE(customers().empty());
  EXPECT_EQ(status()["pending_ops"], 0);
}

TEST_F(CliTest, CliD3HumanCreateShowsPendingSyncNotGuidAsAccount) {
  init();
  RunResult r = run(
      {"store", "create-customer", "--db", db_, "--first-name", "Alice", "--last-name", "Smith"});
  ASSERT_EQ(r.exit, 0) << describe(r);
  EXPECT_EQ(r.out.rfind("created customer Pending sync (guid ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("async mode"), std::string::npos) << r.out;
  json list = customers();
  ASSERT_EQ(list.size(), 1u);
  std::string guid = list[0]["guid"];
  // The GUID appears only labelled as such.
  RunResult show = run({"store", "show", "--db", db_, guid});
  ASSERT_EQ(show.exit, 0) << describe(show);
  EXPECT_NE(show.out.find("Pending sync"), std::string::npos) << show.out;
  EXPECT_EQ(show.out.find("account:        " + guid), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("guid:"), std::string::npos) << show.out;
}

// ---------------------------------------------------------------------------
// edit-customer and --set

TEST_F(CliTest, CliSetSyntaxErrors) {
  init({"--async-mode", "--async-edits"});
  std::string guid = create_person()["guid"];
  json err = error_json({"store", "edit-customer", "--db", db_, guid, "--set", "first_name"}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"], "set");

  err = error_json({"store", "edit-customer", "--db", db_, guid, "--set", "shoe_size=44"}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"], "shoe_size");
  EXPECT_NE(err["message"].get<std::string>().find("shoe_size"), std::string::npos);

  err = error_json({"store", "edit-customer", "--db", db_, guid, "--set", "email=a@b.com", "--set",
                    "email=c@d.com"},
                   3);
  EXPECT_EQ(err["code"], "invalid_input");

  err = error_json({"store", "edit-customer", "--db", db_, guid, "--set", "email=bad"}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"], "email");

  EXPECT_EQ(ok_json({"store", "show", "--db", db_, guid})["first_name"], "Alice");
  EXPECT_EQ(status()["pending_ops"], 1);
}

TEST_F(CliTest, CliD8PendingCustomerNotEditableWithoutAsyncEdits) {
  init({"--async-mode"});
  std::string guid = create_person()["guid"];
  json err =
      error_json({"store", "edit-customer", "--db", db_, guid, "--set", "first_name=Alicia"}, 3);
  EXPECT_EQ(err["code"], "pending_customer_not_editable");
  EXPECT_EQ(ok_json({"store", "show", "--db", db_, guid})["first_name"], "Alice");
  EXPECT_EQ(status()["pending_ops"], 1);
}

TEST_F(CliTest, CliD8AsyncEditsEditPendingCustomer) {
  init({"--async-mode", "--async-edits"});
  json created = create_person();
  std::string guid = created["guid"];
  // ID after the repeated --set options: a --set takes exactly one value.
  json c = ok_json({"store", "edit-customer", "--db", db_, "--set", "first_name=Alicia", "--set",
                    "email=alicia@example.com", "--set", "title=", guid});
  EXPECT_EQ(c["guid"], guid);
  EXPECT_EQ(c["first_name"], "Alicia");
  EXPECT_EQ(c["email"], "alicia@example.com");
  EXPECT_EQ(c["account_id"], "Pending sync");
  EXPECT_FALSE(c.contains("mode"));
  // The version stays the HQ version the terminal last saw until HQ applies the edit.
  EXPECT_EQ(c["version"].get<std::int64_t>(), created["version"].get<std::int64_t>());
  EXPECT_EQ(ok_json({"store", "show", "--db", db_, guid})["first_name"], "Alicia");
  EXPECT_EQ(status()["pending_ops"], 2);
}

TEST_F(CliTest, CliEditUnknownCustomerIsNotFound) {
  init({"--async-mode", "--async-edits"});
  json err =
      error_json({"store", "edit-customer", "--db", db_, "C999999999", "--set", "first_name=X"}, 3);
  EXPECT_EQ(err["code"], "not_found");
}

// ---------------------------------------------------------------------------
// add-address

TEST_F(CliTest, CliD10AddAddressToPendingCustomerNeedsAsyncAddresses) {
  init({"--async-mode"});
  std::string guid = create_person()["guid"];
  RunResult r = run({"store", "add-address", "--db", db_, guid, "--address",
                     "1 Main St;Springfield;IL;62701;US", "--json"});
  EXPECT_EQ(r.exit, 3) << describe(r);
  json err = parse_json(r);
  ASSERT_TRUE(err.contains("error"));
  EXPECT_EQ(err["error"]["code"], "feature_disabled");
  EXPECT_TRUE(ok_json({"store", "show", "--db", db_, guid})["addresses"].empty());
  EXPECT_EQ(status()["pending_ops"], 1);
}

TEST_F(CliTest, CliD10AsyncAddressesAddsAddress) {
  init({"--async-mode", "--async-addresses"});
  std::string guid = create_person()["guid"];
  json c = ok_json({"store", "add-address", "--db", db_, guid, "--address",
                    "1 Main St;Springfield;IL;62701;US"});
  ASSERT_EQ(c["addresses"].size(), 1u);
  EXPECT_EQ(c["addresses"][0]["purpose"], "home");
  EXPECT_EQ(c["addresses"][0]["city"], "Springfield");
  c = ok_json({"store", "add-address", "--db", db_, guid, "--address",
               "9 Dock Rd;Springfield;IL;62702;US;delivery"});
  EXPECT_EQ(c["addresses"].size(), 2u);
  EXPECT_EQ(status()["pending_ops"], 3);

  json err =
      error_json({"store", "add-address", "--db", db_, guid, "--address", "no separators"}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(err["field"].get<std::string>().rfind("address", 0), 0u) << err;
  err = error_json({"store", "add-address", "--db", db_, guid, "--address", ";Town;;1;US"}, 3);
  EXPECT_EQ(err["code"], "invalid_input");
  EXPECT_EQ(ok_json({"store", "show", "--db", db_, guid})["addresses"].size(), 2u);
}

// ---------------------------------------------------------------------------
// issue-loyalty-card

TEST_F(CliTest, CliD7LoyaltyCardRequiresSyncedCustomer) {
  init({"--async-mode"});
  std::string guid = create_person()["guid"];
  json err = error_json({"store", "issue-loyalty-card", "--db", db_, guid}, 3);
  EXPECT_EQ(err["code"], "loyalty_requires_synced_customer");
  EXPECT_TRUE(ok_json({"store", "show", "--db", db_, guid})["loyalty_cards"].empty());
}

// ---------------------------------------------------------------------------
// show / customers

TEST_F(CliTest, CliShowByGuidAndNotFound) {
  init({"--async-mode"});
  json created =
      create({"--first-name", "Alice", "--last-name", "Smith", "--email", "alice@example.com"});
  std::string guid = created["guid"];
  json shown = ok_json({"store", "show", "--db", db_, guid});
  created.erase("mode");
  EXPECT_EQ(shown, created);

  json err = error_json({"store", "show", "--db", db_, "C000000001"}, 3);
  EXPECT_EQ(err["code"], "not_found");
  err = error_json({"store", "show", "--db", db_, "00000000-0000-4000-8000-000000000000"}, 3);
  EXPECT_EQ(err["code"], "not_found");
}

TEST_F(CliTest, CliCustomersSearchIsCaseInsensitive) {
  init({"--async-mode"});
  std::string alice = create(
      {"--first-name", "Alice", "--last-name", "Smith", "--email", "alice@example.com"})["guid"];
  std::string bob =
      create({"--first-name", "Bob", "--last-name", "Jones", "--phone", "555 0199"})["guid"];
  create({"--org-name", "Contoso Ltd"});

  EXPECT_EQ(customers().size(), 3u);
  json hits = customers("aLiCe");
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0]["guid"], alice);
  hits = customers("JONES");
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0]["guid"], bob);
  hits = customers("ALICE@EXAMPLE");
  ASSERT_EQ(hits.size(), 1u);
  hits = customers("contoso");
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0]["type"], "organization");
  hits = customers(alice.substr(0, 8));
  ASSERT_GE(hits.size(), 1u);
  EXPECT_TRUE(customers("nobody-here").empty());

  RunResult human = run({"store", "customers", "--db", db_, "--search", "alice"});
  EXPECT_EQ(human.exit, 0) << describe(human);
  EXPECT_NE(human.out.find("Pending sync"), std::string::npos) << human.out;
}

// ---------------------------------------------------------------------------
// status / digest

TEST_F(CliTest, CliStatusCountsPendingOps) {
  init({"--async-mode", "--async-edits"});
  json s = status();
  for (const char* key :
       {"node", "online", "pending_ops", "acked_seq", "pulled_seq", "last_sync_at", "last_error"}) {
    EXPECT_TRUE(s.contains(key)) << key;
  }
  EXPECT_EQ(s["pending_ops"], 0);
  std::string guid = create_person()["guid"];
  create_person("Bob", "Jones");
  EXPECT_EQ(status()["pending_ops"], 2);
  ok_json({"store", "edit-customer", "--db", db_, guid, "--set", "phone=555 0100"});
  s = status();
  EXPECT_EQ(s["pending_ops"], 3);
  EXPECT_EQ(s["acked_seq"], 0);
  EXPECT_EQ(s["pulled_seq"], 0);
  EXPECT_EQ(s["online"], false);
  EXPECT_TRUE(s["last_sync_at"].is_null());

  RunResult human = run({"store", "status", "--db", db_});
  EXPECT_EQ(human.exit, 0) << describe(human);
  EXPECT_NE(human.out.find("S001/T01"), std::string::npos) << human.out;
}

TEST_F(CliTest, CliDigestStableAndChangesWithContent) {
  init({"--async-mode"});
  json d0 = digest();
  EXPECT_EQ(d0["customers"], 0);
  ASSERT_TRUE(d0["digest"].is_string());
  EXPECT_EQ(d0["digest"].get<std::string>().size(), 40u);
  create_person();
  json d1 = digest();
  json d1_again = digest();
  EXPECT_EQ(d1, d1_again);
  EXPECT_EQ(d1["customers"], 1);
  EXPECT_NE(d1["digest"], d0["digest"]);
  create_person("Bob", "Jones");
  json d2 = digest();
  EXPECT_EQ(d2["customers"], 2);
  EXPECT_NE(d2["digest"], d1["digest"]);
}

// ---------------------------------------------------------------------------
// export-log

TEST_F(CliTest, CliExportLogWritesReadableCapture) {
  init({"--async-mode", "--async-edits"});
  std::string guid = create_person()["guid"];
  create({"--org-name", "Contoso Ltd"});
  ok_json({"store", "edit-customer", "--db", db_, guid, "--set", "last_name=Smythe"});
  std::int64_t last_seq = status()["last_seq"];
  ASSERT_GE(last_seq, 3);

  std::string out = dir_.file("t01.tslog");
  json j = ok_json({"store", "export-log", "--db", db_, "--out", out});
  EXPECT_EQ(j["records"], last_seq);
  EXPECT_EQ(j["out"], out);

  auto reader = tillsync::CaptureReader::open(out);
  ASSERT_TRUE(reader.ok()) << reader.status().to_string();
  EXPECT_EQ(reader->header().node_id, "S001/T01");
  EXPECT_EQ(reader->header().first_seq, 1);
  std::int64_t count = 0;
  std::int64_t expected_seq = 1;
  while (true) {
    auto rec = reader->next();
    ASSERT_TRUE(rec.ok()) << rec.status().to_string();
    if (!rec->has_value()) break;
    EXPECT_EQ((*rec)->seq, expected_seq++);
    EXPECT_EQ((*rec)->node_id, "S001/T01");
    ++count;
  }
  EXPECT_EQ(count, last_seq);
}

TEST_F(CliTest, CliReplayOfExportedLogGivesTheTerminalsDigest) {
  init({"--async-mode", "--async-edits", "--async-addresses"});
  std::string guid = create_person()["guid"];
  create({"--org-name", "Contoso Ltd", "--email", "buyer@contoso.example"});
  ok_json({"store", "edit-customer", "--db", db_, guid, "--set", "last_name=Smythe"});
  ok_json({"store", "add-address", "--db", db_, guid, "--address", "1 Main St;Springfield;IL;62701;US"});
  const std::string out = dir_.file("t01.tslog");
  ok_json({"store", "export-log", "--db", db_, "--out", out});

  json verified = ok_json({"replay", out, "--verify"});
  EXPECT_EQ(verified["records"], 4);
  json replayed = ok_json({"replay", out, "--shuffle-seed", "7"});
  EXPECT_EQ(replayed["records"], 4);
  EXPECT_EQ(replayed["customers"], 2);
  EXPECT_EQ(replayed["failed"], 0);
  // Account numbers are not part of the digest: the replayed HQ matches the terminal.
  EXPECT_EQ(replayed["digest"], ok_json({"store", "digest", "--db", db_})["digest"]);

  const std::string hq_db = dir_.file("replayed-hq.db");
  json into = ok_json({"replay", out, "--hq-db", hq_db});
  EXPECT_EQ(into["customers"], 2);
  EXPECT_EQ(ok_json({"hq", "digest", "--db", hq_db})["digest"], replayed["digest"]);

  // A flipped bit: corrupt_log with the offset, exit 3, nothing applied.
  std::string bytes;
  {
    std::ifstream in(out, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x10);
  const std::string bad = dir_.file("bad.tslog");
  {
    std::ofstream o(bad, std::ios::binary);
    o << bytes;
  }
  const std::string untouched = dir_.file("untouched-hq.db");
  json err = error_json({"replay", bad, "--hq-db", untouched}, 3);
  EXPECT_EQ(err["code"], "corrupt_log");
  EXPECT_NE(err["message"].get<std::string>().find("offset"), std::string::npos) << err;
  if (std::filesystem::exists(untouched)) {
    EXPECT_EQ(ok_json({"hq", "customers", "--db", untouched})["customers"].size(), 0u);
  }
}

// ---------------------------------------------------------------------------
// log retention

TEST_F(CliTest, CliLogRetentionIsSetAtInitOrLater) {
  EXPECT_TRUE(ok_json({"store", "init", "--db", dir_.file("default.db"), "--store", "S009", "--terminal", "T01"})
                  ["log_retention_days"]
                      .is_null());
  json j = init({"--log-retention-days", "30"});
  EXPECT_EQ(j["log_retention_days"], 30);
  EXPECT_EQ(j["log"]["first_seq"], 0);
  EXPECT_EQ(j["log"]["compacted_through"], 0);
  EXPECT_TRUE(j["log_loss"].is_null());
  json off = ok_json({"store", "set-log-retention", "--db", db_, "all"});
  EXPECT_TRUE(off["log_retention_days"].is_null());
  EXPECT_TRUE(status()["log_retention_days"].is_null());
  json on = ok_json({"store", "set-log-retention", "--db", db_, "7"});
  EXPECT_EQ(on["log_retention_days"], 7);
  for (const char* bad : {"0", "-1", "3651", "seven", "7.5"}) {
    RunResult r = run({"store", "set-log-retention", "--db", db_, bad});
    EXPECT_EQ(r.exit, 2) << bad << ": " << describe(r);
    EXPECT_NE(r.err.find("1 to 3650"), std::string::npos) << describe(r);
  }
  EXPECT_EQ(status()["log_retention_days"], 7);
  RunResult human = run({"store", "status", "--db", db_});
  EXPECT_NE(human.out.find("log retention:   7 days"), std::string::npos) << describe(human);
  EXPECT_NE(human.out.find("log held:        no log rows"), std::string::npos) << describe(human);

  const std::string never = dir_.file("never.db");
  RunResult zero = run({"store", "init", "--db", never, "--store", "S001", "--terminal", "T02",
                        "--log-retention-days", "0"});
  EXPECT_EQ(zero.exit, 2) << describe(zero);
  EXPECT_FALSE(std::filesystem::exists(never));
  RunResult help = run({"store", "set-log-retention", "--help"});
  EXPECT_EQ(help.exit, 0) << describe(help);
  EXPECT_NE(help.out.find("oldest HQ backup"), std::string::npos) << help.out;
  RunResult init_help = run({"store", "init", "--help"});
  EXPECT_NE(init_help.out.find("--log-retention-days"), std::string::npos) << init_help.out;
}

// A terminal whose log retention compacted the start of its log (made with the engine:
// an in-process HQ and a manual clock): `store status` and `store export-log` say
// which seqs the log holds, and `replay` takes the capture, which starts after seq 1.
TEST_F(CliTest, CliExportLogOfACompactedLogSaysWhichSeqsItHolds) {
  {
    tillsync::ManualClock clock;
    tillsync::HqOptions ho;
    ho.clock = &clock;
    auto hq = tillsync::Headquarters::init(dir_.file("hq.db"), "C", ho);
    ASSERT_TRUE(hq.ok()) << hq.status().to_string();
    tillsync::NodeConfig config;
    config.store_id = "S001";
    config.terminal_id = "T01";
    config.hq_endpoint = "inproc://hq";
    config.profile.async_customer_creation = true;
    config.log_retention_ms = 24LL * 3600 * 1000;
    tillsync::ChannelNodeOptions no;
    no.clock = &clock;
    auto node = tillsync::ChannelNode::create(db_, config, no);
    ASSERT_TRUE(node.ok()) << node.status().to_string();
    tillsync::LocalHqLink link(**hq);
    auto replicator = tillsync::Replicator::open(db_, link, {.clock = &clock});
    ASSERT_TRUE(replicator.ok()) << replicator.status().to_string();
    auto person = [&](const std::string& name) {
      tillsync::NewCustomer c;
      c.first_name = name;
      c.last_name = "Compacted";
      ASSERT_TRUE((*node)->create_customer(c).ok());
    };
    for (const char* n : {"A1", "A2", "A3"}) person(n);
    ASSERT_TRUE((*replicator)->sync_once().ok());
    clock.advance(2 * 24LL * 3600 * 1000);
    person("A4");
    auto synced = (*replicator)->sync_once();
    ASSERT_TRUE(synced.ok()) << synced.status().to_string();
    EXPECT_EQ(synced->compacted, 3);
    for (const char* n : {"A5", "A6"}) person(n);
  }
  json s = status();
  EXPECT_EQ(s["log_retention_days"], 1);
  EXPECT_EQ(s["log"]["first_seq"], 4);
  EXPECT_EQ(s["log"]["last_seq"], 6);
  EXPECT_EQ(s["log"]["rows"], 3);
  EXPECT_EQ(s["log"]["compacted_through"], 3);
  EXPECT_TRUE(s["log"]["compacted_at"].is_string());
  RunResult human = run({"store", "status", "--db", db_});
  EXPECT_NE(human.out.find("log held:        seqs 4..6 (3 rows); seqs 1..3 not held: compacted after HQ "
                           "acknowledged them"),
            std::string::npos)
      << describe(human);

  const std::string out = dir_.file("compacted.tslog");
  json j = ok_json({"store", "export-log", "--db", db_, "--out", out});
  EXPECT_EQ(j["records"], 3);
  EXPECT_EQ(j["first_seq"], 4);
  EXPECT_EQ(j["last_seq"], 6);
  EXPECT_EQ(j["compacted_through"], 3);
  EXPECT_EQ(j["not_held"]["from_seq"], 1);
  EXPECT_EQ(j["not_held"]["to_seq"], 3);
  auto reader = tillsync::CaptureReader::open(out);
  ASSERT_TRUE(reader.ok()) << reader.status().to_string();
  EXPECT_EQ(reader->header().first_seq, 4);
  RunResult exported = run({"store", "export-log", "--db", db_, "--out", dir_.file("again.tslog")});
  EXPECT_EQ(exported.exit, 0) << describe(exported);
  EXPECT_NE(exported.out.find("seqs 4..6 (3 rows); seqs 1..3 not held"), std::string::npos) << describe(exported);

  json verified = ok_json({"replay", out, "--verify"});
  EXPECT_EQ(verified["records"], 3);
  EXPECT_EQ(verified["intact"], true);
  EXPECT_EQ(verified["nodes"][0]["first_seq"], 4);
  RunResult verified_text = run({"replay", out, "--verify"});
  EXPECT_EQ(verified_text.exit, 0) << describe(verified_text);
  EXPECT_NE(verified_text.out.find("S001/T01 starts at seq 4"), std::string::npos) << describe(verified_text);
  json replayed = ok_json({"replay", out});
  EXPECT_EQ(replayed["records"], 3);
  EXPECT_EQ(replayed["customers"], 3);
  EXPECT_EQ(replayed["failed"], 0);
}

TEST_F(CliTest, CliExportLogOfEmptyTerminal) {
  init();
  std::string out = dir_.file("empty.tslog");
  json j = ok_json({"store", "export-log", "--db", db_, "--out", out});
  EXPECT_EQ(j["records"], 0);
  auto reader = tillsync::CaptureReader::open(out);
  ASSERT_TRUE(reader.ok()) << reader.status().to_string();
  EXPECT_EQ(reader->header().first_seq, 0);
  auto rec = reader->next();
  ASSERT_TRUE(rec.ok());
  EXPECT_FALSE(rec->has_value());
}

TEST_F(CliTest, CliExportLogToUnwritablePathIsInternalError) {
  init();
  std::string out = dir_.file("no-such-dir/t01.tslog");
  json err = error_json({"store", "export-log", "--db", db_, "--out", out}, 1);
  EXPECT_EQ(err["code"], "internal");
  EXPECT_FALSE(std::filesystem::exists(out));
}

// ---------------------------------------------------------------------------
// sync

TEST_F(CliTest, CliSyncWithoutReachableHqExitsFour) {
  init();
  create_person();
  json err = error_json({"store", "sync", "--db", db_, "--once"}, 4);
  EXPECT_EQ(err["code"], "hq_unreachable");
  EXPECT_EQ(status()["pending_ops"], 1);

  RunResult human = run({"store", "sync", "--db", db_});
  EXPECT_EQ(human.exit, 4) << describe(human);
  EXPECT_TRUE(human.out.empty()) << human.out;
  EXPECT_EQ(count_lines(human.err), 1u) << human.err;
  EXPECT_NE(human.err.find("(hq_unreachable)"), std::string::npos) << human.err;
}

TEST_F(CliTest, CliSyncNamesConfiguredEndpoint) {
  init({"--hq", "tcp://127.0.0.1:9", "--rts-timeout-ms", "200"});
  json err = error_json({"store", "sync", "--db", db_}, 4);
  EXPECT_EQ(err["code"], "hq_unreachable");
  EXPECT_NE(err["message"].get<std::string>().find("tcp://127.0.0.1:9"), std::string::npos) << err;
}

// Issue 17, item 7: `store status` says why the last sync could not reach HQ.
TEST_F(CliTest, CliStatusNamesWhyHqWasUnreachable) {
  std::string endpoint;
  {
    // A port where nothing listens: a server's, closed (terminating its Context waits
    // for the listener to close).
    tillsync::transport::Context scratch;
    auto server = tillsync::transport::Server::bind(scratch, "tcp://127.0.0.1:*");
    ASSERT_TRUE(server.ok()) << server.status().to_string();
    endpoint = server->endpoint();
  }
  const std::string host_port = endpoint.substr(std::string("tcp://").size());
  init({"--hq", endpoint, "--rts-timeout-ms", "300"});
  EXPECT_TRUE(status()["hq_unreachable"].is_null());  // no contact yet

  // A sync waits out its timeout; on a loaded machine the refused attempt may come
  // after it (then the reason is "timeout"): a few tries.
  json err, s;
  for (int i = 0; i < 5; ++i) {
    err = error_json({"store", "sync", "--db", db_, "--once"}, 4);
    s = status();
    if (s["hq_unreachable"].is_object() && s["hq_unreachable"]["reason"] != "timeout") break;
  }
  EXPECT_EQ(err["code"], "hq_unreachable");
  EXPECT_NE(err["message"].get<std::string>().find("connection refused by " + host_port), std::string::npos)
      << err;

  EXPECT_EQ(s["online"], false);
  ASSERT_TRUE(s["hq_unreachable"].is_object()) << s;
  EXPECT_EQ(s["hq_unreachable"]["reason"], "connection_refused") << s;
  EXPECT_EQ(s["hq_unreachable"]["detail"], "connection refused by " + host_port) << s;
  EXPECT_TRUE(s["hq_unreachable"]["at"].is_string()) << s;

  RunResult human = run({"store", "status", "--db", db_});
  EXPECT_EQ(human.exit, 0) << describe(human);
  EXPECT_NE(human.out.find("online:          no: HQ unreachable (connection refused by " + host_port + ") at "),
            std::string::npos)
      << human.out;
}

// ---------------------------------------------------------------------------
// Databases and error output

TEST_F(CliTest, CliNonTillsyncFileIsRejected) {
  std::string path = dir_.file("notes.txt");
  {
    std::ofstream f(path);
    f << "this is not a terminal database, just some notes about the till\n";
  }
  json err = error_json({"store", "status", "--db", path}, 3);
  EXPECT_EQ(err["code"], "not_a_tillsync_database");
  err = error_json({"store", "customers", "--db", path}, 3);
  EXPECT_EQ(err["code"], "not_a_tillsync_database");
  EXPECT_EQ(read_file(path), "this is not a terminal database, just some notes about the till\n");
}

TEST_F(CliTest, CliMissingDatabaseIsNotFound) {
  json err = error_json({"store", "show", "--db", dir_.file("missing.db"), "C000000001"}, 3);
  EXPECT_EQ(err["code"], "not_found");
}

TEST_F(CliTest, CliHumanErrorIsOneLineOnStderr) {
  init();
  RunResult r = run({"store", "show", "--db", db_, "C000000042"});
  EXPECT_EQ(r.exit, 3);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_EQ(count_lines(r.err), 1u) << r.err;
  EXPECT_EQ(r.err.rfind("tillsync: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("(not_found)\n"), std::string::npos) << r.err;

  // Under --json the error is on stdout and stderr stays quiet.
  RunResult j = run({"store", "show", "--db", db_, "C000000042", "--json"});
  EXPECT_EQ(j.exit, 3);
  EXPECT_TRUE(j.err.empty()) << j.err;
  EXPECT_EQ(parse_json(j)["error"]["code"], "not_found");
}

}  // namespace
