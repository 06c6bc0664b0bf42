#include "store_commands.h"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "tillsync/capture.h"
#include "tillsync/channel_node.h"
#include "tillsync/clock.h"
#include "tillsync/digest.h"
#include "tillsync/domain.h"
#include "tillsync/hq_client.h"
#include "tillsync/replicator.h"
#include "tillsync/transport/socket.h"
#include "tillsync/validation.h"

namespace tillsync::cli {
namespace {

constexpr std::size_t kExportBatch = 1000;

const char* const kDbHelp = "The terminal's database file (created by 'tillsync store init')";
const char* const kIdHelp =
    "The customer: its account number (e.g. C000000042) or its GUID (the only id of a "
    "customer still 'Pending sync')";
const char* const kOfflineHelp =
    "Act as if HQ were unreachable for this command (the terminal's manual offline "
    "switch)";

// ---------------------------------------------------------------------------
// Helpers

Result<std::unique_ptr<ChannelNode>> open_node(const std::string& db) {
  return ChannelNode::open(db);
}

// A terminal opened for a command that may need HQ. When the terminal has an HQ
// configured and the command is not --offline, a connection bounded by the terminal's
// rts timeout is attached, so sync-mode calls reach HQ's real-time service and fall
// back to async creation (D4) when HQ does not answer. --offline never contacts HQ.
struct Session {
  std::unique_ptr<HqClient> client;  // declared first: outlives the node borrowing it
  std::unique_ptr<ChannelNode> node;
};

Result<Session> open_session(const std::string& db, bool offline) {
  Session session;
  TS_ASSIGN_OR_RETURN(session.node, ChannelNode::open(db));
  const NodeConfig& config = session.node->config();
  if (!offline && config.hq_endpoint) {
    // A connection that cannot even be set up (also: unusable CurveZMQ keys) leaves HQ
    // unreachable for this command, so creation still falls back to async (D4).
    auto keys = load_curve_keys(config);
    if (!keys) std::cerr << "tillsync: warning: " << one_line(keys.status().message()) << std::endl;
    if (!keys) return session;
    if (auto client = HqClient::connect(*config.hq_endpoint, config.rts_timeout_ms, *keys)) {
      session.client = std::move(client).value();
      session.node->attach_hq(session.client.get());
    }
  }
  return session;
}

std::string on_off(bool b) { return b ? "on" : "off"; }

constexpr std::int64_t kDayMs = 24LL * 3600 * 1000;
constexpr std::int64_t kMaxLogRetentionDays = 3650;
const char* const kLogRetentionHelp =
    "How long the terminal keeps change-log rows after HQ acknowledged them: a number of days "
    "(1-3650), or 'all' to keep the whole log (the default). Rows HQ acknowledged and the "
    "terminal wrote more than that many days ago are compacted after each sync, except the "
    "newest acknowledged one. Set it longer than the age of the oldest HQ backup you would "
    "restore: compacted operations cannot be pushed to HQ again (docs/operations.md)";

// DAYS or "all" (keep the whole log): the retention in milliseconds, nullopt for all.
Result<std::optional<std::int64_t>> parse_log_retention(const std::string& text, const std::string& option) {
  if (text == "all") return std::optional<std::int64_t>{};
  std::int64_t days = 0;
  const bool digits = !text.empty() && text.size() <= 6 &&
                      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (digits) days = std::stoll(text);
  if (!digits || days < 1 || days > kMaxLogRetentionDays) {
    return Status::InvalidInput("log-retention-days",
                                option + " must be a number of days from 1 to " +
                                    std::to_string(kMaxLogRetentionDays) + ", or 'all' to keep the whole log; got '" +
                                    one_line(text) + "'");
  }
  return std::optional<std::int64_t>{days * kDayMs};
}

// Refuses a value parse_log_retention() refuses before the command runs (a usage error).
CLI::Validator log_retention_check(const std::string& option) {
  return CLI::Validator(
      [option](std::string& text) -> std::string {
        auto parsed = parse_log_retention(text, option);
        return parsed.ok() ? std::string() : parsed.status().message();
      },
      "");
}

// "30 days", or the exact duration when it is not whole days (set through the API).
std::string retention_text(std::int64_t ms) {
  if (ms % kDayMs == 0) return count_text(ms / kDayMs, "day", "days");
  if (ms % 1000 == 0) return count_text(ms / 1000, "second", "seconds");
  return count_text(ms, "millisecond", "milliseconds");
}

std::string seq_range_text(std::int64_t from, std::int64_t to) {
  return from == to ? "seq " + std::to_string(from) : "seqs " + std::to_string(from) + ".." + std::to_string(to);
}

// Which seqs the change log holds, and why the earlier ones are not in it.
std::string log_held_text(const NodeStatus& s) {
  std::string t;
  if (s.first_seq == 0) {
    t = "no log rows";
  } else {
    t = seq_range_text(s.first_seq, s.last_seq) + " (" + count_text(s.log_rows, "row", "rows") + ")";
  }
  if (s.first_seq > 1 || (s.first_seq == 0 && s.compacted_through > 0)) {
    const std::int64_t missing_to = s.first_seq > 1 ? s.first_seq - 1 : s.compacted_through;
    t += "; " + seq_range_text(1, missing_to) + " not held: ";
    if (s.compacted_through >= missing_to) {
      t += "compacted after HQ acknowledged them (log retention)";
    } else if (s.compacted_through > 0) {
      t += seq_range_text(1, s.compacted_through) + " compacted after HQ acknowledged them, the rest renumbered "
           "after a restore";
    } else {
      t += "renumbered after a restore (docs/protocol.md)";
    }
  }
  return t;
}

Json log_json(const NodeStatus& s) {
  Json j;
  j["first_seq"] = s.first_seq;
  j["last_seq"] = s.last_seq;
  j["rows"] = s.log_rows;
  j["compacted_through"] = s.compacted_through;
  j["compacted_at"] = s.compacted_at_ms ? Json(iso8601_utc(*s.compacted_at_ms)) : Json(nullptr);
  return j;
}

Json log_loss_json(const NodeStatus& s) {
  if (!s.lost_at_ms) return nullptr;
  Json j;
  j["from_seq"] = s.lost_from;
  j["to_seq"] = s.lost_to;
  j["at"] = iso8601_utc(*s.lost_at_ms);
  return j;
}

Json retention_json(const NodeConfig& config) {
  if (!config.log_retention_ms) return nullptr;
  const std::int64_t ms = *config.log_retention_ms;
  return ms % kDayMs == 0 ? Json(ms / kDayMs) : Json(static_cast<double>(ms) / static_cast<double>(kDayMs));
}

std::string retention_line(const NodeConfig& config) {
  if (!config.log_retention_ms) return "keep the whole log (default)";
  return retention_text(*config.log_retention_ms) + ": rows HQ acknowledged longer ago are compacted after each sync";
}

Json profile_json(const FunctionalityProfile& p) {
  Json j;
  j["async_customer_creation"] = p.async_customer_creation;
  j["filter_shared_customer_tables"] = p.filter_shared_customer_tables;
  j["enhanced_async_customer"] = p.enhanced_async_customer;
  j["async_customer_addresses"] = p.async_customer_addresses;
  j["async_customer_edits"] = p.async_customer_edits;
  return j;
}

Json default_customer_json(const DefaultCustomer& d) {
  Json j;
  j["type"] = std::string(to_string(d.type));
  j["customer_group"] = d.customer_group;
  j["receipt_option"] = d.receipt_option;
  j["receipt_email"] = d.receipt_email;
  j["currency"] = d.currency;
  j["language"] = d.language;
  j["affiliations"] = d.affiliations;
  return j;
}

Json status_json(const NodeStatus& s, const NodeConfig& config) {
  Json j;
  j["node"] = s.node_id;
  j["online"] = s.online;
  j["pending_ops"] = s.pending_ops;
  j["acked_seq"] = s.acked_seq;
  j["pulled_seq"] = s.pulled_seq;
  j["last_sync_at"] = s.last_sync_at_ms ? Json(iso8601_utc(*s.last_sync_at_ms)) : Json(nullptr);
  j["last_error"] = s.last_error.empty() ? Json(nullptr) : Json(s.last_error);
  // The last sync that found HQ unreachable (null once HQ answers), and why.
  if (s.unreachable_at_ms) {
    Json u;
    u["at"] = iso8601_utc(*s.unreachable_at_ms);
    u["reason"] = s.unreachable_reason.empty() ? Json(nullptr) : Json(s.unreachable_reason);
    u["detail"] = s.unreachable_detail;
    j["hq_unreachable"] = std::move(u);
  } else {
    j["hq_unreachable"] = nullptr;
  }
  j["last_seq"] = s.last_seq;
  j["log_retention_days"] = retention_json(config);
  j["log"] = log_json(s);
  j["log_loss"] = log_loss_json(s);
  j["last_recovery"] = s.last_recovery.empty() ? Json(nullptr) : Json(s.last_recovery);
  j["unsettled_requests"] = s.unsettled_requests;
  j["set_aside"] = s.set_aside;
  j["set_aside_error"] = s.set_aside_error.empty() ? Json(nullptr) : Json(s.set_aside_error);
  j["hq"] = config.hq_endpoint ? Json(*config.hq_endpoint) : Json(nullptr);
  j["rts_timeout_ms"] = config.rts_timeout_ms;
  j["encrypted"] = config.key_dir.has_value();
  j["profile"] = profile_json(config.profile);
  j["default_customer"] = default_customer_json(config.default_customer);
  return j;
}

std::string status_text(const NodeStatus& s, const NodeConfig& config) {
  std::string t;
  t += "terminal:        " + s.node_id + "\n";
  t += "HQ:              " +
       (config.hq_endpoint ? *config.hq_endpoint : std::string("none configured")) + "\n";
  if (config.hq_endpoint) {
    t += "encryption:      " +
         std::string(config.key_dir ? "CurveZMQ (keys configured)"
                                    : "NONE: plaintext, anyone on the network can read and forge this "
                                      "terminal's traffic (docs/security.md)") +
         "\n";
  }
  if (!s.online && s.unreachable_at_ms) {
    t += "online:          no: HQ unreachable (" + one_line(s.unreachable_detail) + ") at " +
         iso8601_utc(*s.unreachable_at_ms) + "\n";
  } else {
    t += "online:          " +
         std::string(s.online ? "yes" : "no (last contact with HQ failed or none yet)") + "\n";
  }
  t += "pending ops:     " + std::to_string(s.pending_ops) + " (not yet acknowledged by HQ)\n";
  t += "log position:    " + std::to_string(s.last_seq) + " written, " +
       std::to_string(s.acked_seq) + " acknowledged by HQ, " + std::to_string(s.pulled_seq) +
       " pulled from HQ\n";
  t += "log held:        " + log_held_text(s) + "\n";
  t += "log retention:   " + retention_line(config) + "\n";
  if (s.lost_at_ms) {
    t += "log loss:        " + seq_range_text(s.lost_from, s.lost_to) + " of this log were compacted here and HQ " +
         "lacked them at " + iso8601_utc(*s.lost_at_ms) + " (HQ restored from a backup older than the log "
         "retention, or replaced): they cannot be pushed again\n";
  }
  t += "last sync:       " +
       (s.last_sync_at_ms ? iso8601_utc(*s.last_sync_at_ms) : std::string("never")) + "\n";
  if (!s.last_error.empty()) t += "last error:      " + one_line(s.last_error) + "\n";
  if (!s.last_recovery.empty()) t += "last recovery:   " + one_line(s.last_recovery) + "\n";
  if (s.unsettled_requests > 0)
    t += "unsettled:       " + std::to_string(s.unsettled_requests) +
         " real-time request(s) sent without an answer; settled with HQ at the next sync\n";
  if (s.set_aside > 0)
    t += "set aside:       " + std::to_string(s.set_aside) +
         " customer(s) from HQ this terminal could not store; latest: " + one_line(s.set_aside_error) + "\n";
  const FunctionalityProfile& p = config.profile;
  t += "async creation:  " + on_off(p.async_customer_creation) +
       "; offline data exclusion: " + on_off(p.filter_shared_customer_tables) +
       "; enhanced async: " + on_off(p.enhanced_async_customer) +
       "; async addresses: " + on_off(p.async_customer_addresses) +
       "; async edits: " + on_off(p.async_customer_edits) + "\n";
  return t;
}

// Re-labels a validation error of a default-customer option with the option's name.
Status as_option_error(const Status& s, const std::string& option) {
  if (s.ok()) return s;
  return Status(s.code(), "--" + option + ": " + s.message(), option);
}

Status check_endpoint(const std::string& endpoint) {
  auto starts = [&endpoint](std::string_view p) { return endpoint.rfind(p, 0) == 0; };
  if (!(starts("tcp://") || starts("ipc://")) || endpoint.size() <= 6) {
    return Status::InvalidInput(
        "hq", "--hq must be a ZeroMQ endpoint such as tcp://hq.example.com:5555, got '" +
                  one_line(endpoint) + "'");
  }
  return validate_text("hq", endpoint, kMaxTextLength);
}

// ---------------------------------------------------------------------------
// store init

struct InitOptions {
  std::string db, store, terminal, hq;
  bool async_mode = false, filter = false, enhanced = false, async_addresses = false,
       async_edits = false;
  int rts_timeout_ms = 2000;
  std::string keys, hq_public_key;  // CurveZMQ: key directory, file with HQ's public key
  std::string log_retention = "all";
  DefaultCustomer dc;
  std::string dc_type = "person";
  CLI::Option* hq_opt = nullptr;
};

int run_init(const Cli& cli, const InitOptions& o) {
  if (Status s = check_identifier("store", o.store); !s) return cli.fail(s);
  if (Status s = check_identifier("terminal", o.terminal); !s) return cli.fail(s);
  NodeConfig config;
  config.store_id = o.store;
  config.terminal_id = o.terminal;
  if (given(o.hq_opt)) {
    if (Status s = check_endpoint(o.hq); !s) return cli.fail(s);
    config.hq_endpoint = o.hq;
  }
  config.rts_timeout_ms = o.rts_timeout_ms;
  auto retention = parse_log_retention(o.log_retention, "--log-retention-days");
  if (!retention) return cli.fail(retention.status());
  config.log_retention_ms = *retention;
  if (o.keys.empty() != o.hq_public_key.empty()) {
    return cli.fail(Status::InvalidInput(
        "keys", "--keys and --hq-public-key go together: the terminal's key pair and HQ's public key"));
  }
  if (!o.keys.empty()) {
    // Checked now, so a typo shows at installation rather than as an unreachable HQ.
    if (auto k = transport::load_key_pair(o.keys); !k) return cli.fail(k.status());
    auto hq_key = transport::load_public_key(o.hq_public_key);
    if (!hq_key) return cli.fail(hq_key.status());
    std::error_code ec;
    const auto dir = std::filesystem::absolute(o.keys, ec);
    config.key_dir = ec ? o.keys : dir.string();
    config.hq_public_key = *hq_key;
  }
  config.profile.async_customer_creation = o.async_mode;
  config.profile.filter_shared_customer_tables = o.filter;
  config.profile.enhanced_async_customer = o.enhanced;
  config.profile.async_customer_addresses = o.async_addresses;
  config.profile.async_customer_edits = o.async_edits;

  DefaultCustomer dc = o.dc;
  auto type = parse_customer_type(o.dc_type);
  if (!type) {
    return cli.fail(Status::InvalidInput("default-customer-type",
                                         "--default-customer-type must be person or organization"));
  }
  dc.type = *type;
  const std::pair<Field, const char*> checks[] = {
      {Field::customer_group, "default-customer-group"},
      {Field::currency, "default-currency"},
      {Field::language, "default-language"},
      {Field::receipt_option, "default-receipt-option"},
      {Field::receipt_email, "default-receipt-email"},
  };
  const std::string* values[] = {&dc.customer_group, &dc.currency, &dc.language, &dc.receipt_option,
                                 &dc.receipt_email};
  for (std::size_t i = 0; i < std::size(checks); ++i) {
    if (Status s = validate_field(checks[i].first, *values[i]); !s) {
      return cli.fail(as_option_error(s, checks[i].second));
    }
  }
  for (const std::string& a : dc.affiliations) {
    if (Status s = validate_affiliation(a, "default-affiliation"); !s) {
      return cli.fail(as_option_error(s, "default-affiliation"));
    }
  }
  config.default_customer = std::move(dc);

  auto node = ChannelNode::create(o.db, config);
  if (!node) return cli.fail(node.status());
  auto status = (*node)->status();
  if (!status) return cli.fail(status.status());
  const NodeConfig& stored = (*node)->config();
  std::string human = "initialized terminal " + stored.node_id() + " in " + o.db + "\n" +
                      status_text(*status, stored);
  return cli.ok(status_json(*status, stored), human);
}

void add_init(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<InitOptions>();
  CLI::App* sub = store.add_subcommand(
      "init",
      "Set up a new terminal database: which store and terminal it is, where HQ is, the\n"
      "functionality-profile options and the store's default customer.");
  sub->add_option("--db", o->db,
                  "Path of the terminal database file to create (must not exist yet)")
      ->required()
      ->type_name("FILE");
  sub->add_option("--store", o->store, "Store id, e.g. S001 (1-32 letters, digits, '-', '_')")
      ->required()
      ->type_name("STORE");
  sub->add_option(
         "--terminal", o->terminal,
         "Terminal (register) id within the store, e.g. T01 (1-32 letters, digits, '-', '_')")
      ->required()
      ->type_name("TERMINAL");
  o->hq_opt = sub->add_option("--hq", o->hq,
                              "HQ endpoint, e.g. tcp://hq.example.com:5555; without it the "
                              "terminal works offline only")
                  ->type_name("ENDPOINT");
  sub->add_flag("--async-mode", o->async_mode,
                "Create customers asynchronously: saved at the terminal as 'Pending sync' and "
                "converted by HQ later (functionality profile: async customer creation)");
  sub->add_flag("--filter-shared-customer-tables", o->filter,
                "Offline data exclusion: block customer creation while offline and keep no "
                "copy of other stores' customers");
  sub->add_flag("--enhanced-async", o->enhanced,
                "Allow titles, affiliations and extra e-mails/phones on async customers");
  sub->add_flag("--async-addresses", o->async_addresses,
                "Save new customer addresses at the terminal and replicate them, instead of "
                "calling HQ");
  sub->add_flag("--async-edits", o->async_edits,
                "Save customer edits at the terminal and replicate them (also for customers "
                "still 'Pending sync')");
  sub->add_option("--rts-timeout-ms", o->rts_timeout_ms,
                  "How long the terminal waits for HQ on any request before treating it as "
                  "unreachable")
      ->capture_default_str()
      ->check(CLI::Range(1, 600000))
      ->type_name("MS");
  sub->add_option("--keys", o->keys,
                  "Directory with this terminal's CurveZMQ key pair (from 'tillsync keygen'); "
                  "the connection to HQ is then encrypted and authenticated. Needs "
                  "--hq-public-key; register DIR/public.key in HQ's allowlist")
      ->type_name("DIR");
  sub->add_option("--hq-public-key", o->hq_public_key,
                  "File with HQ's CurveZMQ public key (HQ's public.key); needs --keys")
      ->type_name("FILE");
  sub->add_option("--log-retention-days", o->log_retention, kLogRetentionHelp)
      ->capture_default_str()
      ->check(log_retention_check("--log-retention-days"))
      ->type_name("DAYS|all");
  sub->add_option("--default-customer-type", o->dc_type, "Default customer: type of new customers")
      ->capture_default_str()
      ->check(CLI::IsMember({"person", "organization"}));
  sub->add_option("--default-customer-group", o->dc.customer_group,
                  "Default customer: customer group of new customers")
      ->capture_default_str();
  sub->add_option("--default-currency", o->dc.currency, "Default customer: currency")
      ->capture_default_str();
  sub->add_option("--default-language", o->dc.language, "Default customer: language")
      ->capture_default_str();
  sub->add_option("--default-receipt-option", o->dc.receipt_option,
                  "Default customer: how receipts are given (e.g. print, email, both)")
      ->capture_default_str();
  sub->add_option("--default-receipt-email", o->dc.receipt_email,
                  "Default customer: receipt e-mail, used when a new customer gives none")
      ->type_name("EMAIL");
  repeatable(sub->add_option("--default-affiliation", o->dc.affiliations,
                             "Default customer: affiliation copied to new customers "
                             "(repeat for several)")
                 ->type_name("AFFILIATION"));
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_init(cli, *o); });
}

