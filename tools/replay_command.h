// `tillsync replay FILE.tslog...`: support engineers check captured logs (`--verify`) or
// replay them through HQ's ingestion and customer sync job into a fresh or given HQ
// database (DESIGN.md §5, docs/replay.md). The work is done by tillsync/replay.h.
#pragma once

#include <CLI/CLI.hpp>

#include "cli_common.h"

namespace tillsync::cli {

// Registers the `replay` command on `root`.
void add_replay_command(CLI::App& root, Cli& cli);

}  // namespace tillsync::cli
