// The scenarios of `tillsync bench` (docs/performance.md): each measures tillsync and,
// in the same run, the baseline it is compared with (raw SQLite, raw ZeroMQ, the SQLite
// session-changeset peer), so the figures are read as ratios on a noisy machine.
//
// Thread-safety: run_benchmarks() starts and joins its own threads and child processes.
// Errors: a scenario that cannot run reports its Status in ScenarioResult::error; the
// others still run. A scenario that needs what this machine lacks (scenario i: a
// PostgreSQL server, TILLSYNC_PG_URL) is reported with ScenarioResult::skipped; scenario
// j measures the SQLite HQ regardless and reports its PostgreSQL half skipped in its
// figures ("postgresql_skipped").
#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "cli_common.h"
#include "tillsync/status.h"

namespace tillsync::cli {

struct BenchConfig {
  bool quick = true;
  std::string dir;            // scratch directory (databases, captures); must exist
  std::set<char> only;        // scenario ids to run; empty: all
  std::string tillsync_exe;   // this binary, for the child processes of scenarios f and i
  std::function<void(const std::string&)> progress;  // one line per step (stderr)
};

struct TargetCheck {
  std::string name;    // e.g. "async creation p99 < 1 ms"
  bool met = false;
  std::string detail;  // the figures it was decided on
};

struct ScenarioResult {
  char id = '?';
  std::string title;
  Json figures = Json::object();    // tillsync's own figures
  Json baselines = Json::object();  // what it is compared with, same run
  Json ratios = Json::object();     // tillsync / baseline (or as named)
  std::vector<TargetCheck> targets{};
  std::string bound{};              // what limits the figure
  Status error{};                   // not OK: the scenario could not run
  std::string skipped{};            // not empty: not measured in this run, and why
};

std::vector<ScenarioResult> run_benchmarks(const BenchConfig& config);

}  // namespace tillsync::cli