// ---------------------------------------------------------------------------
// store create-customer

struct CreateOptions {
  std::string db;
  std::string first_name, middle_name, last_name, org_name, title, email, phone;
  std::string language, currency, customer_group, receipt_option, receipt_email;
  std::vector<std::string> affiliations, secondary_emails, secondary_phones, addresses;
  bool offline = false;
  CLI::Option *first_opt = nullptr, *middle_opt = nullptr, *last_opt = nullptr, *org_opt = nullptr;
  CLI::Option *language_opt = nullptr, *currency_opt = nullptr, *group_opt = nullptr,
              *receipt_option_opt = nullptr, *receipt_email_opt = nullptr;
};

std::optional<std::string> optional_value(const CLI::Option* opt, const std::string& value) {
  if (given(opt)) return value;
  return std::nullopt;
}

int run_create(const Cli& cli, const CreateOptions& o) {
  bool person = given(o.first_opt) || given(o.last_opt) || given(o.middle_opt);
  if (!person && !given(o.org_opt)) {
    return cli.usage(
        "name the customer: --first-name and --last-name for a person, or --org-name for an "
        "organization");
  }
  NewCustomer input;
  input.first_name = o.first_name;
  input.middle_name = o.middle_name;
  input.last_name = o.last_name;
  input.org_name = o.org_name;
  input.title = o.title;
  input.email = o.email;
  input.phone = o.phone;
  input.language = optional_value(o.language_opt, o.language);
  input.currency = optional_value(o.currency_opt, o.currency);
  input.customer_group = optional_value(o.group_opt, o.customer_group);
  input.receipt_option = optional_value(o.receipt_option_opt, o.receipt_option);
  input.receipt_email = optional_value(o.receipt_email_opt, o.receipt_email);
  input.affiliations = o.affiliations;
  input.secondary_emails = o.secondary_emails;
  input.secondary_phones = o.secondary_phones;
  for (std::size_t i = 0; i < o.addresses.size(); ++i) {
    auto address = parse_address_spec(o.addresses[i], "addresses[" + std::to_string(i) + "]");
    if (!address) return cli.fail(address.status());
    input.addresses.push_back(std::move(*address));
  }

  auto session = open_session(o.db, o.offline);
  if (!session) return cli.fail(session.status());
  auto created = session->node->create_customer(input, CallOptions{.offline = o.offline});
  if (!created) return cli.fail(created.status());

  const CreateOutcome& out = *created;
  Json j = customer_json(out.customer);
  j["mode"] = std::string(to_string(out.mode));
  if (!out.fallback_reason.empty()) j["fallback_reason"] = out.fallback_reason;
  if (!out.fallback_code.empty()) j["fallback_code"] = out.fallback_code;
  std::string human = "created customer " + out.customer.account_id() + " (guid " +
                      out.customer.guid.to_string() + ") in " + std::string(to_string(out.mode)) +
                      " mode";
  if (!out.fallback_reason.empty()) human += ": " + one_line(out.fallback_reason);
  human += "\n" + customer_text(out.customer);
  return cli.ok(j, human);
}

