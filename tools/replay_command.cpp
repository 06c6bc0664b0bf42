#include "replay_command.h"

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "tillsync/guid.h"
#include "tillsync/headquarters.h"
#include "tillsync/hq_store.h"
#include "tillsync/replay.h"

namespace tillsync::cli {
namespace {

// The progress bar appears only for inputs above this size (and only on a terminal).
constexpr std::uint64_t kProgressBarMinBytes = 1024 * 1024;
constexpr int kProgressBarWidth = 30;

struct ReplayCliOptions {
  std::vector<std::string> files;
  std::string hq_db;
  std::int64_t until_seq = 0;
  std::uint64_t shuffle_seed = 0;
  bool verify = false;
  bool skip_corrupt = false;
  CLI::Option* hq_db_opt = nullptr;
  CLI::Option* until_opt = nullptr;
  CLI::Option* seed_opt = nullptr;
};

// A private temporary directory for the HQ database of a replay without --hq-db. It is
// removed with everything in it (the database and SQLite's -wal/-shm files) when the
// object goes away, also when the replay fails.
class ScratchDir {
 public:
  static Result<ScratchDir> create() {
    std::error_code ec;
    std::filesystem::path base = std::filesystem::temp_directory_path(ec);
    if (ec) base = "/tmp";
    std::string pattern = (base / "tillsync-replay-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      return Status::Internal("cannot create a temporary directory under " + base.string() +
                              " for the replay's HQ database (set TMPDIR, or use --hq-db)");
    }
    return ScratchDir(pattern);
  }
  ScratchDir(ScratchDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  ScratchDir& operator=(ScratchDir&&) = delete;
  ~ScratchDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const {
    return (std::filesystem::path(path_) / name).string();
  }

 private:
  explicit ScratchDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

// Removes an HQ database this command created when the replay does not succeed, so a
// failed replay leaves no half-made output behind. dismiss() keeps it.
class RemoveOnFailure {
 public:
  explicit RemoveOnFailure(std::string path) : path_(std::move(path)) {}
  RemoveOnFailure(const RemoveOnFailure&) = delete;
  RemoveOnFailure& operator=(const RemoveOnFailure&) = delete;
  ~RemoveOnFailure() {
    if (path_.empty()) return;
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"})
      std::filesystem::remove(path_ + suffix, ec);
  }
  void dismiss() { path_.clear(); }

 private:
  std::string path_;
};

// Opens the HQ database a replay writes into, creating it first when it does not exist
// (with the default account number prefix C). A replay's output is re-creatable from
// the captures, so the database runs with synchronous=NORMAL rather than FULL.
Result<std::unique_ptr<Headquarters>> open_target(const std::string& path, bool& created) {
  SqliteHqOptions o;
  o.durable = false;
  std::error_code ec;
  created = !std::filesystem::exists(path, ec);
  if (created) {
    TS_RETURN_IF_ERROR(init_sqlite_hq(path, "C", GuidGenerator().next().to_string(), o));
  }
  TS_ASSIGN_OR_RETURN(auto store, open_sqlite_hq(path, o));
  return std::make_unique<Headquarters>(std::move(store));
}

// "[#########.........]  45%  12.5/27.0 MiB  replaying" on stderr, redrawn in place
// when the percentage changes, and erased when done.
class ProgressBar {
 public:
  explicit ProgressBar(bool verify_only) : verify_only_(verify_only) {}
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  ~ProgressBar() {
    if (shown_) {
      std::cerr << '\r' << std::string(width_, ' ') << '\r';
      std::cerr.flush();
    }
  }

  void update(std::uint64_t done, std::uint64_t total) {
    if (total == 0) return;
    const int percent = static_cast<int>(std::min<std::uint64_t>(100, done * 100 / total));
    if (percent == percent_) return;
    percent_ = percent;
    // A replay reads the files twice: verification first, then application.
    const bool second_half = !verify_only_ && done * 2 > total;
    const std::uint64_t file_bytes = verify_only_ ? total : total / 2;
    const std::uint64_t file_done = verify_only_ ? done : (second_half ? done - total / 2 : done);
    const int filled = percent * kProgressBarWidth / 100;
    std::string text = "[" + std::string(static_cast<std::size_t>(filled), '#') +
                       std::string(static_cast<std::size_t>(kProgressBarWidth - filled), '.') +
                       "] ";
    text += (percent < 10 ? "  " : percent < 100 ? " " : "") + std::to_string(percent) + "%  ";
    text += mib(file_done) + "/" + mib(file_bytes) + " MiB  ";
    text += verify_only_ || !second_half ? "verifying" : "replaying";
    width_ = std::max(width_, text.size());
    std::cerr << '\r' << text;
    std::cerr.flush();
    shown_ = true;
  }

 private:
  static std::string mib(std::uint64_t bytes) {
    const std::uint64_t tenths = bytes * 10 / (1024 * 1024);
    return std::to_string(tenths / 10) + "." + std::to_string(tenths % 10);
  }

  bool verify_only_;
  int percent_ = -1;
  std::size_t width_ = 0;
  bool shown_ = false;
};

std::uint64_t input_bytes(const std::vector<std::string>& files) {
  std::uint64_t total = 0;
  for (const std::string& f : files) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(f, ec);
    if (!ec) total += static_cast<std::uint64_t>(size);
  }
  return total;
}

// ---------------------------------------------------------------------------
// Output

Json issue_json(const ReplayIssue& i) {
  Json j;
  j["file"] = i.file;
  j["offset"] = i.offset;
  j["record"] = i.record;
  j["code"] = std::string(i.status.code_name());
  j["message"] = i.status.message();
  return j;
}

Json nodes_json(const std::vector<ReplayNode>& nodes) {
  Json list = Json::array();
  for (const ReplayNode& n : nodes) {
    Json j;
    j["node"] = n.node_id;
    j["files"] = n.files;
    j["records"] = n.records;
    j["first_seq"] = n.first_seq;
    j["last_seq"] = n.last_seq;
    list.push_back(std::move(j));
  }
  return list;
}

Json issues_json(const std::vector<ReplayIssue>& issues) {
  Json list = Json::array();
  for (const ReplayIssue& i : issues) list.push_back(issue_json(i));
  return list;
}

std::string pad_right(std::string text, std::size_t width) {
  if (text.size() < width) text.resize(width, ' ');
  return text;
}

std::string pad_left(const std::string& text, std::size_t width) {
  return text.size() < width ? std::string(width - text.size(), ' ') + text : text;
}

std::string nodes_table(const std::vector<ReplayNode>& nodes) {
  std::size_t w = 4;
  for (const ReplayNode& n : nodes) w = std::max(w, n.node_id.size());
  std::string t = pad_right("NODE", w) + "  FILES  RECORDS  SEQS\n";
  for (const ReplayNode& n : nodes) {
    t += pad_right(n.node_id, w) + "  " + pad_left(std::to_string(n.files), 5) + "  " +
         pad_left(std::to_string(n.records), 7) + "  " +
         (n.records == 0 ? std::string("-")
                         : std::to_string(n.first_seq) + ".." + std::to_string(n.last_seq)) +
         "\n";
  }
  return t;
}

// Nodes whose captures start after seq 1: where their log started when it was exported
// (not a gap: docs/replay.md).
std::string starts_text(const std::vector<ReplayNode>& nodes) {
  std::string t;
  for (const ReplayNode& n : nodes) {
    if (n.records == 0 || n.first_seq <= 1) continue;
    t += "\n" + n.node_id + " starts at seq " + std::to_string(n.first_seq) +
         ": its log held no earlier seq when it was exported (compacted by the till's log retention "
         "after HQ acknowledged it, pruned at HQ, or renumbered after a restore)";
  }
  return t.empty() ? t : t + "\n";
}

std::string issues_text(const std::vector<ReplayIssue>& issues) {
  if (issues.empty()) return {};
  std::string t = "\nskipped (--skip-corrupt): " +
                  count_text(static_cast<std::int64_t>(issues.size()), "problem", "problems") +
                  "\n";
  for (const ReplayIssue& i : issues) {
    t += "  " + one_line(i.status.message()) + " (" + std::string(i.status.code_name()) + ")\n";
  }
  return t;
}

int report_verify(const Cli& cli, const ReplayCliOptions& o, const ReplaySummary& s) {
  Json j;
  j["records"] = s.records;
  j["files"] = o.files.size();
  j["intact"] = s.issues.empty();
  j["nodes"] = nodes_json(s.nodes);
  j["issues"] = issues_json(s.issues);
  std::string human =
      "verified " +
      count_text(static_cast<std::int64_t>(o.files.size()), "capture file", "capture files") +
      ": " + count_text(s.records, "record", "records") +
      (s.issues.empty() ? " intact" : " intact, damaged parts skipped") +
      " (framing, checksums, sequence numbers, payloads)\n\n" + nodes_table(s.nodes) +
      starts_text(s.nodes) + issues_text(s.issues);
  return cli.ok(j, human);
}

int report_replay(const Cli& cli, const ReplayCliOptions& o, const ReplaySummary& s) {
  Json j;
  j["records"] = s.records;
  j["customers"] = s.customers;
  j["conflicts"] = s.conflicts;
  j["duplicates"] = s.duplicates;
  j["failed"] = s.failed;
  j["digest"] = s.digest;
  j["created"] = s.created;
  j["updated"] = s.updated;
  j["hq_db"] = given(o.hq_db_opt) ? Json(o.hq_db) : Json(nullptr);
  j["shuffle_seed"] = given(o.seed_opt) ? Json(o.shuffle_seed) : Json(nullptr);
  j["until_seq"] = given(o.until_opt) ? Json(o.until_seq) : Json(nullptr);
  j["nodes"] = nodes_json(s.nodes);
  j["issues"] = issues_json(s.issues);

  std::string human =
      "replayed " +
      count_text(static_cast<std::int64_t>(o.files.size()), "capture file", "capture files") +
      " into " +
      (given(o.hq_db_opt) ? "HQ database " + o.hq_db
                          : std::string("a temporary HQ database (now deleted)"));
  if (given(o.until_opt)) human += ", each node up to seq " + std::to_string(o.until_seq);
  if (given(o.seed_opt))
    human += ", interleaving with shuffle seed " + std::to_string(o.shuffle_seed);
  human += "\n\n" + nodes_table(s.nodes) + starts_text(s.nodes) + "\n";
  human += "records:     " + std::to_string(s.records) + "\n";
  human += "customers:   " + std::to_string(s.customers) + " in the resulting HQ database\n";
  human += "created:     " + std::to_string(s.created) + " (async customers converted)\n";
  human += "updated:     " + std::to_string(s.updated) + " (edits, addresses, contacts applied)\n";
  human += "conflicts:   " + std::to_string(s.conflicts) + "\n";
  human += "duplicates:  " + std::to_string(s.duplicates) + "\n";
  human += "failed:      " + std::to_string(s.failed) +
           (s.failed > 0 ? " (see 'tillsync hq sync-status --status failed')" : "") + "\n";
  human += "digest:      " + s.digest + "\n";
  human += issues_text(s.issues);
  return cli.ok(j, human);
}

// ---------------------------------------------------------------------------

int run_replay(const Cli& cli, const ReplayCliOptions& o) {
  if (o.verify) {
    for (const CLI::Option* opt : {o.hq_db_opt, o.until_opt, o.seed_opt}) {
      if (given(opt)) {
        return cli.usage(opt->get_name() +
                         " cannot be combined with --verify, which only checks "
                         "the captures and writes nothing");
      }
    }
  }

  if (given(o.until_opt) && o.until_seq < 1) {
    return cli.usage("--until-seq must be a sequence number of 1 or more, got " +
                     std::to_string(o.until_seq));
  }

  ReplayOptions options;
  options.skip_corrupt = o.skip_corrupt;
  if (given(o.until_opt)) options.until_seq = o.until_seq;
  if (given(o.seed_opt)) options.shuffle_seed = o.shuffle_seed;
  std::optional<ProgressBar> bar;
  if (::isatty(STDOUT_FILENO) == 1 && input_bytes(o.files) > kProgressBarMinBytes) {
    bar.emplace(o.verify);
    options.progress = [&bar](std::uint64_t done, std::uint64_t total) {
      bar->update(done, total);
    };
  }

  if (o.verify) {
    auto summary = verify_captures(o.files, options);
    bar.reset();
    if (!summary.ok()) return cli.fail(summary.status());
    return report_verify(cli, o, *summary);
  }

  std::optional<ScratchDir> scratch;
  std::string db = o.hq_db;
  if (!given(o.hq_db_opt)) {
    auto dir = ScratchDir::create();
    if (!dir.ok()) return cli.fail(dir.status());
    scratch.emplace(std::move(dir).value());
    db = scratch->file("replay-hq.db");
  }
  bool created = false;
  auto hq = open_target(db, created);
  if (!hq.ok()) return cli.fail(hq.status());
  RemoveOnFailure cleanup(created && given(o.hq_db_opt) ? db : std::string());

  auto summary = replay_captures(o.files, **hq, options);
  bar.reset();
  hq->reset();  // closes the database before a temporary one is deleted
  if (!summary.ok()) return cli.fail(summary.status());
  cleanup.dismiss();
  return report_replay(cli, o, *summary);
}

}  // namespace

void add_replay_command(CLI::App& root, Cli& cli) {
  auto o = std::make_shared<ReplayCliOptions>();
  CLI::App* sub = root.add_subcommand(
      "replay",
      "Check captured logs (.tslog, from 'store export-log' or 'hq export-log'), or replay\n"
      "them through HQ's ingestion and customer sync job to see what HQ makes of them.");
  sub->add_option("files", o->files, "Capture files to check or replay (one or more)")
      ->required()
      ->type_name("FILE.tslog");
  o->hq_db_opt = sub->add_option("--hq-db", o->hq_db,
                                 "HQ database to replay into: created when missing, else continued "
                                 "(default: a temporary database, deleted afterwards)")
                     ->type_name("OUT.db");
  o->until_opt = sub->add_option("--until-seq", o->until_seq,
                                 "Stop each node after this sequence number of its log")
                     ->type_name("N");
  sub->add_flag("--verify", o->verify,
                "Only check the captures (framing, checksums, sequence numbers, payloads); "
                "writes nothing");
  o->seed_opt = sub->add_option("--shuffle-seed", o->shuffle_seed,
                                "Vary how the records of different nodes interleave (each node's "
                                "own order is kept); equal seeds give equal runs")
                    ->type_name("S");
  sub->add_flag("--skip-corrupt", o->skip_corrupt,
                "Go on past damaged records and list each of them, instead of stopping at the "
                "first (the pushed sequence numbers are renumbered per node)");
  cli.add_json_flag(*sub);
  sub->footer(
      "Exit codes: 0 done, 3 a capture is damaged (corrupt_log) or of a newer format\n"
      "(unsupported_version), or a file is missing; nothing is applied then.\n"
      "See docs/replay.md.");
  cli.on_run(*sub, [&cli, o] { return run_replay(cli, *o); });
}

}  // namespace tillsync::cli
