// `tillsync store ...`: the terminal-side commands (DESIGN.md §5), run against a
// terminal's own database through tillsync::ChannelNode.
#pragma once

#include <CLI/CLI.hpp>

#include "cli_common.h"

namespace tillsync::cli {

// Registers the `store` command group and its commands on `root`.
void add_store_commands(CLI::App& root, Cli& cli);

}  // namespace tillsync::cli
