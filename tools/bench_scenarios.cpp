#include "bench_scenarios.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "bench/baselines.h"
#include "local_cluster.h"
#include "tillsync/capture.h"
#include "tillsync/headquarters.h"
#include "tillsync/local_hq_link.h"
#include "tillsync/replay.h"
#include "tillsync/storage/database.h"
#include "tillsync/storage/pg.h"

extern char** environ;

namespace tillsync::cli {
namespace {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;

// HQ's own job is parked where a scenario runs the sync job itself and times it.
constexpr int kParkedJobMs = 3'600'000;
constexpr std::size_t kPushBatch = 500;  // the Replicator's default
constexpr int kIdleRoundMs = 10;         // scenario e: pause after a round that moved nothing
constexpr double kGiveUpSeconds = 3600;  // e, f: a sync that makes no progress is an error

double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

double round_to(double v, int digits) {
  const double f = std::pow(10.0, digits);
  return std::round(v * f) / f;
}

// Nearest-rank percentile of `values` (sorted in place), p in [0, 100].
double percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values.size()));
  const std::size_t index = rank < 1 ? 0 : static_cast<std::size_t>(rank) - 1;
  return values[std::min(index, values.size() - 1)];
}

NewCustomer bench_person(std::size_t terminal, std::size_t i) {
  NewCustomer n;
  n.first_name = "Bench" + std::to_string(terminal);
  n.last_name = "Customer" + std::to_string(i);
  n.email = "bench" + std::to_string(terminal) + "." + std::to_string(i) + "@example.com";
  n.phone = "+1555" + std::to_string(1'000'000 + terminal * 100'000 + i);
  return n;
}

Result<std::unique_ptr<Headquarters>> fresh_hq(const std::string& path, bool durable = true) {
  HqOptions options;
  options.durable = durable;
  return Headquarters::init(path, "C", options);
}

HqServiceOptions serve_options(int job_interval_ms) {
  HqServiceOptions o;
  o.listen = "tcp://127.0.0.1:*";
  o.job_interval_ms = job_interval_ms;
  // The bench measures what HQ can serve; one benchmark terminal sends far more than
  // a till would, and the per-node rate limit would measure only itself.
  o.node_requests_per_second = 0;
  return o;
}

class Bench {
 public:
  explicit Bench(const BenchConfig& config) : c_(config) {}

  std::vector<ScenarioResult> run() {
    std::vector<ScenarioResult> out;
    if (want('a')) out.push_back(guard('a', "terminal creation latency, async vs sync", &Bench::creation_latency));
    if (want('b')) out.push_back(guard('b', "K concurrent terminals creating customers, sync vs async", &Bench::concurrent_terminals));
    if (want('c') || want('d') || want('g') || want('h')) {
      auto family = replication_family();
      for (auto& r : family) out.push_back(std::move(r));
    }
    if (want('e')) out.push_back(guard('e', "convergence after a partition heals (10 terminals)", &Bench::convergence));
    if (want('f')) out.push_back(guard('f', "peak resident memory syncing a large backlog", &Bench::memory));
    if (want('i')) out.push_back(guard('i', "PostgreSQL HQ throughput, 1/2/4 hq serve processes on one database", &Bench::postgres_hq));
    if (want('j')) out.push_back(guard('j', "database size per customer as customers are edited again and again (10 terminals)", &Bench::growth));
    std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) { return x.id < y.id; });
    return out;
  }

 private:
  bool want(char id) const { return c_.only.empty() || c_.only.count(id) > 0; }
  std::size_t pick(std::size_t quick, std::size_t full) const { return c_.quick ? quick : full; }
  void say(const std::string& line) const {
    if (c_.progress) c_.progress(line);
  }
  std::string path(const std::string& name) const { return (fs::path(c_.dir) / name).string(); }

  ScenarioResult guard(char id, std::string title, Status (Bench::*fn)(ScenarioResult&)) {
    ScenarioResult r;
    r.id = id;
    r.title = std::move(title);
    say(std::string("scenario ") + id + ": " + r.title);
    r.error = (this->*fn)(r);
    return r;
  }

  // ---- a ------------------------------------------------------------------
  Status creation_latency(ScenarioResult& r) {
    const std::size_t n = pick(300, 3000);
    TS_ASSIGN_OR_RETURN(auto hq_db, fresh_hq(path("a-hq.db")));
    BackgroundHq hq;
    TS_RETURN_IF_ERROR(hq.start(std::move(hq_db), serve_options(kParkedJobMs)));

    auto measure = [&](bool async_mode, Json& into) -> Status {
      TerminalSpec spec;
      spec.db = path(async_mode ? "a-async.db" : "a-sync.db");
      spec.store = async_mode ? "S001" : "S002";
      spec.async_mode = async_mode;
      TS_ASSIGN_OR_RETURN(auto t, make_terminal(spec, hq.endpoint()));
      std::vector<double> us;
      us.reserve(n);
      const auto start = SteadyClock::now();
      for (std::size_t i = 0; i < n; ++i) {
        const auto t0 = SteadyClock::now();
        TS_ASSIGN_OR_RETURN(CreateOutcome out, t.node->create_customer(bench_person(async_mode ? 1 : 2, i)));
        us.push_back(std::chrono::duration<double, std::micro>(SteadyClock::now() - t0).count());
        const CreationMode expected = async_mode ? CreationMode::async : CreationMode::sync;
        if (out.mode != expected) {
          return Status::Internal("a sync-mode creation fell back to async: " + out.fallback_reason);
        }
      }
      const double wall = seconds_since(start);
      into["p50_us"] = round_to(percentile(us, 50), 1);
      into["p99_us"] = round_to(percentile(us, 99), 1);
      into["per_second"] = round_to(static_cast<double>(n) / wall, 0);
      return Status::Ok();
    };
    Json async_f, sync_f;
    TS_RETURN_IF_ERROR(measure(true, async_f));
    TS_RETURN_IF_ERROR(measure(false, sync_f));
    TS_RETURN_IF_ERROR(hq.stop());
    TS_ASSIGN_OR_RETURN(bench::LatencyStats raw, bench::raw_sqlite_single_inserts(path("a-raw"), n, true));

    r.figures["creations"] = n;
    r.figures["durability"] = "synchronous=FULL (terminal, HQ and raw SQLite)";
    r.figures["async"] = async_f;
    r.figures["sync_loopback"] = sync_f;
    r.baselines["raw_sqlite_single_row_insert"] = {{"p50_us", round_to(raw.p50_us, 1)},
                                                   {"p99_us", round_to(raw.p99_us, 1)},
                                                   {"per_second", round_to(raw.per_second, 0)}};
    const double async_p99 = async_f["p99_us"].get<double>();
    r.ratios["async_p50_vs_raw_sqlite"] = round_to(async_f["p50_us"].get<double>() / raw.p50_us, 2);
    r.ratios["async_p99_vs_raw_sqlite"] = round_to(async_p99 / raw.p99_us, 2);
    r.ratios["sync_p50_vs_async_p50"] =
        round_to(sync_f["p50_us"].get<double>() / async_f["p50_us"].get<double>(), 2);
    r.targets.push_back({"async creation p99 < 1 ms", async_p99 < 1000.0,
                         "p99 " + std::to_string(static_cast<long>(async_p99)) + " us"});
    r.bound =
        "async: one SQLite transaction (customer row + log row + HLC) with an fsync of the WAL; "
        "sync: adds a loopback round trip and HQ's own durable commit";
    return Status::Ok();
  }

  // ---- b ------------------------------------------------------------------
  struct ModeFigures {
    double creations_per_second = 0;
    double hq_cpu_us_per_creation = 0;
    double converged_seconds = 0;  // async: creation + upload + conversion
  };

  Result<ModeFigures> run_terminals(std::size_t k, std::size_t per_terminal, bool async_mode) {
    const std::string tag = std::string("b-") + (async_mode ? "async-" : "sync-") + std::to_string(k);
    TS_ASSIGN_OR_RETURN(auto hq_db, fresh_hq(path(tag + "-hq.db")));
    BackgroundHq hq;
    TS_RETURN_IF_ERROR(hq.start(std::move(hq_db), serve_options(kParkedJobMs)));
    std::vector<EmbeddedTerminal> terminals;
    for (std::size_t i = 0; i < k; ++i) {
      TerminalSpec spec;
      spec.db = path(tag + "-t" + std::to_string(i) + ".db");
      spec.store = "S" + std::to_string(100 + i);
      spec.async_mode = async_mode;
      spec.rts_timeout_ms = 30'000;  // a busy HQ is slow, not gone
      TS_ASSIGN_OR_RETURN(auto t, make_terminal(spec, hq.endpoint()));
      terminals.push_back(std::move(t));
    }
    // Every terminal thread runs `work` on its own terminal; the first error wins.
    auto in_parallel = [&](const std::function<Status(std::size_t, EmbeddedTerminal&)>& work) -> Status {
      std::vector<Status> results(k);
      std::vector<std::thread> threads;
      std::barrier start(static_cast<std::ptrdiff_t>(k));
      for (std::size_t i = 0; i < k; ++i) {
        threads.emplace_back([&, i] {
          start.arrive_and_wait();
          results[i] = work(i, terminals[i]);
        });
      }
      for (auto& t : threads) t.join();
      for (auto& s : results) TS_RETURN_IF_ERROR(s);
      return Status::Ok();
    };

    ModeFigures f;
    const double cpu0 = hq.cpu_seconds();
    const auto start = SteadyClock::now();
    TS_RETURN_IF_ERROR(in_parallel([&](std::size_t i, EmbeddedTerminal& t) -> Status {
      for (std::size_t j = 0; j < per_terminal; ++j) {
        TS_ASSIGN_OR_RETURN(CreateOutcome out, t.node->create_customer(bench_person(i, j)));
        if (!async_mode && out.mode != CreationMode::sync)
          return Status::Internal("a sync-mode creation fell back to async: " + out.fallback_reason);
      }
      return Status::Ok();
    }));
    const double create_wall = seconds_since(start);
    const double total = static_cast<double>(k * per_terminal);
    f.creations_per_second = total / create_wall;
    double hq_cpu = hq.cpu_seconds() - cpu0;
    if (async_mode) {
      // The same creations reach HQ later: uploads, then the sync job converts them.
      const double cpu1 = hq.cpu_seconds();
      TS_RETURN_IF_ERROR(in_parallel([](std::size_t, EmbeddedTerminal& t) -> Status {
        TS_ASSIGN_OR_RETURN(auto pushed, t.replicator->push_all());
        (void)pushed;
        return Status::Ok();
      }));
      hq_cpu += hq.cpu_seconds() - cpu1;
      TS_RETURN_IF_ERROR(hq.stop());
      const double job0 = thread_cpu_seconds();
      TS_ASSIGN_OR_RETURN(JobReport report, hq.hq().run_sync_job(k * per_terminal + 1));
      hq_cpu += thread_cpu_seconds() - job0;
      if (report.converted != k * per_terminal)
        return Status::Internal("the sync job converted " + std::to_string(report.converted) +
                                " of " + std::to_string(k * per_terminal) + " customers");
      f.converged_seconds = seconds_since(start);
    } else {
      TS_RETURN_IF_ERROR(hq.stop());
    }
    f.hq_cpu_us_per_creation = hq_cpu * 1e6 / total;
    return f;
  }

  Status concurrent_terminals(ScenarioResult& r) {
    const std::size_t per_terminal = pick(8, 50);
    r.figures["creations_per_terminal"] = per_terminal;
    Json rows = Json::array();
    for (std::size_t k : {1, 8, 32, 64}) {
      say("  K=" + std::to_string(k));
      TS_ASSIGN_OR_RETURN(ModeFigures sync_f, run_terminals(k, per_terminal, false));
      TS_ASSIGN_OR_RETURN(ModeFigures async_f, run_terminals(k, per_terminal, true));
      rows.push_back({{"terminals", k},
                      {"sync_creations_per_second", round_to(sync_f.creations_per_second, 0)},
                      {"async_creations_per_second", round_to(async_f.creations_per_second, 0)},
                      {"sync_hq_cpu_us_per_creation", round_to(sync_f.hq_cpu_us_per_creation, 1)},
                      {"async_hq_cpu_us_per_creation", round_to(async_f.hq_cpu_us_per_creation, 1)},
                      {"async_all_converted_seconds", round_to(async_f.converged_seconds, 3)}});
      r.ratios["async_vs_sync_creations_per_second_k" + std::to_string(k)] =
          round_to(async_f.creations_per_second / sync_f.creations_per_second, 2);
      r.ratios["async_vs_sync_hq_cpu_per_creation_k" + std::to_string(k)] =
          round_to(async_f.hq_cpu_us_per_creation / sync_f.hq_cpu_us_per_creation, 2);
    }
    r.figures["by_terminals"] = rows;
    r.baselines["note"] = "sync mode is the baseline: every creation is a round trip to HQ";
    r.bound =
        "sync: HQ serves one request at a time, each with a durable commit, so creations/s "
        "stop growing with K; async: each terminal's own disk, and HQ's work is batched "
        "(500 operations per upload commit, 1000 per job transaction). HQ CPU is the "
        "serving thread plus the sync job; ZeroMQ's I/O thread is not counted";
    return Status::Ok();
  }

  // ---- c, d, g, h -----------------------------------------------------------
  std::vector<ScenarioResult> replication_family() {
    std::vector<ScenarioResult> out;
    ScenarioResult c{.id = 'c', .title = "replication throughput terminal->HQ, durable acks"};
    ScenarioResult d{.id = 'd', .title = "customer sync job throughput"};
    ScenarioResult g{.id = 'g', .title = "replay of a capture file"};
    ScenarioResult h{.id = 'h', .title = "peer: SQLite session changesets over ZeroMQ"};
    say("scenario c/d/g/h: replication, sync job, replay, session-changeset peer");
    Status s = replication(c, d, g);
    if (!s) {
      c.error = s;
      d.error = s;
      g.error = s;
    }
    if (want('c') || want('h')) {
      if (Status ps = peer(c, h); !ps) h.error = ps;
    }
    if (want('c')) out.push_back(std::move(c));
    if (want('d')) out.push_back(std::move(d));
    if (want('g')) out.push_back(std::move(g));
    if (want('h')) out.push_back(std::move(h));
    return out;
  }

  std::size_t replication_ops() const { return pick(10'000, 100'000); }

  // A terminal with `n` creations waiting for HQ (made offline, in async mode). The
  // backlog is set up with synchronous=NORMAL: it is not what is measured.
  Result<EmbeddedTerminal> backlog_terminal(const std::string& db, const std::string& store,
                                            const std::string& endpoint, std::size_t n,
                                            std::size_t terminal_no) {
    TerminalSpec spec;
    spec.db = db;
    spec.store = store;
    spec.async_mode = true;
    spec.durability = Durability::normal;
    spec.rts_timeout_ms = 30'000;
    TS_ASSIGN_OR_RETURN(auto t, make_terminal(spec, endpoint));
    for (std::size_t i = 0; i < n; ++i) {
      TS_ASSIGN_OR_RETURN(auto out, t.node->create_customer(bench_person(terminal_no, i), {.offline = true}));
      (void)out;
    }
    return t;
  }

  Status replication(ScenarioResult& c, ScenarioResult& d, ScenarioResult& g) {
    const std::size_t n = replication_ops();
    TS_ASSIGN_OR_RETURN(auto hq_db, fresh_hq(path("c-hq.db")));
    BackgroundHq hq;
    TS_RETURN_IF_ERROR(hq.start(std::move(hq_db), serve_options(kParkedJobMs)));
    say("  building a backlog of " + std::to_string(n) + " operations");
    TS_ASSIGN_OR_RETURN(auto t, backlog_terminal(path("c-terminal.db"), "S001", hq.endpoint(), n, 1));

    // Bytes per operation as shipped: the log records' payloads (plus fixed fields).
    std::size_t payload_bytes = 0;
    {
      TS_ASSIGN_OR_RETURN(auto sample, t.node->read_log(0, 1000));
      for (const auto& rec : sample) payload_bytes += rec.payload.size();
      payload_bytes = sample.empty() ? 0 : payload_bytes / sample.size();
    }
    const std::size_t record_bytes = payload_bytes + 16 /*op id*/ + 16 /*entity*/ + 8 + 8 + 1;

    say("  pushing to HQ");
    const double hq_cpu0 = hq.cpu_seconds(), terminal_cpu0 = thread_cpu_seconds();
    const auto start = SteadyClock::now();
    TS_ASSIGN_OR_RETURN(std::int64_t pushed, t.replicator->push_all());
    const double push_s = seconds_since(start);
    const double hq_cpu_s = hq.cpu_seconds() - hq_cpu0, terminal_cpu_s = thread_cpu_seconds() - terminal_cpu0;
    if (static_cast<std::size_t>(pushed) != n)
      return Status::Internal("HQ acknowledged " + std::to_string(pushed) + " of " + std::to_string(n));
    TS_RETURN_IF_ERROR(hq.stop());
    const double repl_rate = static_cast<double>(n) / push_s;

    say("  raw SQLite batched insert and raw ZeroMQ transfer of the same rows");
    TS_ASSIGN_OR_RETURN(double raw_sqlite, bench::raw_sqlite_batched_inserts(path("c-raw"), n, kPushBatch, record_bytes, true));
    TS_ASSIGN_OR_RETURN(double raw_zmq, bench::raw_zmq_transfer(n, record_bytes, kPushBatch));
    c.figures["operations"] = n;
    c.figures["bytes_per_operation"] = record_bytes;
    c.figures["batch"] = kPushBatch;
    c.figures["ops_per_second"] = round_to(repl_rate, 0);
    c.figures["seconds"] = round_to(push_s, 3);
    c.figures["hq_cpu_seconds"] = round_to(hq_cpu_s, 3);
    c.figures["terminal_cpu_seconds"] = round_to(terminal_cpu_s, 3);
    c.baselines["raw_sqlite_batched_insert_rows_per_second"] = round_to(raw_sqlite, 0);
    c.baselines["raw_zmq_push_pull_messages_per_second"] = round_to(raw_zmq, 0);
    c.ratios["vs_raw_sqlite_batched_insert"] = round_to(repl_rate / raw_sqlite, 2);
    c.ratios["vs_raw_zmq"] = round_to(repl_rate / raw_zmq, 2);
    c.targets.push_back({"replication >= 50% of raw SQLite batched insert", repl_rate >= 0.5 * raw_sqlite,
                         std::to_string(static_cast<long>(repl_rate)) + " vs " +
                             std::to_string(static_cast<long>(raw_sqlite)) + " rows/s"});
    c.bound =
        "HQ's serving thread: staging each record (its (node, seq) row, unique op id and "
        "staged-index entries, one multi-row INSERT per 64 records) and one durable commit "
        "per 500-operation batch; two batches in flight, so HQ finds the next one waiting, "
        "and the terminal's ack commit and next log read overlap HQ's work";

    // d: the sync job converts every staged creation.
    say("  customer sync job");
    const auto job_start = SteadyClock::now();
    TS_ASSIGN_OR_RETURN(JobReport report, hq.hq().run_sync_job(n + 1));
    const double job_s = seconds_since(job_start);
    if (report.converted != n)
      return Status::Internal("the sync job converted " + std::to_string(report.converted) + " of " + std::to_string(n));
    d.figures["customers"] = n;
    d.figures["converted_per_second"] = round_to(static_cast<double>(n) / job_s, 0);
    d.figures["seconds"] = round_to(job_s, 3);
    d.baselines["raw_sqlite_batched_insert_rows_per_second"] = round_to(raw_sqlite, 0);
    d.ratios["vs_raw_sqlite_batched_insert"] = round_to(static_cast<double>(n) / job_s / raw_sqlite, 2);
    d.bound =
        "per customer: validation, duplicate lookup on normalized e-mail/phone, the account "
        "number, the customer row with its match keys and field-write state, the status view "
        "and a feed entry, 1000 customers per durable transaction";

    // g: a capture of the terminal's log, verified and replayed into a fresh HQ.
    say("  replay of a capture of the same log");
    const std::string capture = path("g-terminal.tslog");
    {
      TS_ASSIGN_OR_RETURN(auto w, CaptureWriter::create(capture, {.node_id = t.id(), .first_seq = 1, .created_at_ms = 0}));
      std::int64_t after = 0;
      for (;;) {
        TS_ASSIGN_OR_RETURN(auto batch, t.node->read_log(after, 5000));
        if (batch.empty()) break;
        for (const auto& rec : batch) TS_RETURN_IF_ERROR(w.append(rec));
        after = batch.back().seq;
      }
      TS_RETURN_IF_ERROR(w.finish());
    }
    const auto v_start = SteadyClock::now();
    TS_ASSIGN_OR_RETURN(ReplaySummary verified, verify_captures({capture}));
    const double verify_s = seconds_since(v_start);
    TS_ASSIGN_OR_RETURN(auto replay_hq, fresh_hq(path("g-hq.db")));
    const auto r_start = SteadyClock::now();
    TS_ASSIGN_OR_RETURN(ReplaySummary replayed, replay_captures({capture}, *replay_hq));
    const double replay_s = seconds_since(r_start);
    g.figures["records"] = verified.records;
    g.figures["capture_bytes"] = static_cast<std::int64_t>(fs::file_size(capture));
    g.figures["verify_records_per_second"] = round_to(static_cast<double>(verified.records) / verify_s, 0);
    g.figures["replay_records_per_second"] = round_to(static_cast<double>(replayed.records) / replay_s, 0);
    g.baselines["live_replication_plus_job_ops_per_second"] =
        round_to(static_cast<double>(n) / (push_s + job_s), 0);
    g.ratios["replay_vs_live_push_plus_job"] =
        round_to(static_cast<double>(replayed.records) / replay_s / (static_cast<double>(n) / (push_s + job_s)), 2);
    g.bound =
        "verify: reading and CRC32C-checking frames and decoding every payload; replay: HQ's "
        "ingestion and sync job (the same code as live), durable";
    return Status::Ok();
  }

  Status peer(ScenarioResult& c, ScenarioResult& h) {
    const std::size_t n = replication_ops();
    say("  peer: SQLite session changesets over ZeroMQ, " + std::to_string(n) + " operations");
    TS_ASSIGN_OR_RETURN(bench::PeerStats p, bench::session_changeset_peer(path("h-peer"), n, kPushBatch, true));
    h.figures["operations"] = p.ops;
    h.figures["batch"] = kPushBatch;
    h.figures["ops_per_second"] = round_to(p.ops_per_second, 0);
    h.figures["bytes_shipped"] = p.bytes_shipped;
    h.bound =
        "the peer ships row images with per-changeset ids only: no per-operation identity "
        "or staging, no status view, no conflict detection beyond what changeset_apply "
        "reports; capture (sessions attached, synchronous=NORMAL) is timed apart, like "
        "tillsync's backlog";
    if (c.figures.contains("ops_per_second")) {
      const double repl = c.figures["ops_per_second"].get<double>();
      c.baselines["session_changeset_peer_ops_per_second"] = round_to(p.ops_per_second, 0);
      c.ratios["vs_session_changeset_peer"] = round_to(repl / p.ops_per_second, 2);
      c.targets.push_back({"replication >= session-changeset peer", repl >= p.ops_per_second,
                           std::to_string(static_cast<long>(repl)) + " vs " +
                               std::to_string(static_cast<long>(p.ops_per_second)) + " ops/s"});
      h.baselines["tillsync_replication_ops_per_second"] = round_to(repl, 0);
      h.ratios["tillsync_vs_peer"] = round_to(repl / p.ops_per_second, 2);
    }
    return Status::Ok();
  }

  // ---- e ------------------------------------------------------------------
  Status convergence(ScenarioResult& r) {
    constexpr std::size_t kTerminals = 10;
    const std::size_t per_terminal = pick(100, 1000);
    const std::size_t total = kTerminals * per_terminal;
    // The partition: terminals work offline while HQ is down.
    say("  " + std::to_string(kTerminals) + " terminals build a backlog of " + std::to_string(total) + " operations offline");
    std::vector<EmbeddedTerminal> terminals;
    TS_ASSIGN_OR_RETURN(auto hq_db, fresh_hq(path("e-hq.db")));
    BackgroundHq hq;
    TS_RETURN_IF_ERROR(hq.start(std::move(hq_db), serve_options(1)));
    for (std::size_t i = 0; i < kTerminals; ++i) {
      TS_ASSIGN_OR_RETURN(auto t, backlog_terminal(path("e-t" + std::to_string(i) + ".db"),
                                                   "S" + std::to_string(200 + i), hq.endpoint(),
                                                   per_terminal, i));
      terminals.push_back(std::move(t));
    }
    // Heal: every terminal syncs until it holds every customer with an account number.
    std::vector<Status> results(kTerminals);
    std::vector<double> uploaded_at(kTerminals), first_done_at(kTerminals);
    std::vector<std::thread> threads;
    std::barrier go(static_cast<std::ptrdiff_t>(kTerminals));
    const double hq_cpu0 = hq.cpu_seconds();
    const auto start = SteadyClock::now();
    for (std::size_t i = 0; i < kTerminals; ++i) {
      threads.emplace_back([&, i] {
        results[i] = [&]() -> Status {
          go.arrive_and_wait();
          EmbeddedTerminal& t = terminals[i];
          TS_ASSIGN_OR_RETURN(auto db, storage::Database::open(t.db));
          TS_ASSIGN_OR_RETURN(auto pushed, t.replicator->push_all());
          (void)pushed;
          uploaded_at[i] = seconds_since(start);
          for (;;) {
            TS_ASSIGN_OR_RETURN(auto report, t.replicator->sync_once());
            if (report.pulled > 0 && first_done_at[i] == 0) first_done_at[i] = seconds_since(start);
            TS_ASSIGN_OR_RETURN(auto have, db->query_int("SELECT count(account_number) FROM customers"));
            if (have.value_or(0) == static_cast<std::int64_t>(total)) return Status::Ok();
            if (seconds_since(start) > kGiveUpSeconds) return Status::Internal(t.id() + " did not converge");
            // Like `store sync --watch --interval-ms 10`: a round that brought nothing
            // waits a little instead of hammering HQ while its sync job runs.
            if (report.pulled == 0) std::this_thread::sleep_for(std::chrono::milliseconds(kIdleRoundMs));
          }
        }();
      });
    }
    for (auto& th : threads) th.join();
    const double converge_s = seconds_since(start);
    const double hq_cpu_s = hq.cpu_seconds() - hq_cpu0;
    for (auto& s : results) TS_RETURN_IF_ERROR(s);
    TS_RETURN_IF_ERROR(hq.stop());
    // Check: every terminal's content equals HQ's.
    TS_ASSIGN_OR_RETURN(ContentDigest hq_digest, hq.hq().digest());
    for (auto& t : terminals) {
      TS_ASSIGN_OR_RETURN(ContentDigest td, t.node->digest());
      if (td != hq_digest) return Status::Internal(t.id() + " did not converge to HQ's digest");
    }
    r.figures["terminals"] = kTerminals;
    r.figures["operations"] = total;
    r.figures["seconds_to_converge"] = round_to(converge_s, 3);
    r.figures["hq_cpu_seconds"] = round_to(hq_cpu_s, 3);
    r.figures["all_uploaded_seconds"] = round_to(*std::max_element(uploaded_at.begin(), uploaded_at.end()), 3);
    r.figures["first_terminal_done_seconds"] =
        round_to(*std::min_element(first_done_at.begin(), first_done_at.end()), 3);
    r.figures["ops_per_second"] = round_to(static_cast<double>(total) / converge_s, 0);
    r.figures["customers_at_each_terminal"] = hq_digest.customers;
    r.baselines["raw_sqlite_batched_insert_seconds_for_same_rows"] = nullptr;
    {
      TS_ASSIGN_OR_RETURN(double raw, bench::raw_sqlite_batched_inserts(path("e-raw"), total, kPushBatch, 200, true));
      r.baselines["raw_sqlite_batched_insert_seconds_for_same_rows"] = round_to(static_cast<double>(total) / raw, 3);
    }
    const bool full_size = total >= 10'000;
    r.targets.push_back({"10k operations from 10 terminals converge in < 2 s",
                         full_size && converge_s < 2.0,
                         full_size ? std::to_string(converge_s) + " s"
                                   : "not measured at full size in --quick (" + std::to_string(total) + " ops)"});
    r.bound =
        "HQ serves one request at a time: 10 uploads, the sync job, then each terminal pulls "
        "every customer (10 x the feed), each batch a durable commit on both sides";
    return Status::Ok();
  }

  // ---- f ------------------------------------------------------------------
  // A child process of this binary; stdout is read through a pipe.
  class Child {
   public:
    // stderr goes to `stderr_path` when given, else to /dev/null.
    static Result<Child> spawn(const std::string& exe, const std::vector<std::string>& args,
                               bool discard_output = false, const std::string& stderr_path = {}) {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC) != 0) return Status::Internal("pipe2 failed");
      posix_spawn_file_actions_t actions;
      posix_spawn_file_actions_init(&actions);
      if (discard_output) {
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
      } else {
        posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
      }
      posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
      if (stderr_path.empty()) {
        posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
      } else {
        posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0644);
      }
      std::vector<std::string> storage{exe};
      storage.insert(storage.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (std::string& s : storage) argv.push_back(s.data());
      argv.push_back(nullptr);
      Child c;
      const int rc = ::posix_spawn(&c.pid_, exe.c_str(), &actions, nullptr, argv.data(), environ);
      posix_spawn_file_actions_destroy(&actions);
      ::close(fds[1]);
      if (rc != 0) {
        ::close(fds[0]);
        return Status::Internal(std::string("cannot start ") + exe + ": " + std::strerror(rc));
      }
      c.out_ = fds[0];
      return c;
    }
    Child() = default;
    Child(Child&& o) noexcept : pid_(std::exchange(o.pid_, -1)), out_(std::exchange(o.out_, -1)) {}
    Child& operator=(Child&&) = delete;
    ~Child() {
      if (pid_ > 0) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
      }
      if (out_ >= 0) ::close(out_);
    }
    std::optional<std::string> read_line() {
      std::string line;
      char ch = 0;
      while (::read(out_, &ch, 1) == 1) {
        if (ch == '\n') return line;
        line.push_back(ch);
      }
      return line.empty() ? std::nullopt : std::optional<std::string>(line);
    }
    pid_t pid() const { return pid_; }
    void signal(int sig) const { ::kill(pid_, sig); }
    // False once the child has exited (it is then reaped).
    bool running() {
      int status = 0;
      if (pid_ <= 0) return false;
      if (::waitpid(pid_, &status, WNOHANG) == 0) return true;
      pid_ = -1;
      return false;
    }
    // Waits for the exit; the exit code, or 128+N for signal N.
    int wait() {
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

   private:
    pid_t pid_ = -1;
    int out_ = -1;
  };

  // Peak resident set of a running child since its exec (VmHWM), in KiB. (A reaped
  // child's ru_maxrss is no use here: it keeps the spawning process's peak.)
  static Result<long> peak_rss_kib(pid_t pid) {
    std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/status").c_str(), "r");
    if (f == nullptr) return Status::Internal("cannot read /proc/" + std::to_string(pid) + "/status");
    char line[256];
    long kib = -1;
    while (std::fgets(line, sizeof line, f) != nullptr) {
      if (std::strncmp(line, "VmHWM:", 6) == 0) kib = std::strtol(line + 6, nullptr, 10);
    }
    std::fclose(f);
    if (kib < 0) return Status::Internal("no VmHWM in /proc/" + std::to_string(pid) + "/status");
    return kib;
  }

  Status memory(ScenarioResult& r) {
    const std::size_t n = pick(20'000, 1'000'000);
    if (c_.tillsync_exe.empty()) return Status::Internal("cannot find the tillsync binary");
    const std::string hq_db = path("f-hq.db");
    const std::string t_db = path("f-terminal.db");
    {
      TS_ASSIGN_OR_RETURN(auto hq_init, fresh_hq(hq_db));
      (void)hq_init;
    }
    TS_ASSIGN_OR_RETURN(auto hq, Child::spawn(c_.tillsync_exe, {"hq", "serve", "--db", hq_db, "--listen",
                                                                 "tcp://127.0.0.1:*", "--json"}));
    auto line = hq.read_line();
    if (!line) return Status::Internal("hq serve did not start");
    const Json event = Json::parse(*line, nullptr, false);
    if (!event.is_object() || !event.contains("endpoint"))
      return Status::Internal("unexpected output of hq serve: " + *line);
    const std::string endpoint = event["endpoint"].get<std::string>();
    say("  building a backlog of " + std::to_string(n) + " operations at the terminal");
    const auto build = SteadyClock::now();
    {
      TS_ASSIGN_OR_RETURN(auto t, backlog_terminal(t_db, "S001", endpoint, n, 1));
      (void)t;
    }
    r.figures["backlog_build_seconds"] = round_to(seconds_since(build), 1);
    // The terminal replicates continuously (`store sync --watch`, a process of its own)
    // until it holds every customer with its account number.
    say("  syncing: terminal and HQ in processes of their own");
    const auto start = SteadyClock::now();
    TS_ASSIGN_OR_RETURN(auto sync, Child::spawn(c_.tillsync_exe, {"store", "sync", "--db", t_db, "--watch",
                                                                   "--interval-ms", "50"},
                                                /*discard_output=*/true));
    TS_ASSIGN_OR_RETURN(auto view, storage::Database::open(t_db));
    for (;;) {
      TS_ASSIGN_OR_RETURN(auto have, view->query_int("SELECT count(account_number) FROM customers"));
      if (have.value_or(0) == static_cast<std::int64_t>(n)) break;
      if (!sync.running() || !hq.running()) return Status::Internal("a child process ended before the sync did");
      if (seconds_since(start) > kGiveUpSeconds)
        return Status::Internal("the terminal did not receive every account number within " +
                                std::to_string(static_cast<int>(kGiveUpSeconds)) + " s");
      // Polling a benchmark's progress; nothing here is a test.
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const double sync_s = seconds_since(start);
    TS_ASSIGN_OR_RETURN(long terminal_kib, peak_rss_kib(sync.pid()));
    TS_ASSIGN_OR_RETURN(long hq_kib, peak_rss_kib(hq.pid()));
    sync.signal(SIGTERM);
    hq.signal(SIGTERM);
    while (hq.read_line()) {
    }
    if (int code = sync.wait(); code != 0) return Status::Internal("store sync exited with " + std::to_string(code));
    if (int code = hq.wait(); code != 0) return Status::Internal("hq serve exited with " + std::to_string(code));
    const double hq_mib = static_cast<double>(hq_kib) / 1024.0;
    const double t_mib = static_cast<double>(terminal_kib) / 1024.0;
    r.figures["operations"] = n;
    r.figures["sync_seconds"] = round_to(sync_s, 1);
    r.figures["hq_peak_rss_mib"] = round_to(hq_mib, 1);
    r.figures["terminal_peak_rss_mib"] = round_to(t_mib, 1);
    r.baselines["note"] = "absolute bound: 128 MiB";
    const bool full_size = n >= 1'000'000;
    r.targets.push_back({"peak RSS < 128 MiB with a 1M-operation backlog",
                         full_size && hq_mib < 128 && t_mib < 128,
                         (full_size ? std::string() : "not measured at full size in --quick; ") + "HQ " +
                             std::to_string(static_cast<long>(hq_mib)) + " MiB, terminal " +
                             std::to_string(static_cast<long>(t_mib)) + " MiB"});
    r.bound =
        "both sides stream: batches of 500 records/feed entries and 1000-operation job "
        "transactions; SQLite's page cache and ZeroMQ's buffers dominate";
    return Status::Ok();
  }

  // ---- i ------------------------------------------------------------------
  // The PostgreSQL HQ: N `hq serve` processes on one database, each serving terminals and
  // running the sync job (advisory locks share the work), against one `hq serve` on an
  // SQLite file with the same workload.
  static constexpr int kHqProcessJobIntervalMs = 10;
  static constexpr int kConvergedPollMs = 10;

  struct HqRunFigures {
    std::size_t processes = 0;
    double seconds = 0;           // syncing started -> every customer converted at HQ
    double uploaded_seconds = 0;  // syncing started -> every terminal's push acked
    double ops_per_second = 0;
    double hq_cpu_seconds = -1;   // all `hq serve` processes while syncing; < 0: unknown
    std::int64_t job_runs = 0;    // as the processes reported when stopped
    std::int64_t busy_retries = 0;  // transactions repeated after losing a lock (idem)
    std::size_t stderr_problems = 0;  // lines of the processes' stderr that report a failure
    std::string first_problem{};
  };

  // utime + stime of a running process, in seconds (/proc/PID/stat); < 0 when unreadable.
  static double process_cpu_seconds(pid_t pid) {
    std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
    if (f == nullptr) return -1;
    char buf[1024];
    const std::size_t got = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[got] = '\0';
    const char* p = std::strrchr(buf, ')');  // the command name may hold spaces
    if (p == nullptr) return -1;
    // Fields after the name start at field 3 (state); utime and stime are 14 and 15.
    unsigned long long utime = 0, stime = 0;
    if (std::sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
      return -1;
    const long ticks = ::sysconf(_SC_CLK_TCK);
    if (ticks <= 0) return -1;
    return static_cast<double>(utime + stime) / static_cast<double>(ticks);
  }

  // How far an HQ database is, read while its processes serve: customers whose status
  // is converted, and customer rows. One SQL text for both backends.
  class HqProgress {
   public:
    static Result<HqProgress> open(const std::string& location) {
      HqProgress p;
      if (storage::is_postgres_url(location)) {
        TS_ASSIGN_OR_RETURN(p.pg_, storage::PgConnection::open(location));
      } else {
        TS_ASSIGN_OR_RETURN(p.sqlite_, storage::Database::open(location));
      }
      return p;
    }
    Result<std::int64_t> converted() { return count("SELECT count(*) FROM sync_status WHERE status = 'converted'"); }
    Result<std::int64_t> customers() { return count("SELECT count(*) FROM customers"); }

   private:
    Result<std::int64_t> count(const std::string& sql) {
      if (pg_) {
        TS_ASSIGN_OR_RETURN(auto v, pg_->query_i64("SELECT (" + sql + ")::bigint"));
        return v.value_or(0);
      }
      TS_ASSIGN_OR_RETURN(auto v, sqlite_->query_int(sql));
      return v.value_or(0);
    }
    std::unique_ptr<storage::PgConnection> pg_;
    std::unique_ptr<storage::Database> sqlite_;
  };

  // A schema of its own on the PostgreSQL server at `server`: the URL of the fresh,
  // empty database, and the schema's name (to drop it afterwards).
  static Result<std::pair<std::string, std::string>> fresh_pg_schema(const std::string& server,
                                                                     const std::string& tag) {
    std::random_device rd;
    const std::string schema = "bench_i_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(rd());
    TS_ASSIGN_OR_RETURN(auto admin, storage::PgConnection::open(server));
    TS_RETURN_IF_ERROR(admin->exec("CREATE SCHEMA " + schema));
    const std::string url = storage::postgres_url_in_schema(server, schema);
    return std::make_pair(url, schema);
  }

  static void drop_pg_schema(const std::string& server, const std::string& schema) {
    auto admin = storage::PgConnection::open(server);
    if (admin.ok()) (void)(*admin)->exec("SET lock_timeout = '10s'; DROP SCHEMA " + schema + " CASCADE");
  }

  // One measurement: a fresh HQ at `location` served by `processes` `hq serve` processes;
  // `terminals` terminals, round-robin over them, each pushing a backlog of
  // `per_terminal` async creations; done when HQ has converted every customer.
  Result<HqRunFigures> hq_processes_run(const std::string& tag, const std::string& location, std::size_t processes,
                                        std::size_t terminals, std::size_t per_terminal) {
    const std::size_t total = terminals * per_terminal;
    {
      TS_ASSIGN_OR_RETURN(auto hq_init, fresh_hq(location));
      (void)hq_init;
    }
    std::vector<Child> hqs;
    std::vector<std::string> endpoints, stderr_files;
    for (std::size_t k = 0; k < processes; ++k) {
      stderr_files.push_back(path("i-" + tag + "-hq" + std::to_string(k) + ".stderr"));
      TS_ASSIGN_OR_RETURN(auto child,
                          Child::spawn(c_.tillsync_exe,
                                       {"hq", "serve", "--db", location, "--listen", "tcp://127.0.0.1:*",
                                        "--job-interval-ms", std::to_string(kHqProcessJobIntervalMs), "--json"},
                                       /*discard_output=*/false, stderr_files.back()));
      auto line = child.read_line();
      if (!line) return Status::Internal("hq serve did not start (see " + stderr_files.back() + ")");
      const Json event = Json::parse(*line, nullptr, false);
      if (!event.is_object() || !event.contains("endpoint"))
        return Status::Internal("unexpected output of hq serve: " + *line);
      endpoints.push_back(event["endpoint"].get<std::string>());
      hqs.push_back(std::move(child));
    }
    say("  " + tag + ": " + std::to_string(terminals) + " terminals build a backlog of " + std::to_string(total) +
        " operations offline");
    std::vector<EmbeddedTerminal> ts;
    for (std::size_t i = 0; i < terminals; ++i) {
      TS_ASSIGN_OR_RETURN(auto t, backlog_terminal(path("i-" + tag + "-t" + std::to_string(i) + ".db"),
                                                   "S" + std::to_string(300 + i), endpoints[i % processes],
                                                   per_terminal, i));
      ts.push_back(std::move(t));
    }
    TS_ASSIGN_OR_RETURN(HqProgress progress, HqProgress::open(location));

    say("  " + tag + ": syncing");
    HqRunFigures f;
    f.processes = processes;
    double cpu0 = 0;
    for (auto& h : hqs) cpu0 += process_cpu_seconds(h.pid());
    std::vector<Status> results(terminals);
    std::vector<SteadyClock::time_point> uploaded_at(terminals);
    std::atomic<std::size_t> finished{0};
    std::vector<std::thread> threads;
    std::barrier go(static_cast<std::ptrdiff_t>(terminals + 1));
    for (std::size_t i = 0; i < terminals; ++i) {
      threads.emplace_back([&, i] {
        go.arrive_and_wait();
        results[i] = [&]() -> Status {
          TS_ASSIGN_OR_RETURN(std::int64_t pushed, ts[i].replicator->push_all());
          if (static_cast<std::size_t>(pushed) != per_terminal)
            return Status::Internal(ts[i].id() + ": HQ acknowledged " + std::to_string(pushed) + " of " +
                                    std::to_string(per_terminal));
          return Status::Ok();
        }();
        uploaded_at[i] = SteadyClock::now();
        finished.fetch_add(1);
      });
    }
    go.arrive_and_wait();
    const auto start = SteadyClock::now();
    // Converged: every push acked and every customer converted. Polled from here.
    Status waited = [&]() -> Status {
      for (;;) {
        if (finished.load() == terminals) {
          for (auto& s : results) TS_RETURN_IF_ERROR(s);
          TS_ASSIGN_OR_RETURN(std::int64_t converted, progress.converted());
          if (converted == static_cast<std::int64_t>(total)) {
            f.seconds = seconds_since(start);
            return Status::Ok();
          }
        }
        for (auto& h : hqs) {
          if (!h.running()) return Status::Internal("an hq serve process ended during the sync");
        }
        if (seconds_since(start) > kGiveUpSeconds)
          return Status::Internal("HQ did not convert every customer within " +
                                  std::to_string(static_cast<int>(kGiveUpSeconds)) + " s");
        // Polling a benchmark's progress; nothing here is a test.
        std::this_thread::sleep_for(std::chrono::milliseconds(kConvergedPollMs));
      }
    }();
    for (auto& th : threads) th.join();
    TS_RETURN_IF_ERROR(waited);
    for (const auto& at : uploaded_at)
      f.uploaded_seconds = std::max(f.uploaded_seconds, std::chrono::duration<double>(at - start).count());
    double cpu1 = 0;
    bool cpu_known = cpu0 >= 0;
    for (auto& h : hqs) {
      const double c = process_cpu_seconds(h.pid());
      cpu_known = cpu_known && c >= 0;
      cpu1 += c;
    }
    if (cpu_known) f.hq_cpu_seconds = cpu1 - cpu0;
    for (auto& h : hqs) h.signal(SIGTERM);
    for (auto& h : hqs) {
      while (auto line = h.read_line()) {
        const Json event = Json::parse(*line, nullptr, false);
        if (event.is_object() && event.value("event", "") == "stopped") {
          f.job_runs += event.value("job_runs", 0);
          f.busy_retries += event.value("busy_retries", 0);
        }
      }
      if (int code = h.wait(); code != 0) return Status::Internal("hq serve exited with " + std::to_string(code));
    }
    for (const auto& file : stderr_files) {
      std::FILE* e = std::fopen(file.c_str(), "r");
      if (e == nullptr) continue;
      char line[1024];
      while (std::fgets(line, sizeof line, e) != nullptr) {
        const std::string text(line);
        // The plaintext warning and the start-up line are expected; anything that
        // failed is counted.
        if (text.find("failed") == std::string::npos && text.find("rror") == std::string::npos) continue;
        ++f.stderr_problems;
        if (f.first_problem.empty()) f.first_problem = text.substr(0, text.find_last_not_of('\n') + 1);
      }
      std::fclose(e);
    }
    // Check with HQ's own API: nothing pending, every customer converted.
    TS_ASSIGN_OR_RETURN(std::int64_t customers, progress.customers());
    if (customers != static_cast<std::int64_t>(total))
      return Status::Internal("HQ holds " + std::to_string(customers) + " customers, expected " + std::to_string(total));
    TS_ASSIGN_OR_RETURN(auto hq, Headquarters::open(location));
    TS_ASSIGN_OR_RETURN(auto pending, hq->sync_status(SyncStatus::pending));
    TS_ASSIGN_OR_RETURN(auto converted, hq->sync_status(SyncStatus::converted));
    if (!pending.empty() || converted.size() != total)
      return Status::Internal(std::to_string(pending.size()) + " customers still pending, " +
                              std::to_string(converted.size()) + " of " + std::to_string(total) + " converted");
    f.ops_per_second = static_cast<double>(total) / f.seconds;
    return f;
  }

  static Json hq_run_json(const HqRunFigures& f, std::size_t total) {
    Json j;
    j["processes"] = f.processes;
    j["ops_per_second"] = round_to(f.ops_per_second, 0);
    j["seconds"] = round_to(f.seconds, 3);
    j["all_uploaded_seconds"] = round_to(f.uploaded_seconds, 3);
    if (f.hq_cpu_seconds >= 0) {
      j["hq_cpu_seconds"] = round_to(f.hq_cpu_seconds, 3);
      j["hq_cpu_us_per_op"] = round_to(f.hq_cpu_seconds * 1e6 / static_cast<double>(total), 1);
    }
    j["job_runs"] = f.job_runs;
    j["busy_retries"] = f.busy_retries;
    j["stderr_failures"] = f.stderr_problems;
    return j;
  }

  Status postgres_hq(ScenarioResult& r) {
    const char* env = std::getenv("TILLSYNC_PG_URL");
    const std::string server = env != nullptr ? env : "";
    if (server.empty()) {
      r.skipped = "set TILLSYNC_PG_URL (scripts/with-postgres.sh)";
      r.figures["skipped"] = r.skipped;
      r.bound = "not measured: no PostgreSQL server";
      return Status::Ok();
    }
    if (c_.tillsync_exe.empty()) return Status::Internal("cannot find the tillsync binary");
    const std::size_t terminals = pick(8, 40);
    const std::size_t per_terminal = pick(50, 500);
    const std::size_t total = terminals * per_terminal;

    // How durable the server is: a development cluster (scripts/pg-cluster.sh without
    // --durable) runs with fsync off, which the SQLite HQ (synchronous=FULL) does not.
    std::string pg_fsync, pg_sync_commit;
    {
      TS_ASSIGN_OR_RETURN(auto admin, storage::PgConnection::open(server));
      TS_ASSIGN_OR_RETURN(auto rows, admin->run("SELECT current_setting('fsync'), current_setting('synchronous_commit'), "
                                                "current_setting('server_version')"));
      if (rows.empty()) return Status::Internal("PostgreSQL returned no settings");
      pg_fsync = rows.text(0, 0);
      pg_sync_commit = rows.text(0, 1);
      r.figures["postgresql_version"] = rows.text(0, 2);
    }
    r.figures["terminals"] = terminals;
    r.figures["operations_per_terminal"] = per_terminal;
    r.figures["operations"] = total;
    r.figures["job_interval_ms"] = kHqProcessJobIntervalMs;
    r.figures["postgresql_fsync"] = pg_fsync;
    r.figures["postgresql_synchronous_commit"] = pg_sync_commit;

    say("  SQLite HQ, one hq serve process");
    TS_ASSIGN_OR_RETURN(HqRunFigures sqlite_f, hq_processes_run("sqlite", path("i-sqlite-hq.db"), 1, terminals, per_terminal));
    Json rows = Json::array();
    std::vector<HqRunFigures> pg_runs;
    for (std::size_t n : {1, 2, 4}) {
      const std::string tag = "pg" + std::to_string(n);
      say("  PostgreSQL HQ, " + std::to_string(n) + " hq serve process" + (n == 1 ? "" : "es"));
      TS_ASSIGN_OR_RETURN(auto fresh, fresh_pg_schema(server, tag));
      auto run = hq_processes_run(tag, fresh.first, n, terminals, per_terminal);
      drop_pg_schema(server, fresh.second);
      if (!run.ok()) return run.status();
      rows.push_back(hq_run_json(*run, total));
      pg_runs.push_back(*run);
    }
    r.figures["postgresql_by_processes"] = rows;
    r.baselines["sqlite_hq_one_process"] = hq_run_json(sqlite_f, total);
    r.baselines["sqlite_durability"] = "synchronous=FULL (hq serve)";
    for (const auto& f : pg_runs) {
      r.ratios["pg" + std::to_string(f.processes) + "_vs_sqlite"] = round_to(f.ops_per_second / sqlite_f.ops_per_second, 2);
    }
    r.ratios["pg4_vs_pg1"] = round_to(pg_runs.back().ops_per_second / pg_runs.front().ops_per_second, 2);
    std::size_t problems = sqlite_f.stderr_problems;
    std::string first = sqlite_f.first_problem;
    for (const auto& f : pg_runs) {
      problems += f.stderr_problems;
      if (first.empty()) first = f.first_problem;
    }
    if (problems > 0) r.figures["first_stderr_failure"] = first;
    r.bound =
        "wall time from the first push to the last customer converted; every process "
        "serves its terminals' pushes and runs the sync job, which takes per-node advisory "
        "locks, so a node's operations are converted by one process at a time; all processes, "
        "the PostgreSQL server and the terminals share this machine's cores" +
        std::string(pg_fsync == "off" ? "; the PostgreSQL server runs with fsync=off, the SQLite HQ with "
                                        "synchronous=FULL, so the ratios flatter PostgreSQL"
                                      : "");
    return Status::Ok();
  }

  // ---- j ------------------------------------------------------------------
  // Storage growth: customers edited again and again from 10 terminals, with HQ's
  // lifecycle (feed compaction, received-operation pruning) and the terminals' log
  // retention on, time driven by a manual clock (one round of edits per simulated
  // week). The databases' bytes per customer are measured after several numbers of
  // edits per customer, against the same final customers stored once in a plain table.
  static constexpr std::size_t kGrowthTerminals = 10;
  static constexpr std::int64_t kGrowthDayMs = 24LL * 3600 * 1000;
  static constexpr std::int64_t kGrowthRoundMs = 7 * kGrowthDayMs;      // a simulated week
  static constexpr std::int64_t kGrowthLogRetentionMs = 7 * kGrowthDayMs;  // store init --log-retention-days 7
  static constexpr double kGrowthTarget = 1.5;  // bytes/customer, last point / first point
  // Bytes per customer against the final data stored once (docs/performance.md, j),
  // about 30% above what this layout takes: HQ keeps the customer master with its
  // indexes, match keys and field-write state, a feed snapshot and the operations
  // received within its retention (PostgreSQL: in 8 KiB pages, with the room VACUUM
  // frees kept for reuse); a terminal its replica and a round of its log.
  static constexpr double kHqFinalDataFactor = 25;
  static constexpr double kPgHqFinalDataFactor = 50;
  static constexpr double kTerminalFinalDataFactor = 4;

  // An SQLite database's size: pages in use (page_count - freelist_count, times the page
  // size) and the file's size, after a checkpoint that empties the WAL into it.
  struct DbBytes {
    std::int64_t used = 0;
    std::int64_t file = 0;
  };

  static Result<DbBytes> sqlite_bytes(const std::string& file) {
    TS_ASSIGN_OR_RETURN(auto db, storage::Database::open(file));
    TS_RETURN_IF_ERROR(db->exec("PRAGMA wal_checkpoint(TRUNCATE)"));
    TS_ASSIGN_OR_RETURN(auto pages, db->query_int("PRAGMA page_count"));
    TS_ASSIGN_OR_RETURN(auto free_pages, db->query_int("PRAGMA freelist_count"));
    TS_ASSIGN_OR_RETURN(auto page_size, db->query_int("PRAGMA page_size"));
    DbBytes b;
    b.used = (pages.value_or(0) - free_pages.value_or(0)) * page_size.value_or(0);
    std::error_code ec;
    b.file = static_cast<std::int64_t>(fs::file_size(file, ec));
    if (ec) return Status::Internal("cannot read the size of " + file + ": " + ec.message());
    const auto wal = fs::file_size(file + "-wal", ec);
    if (!ec) b.file += static_cast<std::int64_t>(wal);
    return b;
  }

  // Bytes per table (its indexes and, on PostgreSQL, TOAST included), largest first;
  // empty when this SQLite lacks the dbstat table.
  using TableBytes = std::vector<std::pair<std::string, std::int64_t>>;

  static Result<TableBytes> sqlite_table_bytes(const std::string& file) {
    TableBytes out;
    TS_ASSIGN_OR_RETURN(auto db, storage::Database::open(file));
    auto st = db->prepare(
        "SELECT s.tbl_name, sum(d.pgsize) FROM dbstat d JOIN sqlite_schema s ON s.name = d.name "
        "GROUP BY s.tbl_name ORDER BY 2 DESC");
    if (!st.ok()) return out;  // built without SQLITE_ENABLE_DBSTAT_VTAB
    for (;;) {
      TS_ASSIGN_OR_RETURN(bool row, st->step());
      if (!row) break;
      out.emplace_back(st->column_text(0), st->column_int64(1));
    }
    return out;
  }

  // What one HQ backend holds, read with plain SQL (the same text on both backends).
  class HqSizes {
   public:
    static Result<HqSizes> open(const std::string& location) {
      HqSizes s;
      s.location_ = location;
      if (storage::is_postgres_url(location)) {
        TS_ASSIGN_OR_RETURN(s.pg_, storage::PgConnection::open(location));
      }
      return s;
    }
    // SQLite: pages in use and file size. PostgreSQL: the tables of HQ's schema with
    // their indexes and TOAST (pg_total_relation_size), in both fields.
    Result<DbBytes> bytes() {
      if (!pg_) return sqlite_bytes(location_);
      TS_ASSIGN_OR_RETURN(auto v, pg_->query_i64(
          "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
          "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"));
      return DbBytes{v.value_or(0), v.value_or(0)};
    }
    Result<TableBytes> table_bytes() {
      if (!pg_) return sqlite_table_bytes(location_);
      TS_ASSIGN_OR_RETURN(auto rows, pg_->run(
          "SELECT c.relname::text, pg_total_relation_size(c.oid)::bigint FROM pg_class c "
          "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r' "
          "ORDER BY 2 DESC"));
      TableBytes out;
      for (int i = 0; i < rows.size(); ++i) out.emplace_back(rows.text(i, 0), rows.i64(i, 1));
      return out;
    }
    Result<std::int64_t> rows(const std::string& table) {
      const std::string sql = "SELECT count(*) FROM " + table;
      if (pg_) {
        TS_ASSIGN_OR_RETURN(auto v, pg_->query_i64("SELECT (" + sql + ")::bigint"));
        return v.value_or(0);
      }
      TS_ASSIGN_OR_RETURN(auto db, storage::Database::open(location_));
      TS_ASSIGN_OR_RETURN(auto v, db->query_int(sql));
      return v.value_or(0);
    }
    // A simulated week passes between two rounds, in which PostgreSQL's autovacuum would
    // have run many times; the bench runs it (plain VACUUM: space made reusable, nothing
    // given back) once per round, or it would measure how far autovacuum lags behind a
    // bench that packs a week into a second.
    Status vacuum() {
      if (!pg_) return Status::Ok();
      TS_ASSIGN_OR_RETURN(auto tables, pg_->run("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"));
      std::string list;
      for (int i = 0; i < tables.size(); ++i) list += (list.empty() ? "" : ", ") + tables.text(i, 0);
      if (list.empty()) return Status::Ok();
      return pg_->exec("VACUUM " + list);
    }

   private:
    std::string location_;
    std::unique_ptr<storage::PgConnection> pg_;
  };

  // The in-process link of terminals that sync from several threads: one call into HQ
  // at a time (one thread at a time drives a Headquarters).
  class SharedLink final : public HqLink {
   public:
    SharedLink(Headquarters& hq, std::mutex& mutex) : link_(hq), mutex_(&mutex) {}
    Result<HelloReply> hello(const std::string& node_id, const Guid& acked_op, std::int64_t acked_seq) override {
      std::lock_guard lock(*mutex_);
      return link_.hello(node_id, acked_op, acked_seq);
    }
    Result<PushReply> push(const std::string& node_id, std::int64_t prev, const Guid& prev_op,
                           const std::vector<LogRecord>& records) override {
      std::lock_guard lock(*mutex_);
      return link_.push(node_id, prev, prev_op, records);
    }
    Result<PullReply> pull(const std::string& node_id, std::int64_t after, std::uint64_t after_mark,
                           std::uint32_t limit, bool filtered) override {
      std::lock_guard lock(*mutex_);
      return link_.pull(node_id, after, after_mark, limit, filtered);
    }

   private:
    LocalHqLink link_;
    std::mutex* mutex_;
  };

  struct GrowthPoint {
    std::size_t edits = 0;  // per customer, so far
    DbBytes hq, terminal;
    std::int64_t hq_inbound_rows = 0, hq_feed_rows = 0, hq_conflicts = 0, terminal_log_rows = 0;
  };

  struct GrowthRun {
    std::vector<GrowthPoint> points;
    std::vector<Customer> final_customers;  // HQ's, at the end
    TableBytes hq_tables, terminal_tables;  // at the last point
    double seconds = 0;
    std::int64_t operations = 0;
  };

  static NewCustomer growth_person(std::size_t i) {
    NewCustomer n;
    n.first_name = "Growth";
    n.last_name = "Customer" + std::to_string(i);
    n.email = "growth." + std::to_string(i) + "@example.com";
    n.phone = "+1555" + std::to_string(10'000'000 + i * 1000);
    return n;
  }

  // Edit `round` of customer `i`: one field, in turn the e-mail, the phone and the last
  // name, each value unique (no two customers look like duplicates).
  static FieldChange growth_edit(std::size_t i, std::size_t round) {
    const std::string tag = std::to_string(i) + "." + std::to_string(round);
    switch (round % 3) {
      case 0: return {Field::email, "growth." + tag + "@example.com"};
      case 1: return {Field::phone, "+1555" + std::to_string(10'000'000 + i * 1000 + round)};
      default: return {Field::last_name, "Customer" + tag};
    }
  }

  // One run at HQ `location` (a file or a fresh PostgreSQL schema): `customers`
  // customers created round-robin at 10 terminals, then `edits` rounds; in round r the
  // terminal (i + r) mod 10 edits customer i (offline, async), every terminal pushes,
  // HQ's job applies, every terminal syncs (pulls, compacts its log), HQ compacts; then
  // the clock moves on a week. Measured after the rounds in `at`.
  Result<GrowthRun> growth_run(const std::string& tag, const std::string& location, std::size_t customers,
                               std::size_t edits, const std::vector<std::size_t>& at) {
    GrowthRun run;
    ManualClock clock(1'750'000'000'000);
    HqOptions hq_options;
    hq_options.clock = &clock;
    hq_options.durable = false;  // sizes do not depend on fsyncs
    TS_ASSIGN_OR_RETURN(auto hq, Headquarters::init(location, "C", hq_options));
    TS_ASSIGN_OR_RETURN(HqSizes sizes, HqSizes::open(location));

    struct Till {
      std::string db;
      std::unique_ptr<ChannelNode> node;
      std::unique_ptr<SharedLink> link;
      std::unique_ptr<Replicator> replicator;
    };
    std::mutex hq_mutex;
    std::vector<Till> tills;
    for (std::size_t k = 0; k < kGrowthTerminals; ++k) {
      Till t;
      t.db = path("j-" + tag + "-t" + std::to_string(k) + ".db");
      NodeConfig config;
      config.store_id = "S" + std::to_string(400 + k);
      config.terminal_id = "T01";
      config.hq_endpoint = "inproc://hq";  // the in-process link below
      config.log_retention_ms = kGrowthLogRetentionMs;
      config.profile.async_customer_creation = true;
      config.profile.async_customer_edits = true;
      ChannelNodeOptions options;
      options.clock = &clock;
      options.durability = Durability::normal;  // sizes do not depend on fsyncs
      TS_ASSIGN_OR_RETURN(t.node, ChannelNode::create(t.db, config, options));
      t.link = std::make_unique<SharedLink>(*hq, hq_mutex);
      ReplicatorOptions ro;
      ro.clock = &clock;
      TS_ASSIGN_OR_RETURN(t.replicator, Replicator::open(t.db, *t.link, ro));
      tills.push_back(std::move(t));
    }

    // Runs `work` for every terminal, the terminals spread over one thread per core
    // (each terminal's database is its own; HQ is reached through the shared link).
    const std::size_t workers = std::clamp<std::size_t>(std::thread::hardware_concurrency(), 1, kGrowthTerminals);
    auto each_terminal = [&](const std::function<Status(std::size_t)>& work) -> Status {
      std::vector<Status> results(kGrowthTerminals);
      std::vector<std::thread> threads;
      for (std::size_t w = 0; w < workers; ++w) {
        threads.emplace_back([&, w] {
          for (std::size_t k = w; k < kGrowthTerminals; k += workers) results[k] = work(k);
        });
      }
      for (auto& th : threads) th.join();
      for (auto& st : results) TS_RETURN_IF_ERROR(st);
      return Status::Ok();
    };
    std::atomic<std::int64_t> operations{0};
    auto converge = [&]() -> Status {
      TS_RETURN_IF_ERROR(each_terminal([&](std::size_t k) -> Status {
        TS_ASSIGN_OR_RETURN(auto pushed, tills[k].replicator->push_all());
        operations += pushed;
        return Status::Ok();
      }));
      for (;;) {
        TS_ASSIGN_OR_RETURN(JobReport report, hq->run_sync_job(50'000));
        if (report.failed > 0) return Status::Internal("HQ's sync job failed " + std::to_string(report.failed) + " operations");
        if (report.remaining == 0) break;
      }
      // Each terminal pulls what the job applied and compacts its log.
      TS_RETURN_IF_ERROR(each_terminal([&](std::size_t k) -> Status {
        TS_ASSIGN_OR_RETURN(auto synced, tills[k].replicator->sync_once());
        (void)synced;
        return Status::Ok();
      }));
      // What `hq serve`'s job does over a week, every compaction_interval_ms.
      for (;;) {
        TS_ASSIGN_OR_RETURN(CompactionReport c, hq->compact());
        TS_ASSIGN_OR_RETURN(CompactionReport again, hq->compact());
        if (c.feed_removed + c.received_removed + again.feed_removed + again.received_removed == 0 &&
            again.feed_through == c.feed_through)
          break;
      }
      return sizes.vacuum();
    };

    const auto start = SteadyClock::now();
    std::vector<Guid> guids(customers);
    TS_RETURN_IF_ERROR(each_terminal([&](std::size_t k) -> Status {
      for (std::size_t i = k; i < customers; i += kGrowthTerminals) {
        TS_ASSIGN_OR_RETURN(CreateOutcome out, tills[k].node->create_customer(growth_person(i), {.offline = true}));
        guids[i] = out.customer.guid;
      }
      return Status::Ok();
    }));
    TS_RETURN_IF_ERROR(converge());
    std::size_t next_point = 0;
    for (std::size_t round = 1; round <= edits; ++round) {
      clock.advance(kGrowthRoundMs);
      // Terminal k edits the customers i with (i + round) mod 10 == k.
      TS_RETURN_IF_ERROR(each_terminal([&](std::size_t k) -> Status {
        const std::size_t first = (k + kGrowthTerminals - round % kGrowthTerminals) % kGrowthTerminals;
        for (std::size_t i = first; i < customers; i += kGrowthTerminals) {
          TS_ASSIGN_OR_RETURN(auto edited, tills[k].node->edit_customer(guids[i].to_string(), {growth_edit(i, round)},
                                                                        {.offline = true}));
          (void)edited;
        }
        return Status::Ok();
      }));
      TS_RETURN_IF_ERROR(converge());
      if (next_point < at.size() && at[next_point] == round) {
        ++next_point;
        say("  " + tag + ": " + std::to_string(round) + " edits per customer");
        GrowthPoint p;
        p.edits = round;
        TS_ASSIGN_OR_RETURN(p.hq, sizes.bytes());
        TS_ASSIGN_OR_RETURN(p.terminal, sqlite_bytes(tills[0].db));
        TS_ASSIGN_OR_RETURN(p.hq_inbound_rows, sizes.rows("inbound"));
        TS_ASSIGN_OR_RETURN(p.hq_feed_rows, sizes.rows("feed"));
        TS_ASSIGN_OR_RETURN(p.hq_conflicts, sizes.rows("conflicts"));
        TS_ASSIGN_OR_RETURN(auto status, tills[0].node->status());
        p.terminal_log_rows = status.log_rows;
        run.points.push_back(p);
        if (round == edits) {
          TS_ASSIGN_OR_RETURN(run.hq_tables, sizes.table_bytes());
          TS_ASSIGN_OR_RETURN(run.terminal_tables, sqlite_table_bytes(tills[0].db));
        }
      }
    }
    run.operations = operations.load();
    run.seconds = seconds_since(start);
    // Every terminal holds what HQ holds.
    TS_ASSIGN_OR_RETURN(ContentDigest hq_digest, hq->digest());
    for (auto& t : tills) {
      TS_ASSIGN_OR_RETURN(ContentDigest d, t.node->digest());
      if (d != hq_digest) return Status::Internal(t.node->node_id() + " did not converge to HQ's digest");
    }
    if (hq_digest.customers != customers)
      return Status::Internal("HQ holds " + std::to_string(hq_digest.customers) + " customers, expected " +
                              std::to_string(customers));
    TS_ASSIGN_OR_RETURN(run.final_customers, hq->customers(""));
    return run;
  }

  // The same customers stored once, in a plain SQLite table with a GUID key: what the
  // data itself takes.
  Result<DbBytes> raw_final_data(const std::string& file, const std::vector<Customer>& customers) {
    storage::DatabaseOptions o;
    o.synchronous = storage::Synchronous::normal;
    o.create_if_missing = true;
    {
      TS_ASSIGN_OR_RETURN(auto db, storage::Database::open(file, o));
      TS_RETURN_IF_ERROR(db->exec(
          "CREATE TABLE customers (guid BLOB PRIMARY KEY, account_number TEXT, type TEXT NOT NULL, "
          "first_name TEXT NOT NULL, last_name TEXT NOT NULL, email TEXT NOT NULL, phone TEXT NOT NULL, "
          "language TEXT NOT NULL, currency TEXT NOT NULL, customer_group TEXT NOT NULL, "
          "receipt_option TEXT NOT NULL, version INTEGER NOT NULL) STRICT"));
      TS_ASSIGN_OR_RETURN(auto txn, storage::Transaction::begin(*db));
      for (const Customer& c : customers) {
        TS_ASSIGN_OR_RETURN(auto st, db->prepare("INSERT INTO customers VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"));
        st.bind_blob(1, c.guid.raw()).bind(2, c.account_number).bind(3, std::string(to_string(c.type)));
        st.bind(4, c.first_name).bind(5, c.last_name).bind(6, c.email).bind(7, c.phone).bind(8, c.language);
        st.bind(9, c.currency).bind(10, c.customer_group).bind(11, c.receipt_option).bind(12, c.version);
        TS_RETURN_IF_ERROR(st.run());
      }
      TS_RETURN_IF_ERROR(txn.commit());
    }
    return sqlite_bytes(file);
  }

  static double per_customer(std::int64_t bytes, std::size_t customers) {
    return round_to(static_cast<double>(bytes) / static_cast<double>(customers), 0);
  }

  // Figures and targets of one backend's run: bytes per customer at each point, growth
  // (last point / first point) and database / final data.
  // On PostgreSQL only HQ is reported (the terminals are the same SQLite files).
  void growth_report(ScenarioResult& r, bool postgres, const GrowthRun& run, std::size_t customers, const DbBytes& raw) {
    const std::string backend = postgres ? "postgresql" : "sqlite";
    Json rows = Json::array();
    for (const GrowthPoint& p : run.points) {
      Json row;
      row["edits_per_customer"] = p.edits;
      row["hq_bytes_per_customer"] = per_customer(p.hq.used, customers);
      if (!postgres) {
        row["hq_file_bytes_per_customer"] = per_customer(p.hq.file, customers);
        row["terminal_bytes_per_customer"] = per_customer(p.terminal.used, customers);
        row["terminal_file_bytes_per_customer"] = per_customer(p.terminal.file, customers);
        row["terminal_log_rows"] = p.terminal_log_rows;
      }
      row["hq_inbound_rows"] = p.hq_inbound_rows;
      row["hq_feed_rows"] = p.hq_feed_rows;
      row["hq_conflicts"] = p.hq_conflicts;
      rows.push_back(row);
    }
    r.figures[backend + "_by_edits"] = rows;
    // Where the bytes are at the last point: tables (with their indexes) of at least 1%.
    auto by_table = [&](const TableBytes& tables) {
      std::int64_t total = 0, other = 0;
      for (const auto& [name, bytes] : tables) total += bytes;
      Json j = Json::object();
      for (const auto& [name, bytes] : tables) {
        if (bytes * 100 >= total) {
          j[name] = per_customer(bytes, customers);
        } else {
          other += bytes;
        }
      }
      if (other > 0) j["other"] = per_customer(other, customers);
      return j;
    };
    if (!run.hq_tables.empty()) r.figures[backend + "_hq_bytes_per_customer_by_table"] = by_table(run.hq_tables);
    if (!postgres && !run.terminal_tables.empty())
      r.figures["terminal_bytes_per_customer_by_table"] = by_table(run.terminal_tables);
    r.figures[backend + "_seconds"] = round_to(run.seconds, 1);
    if (run.points.size() < 2) return;
    const GrowthPoint& first = run.points.front();
    const GrowthPoint& last = run.points.back();
    const std::string span = std::to_string(last.edits) + " vs " + std::to_string(first.edits) + " edits per customer";
    // `key`_growth: bytes per customer at the last point / at the first.
    auto growth = [&](const std::string& what, const std::string& key, std::int64_t at_last, std::int64_t at_first) {
      const double g = static_cast<double>(at_last) / static_cast<double>(std::max<std::int64_t>(at_first, 1));
      r.ratios[key + "_growth"] = round_to(g, 2);
      r.targets.push_back({what + " bytes per customer, " + span + " < " + round_text(kGrowthTarget) + "x",
                           g < kGrowthTarget,
                           per_customer_text(at_last, customers) + " vs " + per_customer_text(at_first, customers) +
                               " bytes per customer (" + round_text(g) + "x)"});
    };
    // `key`_vs_final_data: bytes per customer at the last point / the final data's.
    auto factor = [&](const std::string& what, const std::string& key, std::int64_t bytes, double bound) {
      const double f = static_cast<double>(bytes) / static_cast<double>(std::max<std::int64_t>(raw.used, 1));
      r.ratios[key + "_vs_final_data"] = round_to(f, 2);
      r.targets.push_back({what + " bytes per customer < " + round_text(bound) + "x the final data",
                           f < bound,
                           per_customer_text(bytes, customers) + " vs " + per_customer_text(raw.used, customers) +
                               " bytes per customer (" + round_text(f) + "x) after " + std::to_string(last.edits) +
                               " edits per customer"});
    };
    if (postgres) {
      growth("PostgreSQL HQ", "postgresql_hq", last.hq.used, first.hq.used);
      factor("PostgreSQL HQ", "postgresql_hq", last.hq.used, kPgHqFinalDataFactor);
      return;
    }
    growth("SQLite HQ (pages in use)", "sqlite_hq", last.hq.used, first.hq.used);
    growth("SQLite HQ (file)", "sqlite_hq_file", last.hq.file, first.hq.file);
    factor("SQLite HQ (file)", "sqlite_hq", last.hq.file, kHqFinalDataFactor);
    growth("terminal (pages in use)", "terminal", last.terminal.used, first.terminal.used);
    growth("terminal (file)", "terminal_file", last.terminal.file, first.terminal.file);
    factor("terminal (file)", "terminal", last.terminal.file, kTerminalFinalDataFactor);
  }

  static std::string round_text(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", v);
    return buf;
  }
  static std::string per_customer_text(std::int64_t bytes, std::size_t customers) {
    return std::to_string(static_cast<long long>(std::llround(static_cast<double>(bytes) / static_cast<double>(customers))));
  }

  Status growth(ScenarioResult& r) {
    const std::size_t customers = pick(1'000, 10'000);
    const std::size_t edits = pick(20, 100);
    // The first point comes after HQ's received-operation retention (30 days: 5 rounds)
    // has passed once, so that every point holds a retention window's worth.
    const std::vector<std::size_t> at{std::max<std::size_t>(edits / 10, 5), edits / 2, edits};
    r.figures["customers"] = customers;
    r.figures["edits_per_customer"] = edits;
    r.figures["terminals"] = kGrowthTerminals;
    r.figures["simulated_days_per_round"] = kGrowthRoundMs / kGrowthDayMs;
    r.figures["terminal_log_retention_days"] = kGrowthLogRetentionMs / kGrowthDayMs;
    {
      const HqOptions defaults;
      r.figures["hq_feed_retention_days"] = defaults.feed_retention_ms / kGrowthDayMs;
      r.figures["hq_received_retention_days"] = defaults.received_retention_ms / kGrowthDayMs;
    }

    say("  SQLite HQ: " + std::to_string(customers) + " customers x " + std::to_string(edits) + " edits from " +
        std::to_string(kGrowthTerminals) + " terminals");
    TS_ASSIGN_OR_RETURN(GrowthRun sqlite_run, growth_run("sqlite", path("j-sqlite-hq.db"), customers, edits, at));
    TS_ASSIGN_OR_RETURN(DbBytes raw, raw_final_data(path("j-final-data.db"), sqlite_run.final_customers));
    r.baselines["final_data_bytes_per_customer"] = per_customer(raw.used, customers);
    r.baselines["final_data_file_bytes_per_customer"] = per_customer(raw.file, customers);
    r.baselines["final_data"] = "HQ's final customers stored once in a plain SQLite table (GUID key, one row each)";
    r.figures["operations"] = sqlite_run.operations;
    growth_report(r, /*postgres=*/false, sqlite_run, customers, raw);

    const char* env = std::getenv("TILLSYNC_PG_URL");
    const std::string server = env != nullptr ? env : "";
    if (server.empty()) {
      // Like scenario i; the SQLite half is measured all the same.
      r.figures["postgresql_skipped"] = "set TILLSYNC_PG_URL (scripts/with-postgres.sh)";
    } else {
      say("  PostgreSQL HQ: the same");
      TS_ASSIGN_OR_RETURN(auto fresh, fresh_pg_schema(server, "j"));
      auto pg_run = growth_run("pg", fresh.first, customers, edits, at);
      drop_pg_schema(server, fresh.second);
      if (!pg_run.ok()) return pg_run.status();
      growth_report(r, /*postgres=*/true, *pg_run, customers, raw);
    }
    r.bound =
        "HQ keeps per customer its row, match keys, field-write state, status row and one feed "
        "snapshot, plus the operations received within its retention (30 days: about 5 "
        "rounds here); a terminal keeps its replica and the log rows its retention has not "
        "compacted yet. Freed SQLite pages are reused, not returned, so a file keeps its peak";
    return Status::Ok();
  }

  const BenchConfig& c_;
};

}  // namespace

std::vector<ScenarioResult> run_benchmarks(const BenchConfig& config) { return Bench(config).run(); }

}  // namespace tillsync::cli
