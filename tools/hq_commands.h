// `tillsync hq ...`: the head-office commands (DESIGN.md §5), run against HQ's database
// through tillsync::Headquarters, and `hq serve`, which puts HQ on the network
// (tillsync::HqService) until SIGINT/SIGTERM.
#pragma once

#include <CLI/CLI.hpp>

#include "cli_common.h"

namespace tillsync::cli {

// Registers the `hq` command group and its commands on `root`.
void add_hq_commands(CLI::App& root, Cli& cli);

}  // namespace tillsync::cli
