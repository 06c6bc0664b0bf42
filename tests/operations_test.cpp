// Payload encoding: round trips, format versioning, and hostile bytes.
#include <gtest/gtest.h>

#include <random>

#include "tillsync/operations.h"

namespace tillsync {
namespace {

Customer sample_customer(GuidGenerator& g) {
  Customer c;
  c.guid = g.next();
  c.type = CustomerType::organization;
  c.org_name = "Contoso Ltd";
  c.email = "buyer@contoso.example";
  c.phone = "+1 (425) 555-0100";
  c.title = "Ms.";
  c.currency = "USD";
  c.language = "en-us";
  c.customer_group = "B2B";
  c.receipt_option = "email";
  c.receipt_email = "ap@contoso.example";
  c.addresses.push_back({g.next(), "business", "1 Harbour Rd", "Seattle", "WA", "98101", "US"});
  c.contacts.push_back({g.next(), ContactKind::phone, "555 0101"});
  c.affiliations = {"Wholesale", "Café ☕"};
  c.version = 3;
  return c;
}

std::vector<Payload> samples() {
  GuidGenerator g(1);
  Customer c = sample_customer(g);
  return {
      CustomerCreated{c},
      CustomerUpdated{c.guid, 3, {{Field::email, "new@contoso.example"}, {Field::title, ""}}},
      AddressAdded{c.guid, {g.next(), "delivery", "2 Pier", "Tacoma", "", "", "US"}},
      AddressRemoved{c.guid, g.next()},
      ContactAdded{c.guid, {g.next(), ContactKind::email, "x@y.example"}},
      ContactRemoved{c.guid, g.next(), 4},
      AddressUpdated{c.guid, 3, g.next(), {{AddressField::city, "Renton"}, {AddressField::zip, "98055"}}},
      ContactUpdated{c.guid, 3, g.next(), "555 0102"},
  };
}

TEST(Operations, EveryKindRoundTrips) {
  for (const Payload& p : samples()) {
    const OpKind kind = kind_of(p);
    std::string bytes = encode_payload(p);
    auto decoded = decode_payload(kind, bytes);
    ASSERT_TRUE(decoded.ok()) << to_string(kind) << ": " << decoded.status().to_string();
    EXPECT_EQ(*decoded, p) << to_string(kind);
    EXPECT_EQ(entity_of(*decoded), entity_of(p));
  }
}

TEST(Operations, KindNumbersAreStable) {
  EXPECT_EQ(static_cast<int>(OpKind::customer_create), 1);
  EXPECT_EQ(static_cast<int>(OpKind::contact_remove), 6);
  EXPECT_EQ(static_cast<int>(OpKind::address_update), 7);
  EXPECT_EQ(static_cast<int>(OpKind::contact_update), 8);
  EXPECT_EQ(static_cast<int>(OpKind::loyalty_card_issued), 9);
  EXPECT_FALSE(op_kind_from_int(0).has_value());
  EXPECT_FALSE(op_kind_from_int(10).has_value());
  EXPECT_EQ(op_kind_from_int(2), OpKind::customer_update);
}

TEST(Operations, PayloadStartsWithFormatVersion) {
  std::string bytes = encode_payload(samples()[1]);
  ASSERT_GE(bytes.size(), 2u);
  EXPECT_EQ(static_cast<unsigned char>(bytes[0]), kPayloadFormatVersion & 0xff);
  EXPECT_EQ(static_cast<unsigned char>(bytes[1]), kPayloadFormatVersion >> 8);
}

TEST(Operations, NewerFormatVersionIsUnsupported) {
  std::string bytes = encode_payload(samples()[0]);
  bytes[0] = static_cast<char>(kPayloadFormatVersion + 1);
  auto decoded = decode_payload(OpKind::customer_create, bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), Code::unsupported_version);
}

TEST(Operations, TruncatedOrTrailingBytesAreCorrupt) {
  for (const Payload& p : samples()) {
    std::string bytes = encode_payload(p);
    for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
      auto decoded = decode_payload(kind_of(p), std::string_view(bytes).substr(0, cut));
      ASSERT_FALSE(decoded.ok()) << to_string(kind_of(p)) << " cut at " << cut;
      EXPECT_EQ(decoded.status().code(), Code::corrupt_log);
    }
    auto trailing = decode_payload(kind_of(p), bytes + "x");
    EXPECT_EQ(trailing.status().code(), Code::corrupt_log);
  }
}

TEST(Operations, HugeLengthPrefixIsRejectedWithoutAllocating) {
  // version, endianness byte, then a customer GUID and a string length of 2^60.
  std::string bytes = encode_payload(samples()[3]).substr(0, 3);
  bytes += std::string(16, '\x01');
  std::uint64_t huge = std::uint64_t{1} << 60;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((huge >> (8 * i)) & 0xff));
  auto decoded = decode_payload(OpKind::customer_update, bytes);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), Code::corrupt_log);
}

TEST(Operations, RandomGarbageNeverCrashes) {
  std::mt19937_64 rng(12345);
  int accepted = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string bytes(rng() % 200, '\0');
    for (char& ch : bytes) ch = static_cast<char>(rng() & 0xff);
    if (bytes.size() >= 2) {
      bytes[0] = static_cast<char>(kPayloadFormatVersion);
      bytes[1] = 0;
    }
    auto kind = static_cast<OpKind>(1 + rng() % 8);
    auto decoded = decode_payload(kind, bytes);
    if (decoded.ok()) ++accepted;
    else EXPECT_EQ(decoded.status().code(), Code::corrupt_log);
  }
  // Random bytes almost never form a complete, exactly-sized payload.
  EXPECT_LT(accepted, 50);
}

TEST(Operations, OutOfRangeEnumIsCorrupt) {
  GuidGenerator g(2);
  Payload p = CustomerUpdated{g.next(), 1, {{Field::email, "a@b.co"}}};
  std::string bytes = encode_payload(p);
  // Layout: 2 version + 1 endianness + 16 guid + 8 version + 8 count, then the field byte.
  const std::size_t field_at = 2 + 1 + 16 + 8 + 8;
  ASSERT_LT(field_at, bytes.size());
  bytes[field_at] = static_cast<char>(200);
  EXPECT_EQ(decode_payload(OpKind::customer_update, bytes).status().code(), Code::corrupt_log);
}

}  // namespace
}  // namespace tillsync
