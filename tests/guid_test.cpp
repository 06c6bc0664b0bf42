// GUIDs: deterministic seeded generation, v4 layout, text and raw forms.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "tillsync/guid.h"

namespace tillsync {
namespace {

std::vector<std::string> first_guids(GuidGenerator& gen, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(gen.next().to_string());
  return out;
}

TEST(GuidGenerator, SameSeedSameSequence) {
  GuidGenerator a(12345), b(12345);
  EXPECT_EQ(first_guids(a, 20), first_guids(b, 20));
}

TEST(GuidGenerator, DifferentSeedsDiffer) {
  GuidGenerator a(1), b(2);
  EXPECT_NE(first_guids(a, 5), first_guids(b, 5));
}

TEST(GuidGenerator, SequenceHasNoRepeats) {
  GuidGenerator gen(99);
  std::unordered_set<Guid> seen;
  for (int i = 0; i < 10000; ++i) {
    Guid g = gen.next();
    EXPECT_FALSE(g.is_nil());
    ASSERT_TRUE(seen.insert(g).second) << "repeat at " << i << ": " << g.to_string();
  }
}

TEST(GuidGenerator, UnseededGeneratorsDiffer) {
  GuidGenerator a, b;
  EXPECT_NE(a.next(), b.next());
}

TEST(GuidGenerator, SetsVersion4AndRfc4122Variant) {
  GuidGenerator gen(7);
  for (int i = 0; i < 1000; ++i) {
    const Guid g = gen.next();
    ASSERT_EQ(g.bytes[6] & 0xF0, 0x40) << g.to_string();  // version 4
    ASSERT_EQ(g.bytes[8] & 0xC0, 0x80) << g.to_string();  // variant 10xx
    const std::string text = g.to_string();
    ASSERT_EQ(text[14], '4') << text;
    ASSERT_NE(std::string("89ab").find(text[19]), std::string::npos) << text;
  }
}

TEST(GuidGenerator, TimeOrderedGuidsAreVersion7AndSortByTheirMillisecond) {
  GuidGenerator gen(7);
  Guid previous;
  for (std::int64_t ms = 1'700'000'000'000; ms < 1'700'000'000'000 + 500; ++ms) {
    const Guid g = gen.next_time_ordered(ms);
    ASSERT_EQ(g.bytes[6] & 0xF0, 0x70) << g.to_string();  // version 7
    ASSERT_EQ(g.bytes[8] & 0xC0, 0x80) << g.to_string();  // variant 10xx
    std::int64_t prefix = 0;
    for (int i = 0; i < 6; ++i) prefix = (prefix << 8) | g.bytes[i];
    ASSERT_EQ(prefix, ms);
    ASSERT_LT(previous, g) << "a later millisecond sorts after an earlier one";
    previous = g;
  }
  // Same millisecond: still distinct, and the same seed gives the same sequence.
  GuidGenerator again(7);
  EXPECT_EQ(again.next_time_ordered(1'700'000'000'000), GuidGenerator(7).next_time_ordered(1'700'000'000'000));
  EXPECT_NE(gen.next_time_ordered(42), gen.next_time_ordered(42));
  // Out-of-range times are clamped to the 48-bit field, not wrapped.
  const Guid low = gen.next_time_ordered(-5), high = gen.next_time_ordered(std::int64_t{1} << 50);
  EXPECT_EQ(low.bytes[0] | low.bytes[5], 0);
  EXPECT_EQ(high.bytes[0] & high.bytes[5], 0xFF);
}

TEST(GuidText, CanonicalLowerCaseForm) {
  Guid g;
  for (std::size_t i = 0; i < g.bytes.size(); ++i)
    g.bytes[i] = static_cast<std::uint8_t>(0x10 * (i % 16) + i);
  EXPECT_EQ(g.to_string(), "00112233-4455-6677-8899-aabbccddeeff");
  EXPECT_EQ(Guid{}.to_string(), "00000000-0000-0000-0000-000000000000");
  EXPECT_TRUE(Guid{}.is_nil());
  EXPECT_FALSE(g.is_nil());
}

TEST(GuidText, ParseRoundTrip) {
  GuidGenerator gen(3);
  for (int i = 0; i < 200; ++i) {
    const Guid g = gen.next();
    const auto parsed = Guid::parse(g.to_string());
    ASSERT_TRUE(parsed.has_value()) << g.to_string();
    EXPECT_EQ(*parsed, g);
  }
}

TEST(GuidText, ParseAcceptsUpperAndMixedCase) {
  const auto lower = Guid::parse("6f9619ff-8b86-d011-b42d-00c04fc964ff");
  const auto upper = Guid::parse("6F9619FF-8B86-D011-B42D-00C04FC964FF");
  const auto mixed = Guid::parse("6f9619Ff-8B86-d011-B42d-00c04FC964fF");
  ASSERT_TRUE(lower && upper && mixed);
  EXPECT_EQ(*lower, *upper);
  EXPECT_EQ(*lower, *mixed);
  EXPECT_EQ(upper->to_string(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
  EXPECT_EQ(lower->bytes[0], 0x6F);
  EXPECT_EQ(lower->bytes[15], 0xFF);
}

class GuidParseRejects : public ::testing::TestWithParam<std::string> {};

TEST_P(GuidParseRejects, BadInput) { EXPECT_FALSE(Guid::parse(GetParam()).has_value()); }

INSTANTIATE_TEST_SUITE_P(
    Guid, GuidParseRejects,
    ::testing::Values("",                                        // empty
                      "6f9619ff-8b86-d011-b42d-00c04fc964f",     // one digit short
                      "6f9619ff-8b86-d011-b42d-00c04fc964ff0",   // one digit long
                      "6f9619ff8b86d011b42d00c04fc964ff",        // no dashes
                      "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",  // braces
                      "6f9619ff-8b86-d011-b42d-00c04fc964fg",    // not hex
                      "6f9619ff+8b86-d011-b42d-00c04fc964ff",    // wrong separator
                      "6f9619f-f8b86-d011-b42d-00c04fc964ff",    // dash misplaced
                      "6f9619ff-8b86-d011-b42d-00c04fc964-f",    // dash for a digit
                      " 6f9619ff-8b86-d011-b42d-00c04fc964f",    // leading space
                      "6f9619ff-8b86-d011-b42d-00c04fc964f ",    // trailing space
                      "pending sync pending sync pending sy",    // 36 characters of text
                      std::string("6f9619ff-8b86-d011-b42d-00c04fc964\0f", 36)));

TEST(GuidRaw, RoundTripsThroughSixteenBytes) {
  GuidGenerator gen(11);
  const Guid g = gen.next();
  const std::string_view raw = g.raw();
  ASSERT_EQ(raw.size(), 16U);
  EXPECT_EQ(static_cast<std::uint8_t>(raw[0]), g.bytes[0]);
  const auto back = Guid::from_raw(raw);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, g);
  // Raw bytes may hold zeros anywhere.
  const auto zeros = Guid::from_raw(std::string(16, '\0'));
  ASSERT_TRUE(zeros.has_value());
  EXPECT_TRUE(zeros->is_nil());
}

TEST(GuidRaw, RejectsWrongLength) {
  EXPECT_FALSE(Guid::from_raw("").has_value());
  EXPECT_FALSE(Guid::from_raw(std::string(15, 'x')).has_value());
  EXPECT_FALSE(Guid::from_raw(std::string(17, 'x')).has_value());
  // The text form is not the raw form.
  EXPECT_FALSE(Guid::from_raw("6f9619ff-8b86-d011-b42d-00c04fc964ff").has_value());
}

TEST(GuidOrder, ComparesByBytesAndHashesConsistently) {
  Guid a, b;
  a.bytes[0] = 1;
  b.bytes[0] = 2;
  EXPECT_LT(a, b);
  b.bytes[0] = 1;
  EXPECT_EQ(a, b);
  EXPECT_EQ(std::hash<Guid>{}(a), std::hash<Guid>{}(b));
  // Ordering matches the canonical text, so GUID-ordered output is stable everywhere.
  GuidGenerator gen(5);
  std::set<Guid> by_value;
  std::set<std::string> by_text;
  for (int i = 0; i < 100; ++i) {
    const Guid g = gen.next();
    by_value.insert(g);
    by_text.insert(g.to_string());
  }
  std::vector<std::string> value_order;
  for (const Guid& g : by_value) value_order.push_back(g.to_string());
  EXPECT_EQ(value_order, std::vector<std::string>(by_text.begin(), by_text.end()));
}

}  // namespace
}  // namespace tillsync
