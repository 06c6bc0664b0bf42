#include "cli_common.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <thread>
#include <exception>
#include <iostream>
#include <set>
#include <sstream>
#include <utility>

namespace tillsync::cli {

int exit_code_for(Code code) {
  switch (code) {
    case Code::ok: return kExitOk;
    case Code::hq_unreachable:
    case Code::outcome_unknown: return kExitHqUnreachable;
    case Code::internal:
    case Code::busy: return kExitInternal;
    default: return kExitDomain;
  }
}

// ---------------------------------------------------------------------------
// Output

void print_json(const Json& j) {
  // Invalid UTF-8 (which validation rejects anyway) must not abort the output.
  std::cout << j.dump(2, ' ', false, Json::error_handler_t::replace) << '\n';
  std::cout.flush();
}

std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char ch : text) {
    if (ch == '\n' || ch == '\r' || ch == '\t') {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
    } else {
      out.push_back(ch);
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

Json error_json(const Status& status) {
  Json err;
  err["code"] = std::string(status.code_name());
  err["message"] = status.message();
  if (!status.field().empty()) err["field"] = status.field();
  Json j;
  j["error"] = std::move(err);
  return j;
}

void Cli::add_json_flag(CLI::App& app) {
  app.add_flag("--json", json,
               "Print machine-readable JSON on stdout (for POS software and scripts); "
               "errors become {\"error\":{\"code\",\"message\"}}");
}

void Cli::on_run(CLI::App& sub, std::function<int()> action) {
  sub.callback([this, action = std::move(action)] { action_ = action; });
}

int Cli::ok(const Json& j, std::string_view human) const {
  if (json) {
    print_json(j);
  } else {
    std::cout << human;
    if (human.empty() || human.back() != '\n') std::cout << '\n';
    std::cout.flush();
  }
  return kExitOk;
}

int Cli::fail(const Status& status) const {
  if (status.ok()) return kExitOk;
  if (json) {
    print_json(error_json(status));
  } else {
    std::string message = one_line(status.message());
    if (message.empty()) message = std::string(status.code_name());
    std::cerr << "tillsync: error: " << message << " (" << status.code_name() << ")\n";
    std::cerr.flush();
  }
  return exit_code_for(status.code());
}

int Cli::usage(std::string_view message) const {
  if (json) {
    Json err;
    err["code"] = "usage";
    err["message"] = one_line(message);
    Json j;
    j["error"] = std::move(err);
    print_json(j);
  } else {
    std::cerr << "tillsync: error: " << one_line(message) << " (usage)\n";
    std::cerr.flush();
  }
  return kExitUsage;
}

namespace {

// "tillsync store show": the command the user had reached when parsing stopped.
std::string command_path(const CLI::App& app) {
  std::string path = app.get_name().empty() ? std::string("tillsync") : app.get_name();
  const CLI::App* cur = &app;
  while (true) {
    auto selected = cur->get_subcommands();
    if (selected.empty()) break;
    cur = selected.front();
    path += " " + cur->get_name();
  }
  return path;
}

}  // namespace

int Cli::run(CLI::App& app, int argc, char** argv) {
  // Known before parsing, so that usage errors honour --json too.
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "--json") json = true;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e, std::cout, std::cerr);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e, std::cout, std::cerr);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e, std::cout, std::cerr);
  } catch (const CLI::ParseError& e) {
    return usage(std::string(e.what()) + "; run '" + command_path(app) + " --help' for usage");
  } catch (const std::exception& e) {
    return fail(Status::Internal(e.what()));
  }
  if (!action_) return usage("no command given; run 'tillsync --help' for usage");
  try {
    return action_();
  } catch (const std::exception& e) {
    return fail(Status::Internal(std::string("unexpected failure: ") + e.what()));
  }
}

// ---------------------------------------------------------------------------
// Customers

