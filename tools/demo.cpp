#include "demo.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "local_cluster.h"
#include "tillsync/channel_node.h"
#include "tillsync/headquarters.h"
#include "tillsync/hq_client.h"
#include "tillsync/hq_service.h"
#include "tillsync/replicator.h"

namespace tillsync::cli {
namespace {

namespace fs = std::filesystem;

// HQ's own job is parked: the demo runs the customer sync job by hand, so every step
// shows exactly what happened.
constexpr int kParkedJobMs = 3'600'000;
constexpr int kRtsTimeoutMs = 2000;

// Prints the story for people; silent under --json.
class Narrator {
 public:
  explicit Narrator(bool quiet) : quiet_(quiet) {}
  void step(const std::string& text) {
    say("");
    say("Step " + std::to_string(++step_) + ". " + text);
  }
  void say(const std::string& text) const {
    if (!quiet_) std::cout << text << '\n' << std::flush;
  }

 private:
  bool quiet_;
  int step_ = 0;
};

std::string pad(std::string text, std::size_t width) {
  if (text.size() < width) text.resize(width, ' ');
  return text;
}

// The demo's terminals: sync mode (online) or async mode.
Result<EmbeddedTerminal> demo_terminal(const std::string& db, const std::string& store,
                                       const std::string& endpoint, bool async_mode) {
  TerminalSpec spec;
  spec.db = db;
  spec.store = store;
  spec.async_mode = async_mode;
  spec.rts_timeout_ms = kRtsTimeoutMs;
  return make_terminal(spec, endpoint);
}

NewCustomer person(const std::string& first, const std::string& last, const std::string& email) {
  NewCustomer n;
  n.first_name = first;
  n.last_name = last;
  n.email = email;
  return n;
}

NewCustomer organization(const std::string& name, const std::string& phone) {
  NewCustomer n;
  n.org_name = name;
  n.phone = phone;
  return n;
}

struct DemoResult {
  std::string hq_digest;
  std::size_t customers = 0;
  std::vector<std::string> nodes;
  std::vector<std::string> terminal_digests;
  bool converged = false;
};

Status prepare_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::Internal("cannot create directory " + dir + ": " + ec.message());
  for (const char* name : {"hq.db", "S001-T01.db", "S002-T01.db"}) {
    if (fs::exists(fs::path(dir) / name)) {
      return Status::InvalidInput(
          "dir", "--dir " + dir + " already holds " + name +
                     " from an earlier demo; choose an empty or new directory");
    }
  }
  return Status::Ok();
}

Status sync_terminal(EmbeddedTerminal& t, SyncReport& report) {
  auto r = t.replicator->sync_once();
  if (!r) return Status(r.status().code(), t.id() + ": " + r.status().message());
  report = *r;
  return Status::Ok();
}

Status run_story(const std::string& dir, Narrator& n, DemoResult& result) {
  const std::string hq_db = (fs::path(dir) / "hq.db").string();
  const std::string a_db = (fs::path(dir) / "S001-T01.db").string();
  const std::string b_db = (fs::path(dir) / "S002-T01.db").string();

  n.say("tillsync demo: one head office (HQ) and two store terminals, all on this computer.");
  n.say("The databases are kept in " + dir + ":");
  n.say("  HQ                          " + hq_db);
  n.say("  store S001, terminal T01    " + a_db);
  n.say("  store S002, terminal T01    " + b_db);

  // 1. HQ.
  TS_ASSIGN_OR_RETURN(auto served_hq, Headquarters::init(hq_db, "C"));
  BackgroundHq hq;
  {
    HqServiceOptions options;
    options.listen = "tcp://127.0.0.1:*";
    options.job_interval_ms = kParkedJobMs;
    TS_RETURN_IF_ERROR(hq.start(std::move(served_hq), options));
  }
  // The back office: a second connection to HQ's database, as 'tillsync hq ...' uses.
  TS_ASSIGN_OR_RETURN(auto office, Headquarters::open(hq_db));
  n.step("HQ starts and listens for terminals on " + hq.endpoint() +
         ". It hands out customer account numbers C000000001, C000000002, ...");

  // 2. Store S001: online, sync mode.
  TS_ASSIGN_OR_RETURN(EmbeddedTerminal a, demo_terminal(a_db, "S001", hq.endpoint(), false));
  n.step("Terminal " + a.id() +
         " is online and creates customers in sync mode: it asks HQ, and HQ assigns the "
         "account number while the customer waits at the till.");
  for (const NewCustomer& input : {person("Ada", "Lovelace", "ada@example.com"),
                                   person("Alan", "Turing", "alan@example.com")}) {
    TS_ASSIGN_OR_RETURN(CreateOutcome out, a.node->create_customer(input));
    std::string how = out.mode == CreationMode::sync
                          ? "(sync mode: HQ answered at once)"
                          : "(HQ did not answer, saved for later: " + out.fallback_reason + ")";
    n.say("   " + pad(out.customer.display_name(), 20) + " -> account " +
          out.customer.account_id() + "  " + how);
  }
  TS_ASSIGN_OR_RETURN(auto found, office->customers("Lovelace"));
  if (!found.empty()) {
    n.say("   HQ can find the new customers right away: searching HQ for \"Lovelace\" gives " +
          found.front().account_id() + " " + found.front().display_name() + ".");
  }

  // 3. Store S002: async mode, offline.
  TS_ASSIGN_OR_RETURN(EmbeddedTerminal b, demo_terminal(b_db, "S002", hq.endpoint(), true));
  n.step("Terminal " + b.id() +
         " uses asynchronous customer creation, and its network is down (the demo uses the "
         "terminal's offline switch). It keeps registering customers: they are saved at the "
         "till and show \"Pending sync\" instead of an account number.");
  std::vector<Guid> pending;
  for (const NewCustomer& input : {person("Grace", "Hopper", "grace@example.com"),
                                   person("Katherine", "Johnson", "katherine@example.com"),
                                   organization("Contoso Ltd", "+1 555 0100")}) {
    TS_ASSIGN_OR_RETURN(CreateOutcome out,
                        b.node->create_customer(input, CallOptions{.offline = true}));
    pending.push_back(out.customer.guid);
    n.say("   " + pad(out.customer.display_name(), 20) + " -> " + out.customer.account_id());
  }
  TS_ASSIGN_OR_RETURN(NodeStatus b_status, b.node->status());
  n.say("   " + count_text(b_status.pending_ops, "change is", "changes are") +
        " waiting on the terminal to be uploaded to HQ.");

  // 4. Reconnect and upload.
  SyncReport report;
  TS_RETURN_IF_ERROR(sync_terminal(b, report));
  n.step("The network is back. Terminal " + b.id() + " uploads its changes to HQ (" +
         count_text(report.pushed, "operation", "operations") + "; " +
         std::to_string(report.pending_ops) + " left waiting) and downloads what is new at HQ (" +
         count_text(report.pulled, "update", "updates") + ": the customers store S001 created).");
  TS_ASSIGN_OR_RETURN(auto waiting, office->sync_status(SyncStatus::pending));
  n.say("   HQ's customer synchronization status now lists " +
        count_text(static_cast<std::int64_t>(waiting.size()), "customer", "customers") +
        " from " + b.id() + " as \"pending\"; the terminal still shows \"Pending sync\".");

  // 5. Conversion.
  TS_ASSIGN_OR_RETURN(JobReport job, office->run_sync_job());
  n.step("HQ runs its customer sync job (\"Synchronize customers and channel requests\") "
         "once: it converted " +
         count_text(static_cast<std::int64_t>(job.converted), "async customer",
                    "async customers") +
         " into HQ customers with new account numbers (" + std::to_string(job.failed) +
         " failed). 'tillsync hq serve' runs this job continuously; the demo runs it by hand "
         "so you can watch it.");

  // 6. Distribution to S002.
  TS_RETURN_IF_ERROR(sync_terminal(b, report));
  n.step("Terminal " + b.id() + " downloads the results (" +
         count_text(report.pulled, "update", "updates") +
         "): \"Pending sync\" turns into the real account numbers.");
  for (const Guid& guid : pending) {
    TS_ASSIGN_OR_RETURN(Customer c, b.node->find(guid.to_string()));
    n.say("   " + pad(c.display_name(), 20) + " Pending sync -> " + c.account_id());
  }

  // 7. Both terminals pull.
  SyncReport a_report, b_report;
  TS_RETURN_IF_ERROR(sync_terminal(a, a_report));
  TS_RETURN_IF_ERROR(sync_terminal(b, b_report));
  n.step("Both terminals sync once more: " + a.id() + " applies " +
         count_text(a_report.pulled, "update", "updates") +
         " from HQ, now including store S002's customers; " + b.id() + " applies " +
         count_text(b_report.pulled, "more update", "more updates") +
         ". Every terminal now knows every customer (the offline data exclusion option "
         "would keep other stores' customers off a terminal).");

  // 8. Compare.
  TS_ASSIGN_OR_RETURN(ContentDigest hq_digest, office->digest());
  result.hq_digest = hq_digest.hex;
  result.customers = hq_digest.customers;
  result.converged = true;
  n.step("Comparing content fingerprints (digests over every customer's data; account "
         "numbers are left out):");
  n.say("   " + pad("HQ", 12) + hq_digest.hex + "  (" +
        count_text(static_cast<std::int64_t>(hq_digest.customers), "customer", "customers") +
        ")");
  for (EmbeddedTerminal* t : {&a, &b}) {
    TS_ASSIGN_OR_RETURN(ContentDigest d, t->node->digest());
    result.nodes.push_back(t->id());
    result.terminal_digests.push_back(d.hex);
    if (d != hq_digest) result.converged = false;
    n.say("   " + pad(t->id(), 12) + d.hex + "  (" +
          count_text(static_cast<std::int64_t>(d.customers), "customer", "customers") + ")");
  }
  if (result.converged) {
    n.say("   All three are equal: HQ and both terminals hold exactly the same customers.");
  } else {
    n.say("   The digests differ: HQ and the terminals did NOT converge.");
  }

  TS_RETURN_IF_ERROR(hq.stop());
  n.say("");
  n.say("HQ has stopped. The databases stay in " + dir + "; look at them with, for example:");
  n.say("  tillsync hq customers --db " + hq_db);
  n.say("  tillsync hq sync-status --db " + hq_db);
  n.say("  tillsync store customers --db " + b_db);
  n.say("  tillsync store status --db " + a_db);
  return Status::Ok();
}

struct DemoOptions {
  std::string dir;
  CLI::Option* dir_opt = nullptr;
};

int run_demo(const Cli& cli, const DemoOptions& o) {
  std::string dir;
  if (given(o.dir_opt)) {
    dir = o.dir;
    if (Status s = prepare_dir(dir); !s) return cli.fail(s);
  } else {
    auto made = make_temp_dir("tillsync-demo");
    if (!made) return cli.fail(made.status());
    dir = *made;
  }
  Narrator narrator(cli.json);
  DemoResult result;
  if (Status s = run_story(dir, narrator, result); !s) {
    return cli.fail(Status(s.code(), "demo stopped: " + s.message() +
                                         " (databases kept in " + dir + ")",
                           s.field()));
  }
  if (!result.converged) {
    std::string detail = "HQ " + result.hq_digest;
    for (std::size_t i = 0; i < result.nodes.size(); ++i)
      detail += ", " + result.nodes[i] + " " + result.terminal_digests[i];
    return cli.fail(Status::Internal("HQ and the terminals did not converge: " + detail +
                                     " (databases kept in " + dir + ")"));
  }
  if (cli.json) {
    Json j;
    j["hq_digest"] = result.hq_digest;
    j["terminal_digests"] = result.terminal_digests;
    j["converged"] = result.converged;
    j["customers"] = result.customers;
    j["nodes"] = result.nodes;
    j["dir"] = dir;
    print_json(j);
  }
  return kExitOk;
}

}  // namespace

void add_demo_command(CLI::App& root, Cli& cli) {
  auto o = std::make_shared<DemoOptions>();
  CLI::App* sub = root.add_subcommand(
      "demo",
      "A guided tour in a few seconds: HQ and two store terminals run on this computer;\n"
      "one creates customers online in sync mode, the other offline in async mode\n"
      "('Pending sync'), then it reconnects, HQ converts its customers and everyone ends\n"
      "up with the same data. The databases are kept for you to inspect.");
  o->dir_opt = sub->add_option("--dir", o->dir,
                               "Directory for the demo's databases (created if missing; must "
                               "not hold an earlier demo). Default: a new temporary directory")
                   ->type_name("DIR");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_demo(cli, *o); });
}

}  // namespace tillsync::cli