void add_create(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<CreateOptions>();
  CLI::App* sub = store.add_subcommand(
      "create-customer",
      "Register a new customer at the till. Online in sync mode HQ assigns the account\n"
      "number at once; in async mode, or whenever HQ can't be reached, the customer is\n"
      "saved at the terminal as 'Pending sync' and gets its number after replication.\n"
      "Values not given are copied from the store's default customer.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  o->first_opt = sub->add_option("--first-name", o->first_name, "Person's first name");
  o->middle_opt = sub->add_option("--middle-name", o->middle_name, "Person's middle name");
  o->last_opt = sub->add_option("--last-name", o->last_name, "Person's last name");
  o->org_opt = sub->add_option("--org-name", o->org_name,
                               "Organization name (instead of first and last name)");
  o->org_opt->excludes(o->first_opt)->excludes(o->middle_opt)->excludes(o->last_opt);
  sub->add_option("--email", o->email, "Primary e-mail address")->type_name("EMAIL");
  sub->add_option("--phone", o->phone, "Primary phone number")->type_name("PHONE");
  sub->add_option("--title", o->title, "Title, e.g. Dr. (async customers: needs --enhanced-async)");
  repeatable(sub->add_option("--affiliation", o->affiliations,
                             "Affiliation, e.g. a loyalty or employee group (repeat for several)")
                 ->type_name("AFFILIATION"));
  repeatable(sub->add_option("--secondary-email", o->secondary_emails,
                             "Additional e-mail address (repeat for several)")
                 ->type_name("EMAIL"));
  repeatable(sub->add_option("--secondary-phone", o->secondary_phones,
                             "Additional phone number (repeat for several)")
                 ->type_name("PHONE"));
  repeatable(sub->add_option("--address", o->addresses,
                             "Address as \"street;city;state;zip;country[;purpose]\", e.g. "
                             "\"1 Main St;Springfield;IL;62701;US;delivery\"; purpose defaults to "
                             "home (person) or business (organization). Repeat for several")
                 ->type_name("ADDRESS"));
  o->language_opt = sub->add_option("--language", o->language,
                                    "Language, e.g. en-us (default: store's default customer)");
  o->currency_opt = sub->add_option("--currency", o->currency,
                                    "Currency, e.g. USD (default: store's default customer)");
  o->group_opt = sub->add_option("--customer-group", o->customer_group,
                                 "Customer group (default: store's default customer)");
  o->receipt_option_opt =
      sub->add_option("--receipt-option", o->receipt_option,
                      "How the customer gets receipts (default: store's default customer)");
  o->receipt_email_opt =
      sub->add_option("--receipt-email", o->receipt_email,
                      "E-mail address for receipts (default: store's default customer)")
          ->type_name("EMAIL");
  sub->add_flag("--offline", o->offline, kOfflineHelp);
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_create(cli, *o); });
}

