// libFuzzer target: every request body HQ decodes, run through HqService::dispatch (the
// service's own request handler) against a real HQ store, so that a body which decodes
// goes on into validation, the store and, after a push, the customer sync job.
//
// Input: the first byte picks the request type (bits 0-6, modulo the eight request
// types plus one out-of-range type) and the connection (bit 7 clear: a plaintext service
// with no authenticated node; set: a CURVE service whose connection authenticated as
// "S1/T1", so identity checks and the per-node rate limit apply); the rest is the body.
// Each service keeps one SQLite HQ in a temporary directory for the whole process, so
// state builds up across inputs.
//
// Invariants checked (a violation aborts, which libFuzzer reports as a crash):
//   - dispatch never throws, and neither does the sync job;
//   - the reply is an error reply whose body decode_error() reads as a known code, or
//     the request's reply type with a body that decodes as that reply and re-encodes to
//     the same bytes; an unknown type is refused with invalid_input.
//
// Seeds: `fuzz_hq_request -write_seeds=DIR` writes valid requests (protocol::encode)
// to DIR and exits; tests/fuzz/corpus/fuzz_hq_request holds them (see docs/security.md).
// TILLSYNC_FUZZ_VERBOSE=1 prints each request's type and reply (to check the seeds).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol.h"
#include "fuzz_support.h"
#include "tillsync/clock.h"
#include "tillsync/headquarters.h"
#include "tillsync/hq_service.h"
#include "tillsync/operations.h"
#include "tillsync/transport/socket.h"

