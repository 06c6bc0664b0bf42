#include "hq_commands.h"

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "tillsync/capture.h"
#include "tillsync/clock.h"
#include "tillsync/digest.h"
#include "tillsync/domain.h"
#include "tillsync/headquarters.h"
#include "tillsync/hq_service.h"
#include "tillsync/hq_store.h"
#include "tillsync/storage/pg.h"
#include "tillsync/transport/socket.h"

namespace tillsync::cli {
namespace {

constexpr std::size_t kExportBatch = 1000;

const char* const kDbHelp =
    "HQ's database (created by 'tillsync hq init'): a SQLite file path, or a PostgreSQL URL "
    "postgresql://USER@HOST/DB, which several 'hq serve' processes may share";

std::string pad(std::string text, std::size_t width) {
  if (text.size() < width) text.resize(width, ' ');
  return text;
}

// ---------------------------------------------------------------------------
// hq init

struct InitOptions {
  std::string db;
  std::string prefix = "C";
};

int run_init(const Cli& cli, const InitOptions& o) {
  auto hq = Headquarters::init(o.db, o.prefix);
  if (!hq) {
    Status s = hq.status();
    if (s.code() == Code::invalid_input && s.field() == "number_prefix") {
      s = Status::InvalidInput("number-prefix",
                               "--number-prefix must be 1-8 upper-case letters or digits, got '" +
                                   one_line(o.prefix) + "'");
    }
    return cli.fail(s);
  }
  const std::string& prefix = (*hq)->store().number_prefix();
  Json j;
  j["db"] = storage::redact_postgres_url(o.db);
  j["epoch"] = (*hq)->epoch();
  j["number_prefix"] = prefix;
  std::string human = "initialized HQ database " + storage::redact_postgres_url(o.db) + "\n" +
                      "account numbers: " + prefix + "000000001, " + prefix + "000000002, ...\n" +
                      "epoch:           " + (*hq)->epoch() +
                      "\nstart serving terminals with: tillsync hq serve --db " + storage::redact_postgres_url(o.db) +
                      " --listen tcp://0.0.0.0:5555 --keys DIR --allowlist FILE";
  return cli.ok(j, human);
}

void add_init(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<InitOptions>();
  CLI::App* sub = hq.add_subcommand(
      "init", "Create a new, empty HQ database (customer master, sync status, outbound feed).");
  sub->add_option("--db", o->db, "HQ database to create: a SQLite file path (must not exist yet), or a PostgreSQL URL "
                  "postgresql://USER@HOST/DB of an empty database (the server engine, for several "
                  "HQ processes)")
      ->required()
      ->type_name("FILE|URL");
  sub->add_option("--number-prefix", o->prefix,
                  "Prefix of the customer account numbers HQ assigns (<prefix><9 digits>; 1-8 "
                  "upper-case letters or digits)")
      ->capture_default_str()
      ->type_name("PREFIX");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_init(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq serve

constexpr int kDefaultReceivedRetentionDays = 30, kDefaultFeedRetentionDays = 7;
constexpr std::int64_t kDayMs = 24LL * 3600 * 1000;

// --received-retention-days and --feed-retention-days (hq serve, hq compact).
void add_retention_options(CLI::App& sub, int& received_days, int& feed_days) {
  sub.add_option("--received-retention-days", received_days,
                 "Days HQ keeps an operation it received after applying it (then it is deleted; "
                 "a resend is still recognised). Keep it longer than the age of the oldest "
                 "backup a till may be restored from (docs/operations.md, Retention)")
      ->capture_default_str()
      ->check(CLI::Range(0, 36'500))
      ->type_name("DAYS");
  sub.add_option("--feed-retention-days", feed_days,
                 "Days a superseded customer snapshot stays in the outbound feed for a terminal "
                 "that has not pulled it (a terminal away longer gets a snapshot of its scope)")
      ->capture_default_str()
      ->check(CLI::Range(0, 36'500))
      ->type_name("DAYS");
}

struct ServeOptions {
  std::string db, listen;
  int job_interval_ms = 200;
  std::string conflict_policy;  // empty: keep the policy stored in the HQ database
  std::string duplicates;
  std::string keys, allowlist;  // CurveZMQ: HQ's key directory, the terminals' allowlist
  std::int64_t max_clock_offset_ms = HqOptions{}.max_clock_offset_ms;
  int received_retention_days = kDefaultReceivedRetentionDays;
  int feed_retention_days = kDefaultFeedRetentionDays;
  bool insecure_plaintext = false;  // plaintext on an address other machines can reach
  double node_rate = HqServiceOptions{}.node_requests_per_second;
  int node_burst = HqServiceOptions{}.node_burst;
  int max_connections = HqServiceOptions{}.max_connections;
  int handshake_timeout_ms = HqServiceOptions{}.handshake_timeout_ms;
};

// Whether `endpoint` can be reached from this machine only: ipc://, or tcp:// on a
// loopback address (127.0.0.0/8, ::1, localhost).
bool is_local_endpoint(const std::string& endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0) return true;
  if (endpoint.rfind("tcp://", 0) != 0) return false;
  const std::string host = endpoint.substr(6, endpoint.rfind(':') - 6);  // tcp://HOST:PORT
  return host.rfind("127.", 0) == 0 || host == "[::1]" || host == "localhost";
}

// The running service, for the signal handler (HqService::stop() is an atomic store).
std::atomic<HqService*> g_service{nullptr};
static_assert(std::atomic<HqService*>::is_always_lock_free);

void stop_service() {
  if (HqService* service = g_service.load()) service->stop();
}

// SIGHUP: reload the allowlist at the service's next turn (an atomic store).
extern "C" void on_sighup(int) {
  if (HqService* service = g_service.load()) service->request_reload();
}

Status check_listen(const std::string& endpoint) {
  auto starts = [&endpoint](std::string_view p) { return endpoint.rfind(p, 0) == 0; };
  if (!(starts("tcp://") || starts("ipc://")) || endpoint.size() <= 6) {
    return Status::InvalidInput(
        "listen", "--listen must be a ZeroMQ endpoint such as tcp://0.0.0.0:5555 or "
                  "tcp://127.0.0.1:* (any free port), got '" +
                      one_line(endpoint) + "'");
  }
  return Status::Ok();
}

int run_serve(const Cli& cli, const ServeOptions& o) {
  if (Status s = check_listen(o.listen); !s) return cli.fail(s);

  // Given policies are stored in the HQ database, so `hq run-job` applies them too.
  HqOptions hq_options;
  hq_options.max_clock_offset_ms = o.max_clock_offset_ms;
  hq_options.received_retention_ms = o.received_retention_days * kDayMs;
  hq_options.feed_retention_ms = o.feed_retention_days * kDayMs;
  if (!o.conflict_policy.empty()) hq_options.conflict_policy = parse_conflict_policy(o.conflict_policy);
  if (!o.duplicates.empty()) hq_options.duplicate_policy = parse_duplicate_policy(o.duplicates);
  if (o.keys.empty() != o.allowlist.empty()) {
    return cli.fail(Status::InvalidInput(
        "keys", "--keys and --allowlist go together: HQ's key pair and the terminals it admits"));
  }
  if (o.keys.empty() && !o.insecure_plaintext && !is_local_endpoint(o.listen)) {
    return cli.fail(Status::InvalidInput(
        "listen", "--listen " + one_line(o.listen) +
                      " can be reached from other machines, and without --keys and --allowlist the traffic "
                      "would be plaintext and anyone could act as any terminal. Give HQ keys ('tillsync "
                      "keygen', then --keys DIR --allowlist FILE), listen on tcp://127.0.0.1:PORT, or accept "
                      "that with --insecure-plaintext (a lab only)"));
  }
  std::optional<transport::KeyPair> keys;
  if (!o.keys.empty()) {
    auto loaded = transport::load_key_pair(o.keys);
    if (!loaded) return cli.fail(loaded.status());
    keys = *loaded;
  }
  auto hq = Headquarters::open(o.db, hq_options);
  if (!hq) return cli.fail(hq.status());

  install_stop_handlers(&stop_service);
  {
    struct sigaction action {};
    action.sa_handler = on_sighup;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGHUP, &action, nullptr);
  }
  std::unique_ptr<HqService> service;
  {
    // ZeroMQ's threads start in here; they must not take SIGINT/SIGTERM from us.
    BlockStopSignals block;
    HqServiceOptions options;
    options.listen = o.listen;
    options.job_interval_ms = o.job_interval_ms;
    options.curve = keys;
    options.allowlist_file = o.allowlist;
    options.node_requests_per_second = o.node_rate;
    options.node_burst = o.node_burst;
    options.max_connections = o.max_connections;
    options.handshake_timeout_ms = o.handshake_timeout_ms;
    auto started = HqService::start(std::move(hq).value(), options);
    if (!started) return cli.fail(started.status());
    service = std::move(started).value();
    g_service.store(service.get());
  }
  if (stop_requested()) service->stop();
  if (!keys) {
    std::cerr << "tillsync: WARNING: no --keys/--allowlist: traffic is PLAINTEXT and "
                 "UNAUTHENTICATED; anyone who can reach "
              << service->endpoint()
              << " can read it and act as any terminal. Use 'tillsync keygen' and "
                 "'hq serve --keys DIR --allowlist FILE' outside a lab."
              << std::endl;
  }

  if (cli.json) {
    Json j;
    j["event"] = "listening";
    j["endpoint"] = service->endpoint();
    j["db"] = storage::redact_postgres_url(o.db);
    j["epoch"] = service->hq().epoch();
    j["job_interval_ms"] = o.job_interval_ms;
    j["encrypted"] = keys.has_value();
    print_json_line(j);
  } else {
    std::cout << "listening on " << service->endpoint() << std::endl;
    const auto policy = service->hq().conflict_policy();
    const auto duplicates = service->hq().duplicate_policy();
    std::cerr << "tillsync: HQ " << storage::redact_postgres_url(o.db) << " (epoch " << service->hq().epoch()
              << ") serves terminals; the customer sync job runs every " << o.job_interval_ms
              << " ms; conflicts: " << (policy ? to_string(*policy) : "?")
              << ", duplicates: " << (duplicates ? to_string(*duplicates) : "?")
              << "; stop with Ctrl-C or SIGTERM" << std::endl;
  }

  Status status = service->run();
  HqServiceStats stats = service->stats();
  g_service.store(nullptr);
  service.reset();
  if (!status) return cli.fail(status);

  if (cli.json) {
    Json j;
    j["event"] = "stopped";
    j["requests"] = stats.requests;
    j["rejected"] = stats.rejected;
    j["malformed"] = stats.malformed;
    j["job_runs"] = stats.job_runs;
    j["busy_retries"] = stats.busy_retries;
    print_json_line(j);
  } else {
    std::cout << "stopped: served " << count_text(static_cast<std::int64_t>(stats.requests),
                                                   "request", "requests")
              << " (" << stats.rejected << " refused, " << stats.malformed
              << " malformed), ran the customer sync job "
              << count_text(static_cast<std::int64_t>(stats.job_runs), "time", "times");
    if (stats.busy_retries > 0)
      std::cout << "; " << count_text(static_cast<std::int64_t>(stats.busy_retries), "transaction", "transactions")
                << " repeated after losing a lock to another HQ process";
    std::cout << std::endl;
  }
  return kExitOk;
}

void add_serve(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* sub = hq.add_subcommand(
      "serve",
      "Run HQ on the network: answer terminals' real-time calls (sync-mode customer\n"
      "creation, edits, loyalty cards), receive their change logs, convert async customers\n"
      "continuously and distribute the results. Prints 'listening on ENDPOINT' once ready\n"
      "and runs until interrupted (Ctrl-C / SIGTERM), then shuts down cleanly.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  sub->add_option("--listen", o->listen,
                  "Endpoint to listen on, e.g. tcp://0.0.0.0:5555; a port of * picks a free one "
                  "(the real port is printed)")
      ->required()
      ->type_name("ENDPOINT");
  sub->add_option("--job-interval-ms", o->job_interval_ms,
                  "How often the customer sync job converts uploaded async customers")
      ->capture_default_str()
      ->check(CLI::Range(1, 86'400'000))
      ->type_name("MS");
  add_retention_options(*sub, o->received_retention_days, o->feed_retention_days);
  sub->add_option("--max-clock-offset-ms", o->max_clock_offset_ms,
                  "How far ahead of HQ's clock a terminal's timestamps are believed. An operation "
                  "stamped further ahead (a till with a wrong clock) is still applied, ordered as "
                  "if stamped when HQ received it plus this offset; 'hq terminals' shows the till")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{86'400'000}))
      ->type_name("MS");
  sub->add_option("--conflict-policy", o->conflict_policy,
                  "How concurrent edits of the same field are resolved: lww (newest change "
                  "wins, the default), hq-wins (back-office edits beat terminal edits) or manual "
                  "(held for an operator: 'hq conflicts', 'hq resolve'). Stored in the HQ "
                  "database; omitted: the stored policy")
      ->check(CLI::IsMember({"lww", "hq-wins", "manual"}))
      ->type_name("lww|hq-wins|manual");
  sub->add_option("--duplicates", o->duplicates,
                  "What the sync job does with an async customer whose e-mail or phone matches "
                  "another customer: flag (create it and list the pair, the default) or merge "
                  "(link it to the existing account). Stored in the HQ database")
      ->check(CLI::IsMember({"flag", "merge"}))
      ->type_name("flag|merge");
  sub->add_option("--keys", o->keys,
                  "Directory with HQ's CurveZMQ key pair (from 'tillsync keygen'): traffic is "
                  "encrypted and only terminals of --allowlist get in")
      ->type_name("DIR");
  sub->add_option("--allowlist", o->allowlist,
                  "File of admitted terminals, one 'NODE_ID PUBLIC_KEY' per line ('#' starts a "
                  "comment). SIGHUP reloads it: a removed key is locked out at once")
      ->type_name("FILE");
  sub->add_option("--node-rate", o->node_rate,
                  "Requests a second one terminal may send on average (a token bucket per node); "
                  "beyond it HQ answers busy with a retry hint and the till tries again later, "
                  "nothing lost. 0: no limit")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6))
      ->type_name("N");
  sub->add_option("--node-burst", o->node_burst, "Requests one terminal may send at once before --node-rate applies")
      ->capture_default_str()
      ->check(CLI::Range(1, 1'000'000))
      ->type_name("N");
  sub->add_option("--max-connections", o->max_connections,
                  "Open connections at most; one beyond is closed at once and logged. 0: no cap "
                  "(the process's file limit still applies)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1'000'000))
      ->type_name("N");
  sub->add_option("--handshake-timeout-ms", o->handshake_timeout_ms,
                  "A connection that has not finished its handshake (CURVE included) by then is "
                  "closed, so silent connections do not hold places")
      ->capture_default_str()
      ->check(CLI::Range(100, 600'000))
      ->type_name("MS");
  sub->add_flag("--insecure-plaintext", o->insecure_plaintext,
                "Listen without --keys on an address other machines can reach (plaintext, "
                "unauthenticated: a lab only). Without keys, HQ otherwise listens on loopback only");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_serve(cli, *o); });
}

// ---------------------------------------------------------------------------
// Shared helpers

Result<std::unique_ptr<Headquarters>> open_hq(const std::string& db, const HqOptions& options = {}) {
  return Headquarters::open(db, options);
}

Json job_json(const JobReport& r) {
  Json j;
  j["applied"] = r.applied;
  j["converted"] = r.converted;
  j["failed"] = r.failed;
  j["remaining"] = r.remaining;
  return j;
}

std::string job_text(const JobReport& r) {
  std::string t = "applied " + count_text(static_cast<std::int64_t>(r.applied), "operation",
                                          "operations") +
                  ", converted " +
                  count_text(static_cast<std::int64_t>(r.converted), "async customer",
                             "async customers") +
                  " into HQ customers, " + std::to_string(r.failed) + " failed";
  if (r.remaining > 0) {
    t += "; more operations are waiting for another pass";
  } else {
    t += "; nothing left waiting";
  }
  if (r.failed > 0) t += "\nsee the failures with: tillsync hq sync-status --status failed";
  return t;
}

Json status_record_json(const SyncStatusRecord& r) {
  Json j;
  j["guid"] = r.guid.to_string();
  j["node"] = r.node_id;
  j["channel"] = r.node_id.substr(0, r.node_id.find('/'));
  j["account_number"] = r.account_number ? Json(*r.account_number) : Json(nullptr);
  j["status"] = std::string(to_string(r.status));
  j["last_error"] = r.last_error.empty() ? Json(nullptr) : Json(r.last_error);
  j["created_at"] = iso8601_utc(r.created_at_ms);
  j["twin"] = r.twin ? Json(r.twin->to_string()) : Json(nullptr);
  j["updated_at"] = iso8601_utc(r.updated_at_ms);
  return j;
}

// ---------------------------------------------------------------------------
// hq run-job

struct RunJobOptions {
  std::string db, job;
};

int run_job(const Cli& cli, const RunJobOptions& o) {
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto report = (*hq)->run_sync_job();
  if (!report) return cli.fail(report.status());
  return cli.ok(job_json(*report), "customer sync job: " + job_text(*report));
}

// ---------------------------------------------------------------------------
// hq compact

struct CompactOptions {
  std::string db;
  int received_retention_days = kDefaultReceivedRetentionDays;
  int feed_retention_days = kDefaultFeedRetentionDays;
};

int run_compact(const Cli& cli, const CompactOptions& o) {
  HqOptions options;
  options.received_retention_ms = o.received_retention_days * kDayMs;
  options.feed_retention_ms = o.feed_retention_days * kDayMs;
  auto hq = open_hq(o.db, options);
  if (!hq) return cli.fail(hq.status());
  CompactionReport total;
  for (;;) {
    auto r = (*hq)->compact();
    if (!r) return cli.fail(r.status());
    total.feed_removed += r->feed_removed;
    total.received_removed += r->received_removed;
    const bool advanced = r->feed_through > total.feed_through;
    total.feed_through = r->feed_through;
    if (!advanced && r->received_removed == 0) break;
  }
  Json j;
  j["feed_removed"] = total.feed_removed;
  j["feed_compacted_through"] = total.feed_through;
  j["received_removed"] = total.received_removed;
  return cli.ok(j, "removed " + count_text(total.feed_removed, "superseded feed snapshot", "superseded feed snapshots") +
                       " (the feed is compacted up to seq " + std::to_string(total.feed_through) + ") and " +
                       count_text(total.received_removed, "received operation", "received operations") +
                       " past their retention");
}

void add_compact(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<CompactOptions>();
  CLI::App* sub = hq.add_subcommand(
      "compact",
      "Remove what HQ no longer needs, now: customer snapshots in the outbound feed that a\n"
      "newer one replaced and that every terminal has pulled past (or that are older than\n"
      "--feed-retention-days), and received operations applied more than\n"
      "--received-retention-days ago ('hq serve' does this every minute).");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  add_retention_options(*sub, o->received_retention_days, o->feed_retention_days);
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_compact(cli, *o); });
}

void add_run_job(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<RunJobOptions>();
  CLI::App* sub = hq.add_subcommand(
      "run-job",
      "Run one pass of an HQ job now. sync-customers: \"Synchronize customers and channel\n"
      "requests\" turns uploaded async customers into HQ customers with account numbers\n"
      "(hq serve also runs it continuously).");
  sub->add_option("JOB", o->job, "The job to run: sync-customers")
      ->required()
      ->check(CLI::IsMember({"sync-customers"}));
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_job(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq customers

struct CustomersOptions {
  std::string db, search;
};

int run_customers(const Cli& cli, const CustomersOptions& o) {
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto found = (*hq)->customers(o.search);
  if (!found) return cli.fail(found.status());
  return list_customers(cli, *found,
                        o.search.empty() ? "no customers at HQ"
                                         : "no customers at HQ match '" + one_line(o.search) + "'");
}

void add_customers(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<CustomersOptions>();
  CLI::App* sub = hq.add_subcommand(
      "customers", "List HQ's customer master (every channel), optionally filtered.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  add_search_option(*sub, o->search);
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_customers(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq sync-status

struct SyncStatusOptions {
  std::string db, status;
  CLI::Option* status_opt = nullptr;
};

int run_sync_status(const Cli& cli, const SyncStatusOptions& o) {
  std::optional<SyncStatus> filter;
  if (given(o.status_opt)) {
    filter = parse_sync_status(o.status);
    if (!filter) return cli.usage("--status must be pending, converted, failed, duplicate or conflict");
  }
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto records = (*hq)->sync_status(filter);
  if (!records) return cli.fail(records.status());

  Json list = Json::array();
  for (const SyncStatusRecord& r : *records) list.push_back(status_record_json(r));
  Json j;
  j["records"] = std::move(list);

  std::string human;
  if (records->empty()) {
    human = filter ? "no async customers with status " + std::string(to_string(*filter)) + "\n"
                   : "no async customers received from terminals yet\n";
  } else {
    human = pad("STATUS", 11) + pad("ACCOUNT", 14) + pad("NODE", 14) + pad("GUID", 38) +
            pad("UPDATED", 26) + "LAST ERROR\n";
    for (const SyncStatusRecord& r : *records) {
      std::string row = pad(std::string(to_string(r.status)), 11) +
                        pad(r.account_number ? *r.account_number : std::string("-"), 14) +
                        pad(r.node_id, 14) + pad(r.guid.to_string(), 38) +
                        pad(iso8601_utc(r.updated_at_ms), 26) + one_line(r.last_error);
      while (!row.empty() && row.back() == ' ') row.pop_back();
      human += row + "\n";
    }
    human += count_text(static_cast<std::int64_t>(records->size()), "record", "records") + "\n";
  }
  return cli.ok(j, human);
}

void add_sync_status(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<SyncStatusOptions>();
  CLI::App* sub = hq.add_subcommand(
      "sync-status",
      "Customer synchronization status: one row per async customer received from a\n"
      "terminal, with its account number once converted, or the error that stopped it.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  o->status_opt =
      sub->add_option("--status", o->status, "Only records with this status")
          ->check(CLI::IsMember({"pending", "converted", "failed", "duplicate", "conflict"}))
          ->type_name("pending|converted|failed|duplicate|conflict");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_sync_status(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq edit-customer

std::string field_list() {
  std::string all;
  for (Field f : all_fields()) all += (all.empty() ? "" : ", ") + std::string(field_name(f));
  return all;
}

struct EditOptions {
  std::string db, id;
  std::vector<std::string> sets;
};

int run_edit(const Cli& cli, const EditOptions& o) {
  auto changes = parse_set_options(o.sets);
  if (!changes) return cli.fail(changes.status());
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto edited = (*hq)->edit_customer(o.id, *changes);
  if (!edited) return cli.fail(edited.status());
  std::string human = "updated customer " + edited->account_id() + " (guid " +
                      edited->guid.to_string() +
                      ") at HQ; terminals receive the change at their next sync\n" +
                      customer_text(*edited);
  return cli.ok(customer_json(*edited), human);
}

void add_edit(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<EditOptions>();
  CLI::App* sub = hq.add_subcommand(
      "edit-customer",
      "Back-office edit of a customer at HQ; the change is distributed to the terminals.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  sub->add_option("ACCOUNT", o->id, "The customer: its account number (e.g. C000000042) or GUID")
      ->required();
  repeatable(sub->add_option(
                    "--set", o->sets,
                    "FIELD=VALUE to change (repeat for several). FIELD is one of: " + field_list())
                 ->required()
                 ->type_name("FIELD=VALUE"));
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_edit(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq erase-customer

struct EraseOptions {
  std::string db, id;
};

int run_erase(const Cli& cli, const EraseOptions& o) {
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto r = (*hq)->erase_customer(o.id);
  if (!r) return cli.fail(r.status());
  Json j;
  j["guid"] = r->customer.to_string();
  j["account_number"] = r->account_number ? Json(*r->account_number) : Json(nullptr);
  Json aliases = Json::array();
  for (const Guid& a : r->aliases) aliases.push_back(a.to_string());
  j["aliases"] = aliases;
  j["already_erased"] = r->already_erased;
  j["customer_deleted"] = r->rows.customers > 0;
  j["received_redacted"] = r->rows.received;
  j["feed_redacted"] = r->rows.feed;
  j["conflicts_redacted"] = r->rows.conflicts;
  j["wal_truncated"] = r->scrubbed;
  std::string who = r->account_number ? *r->account_number + " (guid " + r->customer.to_string() + ")"
                                      : "guid " + r->customer.to_string();
  std::string human =
      (r->already_erased ? "customer " + who + " was erased before; redacted what arrived since: "
                         : "erased customer " + who + ": ") +
      count_text(r->rows.received, "received operation", "received operations") + ", " +
      count_text(r->rows.feed, "feed entry", "feed entries") + " and " +
      count_text(r->rows.conflicts, "journaled conflict", "journaled conflicts") + " redacted" +
      (r->aliases.empty() ? std::string() : "; " + count_text(static_cast<std::int64_t>(r->aliases.size()),
                                                              "GUID merged into it", "GUIDs merged into it") +
                                                " erased with it") +
      ". Terminals delete their copies at their next sync; backups and captures exported before "
      "still hold it (docs/operations.md, \"Right to erasure\")";
  if (!r->scrubbed)
    human += "\nwarning: another process kept the database's write-ahead log busy; it still holds old "
             "pages until HQ's next checkpoint (run this again when HQ is idle to truncate it)";
  return cli.ok(j, human);
}

void add_erase(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<EraseOptions>();
  CLI::App* sub = hq.add_subcommand(
      "erase-customer",
      "Right to erasure: remove a customer's personal data from everything HQ keeps (the\n"
      "customer master, received operations, the outbound feed, the conflict journal, the\n"
      "status view, duplicate match keys). Every terminal that has the customer deletes its\n"
      "copy and redacts its change log at its next sync. Operations that arrive later for\n"
      "the customer fail with 'erased'; it is never created again. Backups and captures\n"
      "exported earlier are outside tillsync (docs/operations.md).");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  sub->add_option("ID", o->id,
                  "The customer: its account number (e.g. C000000042) or GUID (also a GUID merged into "
                  "it, or the GUID of a creation HQ refused)")
      ->required()
      ->type_name("ACCOUNT|GUID");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_erase(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq merge-customers, hq merges

Json merge_json(const MergeRecord& m) {
  Json j;
  j["id"] = m.id;
  j["kept_guid"] = m.kept.to_string();
  j["kept_account"] = m.kept_account ? Json(*m.kept_account) : Json(nullptr);
  j["dropped_guid"] = m.dropped.to_string();
  j["dropped_account"] = m.dropped_account ? Json(*m.dropped_account) : Json(nullptr);
  j["merged_at"] = iso8601_utc(m.at_ms);
  return j;
}

struct MergeOptions {
  std::string db, keep, drop;
};

int run_merge(const Cli& cli, const MergeOptions& o) {
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto r = (*hq)->merge_customers(o.keep, o.drop);
  if (!r) return cli.fail(r.status());
  Json j;
  j["customer"] = customer_json(r->kept);
  j["dropped_guid"] = r->dropped.to_string();
  j["dropped_account"] = r->dropped_account ? Json(*r->dropped_account) : Json(nullptr);
  Json renamed = Json::array();
  for (const Guid& g : r->renamed) renamed.push_back(g.to_string());
  j["renamed"] = renamed;
  const std::string dropped =
      r->dropped_account ? *r->dropped_account + " (guid " + r->dropped.to_string() + ")" : "guid " + r->dropped.to_string();
  return cli.ok(j, "merged customer " + dropped + " into " + r->kept.account_id() +
                       "; both GUIDs and account numbers now name it; terminals learn it at their next sync "
                       "(journaled: hq merges)\n" +
                       customer_text(r->kept));
}

void add_merge(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<MergeOptions>();
  CLI::App* sub = hq.add_subcommand(
      "merge-customers",
      "Merge two existing customers found to be the same person: DROP becomes a name of\n"
      "KEEP. KEEP keeps its values, fills its empty fields from DROP and takes over DROP's\n"
      "addresses, contacts, affiliations and loyalty cards. Operations and requests on\n"
      "either GUID reach KEEP, DROP's account number names KEEP at HQ, and every terminal\n"
      "learns the merge at its next sync. Journaled ('hq merges').");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  sub->add_option("KEEP", o->keep, "The customer that stays: account number or GUID")->required();
  sub->add_option("DROP", o->drop, "The customer merged into it: account number or GUID")->required();
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_merge(cli, *o); });
}

struct MergesOptions {
  std::string db;
};

int run_merges(const Cli& cli, const MergesOptions& o) {
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto all = (*hq)->merges();
  if (!all) return cli.fail(all.status());
  Json list = Json::array();
  std::string human;
  for (const MergeRecord& m : *all) {
    list.push_back(merge_json(m));
    human += "#" + std::to_string(m.id) + " " + iso8601_utc(m.at_ms) + "  " +
             m.dropped_account.value_or(m.dropped.to_string()) + " -> " + m.kept_account.value_or(m.kept.to_string()) +
             "\n";
  }
  if (all->empty()) human = "no identity merges\n";
  Json j;
  j["merges"] = list;
  return cli.ok(j, human.substr(0, human.size() - 1));
}

void add_merges(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<MergesOptions>();
  CLI::App* sub = hq.add_subcommand("merges", "The journal of identity merges ('hq merge-customers'), oldest first.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_merges(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq resync

struct ResyncOptions {
  std::string db, guid;
  std::vector<std::string> sets;
};

int run_resync(const Cli& cli, const ResyncOptions& o) {
  auto guid = Guid::parse(o.guid);
  if (!guid) {
    return cli.fail(Status::InvalidInput(
        "guid", "'" + one_line(o.guid) +
                    "' is not a GUID (e.g. 3f2b8c1e-5d4a-4c3b-9a8e-1f2d3c4b5a69); see "
                    "'tillsync hq sync-status --status failed'"));
  }
  auto fixes = parse_set_options(o.sets);
  if (!fixes) return cli.fail(fixes.status());
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto report = (*hq)->resync(*guid, *fixes);
  if (!report) return cli.fail(report.status());

  std::optional<SyncStatusRecord> record;
  if (auto all = (*hq)->sync_status(std::nullopt)) {
    for (const SyncStatusRecord& r : *all) {
      if (r.guid == *guid) record = r;
    }
  }
  Json j;
  j["guid"] = guid->to_string();
  const Json job = job_json(*report);
  for (const auto& [key, value] : job.items()) j[key] = value;
  j["record"] = record ? status_record_json(*record) : Json(nullptr);

  std::string human = "re-synchronized customer " + guid->to_string() + ": " + job_text(*report);
  if (record) {
    human += "\nstatus now: " + std::string(to_string(record->status));
    if (record->account_number) human += ", account " + *record->account_number;
    if (!record->last_error.empty()) human += "; last error: " + one_line(record->last_error);
  }
  return cli.ok(j, human);
}

void add_resync(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<ResyncOptions>();
  CLI::App* sub = hq.add_subcommand(
      "resync",
      "Fix and retry an async customer whose conversion failed (status 'failed'): the\n"
      "optional --set values correct its data, then its failed operations are applied again.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  sub->add_option("GUID", o->guid, "The customer's GUID, as listed by 'hq sync-status'")
      ->required();
  repeatable(sub->add_option("--set", o->sets,
                             "FIELD=VALUE to correct before retrying (repeat for several). FIELD "
                             "is one of: " +
                                 field_list())
                 ->type_name("FIELD=VALUE"));
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_resync(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq digest

struct DbOptions {
  std::string db;
};

int run_digest(const Cli& cli, const DbOptions& o) {
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto digest = (*hq)->digest();
  if (!digest) return cli.fail(digest.status());
  Json j;
  j["digest"] = digest->hex;
  j["customers"] = digest->customers;
  std::string human =
      digest->hex + "  (" +
      count_text(static_cast<std::int64_t>(digest->customers), "customer", "customers") + ")";
  return cli.ok(j, human);
}

void add_digest(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<DbOptions>();
  CLI::App* sub = hq.add_subcommand(
      "digest",
      "Print a fingerprint of HQ's customer data, to compare with 'tillsync store digest'\n"
      "on the terminals or with a replay (account numbers and loyalty cards are left out).");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_digest(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq export-log

struct ExportOptions {
  std::string db, node, out;
};

Status check_node_id(const std::string& node) {
  const auto slash = node.find('/');
  if (slash == std::string::npos) {
    return Status::InvalidInput("node", "--node must be a terminal's node id STORE/TERMINAL "
                                        "(e.g. S001/T01), got '" +
                                            one_line(node) + "'");
  }
  if (Status s = check_identifier("store", node.substr(0, slash)); !s)
    return Status::InvalidInput("node", "--node: " + s.message());
  if (Status s = check_identifier("terminal", node.substr(slash + 1)); !s)
    return Status::InvalidInput("node", "--node: " + s.message());
  return Status::Ok();
}

struct ExportCounts {
  std::int64_t records = 0, first_seq = 0, last_seq = 0;
};

Status export_received(HqStore& store, const std::string& node, const std::string& out,
                       ExportCounts& counts) {
  TS_ASSIGN_OR_RETURN(auto batch, store.received(node, 0, kExportBatch));
  if (batch.empty()) {
    return Status::NotFound("HQ has received nothing from node " + node +
                            " (check the node id with 'tillsync hq sync-status'); no file was "
                            "written");
  }
  CaptureHeader header;
  header.node_id = node;
  header.first_seq = batch.front().seq;
  header.created_at_ms = SystemClock::instance().now_ms();
  TS_ASSIGN_OR_RETURN(auto writer, CaptureWriter::create(out, header));
  counts.first_seq = header.first_seq;
  bool ok = false;
  struct RemoveOnFailure {
    const std::string& path;
    const bool& ok;
    ~RemoveOnFailure() {
      if (!ok) {
        std::error_code ec;
        std::filesystem::remove(path, ec);
      }
    }
  } cleanup{out, ok};
  while (!batch.empty()) {
    for (const LogRecord& record : batch) {
      TS_RETURN_IF_ERROR(writer.append(record));
      counts.last_seq = record.seq;
    }
    if (batch.size() < kExportBatch) break;
    TS_ASSIGN_OR_RETURN(batch, store.received(node, counts.last_seq, kExportBatch));
  }
  TS_RETURN_IF_ERROR(writer.finish());
  counts.records = writer.records();
  ok = true;
  return Status::Ok();
}

int run_export(const Cli& cli, const ExportOptions& o) {
  if (Status s = check_node_id(o.node); !s) return cli.fail(s);
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  ExportCounts counts;
  if (Status s = export_received((*hq)->store(), o.node, o.out, counts); !s) return cli.fail(s);
  auto terminals = (*hq)->terminals();
  if (!terminals) return cli.fail(terminals.status());
  std::int64_t pruned = 0;
  for (const TerminalInfo& t : *terminals) pruned = t.node_id == o.node ? t.pruned_through : pruned;
  Json j;
  j["pruned_through"] = pruned;
  j["records"] = counts.records;
  j["out"] = o.out;
  j["node"] = o.node;
  j["first_seq"] = counts.first_seq;
  j["last_seq"] = counts.last_seq;
  std::string human = "exported " + count_text(counts.records, "log record", "log records") +
                      " HQ received from terminal " + o.node + " (seq " +
                      std::to_string(counts.first_seq) + "-" + std::to_string(counts.last_seq) +
                      ") to " + o.out;
  if (pruned > 0) {
    human += "; HQ holds seqs " + std::to_string(pruned + 1) + "-" + std::to_string(counts.last_seq) +
             ": it deleted seqs 1-" + std::to_string(pruned) + " after applying them and their retention";
  }
  return cli.ok(j, human);
}

void add_export(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* sub = hq.add_subcommand(
      "export-log",
      "Write what HQ received from one terminal to a capture file (.tslog) for support,\n"
      "to be inspected or replayed with 'tillsync replay'.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  sub->add_option("--node", o->node, "The terminal's node id, STORE/TERMINAL (e.g. S001/T01)")
      ->required()
      ->type_name("NODE");
  sub->add_option("--out", o->out, "Capture file to write (e.g. S001-T01-at-hq.tslog)")
      ->required()
      ->type_name("FILE.tslog");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_export(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq conflicts / hq resolve

Json conflict_json(const ConflictRecord& c) {
  auto write = [](const FieldWrite& w) {
    Json j;
    j["node"] = w.node;
    j["hlc"] = w.hlc.to_string();
    j["version"] = w.version;
    return j;
  };
  Json j;
  j["id"] = c.id;
  j["customer_guid"] = c.customer.to_string();
  j["field"] = c.field;
  j["kept"] = c.kept;
  j["lost"] = c.lost;
  j["kept_write"] = write(c.kept_write);
  j["lost_write"] = write(c.lost_write);
  j["policy"] = std::string(to_string(c.policy));
  j["outcome"] = c.outcome;
  j["status"] = c.status;
  j["created_at"] = iso8601_utc(c.created_at_ms);
  return j;
}

int run_conflicts(const Cli& cli, const DbOptions& o) {
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto list = (*hq)->conflicts();
  if (!list) return cli.fail(list.status());
  Json arr = Json::array();
  for (const ConflictRecord& c : *list) arr.push_back(conflict_json(c));
  Json j;
  j["conflicts"] = std::move(arr);
  std::string human;
  if (list->empty()) {
    human = "no conflicts journaled\n";
  } else {
    human = pad("ID", 6) + pad("STATUS", 10) + pad("FIELD", 16) + pad("KEPT", 24) +
            pad("LOST", 24) + pad("POLICY", 9) + "CUSTOMER\n";
    for (const ConflictRecord& c : *list) {
      human += pad(std::to_string(c.id), 6) + pad(c.status, 10) + pad(c.field, 16) +
               pad(one_line(c.kept) + " (" + c.kept_write.node + ")", 24) +
               pad(one_line(c.lost) + " (" + c.lost_write.node + ")", 24) +
               pad(std::string(to_string(c.policy)), 9) + c.customer.to_string() + "\n";
    }
    human += count_text(static_cast<std::int64_t>(list->size()), "conflict", "conflicts") + "\n";
  }
  return cli.ok(j, human);
}

void add_conflicts(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<DbOptions>();
  CLI::App* sub = hq.add_subcommand(
      "conflicts",
      "The conflict journal: every pair of concurrent edits of the same field, with both\n"
      "values, both writers (node, HLC), the policy and the outcome. Open ones (manual\n"
      "policy) wait for 'hq resolve'.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_conflicts(cli, *o); });
}

// ---------------------------------------------------------------------------
// hq terminals

int run_terminals(const Cli& cli, const DbOptions& o) {
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto list = (*hq)->terminals();
  if (!list) return cli.fail(list.status());
  Json arr = Json::array();
  std::string human;
  if (list->empty()) {
    human = "no terminal has contacted HQ yet\n";
  } else {
    human = pad("NODE", 16) + pad("PUSHED UP TO", 14) + pad("PULLED UP TO", 14) + pad("FILTERED", 10) +
            "CLOCK\n";
  }
  for (const TerminalInfo& t : *list) {
    Json j;
    j["node"] = t.node_id;
    j["push_cursor"] = t.push_cursor;
    j["pull_cursor"] = t.pull_cursor ? Json(*t.pull_cursor) : Json(nullptr);
    j["filtered"] = t.filtered;
    j["clock_ahead_ms"] = t.clock_ahead_ms;
    j["clock_seen_at"] = t.clock_seen_at_ms > 0 ? Json(iso8601_utc(t.clock_seen_at_ms)) : Json(nullptr);
    j["pruned_through"] = t.pruned_through;
    arr.push_back(std::move(j));
    std::string clock = t.clock_ahead_ms > 0
                            ? std::to_string(t.clock_ahead_ms / 1000) + " s ahead at " +
                                  iso8601_utc(t.clock_seen_at_ms) + ": fix this till's clock"
                            : "ok";
    human += pad(t.node_id, 16) + pad(std::to_string(t.push_cursor), 14) +
             pad(t.pull_cursor ? std::to_string(*t.pull_cursor) : std::string("-"), 14) +
             pad(t.filtered ? "yes" : "no", 10) + clock + "\n";
  }
  Json j;
  j["terminals"] = std::move(arr);
  return cli.ok(j, human);
}

void add_terminals(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<DbOptions>();
  CLI::App* sub = hq.add_subcommand(
      "terminals",
      "Every terminal HQ has heard from: how far HQ holds its log, how far it pulled\n"
      "HQ's feed, whether it is registered for filtered pulls (D5), and whether its clock\n"
      "ran further ahead of HQ's than HQ believes (--max-clock-offset-ms) at its last push.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_terminals(cli, *o); });
}

struct ResolveOptions {
  std::string db, keep;
  std::int64_t id = 0;
};

int run_resolve(const Cli& cli, const ResolveOptions& o) {
  auto hq = open_hq(o.db);
  if (!hq) return cli.fail(hq.status());
  auto resolved = (*hq)->resolve_conflict(o.id, o.keep == "lost");
  if (!resolved) return cli.fail(resolved.status());
  std::string human = "conflict " + std::to_string(o.id) + " resolved: " + resolved->field +
                      " is now '" + one_line(resolved->kept) +
                      "'; terminals receive it at their next sync";
  return cli.ok(conflict_json(*resolved), human);
}

void add_resolve(CLI::App& hq, Cli& cli) {
  auto o = std::make_shared<ResolveOptions>();
  CLI::App* sub = hq.add_subcommand(
      "resolve",
      "Settle a conflict held under the manual policy: keep the current value (kept) or\n"
      "apply the held one (lost), which then reaches every terminal.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE|URL");
  sub->add_option("CONFLICT_ID", o->id, "The conflict's id, as listed by 'hq conflicts'")->required();
  sub->add_option("--keep", o->keep, "Which value stays: kept (current) or lost (the held one)")
      ->required()
      ->check(CLI::IsMember({"kept", "lost"}))
      ->type_name("kept|lost");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_resolve(cli, *o); });
}

// ---------------------------------------------------------------------------
// keygen (a top-level command; it lives here with the HQ side of CurveZMQ)

void add_keygen(CLI::App& root, Cli& cli) {
  auto out = std::make_shared<std::string>();
  CLI::App* sub = root.add_subcommand(
      "keygen",
      "Write a new CurveZMQ key pair to DIR/public.key and DIR/secret.key (mode 0600),\n"
      "for HQ (hq serve --keys) or a terminal (store init --keys). Never overwrites keys.");
  sub->add_option("--out", *out, "Directory for the key pair (created if needed)")
      ->required()
      ->type_name("DIR");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, out] {
    auto keys = transport::generate_key_pair();
    if (!keys) return cli.fail(keys.status());
    if (Status s = transport::save_key_pair(*keys, *out); !s) return cli.fail(s);
    const std::string pub = (std::filesystem::path(*out) / "public.key").string();
    Json j;
    j["public_key"] = keys->public_key;
    j["public_key_file"] = pub;
    j["secret_key_file"] = (std::filesystem::path(*out) / "secret.key").string();
    return cli.ok(j, "wrote " + pub + " and secret.key (keep it secret); public key: " +
                         keys->public_key);
  });
}

}  // namespace

void add_hq_commands(CLI::App& root, Cli& cli) {
  add_keygen(root, cli);
  CLI::App* hq = root.add_subcommand(
      "hq",
      "Commands for the head office (HQ): set up and serve HQ, run the customer sync job,\n"
      "look at customers and their synchronization status, back-office edits, erasure,\n"
      "identity merges.");
  hq->require_subcommand(1);
  cli.add_json_flag(*hq);
  add_init(*hq, cli);
  add_serve(*hq, cli);
  add_run_job(*hq, cli);
  add_compact(*hq, cli);
  add_customers(*hq, cli);
  add_sync_status(*hq, cli);
  add_edit(*hq, cli);
  add_erase(*hq, cli);
  add_merge(*hq, cli);
  add_merges(*hq, cli);
  add_resync(*hq, cli);
  add_digest(*hq, cli);
  add_export(*hq, cli);
  add_conflicts(*hq, cli);
  add_resolve(*hq, cli);
  add_terminals(*hq, cli);
}

}  // namespace tillsync::cli