// ---------------------------------------------------------------------------
// store edit-customer

struct EditOptions {
  std::string db, id;
  std::vector<std::string> sets;
  bool offline = false;
};

int run_edit(const Cli& cli, const EditOptions& o) {
  auto changes = parse_set_options(o.sets);
  if (!changes) return cli.fail(changes.status());
  auto session = open_session(o.db, o.offline);
  if (!session) return cli.fail(session.status());
  auto edited = session->node->edit_customer(o.id, *changes, CallOptions{.offline = o.offline});
  if (!edited) return cli.fail(edited.status());
  std::string human = "updated customer " + edited->account_id() + " (guid " +
                      edited->guid.to_string() + ")\n" + customer_text(*edited);
  return cli.ok(customer_json(*edited), human);
}

std::string field_list() {
  std::string all;
  for (Field f : all_fields()) all += (all.empty() ? "" : ", ") + std::string(field_name(f));
  return all;
}

void add_edit(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<EditOptions>();
  CLI::App* sub = store.add_subcommand(
      "edit-customer",
      "Change a customer's details. Synced customers are edited through HQ unless async\n"
      "edits are on; customers still 'Pending sync' can be edited only with async edits.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  sub->add_option("ID", o->id, kIdHelp)->required();
  repeatable(sub->add_option(
                    "--set", o->sets,
                    "FIELD=VALUE to change (repeat for several). FIELD is one of: " + field_list())
                 ->required()
                 ->type_name("FIELD=VALUE"));
  sub->add_flag("--offline", o->offline, kOfflineHelp);
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_edit(cli, *o); });
}

