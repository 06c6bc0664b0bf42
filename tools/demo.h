// `tillsync demo`: a guided, self-contained run of HQ and two store terminals on this
// computer (loopback), showing sync-mode creation, offline async creation with
// `Pending sync`, replication, conversion by HQ's customer sync job and convergence.
#pragma once

#include <CLI/CLI.hpp>

#include "cli_common.h"

namespace tillsync::cli {

// Registers the `demo` command on `root`.
void add_demo_command(CLI::App& root, Cli& cli);

}  // namespace tillsync::cli
