// Content digest: what it covers and what it deliberately ignores.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include "tillsync/digest.h"

namespace tillsync {
namespace {

std::vector<Customer> sample() {
  GuidGenerator g(3);
  std::vector<Customer> out;
  for (int i = 0; i < 3; ++i) {
    Customer c;
    c.guid = g.next();
    c.first_name = "First" + std::to_string(i);
    c.last_name = "Last";
    c.addresses.push_back({g.next(), "home", "1 Main", "Town", "", "", "US"});
    c.addresses.push_back({g.next(), "delivery", "2 Main", "Town", "", "", "US"});
    c.contacts.push_back({g.next(), ContactKind::email, "x@y.example"});
    c.affiliations = {"B", "A"};
    out.push_back(c);
  }
  return out;
}

TEST(Digest, OrderOfCustomersAndChildrenDoesNotMatter) {
  auto a = sample();
  auto b = sample();
  std::reverse(b.begin(), b.end());
  for (auto& c : b) {
    std::reverse(c.addresses.begin(), c.addresses.end());
    std::reverse(c.affiliations.begin(), c.affiliations.end());
  }
  EXPECT_EQ(content_digest(a), content_digest(b));
  EXPECT_EQ(content_digest(a).customers, 3u);
}

TEST(Digest, AccountNumbersLoyaltyCardsAndVersionsAreExcluded) {
  auto a = sample();
  auto b = sample();
  b[0].account_number = "C000000001";
  b[1].loyalty_cards.push_back({"L1", 5});
  b[2].version = 9;
  EXPECT_EQ(content_digest(a), content_digest(b));
}

TEST(Digest, EveryContentChangeChangesTheDigest) {
  const auto base = content_digest(sample());
  std::vector<std::function<void(std::vector<Customer>&)>> edits = {
      [](auto& v) { v[0].first_name = "Other"; },
      [](auto& v) { v[0].type = CustomerType::organization; },
      [](auto& v) { v[1].receipt_email = "r@x.example"; },
      [](auto& v) { v[1].addresses[0].zip = "12345"; },
      [](auto& v) { v[1].addresses.pop_back(); },
      [](auto& v) { v[2].contacts[0].kind = ContactKind::phone; },
      [](auto& v) { v[2].affiliations.push_back("C"); },
      [](auto& v) { v.pop_back(); },
      // Moving a character between adjacent fields must not collide.
      [](auto& v) { v[0].first_name = "First0L"; v[0].last_name = "ast"; },
  };
  for (std::size_t i = 0; i < edits.size(); ++i) {
    auto v = sample();
    edits[i](v);
    EXPECT_NE(content_digest(v).hex, base.hex) << "edit " << i;
  }
}

TEST(Digest, BuilderRequiresAscendingGuids) {
  auto v = sample();
  std::sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return y.guid < x.guid; });
  DigestBuilder b;
  b.add(v[0]);
  EXPECT_THROW(b.add(v[1]), std::logic_error);
}

TEST(Digest, EmptySetHasAStableDigest) {
  EXPECT_EQ(content_digest({}).hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");  // SHA-1("")
}

}  // namespace
}  // namespace tillsync