// ---------------------------------------------------------------------------
// store add-address

struct AddAddressOptions {
  std::string db, id, address;
  bool offline = false;
};

int run_add_address(const Cli& cli, const AddAddressOptions& o) {
  auto address = parse_address_spec(o.address, "address");
  if (!address) return cli.fail(address.status());
  auto session = open_session(o.db, o.offline);
  if (!session) return cli.fail(session.status());
  auto updated = session->node->add_address(o.id, *address, CallOptions{.offline = o.offline});
  if (!updated) return cli.fail(updated.status());
  std::string human = "added address to customer " + updated->account_id() + " (guid " +
                      updated->guid.to_string() + ")\n" + customer_text(*updated);
  return cli.ok(customer_json(*updated), human);
}

void add_add_address(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<AddAddressOptions>();
  CLI::App* sub = store.add_subcommand(
      "add-address",
      "Add an address to a customer. With async addresses on it is saved at the terminal\n"
      "and replicated; otherwise a synced customer's address goes through HQ, and a\n"
      "customer still 'Pending sync' can get addresses only at creation.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  sub->add_option("ID", o->id, kIdHelp)->required();
  sub->add_option("--address", o->address,
                  "Address as \"street;city;state;zip;country[;purpose]\"; purpose defaults to "
                  "home (person) or business (organization)")
      ->required()
      ->type_name("ADDRESS");
  sub->add_flag("--offline", o->offline, kOfflineHelp);
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_add_address(cli, *o); });
}

// ---------------------------------------------------------------------------
// store issue-loyalty-card

struct IdOptions {
  std::string db, id;
};

