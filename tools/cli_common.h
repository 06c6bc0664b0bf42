// Shared pieces of the `tillsync` command line: exit codes, the `--json` switch, error
// reporting, JSON/text rendering of customers and the FIELD=VALUE parser.
//
// Every command group (store_commands.cpp, later hq_commands.cpp, ...) registers its
// subcommands on the root CLI::App through a Cli object; run_cli() parses the command
// line, runs the chosen command and maps the outcome to the exit codes of DESIGN.md §5:
//   0 ok, 1 internal error, 2 usage error, 3 domain/validation error, 4 HQ unreachable.
#pragma once

#include <csignal>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "tillsync/domain.h"
#include "tillsync/status.h"

namespace tillsync::cli {

// Objects keep their keys in insertion order, so output follows the contract's order.
using Json = nlohmann::ordered_json;

inline constexpr int kExitOk = 0;
inline constexpr int kExitInternal = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitDomain = 3;
inline constexpr int kExitHqUnreachable = 4;

// hq_unreachable -> 4, internal -> 1, ok -> 0, every other code -> 3.
int exit_code_for(Code code);

// One invocation of the command line: the output mode and the command chosen.
class Cli {
 public:
  bool json = false;

  // Adds the `--json` switch to `app` (every command and group gets one, so it is
  // accepted anywhere on the line).
  void add_json_flag(CLI::App& app);
  // Makes `action` the command to run when `sub` is selected; it returns an exit code.
  void on_run(CLI::App& sub, std::function<int()> action);

  // Prints `j` under --json, otherwise `human` (a newline is added when missing).
  // Returns kExitOk.
  int ok(const Json& j, std::string_view human) const;
  // Reports `status` (not OK) and returns its exit code: the error JSON on stdout under
  // --json, else one line "tillsync: error: <message> (<code>)" on stderr.
  int fail(const Status& status) const;
  // A usage error: code "usage", exit 2.
  int usage(std::string_view message) const;

  // Parses argv, runs the selected command, returns the process exit code. Help
  // (--help) goes to stdout with exit 0. Exceptions become internal errors.
  int run(CLI::App& app, int argc, char** argv);

 private:
  std::function<int()> action_;
};

// Printing helpers (used by Cli, exposed for commands that stream output).
void print_json(const Json& j);
Json error_json(const Status& status);
std::string one_line(std::string_view text);

// Rendering of customers (DESIGN.md §5). JSON carries the GUID in its own "guid" field;
// "account_id" is the account number or "Pending sync" (D3).
Json customer_json(const Customer& c);
Json customers_json(const std::vector<Customer>& customers);
// Multi-line description for terminal users; the GUID is labelled `guid`, never shown as
// the account id.
std::string customer_text(const Customer& c);
// One line for lists: account id, name, e-mail, phone, guid.
std::string customer_line(const Customer& c);

// Prints customers one line each with a count (JSON: the customers array); `none` when
// there are none. Returns kExitOk.
int list_customers(const Cli& cli, const std::vector<Customer>& found, const std::string& none);
// `--search TEXT`: the customer filter of the list commands.
void add_search_option(CLI::App& sub, std::string& text);

// A new private directory "<prefix>-XXXXXX" under the system's temporary directory.
Result<std::string> make_temp_dir(std::string_view prefix);

// "2024-05-01T12:34:56.789Z".
std::string iso8601_utc(std::int64_t ms_since_epoch);

// Parses repeated `--set FIELD=VALUE` arguments (FIELD as in tillsync::parse_field).
// invalid_input for a missing '=', an unknown field (named in Status::field()) or a field
// given twice. Values are passed on as typed; the engine validates them (D13).
Result<std::vector<FieldChange>> parse_set_options(const std::vector<std::string>& sets);

// Store, terminal and other operator-chosen ids: 1-32 characters of letters, digits,
// '-' and '_'. invalid_input naming `field` otherwise.
Status check_identifier(std::string_view field, std::string_view value);

// ---------------------------------------------------------------------------
// Long-running commands (`hq serve`, `store sync --watch`): SIGINT/SIGTERM ask them to
// stop. The handlers are installed with sigaction and without SA_RESTART, so a blocking
// call returns with EINTR and the command notices the request promptly.

// Installs the SIGINT/SIGTERM handlers. `on_stop`, when given, is called from the signal
// handler and must be async-signal-safe (e.g. an atomic store such as HqService::stop()).
void install_stop_handlers(void (*on_stop)() = nullptr);
// True once SIGINT or SIGTERM arrived.
bool stop_requested();
// Waits up to `ms` milliseconds, returning early (true) when a stop was requested.
bool wait_for_stop(int ms);

// Blocks SIGINT/SIGTERM in the calling thread while alive, so that threads started
// meanwhile (ZeroMQ's I/O threads, service threads) inherit the mask and the signals
// reach the main thread once the guard is gone.
class BlockStopSignals {
 public:
  BlockStopSignals();
  ~BlockStopSignals();
  BlockStopSignals(const BlockStopSignals&) = delete;
  BlockStopSignals& operator=(const BlockStopSignals&) = delete;

 private:
  sigset_t previous_{};
};

// Compact one-line JSON (for streams of events such as `store sync --watch --json`).
void print_json_line(const Json& j);

// "5 customers", "1 customer".
std::string count_text(std::int64_t n, std::string_view singular, std::string_view plural);

// True when the option was given on the command line.
inline bool given(const CLI::Option* opt) { return opt != nullptr && opt->count() > 0; }
// Makes a repeatable option take exactly one value per occurrence
// (`--affiliation A --affiliation B`), so it never swallows positional arguments.
CLI::Option* repeatable(CLI::Option* opt);

}  // namespace tillsync::cli
