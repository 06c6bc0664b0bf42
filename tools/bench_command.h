// `tillsync bench`: measures tillsync against raw SQLite, raw ZeroMQ and a
// session-changeset peer in one run (docs/performance.md).
#pragma once

#include <CLI/CLI.hpp>

#include "cli_common.h"

namespace tillsync::cli {

// Registers the `bench` command on `root`.
void add_bench_command(CLI::App& root, Cli& cli);

}  // namespace tillsync::cli