int run_issue_card(const Cli& cli, const IdOptions& o) {
  auto session = open_session(o.db, /*offline=*/false);
  if (!session) return cli.fail(session.status());
  ChannelNode& node = *session->node;
  std::set<std::string> before;
  if (auto existing = node.find(o.id)) {
    for (const LoyaltyCard& card : existing->loyalty_cards) before.insert(card.card_number);
  }
  auto updated = node.issue_loyalty_card(o.id);
  if (!updated) return cli.fail(updated.status());
  std::optional<LoyaltyCard> issued;
  for (const LoyaltyCard& card : updated->loyalty_cards) {
    if (before.count(card.card_number) == 0) issued = card;
  }
  Json j = customer_json(*updated);
  std::string human;
  if (issued) {
    Json card;
    card["card_number"] = issued->card_number;
    card["issued_at_ms"] = issued->issued_at_ms;
    j["issued_card"] = std::move(card);
    human = "issued loyalty card " + issued->card_number + " to customer ";
  } else {
    human = "issued a loyalty card to customer ";
  }
  human += updated->account_id() + "\n" + customer_text(*updated);
  return cli.ok(j, human);
}

void add_issue_card(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<IdOptions>();
  CLI::App* sub = store.add_subcommand(
      "issue-loyalty-card",
      "Issue a loyalty card to a customer. Needs HQ online, and the customer must have its\n"
      "account number (not 'Pending sync').");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  sub->add_option("ID", o->id, kIdHelp)->required();
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_issue_card(cli, *o); });
}

// ---------------------------------------------------------------------------
// store show / customers

int run_show(const Cli& cli, const IdOptions& o) {
  auto node = open_node(o.db);
  if (!node) return cli.fail(node.status());
  auto customer = (*node)->find(o.id);
  if (!customer) return cli.fail(customer.status());
  return cli.ok(customer_json(*customer), customer_text(*customer));
}

void add_show(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<IdOptions>();
  CLI::App* sub = store.add_subcommand(
      "show", "Show one customer as this terminal knows it, with addresses and cards.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  sub->add_option("ID", o->id, kIdHelp)->required();
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_show(cli, *o); });
}

struct CustomersOptions {
  std::string db, search;
};

int run_customers(const Cli& cli, const CustomersOptions& o) {
  auto node = open_node(o.db);
  if (!node) return cli.fail(node.status());
  auto found = (*node)->search(o.search);
  if (!found) return cli.fail(found.status());
  return list_customers(cli, *found,
                        o.search.empty() ? "no customers" : "no customers match '" + one_line(o.search) + "'");
}

void add_customers(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<CustomersOptions>();
  CLI::App* sub = store.add_subcommand(
      "customers", "List the customers this terminal knows, optionally filtered.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  add_search_option(*sub, o->search);
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_customers(cli, *o); });
}

// ---------------------------------------------------------------------------
// store status / digest

struct DbOptions {
  std::string db;
};

int run_status(const Cli& cli, const DbOptions& o) {
  auto node = open_node(o.db);
  if (!node) return cli.fail(node.status());
  auto status = (*node)->status();
  if (!status) return cli.fail(status.status());
  return cli.ok(status_json(*status, (*node)->config()), status_text(*status, (*node)->config()));
}

void add_status(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<DbOptions>();
  CLI::App* sub = store.add_subcommand(
      "status",
      "Show the terminal's replication state: whether HQ was reachable, how many changes\n"
      "are still waiting for HQ, and when the last sync happened.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_status(cli, *o); });
}

// ---------------------------------------------------------------------------
// store set-log-retention

struct RetentionOptions {
  std::string db, retention;
};

int run_set_retention(const Cli& cli, const RetentionOptions& o) {
  auto retention = parse_log_retention(o.retention, "DAYS");
  if (!retention) return cli.fail(retention.status());
  auto node = open_node(o.db);
  if (!node) return cli.fail(node.status());
  if (Status s = (*node)->set_log_retention(*retention); !s) return cli.fail(s);
  auto status = (*node)->status();
  if (!status) return cli.fail(status.status());
  const NodeConfig& config = (*node)->config();
  Json j = status_json(*status, config);
  std::string human =
      "terminal " + config.node_id() +
      (*retention ? " keeps its change log for " + retention_text(**retention) +
                        " after HQ acknowledges it; older rows are compacted after each sync"
                  : " keeps its whole change log") +
      "\nlog held:        " + log_held_text(*status);
  return cli.ok(j, human);
}

void add_set_retention(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<RetentionOptions>();
  CLI::App* sub = store.add_subcommand(
      "set-log-retention",
      "Set how long this terminal keeps its change log after HQ acknowledged it (the log\n"
      "retention also set by 'store init --log-retention-days'). Compaction runs after each\n"
      "successful sync; what it removed is never pushed to HQ again, so keep the retention\n"
      "longer than the age of the oldest HQ backup you would restore.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  sub->add_option("DAYS", o->retention,
                  "Days (1-3650) to keep rows after HQ acknowledged them, or 'all' to keep the whole "
                  "log from now on (rows already compacted do not come back)")
      ->required()
      ->check(log_retention_check("DAYS"))
      ->type_name("DAYS|all");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_set_retention(cli, *o); });
}

int run_digest(const Cli& cli, const DbOptions& o) {
  auto node = open_node(o.db);
  if (!node) return cli.fail(node.status());
  auto digest = (*node)->digest();
  if (!digest) return cli.fail(digest.status());
  Json j;
  j["digest"] = digest->hex;
  j["customers"] = digest->customers;
  std::string human = digest->hex + "  (" + std::to_string(digest->customers) +
                      (digest->customers == 1 ? " customer)" : " customers)");
  return cli.ok(j, human);
}

void add_digest(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<DbOptions>();
  CLI::App* sub = store.add_subcommand(
      "digest",
      "Print a fingerprint of the customer data on this terminal, to compare with HQ or a\n"
      "replay (account numbers and loyalty cards are left out).");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_digest(cli, *o); });
}

// ---------------------------------------------------------------------------
// store export-log

struct ExportOptions {
  std::string db, out;
};