Json customer_json(const Customer& c) {
  Json j;
  j["guid"] = c.guid.to_string();
  j["account_id"] = c.account_id();
  j["account_number"] = c.account_number ? Json(*c.account_number) : Json(nullptr);
  j["sync_state"] = c.synced() ? "synced" : "pending";
  j["type"] = std::string(to_string(c.type));
  for (Field f : all_fields()) j[std::string(field_name(f))] = c.get(f);
  j["version"] = c.version;
  Json addresses = Json::array();
  for (const Address& a : c.addresses) {
    Json aj;
    aj["guid"] = a.guid.to_string();
    aj["purpose"] = a.purpose;
    aj["street"] = a.street;
    aj["city"] = a.city;
    aj["state"] = a.state;
    aj["zip"] = a.zip;
    aj["country"] = a.country;
    addresses.push_back(std::move(aj));
  }
  j["addresses"] = std::move(addresses);
  Json contacts = Json::array();
  for (const Contact& ct : c.contacts) {
    Json cj;
    cj["guid"] = ct.guid.to_string();
    cj["kind"] = std::string(to_string(ct.kind));
    cj["value"] = ct.value;
    contacts.push_back(std::move(cj));
  }
  j["contacts"] = std::move(contacts);
  j["affiliations"] = c.affiliations;
  Json cards = Json::array();
  for (const LoyaltyCard& card : c.loyalty_cards) {
    Json lj;
    lj["card_number"] = card.card_number;
    lj["issued_at_ms"] = card.issued_at_ms;
    cards.push_back(std::move(lj));
  }
  j["loyalty_cards"] = std::move(cards);
  return j;
}

Json customers_json(const std::vector<Customer>& customers) {
  Json list = Json::array();
  for (const Customer& c : customers) list.push_back(customer_json(c));
  Json j;
  j["customers"] = std::move(list);
  return j;
}

namespace {

void line(std::ostringstream& out, std::string_view label, std::string_view value) {
  if (value.empty()) return;
  std::string padded(label);
  padded += ':';
  if (padded.size() < 16)
    padded.resize(16, ' ');
  else
    padded += ' ';
  out << padded << value << '\n';
}

std::string address_text(const Address& a) {
  std::string text = a.street;
  auto add = [&text](std::string_view sep, const std::string& part) {
    if (part.empty()) return;
    if (!text.empty()) text += sep;
    text += part;
  };
  add(", ", a.city);
  add(", ", a.state);
  add(" ", a.zip);
  add(", ", a.country);
  return text;
}

}  // namespace

std::string customer_text(const Customer& c) {
  std::ostringstream out;
  line(out, "account", c.account_id());
  line(out, "name", c.display_name());
  line(out, "type", to_string(c.type));
  line(out, "guid", c.guid.to_string());
  if (c.type == CustomerType::organization) {
    line(out, "organization", c.org_name);
    line(out, "contact person",
         one_line(c.first_name + (c.middle_name.empty() ? "" : " " + c.middle_name) +
                  (c.last_name.empty() ? "" : " " + c.last_name)));
  } else {
    line(out, "first name", c.first_name);
    line(out, "middle name", c.middle_name);
    line(out, "last name", c.last_name);
  }
  line(out, "title", c.title);
  line(out, "e-mail", c.email);
  line(out, "phone", c.phone);
  line(out, "language", c.language);
  line(out, "currency", c.currency);
  line(out, "customer group", c.customer_group);
  line(out, "receipt option", c.receipt_option);
  line(out, "receipt e-mail", c.receipt_email);
  line(out, "version", std::to_string(c.version));
  if (!c.addresses.empty()) {
    out << "addresses:\n";
    for (const Address& a : c.addresses) {
      out << "  " << (a.purpose.empty() ? std::string("address") : a.purpose) << ": "
          << address_text(a) << "  (guid " << a.guid.to_string() << ")\n";
    }
  }
  if (!c.contacts.empty()) {
    out << "other contacts:\n";
    for (const Contact& ct : c.contacts) {
      out << "  " << (ct.kind == ContactKind::email ? "e-mail" : "phone") << ": " << ct.value
          << "  (guid " << ct.guid.to_string() << ")\n";
    }
  }
  if (!c.affiliations.empty()) {
    std::string all;
    for (const std::string& a : c.affiliations) all += (all.empty() ? "" : ", ") + a;
    line(out, "affiliations", all);
  }
  if (!c.loyalty_cards.empty()) {
    out << "loyalty cards:\n";
    for (const LoyaltyCard& card : c.loyalty_cards) {
      out << "  " << card.card_number << "  (issued " << iso8601_utc(card.issued_at_ms) << ")\n";
    }
  }
  return out.str();
}

std::string customer_line(const Customer& c) {
  std::string account = c.account_id();
  if (account.size() < 14) account.resize(14, ' ');
  std::string text = account + "  " + c.display_name();
  if (!c.email.empty()) text += "  " + c.email;
  if (!c.phone.empty()) text += "  " + c.phone;
  text += "  (guid " + c.guid.to_string() + ")";
  return text;
}