namespace {

using namespace tillsync;
using protocol::MsgType;

constexpr std::uint8_t kRequestTypes = 8;  // MsgType::hello .. MsgType::pull
constexpr std::uint8_t kAuthBit = 0x80;
constexpr std::string_view kNode = "S1/T1";
// Types no request has: 0, the next free one, a reply type, the error reply.
constexpr std::uint8_t kUnknownTypes[] = {0, 9, 0x7F, 0x81, 0xFF};

[[noreturn]] void fail(const std::string& what) { tillsync::fuzz::fail("fuzz_hq_request", what); }

// The reply to a successful request decodes as its reply struct and re-encodes to the
// same bytes (HQ's encoding is canonical; a terminal reads exactly what HQ meant).
template <class Reply>
void check_reply(std::string_view body) {
  auto decoded = protocol::decode<Reply>(body);
  if (!decoded.ok()) fail("HQ's reply does not decode: " + decoded.status().to_string());
  if (protocol::encode(*decoded) != body) fail("HQ's reply does not re-encode to the same bytes");
}

struct Service {
  std::unique_ptr<HqService> service;
  std::string authenticated_node;  // empty: plaintext
  ManualClock rate_clock;
  std::int64_t tick_ms = 0;  // how far rate_clock moves per input
};

std::filesystem::path* g_dir = nullptr;

void remove_dir() {
  if (g_dir == nullptr) return;
  std::error_code ignored;
  std::filesystem::remove_all(*g_dir, ignored);
}

// A service over a new HQ database in `file`. `curve`: a CURVE socket that admits one
// terminal, kNode, with a per-node rate low enough for the limit to refuse requests.
Service* make_service(const std::filesystem::path& file, const std::string& endpoint, bool curve) {
  auto* s = new Service;  // lives until the process exits
  HqOptions hq_options;
  hq_options.durable = false;
  auto hq = Headquarters::init(file.string(), "FZ", hq_options);
  if (!hq.ok()) fail("cannot create HQ: " + hq.status().to_string());
  HqServiceOptions options;
  options.listen = endpoint;
  options.rate_clock = &s->rate_clock;
  s->tick_ms = 10;  // 2 tokens an input at the default 200/s: never limited
  if (curve) {
    auto server_keys = transport::generate_key_pair();
    auto terminal_keys = transport::generate_key_pair();
    if (!server_keys.ok() || !terminal_keys.ok()) {
      std::fprintf(stderr, "fuzz_hq_request: no CURVE in this libzmq; authenticated inputs run in plaintext\n");
    } else {
      options.curve = *server_keys;
      options.allowlist = {{std::string(kNode), terminal_keys->public_key}};
      s->authenticated_node = std::string(kNode);
      // 0.005 tokens an input, a burst of 20: about one input in 50 gets past decoding
      // and the identity check, so once the burst is spent most of those are refused.
      options.node_requests_per_second = 5;
      options.node_burst = 20;
      s->tick_ms = 1;
    }
  }
  auto started = HqService::start(std::move(hq).value(), options);
  if (!started.ok()) fail("cannot start the service: " + started.status().to_string());
  s->service = std::move(started).value();
  return s;
}

struct Fixture {
  Service* plain = nullptr;
  Service* curve = nullptr;
  bool verbose = false;
};

Fixture& fixture() {
  static Fixture* f = [] {
    char tmpl[] = "/tmp/tillsync_fuzz_hq_XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) fail("cannot create a temporary directory");
    g_dir = new std::filesystem::path(tmpl);
    std::atexit(remove_dir);
    auto* fx = new Fixture;
    fx->plain = make_service(*g_dir / "plain.db", "inproc://fuzz-hq", false);
    fx->curve = make_service(*g_dir / "curve.db", "inproc://fuzz-hq-curve", true);
    const char* verbose = std::getenv("TILLSYNC_FUZZ_VERBOSE");
    fx->verbose = verbose != nullptr && *verbose != '\0' && *verbose != '0';
    return fx;
  }();
  return *f;
}

void check(std::uint8_t type, const std::pair<std::uint8_t, std::string>& reply) {
  const auto& [reply_type, body] = reply;
  if (reply_type == transport::kErrorReply) {
    const std::size_t nl = body.find('\n');
    if (nl == std::string::npos) fail("error reply without a code line");
    const auto code = parse_code(std::string_view(body).substr(0, nl));
    if (!code || *code == Code::ok) fail("error reply with an unknown code: " + body.substr(0, nl));
    const bool known_type = type >= 1 && type <= kRequestTypes;
    if (!known_type && *code != Code::invalid_input) fail("an unknown type refused with " + body.substr(0, nl));
    return;
  }
  if (type < 1 || type > kRequestTypes) fail("an unknown request type was answered");
  if (reply_type != protocol::reply_type(static_cast<MsgType>(type)))
    fail("reply type " + std::to_string(reply_type) + " to request type " + std::to_string(type));
  switch (static_cast<MsgType>(type)) {
    case MsgType::hello: return check_reply<protocol::HelloReply>(body);
    case MsgType::rts_create:
    case MsgType::rts_edit:
    case MsgType::rts_add_address:
    case MsgType::rts_issue_loyalty_card: return check_reply<protocol::RtsReply>(body);
    case MsgType::search: return check_reply<protocol::SearchReply>(body);
    case MsgType::push: return check_reply<protocol::PushAck>(body);
    case MsgType::pull: return check_reply<protocol::PullReply>(body);
  }
}

// ---- seeds -----------------------------------------------------------------------------

Customer seed_customer(GuidGenerator& ids) {
  Customer c;
  c.guid = ids.next();
  c.first_name = "Ada";
  c.last_name = "Lovelace";
  c.email = "ada@example.com";
  c.phone = "+44 20 7946 0000";
  c.language = "en-gb";
  c.currency = "GBP";
  c.customer_group = "RETAIL";
  c.receipt_option = "print";
  c.addresses.push_back(Address{ids.next(), "home", "12 St James's Square", "London", "", "SW1Y 4JH", "GB"});
  c.contacts.push_back(Contact{ids.next(), ContactKind::phone, "+44 20 7946 0001"});
  c.affiliations.push_back("staff");
  return c;
}

LogRecord seed_record(std::int64_t seq, GuidGenerator& ids, const Payload& payload) {
  LogRecord r;
  r.seq = seq;
  r.op_id = ids.next();
  r.entity = entity_of(payload);
  r.kind = kind_of(payload);
  r.hlc = Hlc::make(1'780'000'000'000 + static_cast<std::uint64_t>(seq), 0);
  r.node_id = std::string(kNode);
  r.payload = encode_payload(payload);
  return r;
}

void write_seeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, MsgType type, bool authenticated, const std::string& body) {
    std::string bytes(1, static_cast<char>((static_cast<std::uint8_t>(type) - 1) | (authenticated ? kAuthBit : 0)));
    bytes += body;
    std::ofstream(std::filesystem::path(dir) / name, std::ios::binary) << bytes;
  };
  GuidGenerator ids(20261207);
  const std::string node(kNode);
  const Customer customer = seed_customer(ids);
  const Guid create_request = ids.next();

  write("hello-anonymous", MsgType::hello, false, protocol::encode(protocol::Hello{"", Guid{}}));
  write("hello", MsgType::hello, false, protocol::encode(protocol::Hello{node, create_request}));
  write("hello-auth", MsgType::hello, true, protocol::encode(protocol::Hello{node, Guid{}}));
  write("rts_create", MsgType::rts_create, false, protocol::encode(protocol::RtsCreate{node, create_request, customer}));
  write("rts_create-auth", MsgType::rts_create, true,
        protocol::encode(protocol::RtsCreate{node, ids.next(), seed_customer(ids)}));
  write("rts_edit", MsgType::rts_edit, false,
        protocol::encode(protocol::RtsEdit{node, ids.next(), customer.guid, 1,
                                           {FieldChange{Field::title, "Countess"},
                                            FieldChange{Field::receipt_email, "ada@example.org"}}}));
  write("rts_add_address", MsgType::rts_add_address, false,
        protocol::encode(protocol::RtsAddAddress{
            node, ids.next(), customer.guid, Address{ids.next(), "delivery", "1 Main St", "Leeds", "", "LS1 1AA", "GB"}}));
  write("rts_issue_loyalty_card", MsgType::rts_issue_loyalty_card, false,
        protocol::encode(protocol::RtsIssueLoyaltyCard{node, ids.next(), customer.guid}));
  write("search", MsgType::search, false, protocol::encode(protocol::Search{node, "Lovelace", false}));
  write("search-filtered-auth", MsgType::search, true, protocol::encode(protocol::Search{node, "ada", true}));

  // A terminal's log: a customer created offline, edited, given an address and a
  // contact, one removed again, and a card HQ issued.
  Customer offline = seed_customer(ids);
  offline.first_name = "Grace";
  offline.last_name = "Hopper";
  std::vector<LogRecord> log;
  log.push_back(seed_record(1, ids, CustomerCreated{offline}));
  log.push_back(seed_record(2, ids, CustomerUpdated{offline.guid, 1, {FieldChange{Field::middle_name, "Brewster"}}}));
  const Guid address = ids.next();
  log.push_back(seed_record(3, ids, AddressAdded{offline.guid, Address{address, "business", "1 Navy Way", "Arlington", "VA", "22202", "US"}}));
  log.push_back(seed_record(4, ids, AddressUpdated{offline.guid, 1, address, {AddressFieldChange{AddressField::city, "Washington"}}}));
  const Guid contact = ids.next();
  log.push_back(seed_record(5, ids, ContactAdded{offline.guid, Contact{contact, ContactKind::email, "grace@example.com"}}));
  log.push_back(seed_record(6, ids, ContactUpdated{offline.guid, 1, contact, "hopper@example.com"}));
  log.push_back(seed_record(7, ids, ContactRemoved{offline.guid, contact, 1}));
  log.push_back(seed_record(8, ids, AddressRemoved{offline.guid, offline.addresses[0].guid, 1}));
  log.push_back(seed_record(9, ids, LoyaltyCardIssued{offline.guid, LoyaltyCard{"FZ000000001", 1'780'000'000'000}}));
  write("push", MsgType::push, false, protocol::encode(protocol::Push{node, 0, Guid{}, log}));
  write("push-auth", MsgType::push, true,
        protocol::encode(protocol::Push{node, 0, Guid{}, std::vector<LogRecord>(log.begin(), log.begin() + 3)}));
  write("push-next", MsgType::push, false,
        protocol::encode(protocol::Push{node, 9, log[8].op_id, {seed_record(10, ids, CustomerUpdated{offline.guid, 2, {FieldChange{Field::phone, "+1 703 555 0100"}}})}}));
  write("pull", MsgType::pull, false, protocol::encode(protocol::Pull{node, 0, 0, 100, false}));
  write("pull-filtered-auth", MsgType::pull, true, protocol::encode(protocol::Pull{node, 0, 0, 5, true}));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  tillsync::fuzz::write_seeds_if_asked(*argc, *argv, write_seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  Fixture& fx = fixture();
  const std::uint8_t selector = data[0] & 0x7F;
  const std::uint8_t pick = selector % (kRequestTypes + 1);
  const std::uint8_t type =
      pick < kRequestTypes ? static_cast<std::uint8_t>(pick + 1)
                           : kUnknownTypes[(selector / (kRequestTypes + 1)) % std::size(kUnknownTypes)];
  Service& s = (data[0] & kAuthBit) != 0 ? *fx.curve : *fx.plain;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  s.rate_clock.advance(s.tick_ms);
  std::pair<std::uint8_t, std::string> reply;
  try {
    reply = s.service->dispatch(type, body, s.authenticated_node);
  } catch (const std::exception& e) {
    fail(std::string("dispatch threw: ") + e.what());
  } catch (...) {
    fail("dispatch threw a non-standard exception");
  }
  if (fx.verbose)
    std::fprintf(stderr, "fuzz_hq_request: type %d%s -> %d %s\n", type, s.authenticated_node.empty() ? "" : " (auth)",
                 reply.first,
                 reply.first == transport::kErrorReply ? reply.second.substr(0, 200).c_str() : "ok");
  check(type, reply);
  // Operations a push staged are applied by the job, which decodes their payloads.
  if (type == static_cast<std::uint8_t>(MsgType::push) && reply.first != transport::kErrorReply) {
    try {
      auto report = s.service->hq().run_sync_job(256);
      if (fx.verbose)
        std::fprintf(stderr, "fuzz_hq_request: job: %s\n",
                     report.ok() ? ("applied " + std::to_string(report->applied) + ", failed " +
                                    std::to_string(report->failed) + ", waiting " + std::to_string(report->waiting))
                                       .c_str()
                                 : report.status().to_string().c_str());
    } catch (const std::exception& e) {
      fail(std::string("the sync job threw: ") + e.what());
    }
  }
  return 0;
}