Status export_log(ChannelNode& node, const std::string& out, std::int64_t& records,
                  std::int64_t& first_seq, std::int64_t& last_seq) {
  TS_ASSIGN_OR_RETURN(auto batch, node.read_log(0, kExportBatch));
  CaptureHeader header;
  header.node_id = node.node_id();
  header.first_seq = batch.empty() ? 0 : batch.front().seq;
  header.created_at_ms = SystemClock::instance().now_ms();
  TS_ASSIGN_OR_RETURN(auto writer, CaptureWriter::create(out, header));
  first_seq = header.first_seq;
  bool ok = false;
  struct RemoveOnFailure {
    const std::string& path;
    const bool& ok;
    ~RemoveOnFailure() {
      if (!ok) {
        std::error_code ec;
        std::filesystem::remove(path, ec);
      }
    }
  } cleanup{out, ok};
  while (!batch.empty()) {
    for (const LogRecord& record : batch) {
      TS_RETURN_IF_ERROR(writer.append(record));
      last_seq = record.seq;
    }
    if (batch.size() < kExportBatch) break;
    TS_ASSIGN_OR_RETURN(batch, node.read_log(last_seq, kExportBatch));
  }
  TS_RETURN_IF_ERROR(writer.finish());
  records = writer.records();
  ok = true;
  return Status::Ok();
}

int run_export(const Cli& cli, const ExportOptions& o) {
  auto node = open_node(o.db);
  if (!node) return cli.fail(node.status());
  std::int64_t records = 0, first_seq = 0, last_seq = 0;
  if (Status s = export_log(**node, o.out, records, first_seq, last_seq); !s) return cli.fail(s);
  // What the exported log holds (the status read after the export: a sync compacting
  // meanwhile only removes rows before first_seq).
  auto status = (*node)->status();
  if (!status) return cli.fail(status.status());
  NodeStatus held = *status;
  held.first_seq = first_seq;
  held.last_seq = last_seq;
  held.log_rows = records;
  Json j;
  j["records"] = records;
  j["out"] = o.out;
  j["node"] = (*node)->node_id();
  j["first_seq"] = first_seq;
  j["last_seq"] = last_seq;
  j["compacted_through"] = held.compacted_through;
  const std::int64_t missing_to = first_seq > 1 ? first_seq - 1 : (first_seq == 0 ? held.compacted_through : 0);
  if (missing_to > 0) {
    Json n;
    n["from_seq"] = 1;
    n["to_seq"] = missing_to;
    j["not_held"] = std::move(n);
  } else {
    j["not_held"] = nullptr;
  }
  std::string human = "exported " + std::to_string(records) +
                      (records == 1 ? " log record" : " log records") + " of terminal " +
                      (*node)->node_id() + " to " + o.out + ": " + log_held_text(held);
  return cli.ok(j, human);
}

void add_export(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<ExportOptions>();
  CLI::App* sub = store.add_subcommand(
      "export-log",
      "Write the change log this terminal holds to a capture file (.tslog) for support,\n"
      "to be inspected or replayed with 'tillsync replay'. That is the whole log unless the\n"
      "log retention compacted its beginning; the output says which seqs it holds.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  sub->add_option("--out", o->out, "Capture file to write (e.g. S001-T01.tslog)")
      ->required()
      ->type_name("FILE.tslog");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_export(cli, *o); });
}

// ---------------------------------------------------------------------------
// store sync

struct SyncOptions {
  std::string db;
  bool once = false, watch = false;
  int interval_ms = 1000;
};

std::string pending_text(std::int64_t pending) {
  return count_text(pending, "operation stays", "operations stay") + " pending on this terminal";
}

Json report_json(const SyncReport& r) {
  Json j;
  j["pushed"] = r.pushed;
  j["pulled"] = r.pulled;
  j["pending_ops"] = r.pending_ops;
  j["compacted"] = r.compacted;
  j["warning"] = r.warning.empty() ? Json(nullptr) : Json(r.warning);
  return j;
}

std::string report_text(const SyncReport& r) {
  return "uploaded " + count_text(r.pushed, "operation", "operations") + " to HQ, applied " +
         count_text(r.pulled, "update", "updates") + " from HQ; " +
         count_text(r.pending_ops, "operation", "operations") + " still waiting for HQ" +
         (r.compacted > 0 ? "; compacted " + count_text(r.compacted, "log row", "log rows") + " HQ acknowledged"
                          : std::string());
}

// Adds what the failure means for the terminal to a failed sync's status.
Status explain_sync_failure(ChannelNode& node, const Status& failure) {
  std::string message = "sync of terminal " + node.node_id() + " failed: " + failure.message();
  if (auto status = node.status()) message += "; " + pending_text(status->pending_ops);
  return Status(failure.code(), message, failure.field());
}

// One line of --watch output.
void print_watch_event(const Cli& cli, const Json& event, const std::string& human, bool error) {
  if (cli.json) {
    print_json_line(event);
  } else if (error) {
    std::cerr << "tillsync: " << human << std::endl;
  } else {
    std::cout << human << std::endl;
  }
}

