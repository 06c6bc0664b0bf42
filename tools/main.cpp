// The `tillsync` command line: store terminals and head office (HQ) operations.
#include <CLI/CLI.hpp>

#include "bench_command.h"
#include "cli_common.h"
#include "demo.h"
#include "hq_commands.h"
#include "netsim_command.h"
#include "replay_command.h"
#include "store_commands.h"

int main(int argc, char** argv) {
  using namespace tillsync::cli;
  Cli cli;
  CLI::App app{
      "tillsync keeps store terminals selling and registering customers while the head\n"
      "office (HQ) is out of reach, and replicates everything to HQ when the line is back.",
      "tillsync"};
  app.get_formatter()->column_width(40);
  app.require_subcommand(1);
  app.footer(
      "Every command accepts --json for machine-readable output.\n"
      "Exit codes: 0 done, 1 internal error (e.g. the database file cannot be written),\n"
      "2 wrong command line, 3 refused by a business or validation rule (nothing was\n"
      "written), 4 HQ could not be reached for an operation that needs it.\n"
      "Run 'tillsync COMMAND --help' for the options of a command.");
  cli.add_json_flag(app);
  add_hq_commands(app, cli);
  add_store_commands(app, cli);
  add_demo_command(app, cli);
  add_bench_command(app, cli);
  add_netsim_command(app, cli);
  add_replay_command(app, cli);
  return cli.run(app, argc, argv);
}
