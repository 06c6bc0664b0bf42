// libFuzzer target: every reply body a terminal decodes (HqClient, engine/src/hq_client.cpp),
// and the error reply (transport::decode_error, read by transport::Client).
//
// Input: the first byte picks the reply (modulo six: HelloReply, RtsReply, SearchReply,
// PushAck, PullReply, error reply); the rest is the body. A body that decodes must
// re-encode to bytes that decode again and re-encode identically, and, when the body
// is in cereal's little-endian form (as HQ writes it), to the input itself. An error
// reply always gives a non-ok Status that survives encode_error/decode_error.
//
// Seeds: `fuzz_hq_reply -write_seeds=DIR` writes valid replies to DIR and exits
// (tests/fuzz/corpus/fuzz_hq_reply).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "protocol.h"
#include "fuzz_support.h"
#include "tillsync/transport/socket.h"

namespace {

using namespace tillsync;

constexpr std::uint8_t kReplies = 6;
constexpr std::uint8_t kErrorSelector = 5;

[[noreturn]] void fail(const std::string& what) { tillsync::fuzz::fail("fuzz_hq_reply", what); }

template <class Reply>
void round_trip(std::string_view bytes) {
  auto first = protocol::decode<Reply>(bytes);
  if (!first.ok()) return;
  const std::string encoded = protocol::encode(*first);
  // cereal's portable archive starts with its byte order: 1 little-endian (what every
  // encoder here writes); any other value makes the reader swap bytes.
  if (!bytes.empty() && bytes[0] == 1 && encoded != bytes) fail("a little-endian reply re-encodes differently");
  auto second = protocol::decode<Reply>(encoded);
  if (!second.ok()) fail("a re-encoded reply does not decode: " + second.status().to_string());
  if (protocol::encode(*second) != encoded) fail("a reply does not survive a second round trip");
}

void error_round_trip(std::string_view bytes) {
  const Status s = transport::decode_error(bytes);
  if (s.ok()) fail("an error reply decoded as ok");
  const Status again = transport::decode_error(transport::encode_error(s));
  if (again.code() != s.code() || again.message() != s.message()) fail("an error reply does not round-trip");
  // What the terminal reads of a busy reply: the retry hint (at most nine digits).
  if (auto hint = s.retry_after_ms()) {
    if (s.code() != Code::busy || *hint < 0 || *hint > 999'999'999) fail("a retry hint out of range");
  }
}

Customer seed_customer() {
  Customer c;
  c.guid = *Guid::parse("0f8fad5b-d9cb-469f-a165-70867728950e");
  c.account_number = "FZ000000042";
  c.type = CustomerType::organization;
  c.org_name = "Analytical Engines Ltd";
  c.email = "office@example.com";
  c.customer_group = "TRADE";
  c.addresses.push_back(
      Address{*Guid::parse("7c9e6679-7425-40de-944b-e07fc1f90ae7"), "invoice", "1 Main St", "Leeds", "", "LS1 1AA", "GB"});
  c.contacts.push_back(Contact{*Guid::parse("c9bf9e57-1685-4c89-bafb-ff5af830be8a"), ContactKind::email, "ap@example.com"});
  c.affiliations.push_back("wholesale");
  c.loyalty_cards.push_back(LoyaltyCard{"FZ000000007", 1'780'000'000'000});
  c.version = 7;
  return c;
}

void write_seeds(const std::string& dir) {
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, std::uint8_t selector, const std::string& body) {
    std::ofstream(std::filesystem::path(dir) / name, std::ios::binary) << static_cast<char>(selector) << body;
  };
  const Customer c = seed_customer();
  const std::uint64_t hlc = Hlc::make(1'780'000'000'000, 3).value;
  write("hello", 0, protocol::encode(protocol::HelloReply{"e7c1d2a0", 42, hlc, true}));
  write("rts", 1, protocol::encode(protocol::RtsReply{c, hlc, "FZ000000007"}));
  write("search", 2, protocol::encode(protocol::SearchReply{{c, c}, true}));
  write("push_ack", 3, protocol::encode(protocol::PushAck{"e7c1d2a0", 9}));
  protocol::PullReply pull{"e7c1d2a0", false, 12, 0x1234, hlc, {c},
                           {{*Guid::parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), c.guid}}, true, {}};
  pull.merged_elsewhere.emplace_back(*Guid::parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), "FZ000000099");
  write("pull", 4, protocol::encode(pull));
  write("pull-reset", 4, protocol::encode(protocol::PullReply{"e7c1d2a0", true, 0, 0, hlc, {}, {}, false, {}}));
  write("error-busy", kErrorSelector,
        transport::encode_error(Status::Busy("node S1/T1 sends requests faster than HQ serves one node", 250)));
  write("error-conflict", kErrorSelector, transport::encode_error(Status(Code::conflict, "HQ holds another operation")));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  tillsync::fuzz::write_seeds_if_asked(*argc, *argv, write_seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % kReplies) {
    case 0: round_trip<protocol::HelloReply>(body); break;
    case 1: round_trip<protocol::RtsReply>(body); break;
    case 2: round_trip<protocol::SearchReply>(body); break;
    case 3: round_trip<protocol::PushAck>(body); break;
    case 4: round_trip<protocol::PullReply>(body); break;
    default: error_round_trip(body); break;
  }
  return 0;
}