int run_watch(const Cli& cli, ChannelNode& node, Replicator& replicator, const SyncOptions& o) {
  const NodeConfig& config = node.config();
  if (!cli.json) {
    std::cout << "terminal " << config.node_id() << " syncs with HQ at " << *config.hq_endpoint
              << " every " << o.interval_ms << " ms; stop with Ctrl-C" << std::endl;
  }
  std::string last_error;
  while (!stop_requested()) {
    (void)node.reconcile();  // real-time requests that got no answer, if HQ answers now
    auto report = replicator.sync_once();
    const std::string now = iso8601_utc(SystemClock::instance().now_ms());
    if (report) {
      if (!last_error.empty()) {
        Json j;
        j["time"] = now;
        j["event"] = "reconnected";
        print_watch_event(cli, j, now + "  HQ answers again", false);
        last_error.clear();
      }
      if (report->pushed > 0 || report->pulled > 0) {
        Json j;
        j["time"] = now;
        const Json counts = report_json(*report);
        for (const auto& [key, value] : counts.items()) j[key] = value;
        print_watch_event(cli, j, now + "  " + report_text(*report), false);
      }
      // HQ lacks operations the log retention compacted: said every time it is found.
      if (!report->warning.empty()) {
        Json j;
        j["time"] = now;
        j["event"] = "log_loss";
        j["warning"] = report->warning;
        print_watch_event(cli, j, now + "  warning: " + one_line(report->warning), true);
      }
    } else {
      if (stop_requested()) break;  // the signal interrupted the request
      // Repeated identical failures (HQ down for an hour) are reported once; HQ's
      // "busy, retry after N ms" counts as one failure whatever N.
      const std::string failure_key = report.status().retry_after_ms()
                                          ? std::string(report.status().code_name())
                                          : report.status().message();
      if (failure_key != last_error) {
        last_error = failure_key;
        Status failure = explain_sync_failure(node, report.status());
        Json j = error_json(failure);
        j["time"] = now;
        print_watch_event(cli, j,
                          now + "  " + one_line(failure.message()) + " (" +
                              std::string(failure.code_name()) + "); retrying",
                          true);
      }
    }
    // HQ asked this node to slow down: wait at least as long as it said.
    const std::int64_t hint = report.ok() ? 0 : report.status().retry_after_ms().value_or(0);
    if (wait_for_stop(static_cast<int>(std::max<std::int64_t>(o.interval_ms, std::min<std::int64_t>(hint, 600'000)))))
      break;
  }
  if (!cli.json) std::cout << "stopped" << std::endl;
  return kExitOk;
}

int run_sync(const Cli& cli, const SyncOptions& o) {
  auto node = open_node(o.db);
  if (!node) return cli.fail(node.status());
  const NodeConfig& config = (*node)->config();
  if (!config.hq_endpoint) {
    auto status = (*node)->status();
    if (!status) return cli.fail(status.status());
    return cli.fail(Status::HqUnreachable(
        "no HQ is configured for terminal " + config.node_id() +
        " (set one with 'tillsync store init --hq'); nothing was pushed or pulled, " +
        pending_text(status->pending_ops)));
  }

  if (o.watch) install_stop_handlers();
  std::unique_ptr<HqClient> client;
  std::unique_ptr<Replicator> replicator;
  bool encrypted = false;
  {
    // ZeroMQ's threads start in here; SIGINT/SIGTERM must reach this thread.
    BlockStopSignals block;
    auto keys = load_curve_keys(config);
    if (!keys) return cli.fail(keys.status());
    encrypted = keys->has_value();
    auto connected = HqClient::connect(*config.hq_endpoint, config.rts_timeout_ms, *keys);
    if (!connected) {
      return cli.fail(explain_sync_failure(
          **node, Status::HqUnreachable("cannot connect to HQ at " + *config.hq_endpoint + ": " +
                                        connected.status().message())));
    }
    client = std::move(connected).value();
    (*node)->attach_hq(client.get());
    auto opened = Replicator::open(o.db, *client);
    if (!opened) return cli.fail(opened.status());
    replicator = std::move(opened).value();
  }
  // Plaintext is said every time (JSON: "encrypted": false), never silently.
  if (!encrypted && !cli.json) {
    std::cerr << "tillsync: warning: terminal " << config.node_id() << " talks to HQ at " << *config.hq_endpoint
              << " in PLAINTEXT: anyone on the network can read and forge its traffic. Give it keys "
                 "('tillsync keygen', then 'store init --keys DIR --hq-public-key FILE'; docs/security.md)"
              << std::endl;
  }
  if (o.watch) return run_watch(cli, **node, *replicator, o);

  // Real-time requests that got no answer are settled first (`store status` tells).
  (void)(*node)->reconcile();
  auto report = replicator->sync_once();
  if (!report) return cli.fail(explain_sync_failure(**node, report.status()));
  if (!report->warning.empty() && !cli.json)
    std::cerr << "tillsync: warning: " << one_line(report->warning) << std::endl;
  Json j = report_json(*report);
  j["encrypted"] = encrypted;
  return cli.ok(j, "synced terminal " + config.node_id() + " with HQ at " + *config.hq_endpoint +
                       (encrypted ? "" : " (plaintext)") + ": " + report_text(*report));
}

void add_sync(CLI::App& store, Cli& cli) {
  auto o = std::make_shared<SyncOptions>();
  CLI::App* sub = store.add_subcommand(
      "sync",
      "Replicate with HQ: upload this terminal's pending changes and download new customers\n"
      "and account numbers (replacing 'Pending sync'). Exits 4 when HQ does not answer.");
  sub->add_option("--db", o->db, kDbHelp)->required()->type_name("FILE");
  auto* once =
      sub->add_flag("--once", o->once, "One round of upload and download, then exit (default)");
  auto* watch = sub->add_flag("--watch", o->watch,
                              "Keep replicating until interrupted (Ctrl-C / SIGTERM), printing "
                              "a line for every round that moved data and for errors; HQ being "
                              "unreachable does not stop it");
  once->excludes(watch);
  sub->add_option("--interval-ms", o->interval_ms, "With --watch: pause between rounds")
      ->capture_default_str()
      ->check(CLI::Range(1, 86'400'000))
      ->needs(watch)
      ->type_name("MS");
  cli.add_json_flag(*sub);
  cli.on_run(*sub, [&cli, o] { return run_sync(cli, *o); });
}

}  // namespace

void add_store_commands(CLI::App& root, Cli& cli) {
  CLI::App* store = root.add_subcommand(
      "store", "Commands for a store terminal (till): customers, status and replication.");
  store->require_subcommand(1);
  cli.add_json_flag(*store);
  add_init(*store, cli);
  add_create(*store, cli);
  add_edit(*store, cli);
  add_add_address(*store, cli);
  add_issue_card(*store, cli);
  add_customers(*store, cli);
  add_show(*store, cli);
  add_status(*store, cli);
  add_set_retention(*store, cli);
  add_digest(*store, cli);
  add_export(*store, cli);
  add_sync(*store, cli);
}

}  // namespace tillsync::cli