std::string iso8601_utc(std::int64_t ms) {
  std::int64_t secs = ms / 1000;
  std::int64_t millis = ms % 1000;
  if (millis < 0) {
    millis += 1000;
    secs -= 1;
  }
  std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  if (::gmtime_r(&t, &tm) == nullptr) return std::to_string(ms);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(millis));
  return buf;
}

// ---------------------------------------------------------------------------
// Input

Result<std::vector<FieldChange>> parse_set_options(const std::vector<std::string>& sets) {
  std::vector<FieldChange> changes;
  std::set<Field> seen;
  for (const std::string& set : sets) {
    auto eq = set.find('=');
    if (eq == std::string::npos) {
      return Status::InvalidInput(
          "set", "--set expects FIELD=VALUE, got '" + one_line(set) + "' (no '=')");
    }
    std::string name = set.substr(0, eq);
    auto field = parse_field(name);
    if (!field) {
      std::string known;
      for (Field f : all_fields())
        known += (known.empty() ? "" : ", ") + std::string(field_name(f));
      return Status::InvalidInput(
          name.empty() ? std::string("set") : name,
          "unknown field '" + one_line(name) + "' in --set; fields are: " + known);
    }
    if (!seen.insert(*field).second) {
      return Status::InvalidInput(name, "field '" + name + "' is given twice in --set");
    }
    changes.push_back(FieldChange{*field, set.substr(eq + 1)});
  }
  return changes;
}

Status check_identifier(std::string_view field, std::string_view value) {
  if (value.empty() || value.size() > 32) {
    return Status::InvalidInput(std::string(field),
                                std::string(field) + " id must be 1-32 characters long");
  }
  for (char ch : value) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_';
    if (!ok) {
      return Status::InvalidInput(std::string(field),
                                  std::string(field) + " id '" + one_line(value) +
                                      "' may contain only letters, digits, '-' and '_'");
    }
  }
  return Status::Ok();
}

CLI::Option* repeatable(CLI::Option* opt) { return opt->allow_extra_args(false); }

// ---------------------------------------------------------------------------
// Signals

namespace {

std::atomic<bool> g_stop_requested{false};
std::atomic<void (*)()> g_on_stop{nullptr};
static_assert(std::atomic<bool>::is_always_lock_free);
static_assert(std::atomic<void (*)()>::is_always_lock_free);

extern "C" void handle_stop_signal(int) {
  g_stop_requested.store(true);
  if (auto* on_stop = g_on_stop.load()) on_stop();
}

sigset_t stop_signal_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void install_stop_handlers(void (*on_stop)()) {
  g_on_stop.store(on_stop);
  struct sigaction action {};
  action.sa_handler = handle_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: blocking calls return with EINTR
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
}

bool stop_requested() { return g_stop_requested.load(); }

bool wait_for_stop(int ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!stop_requested()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    // Short slices: the signal may be delivered to another thread.
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        deadline - now, std::chrono::milliseconds(50)));
  }
  return true;
}

BlockStopSignals::BlockStopSignals() {
  sigset_t set = stop_signal_set();
  ::pthread_sigmask(SIG_BLOCK, &set, &previous_);
}

BlockStopSignals::~BlockStopSignals() { ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }

void print_json_line(const Json& j) {
  std::cout << j.dump(-1, ' ', false, Json::error_handler_t::replace) << '\n';
  std::cout.flush();
}

std::string count_text(std::int64_t n, std::string_view singular, std::string_view plural) {
  return std::to_string(n) + " " + std::string(n == 1 ? singular : plural);
}

int list_customers(const Cli& cli, const std::vector<Customer>& found, const std::string& none) {
  std::string human;
  if (found.empty()) {
    human = none + "\n";
  } else {
    for (const Customer& c : found) human += customer_line(c) + "\n";
    human += count_text(static_cast<std::int64_t>(found.size()), "customer", "customers") + "\n";
  }
  return cli.ok(customers_json(found), human);
}

void add_search_option(CLI::App& sub, std::string& text) {
  sub.add_option("--search", text,
                 "Only customers whose name, e-mail, phone, account number or GUID contains "
                 "TEXT (case-insensitive)")
      ->type_name("TEXT");
}

Result<std::string> make_temp_dir(std::string_view prefix) {
  const auto base = std::filesystem::temp_directory_path();
  std::string tmpl = (base / (std::string(prefix) + "-XXXXXX")).string();
  if (::mkdtemp(tmpl.data()) == nullptr)
    return Status::Internal("cannot create a temporary directory under " + base.string());
  return tmpl;
}

}  // namespace tillsync::cli
