// `tillsync netsim`: an unreliable network between terminals and HQ for manual and
// scripted fault tests (DESIGN.md §5). Terminals point --hq at the netsim's --listen
// endpoint; it forwards to HQ's --forward endpoint through transport::FaultProxy,
// dropping, duplicating and delaying (thus reordering) messages both ways.
#pragma once

#include <CLI/CLI.hpp>

#include "cli_common.h"

namespace tillsync::cli {

// Registers the `netsim` command on `root`.
void add_netsim_command(CLI::App& root, Cli& cli);

}  // namespace tillsync::cli
