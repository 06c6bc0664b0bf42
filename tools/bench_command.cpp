#include "bench_command.h"

#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>

#include "bench_scenarios.h"

namespace tillsync::cli {
namespace {

namespace fs = std::filesystem;

struct BenchOptions {
  bool quick = false;
  std::string only;
  std::string dir;
  bool keep = false;
};

std::string self_exe() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

std::string value_text(const Json& v) {
  if (v.is_number_float()) {
    std::ostringstream s;
    s << v.get<double>();
    return s.str();
  }
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// "name .......... value" lines, nested objects and arrays of rows indented.
void print_figures(std::ostream& out, const std::string& heading, const Json& figures) {
  if (figures.empty()) return;
  out << "  " << heading << ":\n";
  for (const auto& [key, value] : figures.items()) {
    if (value.is_object()) {
      out << "    " << key << ":";
      for (const auto& [k, v] : value.items()) out << "  " << k << "=" << value_text(v);
      out << '\n';
    } else if (value.is_array()) {
      out << "    " << key << ":\n";
      for (const auto& row : value) {
        out << "     ";
        for (const auto& [k, v] : row.items()) out << "  " << k << "=" << value_text(v);
        out << '\n';
      }
    } else {
      std::string name = key;
      if (name.size() < 48) name.resize(48, ' ');
      out << "    " << name << value_text(value) << '\n';
    }
  }
}

Json scenario_json(const ScenarioResult& r) {
  Json j;
  j["scenario"] = std::string(1, r.id);
  j["title"] = r.title;
  if (!r.skipped.empty()) j["skipped"] = r.skipped;
  if (!r.error) {
    j["error"] = error_json(r.error);
    return j;
  }
  j["figures"] = r.figures;
  j["baselines"] = r.baselines;
  j["ratios"] = r.ratios;
  Json targets = Json::array();
  for (const auto& t : r.targets) targets.push_back({{"target", t.name}, {"met", t.met}, {"detail", t.detail}});
  j["targets"] = targets;
  j["bound"] = r.bound;
  return j;
}

int run_bench(const Cli& cli, const BenchOptions& o) {
  BenchConfig config;
  config.quick = o.quick;
  for (char ch : o.only) {
    if (ch == ',' || ch == ' ') continue;
    if (ch < 'a' || ch > 'j') {
      return cli.usage(std::string("--only takes scenario letters a-j, e.g. --only a,c; got '") + ch + "'");
    }
    config.only.insert(ch);
  }
  config.tillsync_exe = self_exe();
  config.progress = [](const std::string& line) { std::cerr << "tillsync bench: " << line << std::endl; };

  std::string dir = o.dir;
  bool remove_dir = false;
  std::error_code ec;
  if (dir.empty()) {
    auto made = make_temp_dir("tillsync-bench");
    if (!made) return cli.fail(made.status());
    dir = *made;
    remove_dir = !o.keep;
  } else {
    fs::create_directories(dir, ec);
    if (ec) return cli.fail(Status::Internal("cannot create " + dir + ": " + ec.message()));
    if (!fs::is_empty(dir, ec))
      return cli.fail(Status::InvalidInput("dir", "--dir " + dir + " is not empty; give a new or empty directory"));
  }
  config.dir = dir;

  const auto results = run_benchmarks(config);
  if (remove_dir) fs::remove_all(dir, ec);

  bool failed = false;
  for (const auto& r : results) failed = failed || !r.error;
  if (cli.json) {
    Json j;
    j["tool"] = "tillsync bench";
    j["mode"] = o.quick ? "quick" : "full";
    j["cores"] = std::thread::hardware_concurrency();
    if (!remove_dir) j["dir"] = dir;  // the databases were kept there
    Json scenarios = Json::array();
    for (const auto& r : results) scenarios.push_back(scenario_json(r));
    j["scenarios"] = scenarios;
    print_json(j);
  } else {
    std::ostream& out = std::cout;
    out << "tillsync bench (" << (o.quick ? "quick" : "full") << " mode, "
        << std::thread::hardware_concurrency() << " cores); baselines measured in this run\n";
    for (const auto& r : results) {
      out << "\n" << r.id << ". " << r.title << "\n";
      if (!r.error) {
        out << "  ERROR: " << r.error.to_string() << "\n";
        continue;
      }
      if (!r.skipped.empty()) {
        out << "  SKIPPED: " << r.skipped << "\n";
        continue;
      }
      print_figures(out, "tillsync", r.figures);
      print_figures(out, "baseline (same run)", r.baselines);
      print_figures(out, "ratios", r.ratios);
      for (const auto& t : r.targets)
        out << "  target: " << t.name << " ... " << (t.met ? "MET" : "MISSED") << " (" << t.detail << ")\n";
      out << "  bound: " << r.bound << "\n";
    }
    if (!o.dir.empty() || o.keep) out << "\ndatabases kept in " << dir << "\n";
  }
  return failed ? kExitInternal : kExitOk;
}

}  // namespace

void add_bench_command(CLI::App& root, Cli& cli) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* sub = root.add_subcommand(
      "bench",
      "Measure tillsync on this machine against raw SQLite, raw ZeroMQ and a SQLite\n"
      "session-changeset peer, all in the same run (ratios matter; absolute figures\n"
      "depend on the disk). Scenarios: a creation latency, b K concurrent terminals,\n"
      "c replication throughput, d sync job, e convergence after a partition,\n"
      "f peak memory with a large backlog, g replay, h the session-changeset peer,\n"
      "i the PostgreSQL HQ with 1, 2 and 4 'hq serve' processes against the SQLite HQ\n"
      "(needs TILLSYNC_PG_URL, e.g. from scripts/with-postgres.sh; skipped without it),\n"
      "j database size per customer as customers are edited again and again, against the\n"
      "final data stored once (SQLite HQ; also the PostgreSQL HQ with TILLSYNC_PG_URL).\n"
      "See docs/performance.md.");
  sub->add_flag("--quick", o->quick, "Small sizes: finishes in about a minute (a check, not a measurement)");
  sub->add_option("--only", o->only, "Run only these scenarios (letters a-j), e.g. --only a,c")->type_name("LETTERS");
  sub->add_option("--dir", o->dir,
                  "Keep the databases in this new or empty directory (default: a temporary "
                  "directory, removed afterwards)")
      ->type_name("DIR");
  sub->add_flag("--keep", o->keep, "Keep the temporary directory and print its path");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_bench(cli, *o); });
}

}  // namespace tillsync::cli
