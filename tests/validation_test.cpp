#include "tillsync/validation.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>

namespace tillsync {
namespace {

std::string repeat(std::string_view unit, std::size_t times) {
  std::string out;
  for (std::size_t i = 0; i < times; ++i) out += unit;
  return out;
}

// An invalid_input error about `field` whose message names the field.
::testing::AssertionResult IsInvalid(const Status& s, std::string_view field) {
  if (s.ok()) return ::testing::AssertionFailure() << "expected invalid_input, got ok";
  if (s.code() != Code::invalid_input) {
    return ::testing::AssertionFailure() << "expected invalid_input, got " << s.to_string();
  }
  if (s.field() != field) {
    return ::testing::AssertionFailure()
           << "expected field '" << field << "', got '" << s.field() << "' (" << s.message() << ")";
  }
  if (s.message().find(field) == std::string::npos) {
    return ::testing::AssertionFailure()
           << "message does not name '" << field << "': " << s.message();
  }
  return ::testing::AssertionSuccess();
}

Customer valid_person() {
  Customer c;
  c.type = CustomerType::person;
  c.first_name = "Ada";
  c.last_name = "Lovelace";
  c.email = "ada@example.com";
  c.phone = "+44 20 7946 0000";
  c.language = "en-gb";
  c.currency = "GBP";
  c.customer_group = "RETAIL";
  c.receipt_option = "email";
  c.receipt_email = "receipts@example.co.uk";
  c.addresses.push_back({{}, "home", "12 Analytical Row", "London", "", "N1 9GU", "GB"});
  c.contacts.push_back({{}, ContactKind::email, "ada.work@example.org"});
  c.contacts.push_back({{}, ContactKind::phone, "(020) 7946-0001"});
  c.affiliations = {"VIP", "Staff"};
  GuidGenerator ids(3);  // every child row has a GUID of its own
  c.guid = ids.next();
  for (Address& a : c.addresses) a.guid = ids.next();
  for (Contact& k : c.contacts) k.guid = ids.next();
  return c;
}

Customer valid_organization() {
  Customer c;
  c.type = CustomerType::organization;
  c.org_name = "Contoso Ltd.";
  return c;
}

// ---------------------------------------------------------------------------------
// D13 limits: names 1-100, e-mail <= 254, phone <= 32, other text <= 200 code points.

TEST(ValidationD13, NameAcceptsExactly100CodePointsAndRejects101) {
  for (Field f : {Field::first_name, Field::middle_name, Field::last_name, Field::org_name}) {
    EXPECT_TRUE(validate_field(f, repeat("a", 100)).ok()) << field_name(f);
    Status s = validate_field(f, repeat("a", 101));
    EXPECT_TRUE(IsInvalid(s, field_name(f)));
    EXPECT_NE(s.message().find("101"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("100"), std::string::npos) << s.message();
  }
}

TEST(ValidationD13, MultiByteCharactersCountAsOneEach) {
  // 2-, 3- and 4-byte sequences: 100 of them fit a name, 101 do not.
  for (std::string_view ch : {"\u00e9", "\u6f22", "\U0001F600"}) {
    const std::string hundred = repeat(ch, 100);
    ASSERT_GT(hundred.size(), 100u);
    EXPECT_TRUE(validate_field(Field::first_name, hundred).ok()) << ch;
    EXPECT_TRUE(IsInvalid(validate_field(Field::first_name, repeat(ch, 101)), "first_name"));
  }
}

TEST(ValidationD13, OtherTextAcceptsExactly200CodePointsAndRejects201) {
  for (Field f : {Field::title, Field::language, Field::currency, Field::customer_group,
                  Field::receipt_option}) {
    EXPECT_TRUE(validate_field(f, repeat("x", 200)).ok()) << field_name(f);
    EXPECT_TRUE(validate_field(f, repeat("\u00fc", 200)).ok()) << field_name(f);
    EXPECT_TRUE(IsInvalid(validate_field(f, repeat("x", 201)), field_name(f)));
  }
}

TEST(ValidationD13, EmailAcceptsExactly254CharactersAndRejects255) {
  // local part + "@" + domain labels of at most 63 characters + ".com"
  auto email_of_length = [](std::size_t n) {
    const std::string domain =
        repeat("d", 63) + "." + repeat("e", 63) + "." + repeat("f", 63) + ".com";
    return repeat("l", n - 1 - domain.size()) + "@" + domain;
  };
  const std::string at_limit = email_of_length(254);
  ASSERT_EQ(at_limit.size(), 254u);
  EXPECT_TRUE(validate_field(Field::email, at_limit).ok());
  EXPECT_TRUE(IsInvalid(validate_field(Field::email, email_of_length(255)), "email"));
}

TEST(ValidationD13, PhoneAcceptsExactly32CharactersAndRejects33) {
  EXPECT_TRUE(validate_field(Field::phone, repeat("1", 32)).ok());
  const std::string mixed32 = "+1 (555) 010-0000.0000 000-00 00";
  ASSERT_EQ(mixed32.size(), 32u);
  EXPECT_TRUE(validate_field(Field::phone, mixed32).ok());
  EXPECT_TRUE(IsInvalid(validate_field(Field::phone, mixed32 + "0"), "phone"));
  EXPECT_TRUE(IsInvalid(validate_field(Field::phone, repeat("1", 33)), "phone"));
}

TEST(ValidationD13, AffiliationIsOneTo200Characters) {
  EXPECT_TRUE(validate_affiliation("A").ok());
  EXPECT_TRUE(validate_affiliation(repeat("a", 200)).ok());
  EXPECT_TRUE(IsInvalid(validate_affiliation(repeat("a", 201)), "affiliation"));
  EXPECT_TRUE(IsInvalid(validate_affiliation(""), "affiliation"));
  EXPECT_TRUE(IsInvalid(validate_affiliation("   "), "affiliation"));
  EXPECT_TRUE(IsInvalid(validate_affiliation("", "affiliations[3]"), "affiliations[3]"));
}

TEST(ValidationD13, AddressTextFieldsAreLimitedTo200) {
  Address a{{}, "home", "Main St 1", "Springfield", "IL", "62701", "US"};
  ASSERT_TRUE(validate_address(a).ok());
  a.street = repeat("s", 200);
  EXPECT_TRUE(validate_address(a).ok());
  a.street = repeat("s", 201);
  EXPECT_TRUE(IsInvalid(validate_address(a, "addresses[0]"), "addresses[0].street"));
  a.street = "Main St 1";
  a.zip = repeat("9", 201);
  EXPECT_TRUE(IsInvalid(validate_address(a, "addresses[0]"), "addresses[0].zip"));
  a.zip = "";
  a.purpose = repeat("p", 201);
  EXPECT_TRUE(IsInvalid(validate_address(a, "addresses[0]"), "addresses[0].purpose"));
}

TEST(ValidationD13, ValidateTextUsesTheGivenLimit) {
  EXPECT_TRUE(validate_text("note", "abc", 3).ok());
  EXPECT_TRUE(IsInvalid(validate_text("note", "abcd", 3), "note"));
  EXPECT_TRUE(validate_text("note", "", 0).ok());
}

// ---------------------------------------------------------------------------------
// D13: control characters are rejected everywhere; invalid UTF-8 is rejected.

TEST(ValidationD13, RejectsEveryC0ControlCharacter) {
  for (int c = 0; c < 0x20; ++c) {
    std::string value = "Ab";
    value += static_cast<char>(c);
    value += "c";
    Status s = validate_field(Field::first_name, value);
    EXPECT_TRUE(IsInvalid(s, "first_name")) << "byte " << c;
    EXPECT_NE(s.message().find("control character"), std::string::npos) << s.message();
  }
}

TEST(ValidationD13, RejectsDel) {
  Status s = validate_field(Field::last_name, "Lo\x7Fve");
  EXPECT_TRUE(IsInvalid(s, "last_name"));
  EXPECT_NE(s.message().find("U+007F"), std::string::npos) << s.message();
}

TEST(ValidationD13, RejectsC1ControlCharactersButNotTheirNeighbours) {
  EXPECT_TRUE(IsInvalid(validate_field(Field::title, "Dr\u0080"), "title"));
  EXPECT_TRUE(IsInvalid(validate_field(Field::title, "Dr\u0085"), "title"));  // NEL
  Status s = validate_field(Field::title, "Dr\u009F");
  EXPECT_TRUE(IsInvalid(s, "title"));
  EXPECT_NE(s.message().find("U+009F"), std::string::npos) << s.message();
  EXPECT_TRUE(validate_field(Field::title, "Dr\u00A0Who").ok());  // NBSP is text
  EXPECT_TRUE(validate_field(Field::title, "~").ok());
}

TEST(ValidationD13, ControlCharactersAreRejectedInEveryKindOfField) {
  for (Field f : all_fields()) {
    EXPECT_TRUE(IsInvalid(validate_field(f, "a\tb"), field_name(f))) << field_name(f);
  }
  Address a{{}, "home", "Main St 1", "Springfield", "IL", "62701", "US"};
  a.state = "I\nL";
  EXPECT_TRUE(IsInvalid(validate_address(a), "address.state"));
  EXPECT_TRUE(IsInvalid(validate_contact({{}, ContactKind::email, "a@b.com\r"}), "contact.value"));
  EXPECT_TRUE(IsInvalid(validate_contact({{}, ContactKind::phone, "555\x1b"}), "contact.value"));
  EXPECT_TRUE(IsInvalid(validate_affiliation("VIP\x7F"), "affiliation"));
  EXPECT_TRUE(IsInvalid(parse_address_spec("Main\x01St;City;;;US").status(), "address.street"));
}

TEST(ValidationD13, RejectsInvalidUtf8) {
  const std::string_view bad[] = {
      "\x80",              // stray continuation byte
      "\xC3",              // truncated 2-byte sequence
      "\xE6\xBC",          // truncated 3-byte sequence
      "\xC3\x28",          // bad continuation
      "\xC0\x80",          // overlong NUL
      "\xC1\xBF",          // overlong ASCII
      "\xE0\x80\x8A",      // overlong newline
      "\xED\xA0\x80",      // UTF-16 surrogate
      "\xF4\x90\x80\x80",  // above U+10FFFF
      "\xF8\x88\x80\x80\x80",
      "\xFF",
  };
  for (std::string_view b : bad) {
    std::string value = "Jos";
    value += b;
    Status s = validate_field(Field::first_name, value);
    EXPECT_TRUE(IsInvalid(s, "first_name"));
    EXPECT_NE(s.message().find("UTF-8"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("byte offset 3"), std::string::npos) << s.message();
  }
}

TEST(ValidationD13, AcceptsValidUtf8AtTheRangeEdges) {
  EXPECT_TRUE(validate_field(Field::first_name, "\u00A0\u07FF\u0800\uD7FF\uE000\uFFFD").ok());
  EXPECT_TRUE(validate_field(Field::first_name, "\U00010000\U0010FFFF").ok());
  EXPECT_TRUE(validate_field(Field::first_name, "Jos\u00e9 M\u00fcller \u5f20\u4f1f").ok());
}

// ---------------------------------------------------------------------------------
// D13: e-mail form local@domain.tld.

TEST(ValidationD13, AcceptsWellFormedEmails) {
  for (std::string_view e : {"a@b.co", "first.last@example.com", "x+tag@sub.example.org",
                             "o'brien@mail-server.example.ie", "USER@EXAMPLE.COM",
                             "1234@123.example.museum", "a!#$%&'*+-/=?^_`{|}~@x.io"}) {
    EXPECT_TRUE(validate_field(Field::email, e).ok()) << e;
    EXPECT_TRUE(validate_field(Field::receipt_email, e).ok()) << e;
  }
}

TEST(ValidationD13, RejectsMalformedEmails) {
  for (std::string_view e : {"foo",
                             "@example.com",
                             "a@",
                             "a@example",
                             "a@@example.com",
                             "a@b@example.com",
                             "a b@example.com",
                             "ab@exa mple.com",
                             " a@example.com",
                             "a@example.com ",
                             "a@example.c",
                             "a@example.c0m",
                             "a@example.123",
                             "a@.example.com",
                             "a@example..com",
                             "a@example.com.",
                             "a@-example.com",
                             "a@example-.com",
                             "a@exa_mple.com",
                             ".a@example.com",
                             "a.@example.com",
                             "a..b@example.com",
                             "a\"b@example.com",
                             "a,b@example.com",
                             "m\u00fcller@example.de",
                             "a@ex\u00e4mple.de"}) {
    Status s = validate_field(Field::email, e);
    EXPECT_TRUE(IsInvalid(s, "email")) << e;
    EXPECT_NE(s.message().find("local@domain.tld"), std::string::npos) << e << ": " << s.message();
  }
  // A 64-character label is one more than DNS allows.
  EXPECT_TRUE(IsInvalid(validate_field(Field::email, "a@" + repeat("x", 64) + ".com"), "email"));
  EXPECT_TRUE(validate_field(Field::email, "a@" + repeat("x", 63) + ".com").ok());
}

TEST(ValidationD13, EmailMessageQuotesTheValueAndNamesTheField) {
  Status s = validate_field(Field::email, "foo");
  ASSERT_TRUE(IsInvalid(s, "email"));
  EXPECT_EQ(s.message(), "email: 'foo' is not a valid e-mail address (expected local@domain.tld)");
}

TEST(ValidationD13, LongBadValuesAreShortenedInMessages) {
  Status s = validate_field(Field::email, repeat("z", 250));
  ASSERT_TRUE(IsInvalid(s, "email"));
  EXPECT_LT(s.message().size(), 150u) << s.message();
  EXPECT_NE(s.message().find("..."), std::string::npos);
}

TEST(ValidationD13, EmptyOptionalEmailAndPhoneAreAccepted) {
  EXPECT_TRUE(validate_field(Field::email, "").ok());
  EXPECT_TRUE(validate_field(Field::receipt_email, "").ok());
  EXPECT_TRUE(validate_field(Field::phone, "").ok());
}

TEST(ValidationD13, ReceiptEmailFollowsTheEmailRule) {
  EXPECT_TRUE(IsInvalid(validate_field(Field::receipt_email, "not-an-email"), "receipt_email"));
  Customer c = valid_person();
  c.receipt_email = "bad@";
  EXPECT_TRUE(IsInvalid(validate_customer(c), "receipt_email"));
}

// ---------------------------------------------------------------------------------
// D13: phone of digits, spaces and +-().

TEST(ValidationD13, AcceptsWellFormedPhones) {
  for (std::string_view p : {"5", "555-0100", "+1 (555) 010-0000", "+44 20 7946 0958",
                             "030.1234.5678", "(0)30 123456"}) {
    EXPECT_TRUE(validate_field(Field::phone, p).ok()) << p;
  }
}

TEST(ValidationD13, RejectsMalformedPhones) {
  for (std::string_view p : {"555-CALL", "+1 555 0100 x12", "555/0100", "#555", "+-() .", "   ",
                             "\uff15\uff15\uff15", "555_0100"}) {
    EXPECT_TRUE(IsInvalid(validate_field(Field::phone, p), "phone")) << p;
  }
  Status s = validate_field(Field::phone, "abc");
  EXPECT_NE(s.message().find("not a valid phone number"), std::string::npos) << s.message();
}

// ---------------------------------------------------------------------------------
// D13: country a 2- or 3-letter code.

TEST(ValidationD13, CountryIsTwoOrThreeLetters) {
  Address a{{}, "", "Main St 1", "Springfield", "", "", "US"};
  for (std::string_view ok : {"US", "USA", "de", "Deu", "gb"}) {
    a.country = ok;
    EXPECT_TRUE(validate_address(a).ok()) << ok;
  }
  for (std::string_view bad : {"U", "USAA", "U1", "12", "U-S", "U S", "\u00dcS", "United States"}) {
    a.country = bad;
    Status s = validate_address(a, "addresses[1]");
    EXPECT_TRUE(IsInvalid(s, "addresses[1].country")) << bad;
    EXPECT_NE(s.message().find("country code"), std::string::npos) << s.message();
  }
}

// ---------------------------------------------------------------------------------
// D13: required names per customer type.

TEST(ValidationD13, PersonNeedsFirstAndLastName) {
  EXPECT_TRUE(validate_customer(valid_person()).ok());
  for (std::string_view blank : {"", " ", "   ", "\u00A0", "\u200B", " \u3000 "}) {
    Customer c = valid_person();
    c.first_name = blank;
    Status s = validate_customer(c);
    EXPECT_TRUE(IsInvalid(s, "first_name")) << "'" << blank << "'";
    EXPECT_NE(s.message().find("required"), std::string::npos) << s.message();

    c = valid_person();
    c.last_name = blank;
    EXPECT_TRUE(IsInvalid(validate_customer(c), "last_name")) << "'" << blank << "'";
  }
}

TEST(ValidationD13, PersonDoesNotNeedMiddleOrOrganizationName) {
  Customer c = valid_person();
  c.middle_name.clear();
  c.org_name.clear();
  EXPECT_TRUE(validate_customer(c).ok());
  c.middle_name = "Augusta";
  EXPECT_TRUE(validate_customer(c).ok());
}

TEST(ValidationD13, OrganizationNeedsOnlyOrgName) {
  EXPECT_TRUE(validate_customer(valid_organization()).ok());
  Customer c = valid_organization();
  c.org_name = "  ";
  Status s = validate_customer(c);
  EXPECT_TRUE(IsInvalid(s, "org_name"));
  EXPECT_NE(s.message().find("organization"), std::string::npos) << s.message();
  c.org_name = repeat("O", 101);
  EXPECT_TRUE(IsInvalid(validate_customer(c), "org_name"));
  c.org_name = repeat("O", 100);
  EXPECT_TRUE(validate_customer(c).ok());
}

TEST(ValidationD13, RequiredNameOverLimitIsReportedAsTooLong) {
  Customer c = valid_person();
  c.last_name = repeat("L", 101);
  Status s = validate_customer(c);
  EXPECT_TRUE(IsInvalid(s, "last_name"));
  EXPECT_NE(s.message().find("101"), std::string::npos) << s.message();
}

// ---------------------------------------------------------------------------------
// validate_customer: every part is checked and errors name the part.

TEST(ValidationD13, CustomerChecksEveryScalarField) {
  for (Field f : all_fields()) {
    Customer c = valid_person();
    c.get(f) = "bad\x01value";
    EXPECT_TRUE(IsInvalid(validate_customer(c), field_name(f))) << field_name(f);
  }
  Customer c = valid_person();
  c.email = "foo";
  EXPECT_TRUE(IsInvalid(validate_customer(c), "email"));
  c = valid_person();
  c.phone = "call me";
  EXPECT_TRUE(IsInvalid(validate_customer(c), "phone"));
}

TEST(ValidationD13, CustomerAddressErrorsNameTheIndex) {
  Customer c = valid_person();
  c.addresses.push_back({GuidGenerator(4).next(), "delivery", "1 Side St", "Leeds", "", "", "GB"});
  ASSERT_TRUE(validate_customer(c).ok());
  c.addresses[1].country = "GBRX";
  EXPECT_TRUE(IsInvalid(validate_customer(c), "addresses[1].country"));
  c.addresses[1].country = "GB";
  c.addresses[1].city = "";
  EXPECT_TRUE(IsInvalid(validate_customer(c), "addresses[1].city"));
  c.addresses[1].city = "Leeds";
  c.addresses[0].street = " ";
  EXPECT_TRUE(IsInvalid(validate_customer(c), "addresses[0].street"));
}

TEST(ValidationD13, CustomerContactErrorsNameTheIndex) {
  Customer c = valid_person();
  c.contacts[0].value = "nope";
  EXPECT_TRUE(IsInvalid(validate_customer(c), "contacts[0].value"));
  c = valid_person();
  c.contacts[1].value = "ring ring";
  EXPECT_TRUE(IsInvalid(validate_customer(c), "contacts[1].value"));
  c = valid_person();
  c.contacts[1].value = "";
  EXPECT_TRUE(IsInvalid(validate_customer(c), "contacts[1].value"));
}

TEST(ValidationD13, ContactKindSelectsTheRule) {
  EXPECT_TRUE(validate_contact({{}, ContactKind::email, "a@b.com"}).ok());
  EXPECT_TRUE(IsInvalid(validate_contact({{}, ContactKind::phone, "a@b.com"}), "contact.value"));
  EXPECT_TRUE(validate_contact({{}, ContactKind::phone, "555 0100"}).ok());
  EXPECT_TRUE(IsInvalid(validate_contact({{}, ContactKind::email, "555 0100"}), "contact.value"));
  EXPECT_TRUE(IsInvalid(validate_contact({{}, ContactKind::phone, repeat("5", 33)}, "contacts[4]"),
                        "contacts[4].value"));
}

TEST(ValidationD13, CustomerAffiliationErrorsNameTheIndex) {
  Customer c = valid_person();
  c.affiliations.push_back("");
  EXPECT_TRUE(IsInvalid(validate_customer(c), "affiliations[2]"));
  c.affiliations[2] = repeat("a", 201);
  EXPECT_TRUE(IsInvalid(validate_customer(c), "affiliations[2]"));
  c.affiliations[2] = "Loyal";
  EXPECT_TRUE(validate_customer(c).ok());
}

// ---------------------------------------------------------------------------------
// Addresses and the CLI address spec.

TEST(ValidationAddress, StreetCityAndCountryAreRequired) {
  const Address good{{}, "", "Main St 1", "Springfield", "", "", "US"};
  ASSERT_TRUE(validate_address(good).ok());
  Address a = good;
  a.street.clear();
  EXPECT_TRUE(IsInvalid(validate_address(a), "address.street"));
  a = good;
  a.city = " ";
  EXPECT_TRUE(IsInvalid(validate_address(a), "address.city"));
  a = good;
  a.country.clear();
  Status s = validate_address(a);
  EXPECT_TRUE(IsInvalid(s, "address.country"));
  EXPECT_NE(s.message().find("required"), std::string::npos) << s.message();
}

TEST(ValidationAddress, ParsesFivePartSpec) {
  Result<Address> a = parse_address_spec("1 Main St;Springfield;IL;62701;US");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->street, "1 Main St");
  EXPECT_EQ(a->city, "Springfield");
  EXPECT_EQ(a->state, "IL");
  EXPECT_EQ(a->zip, "62701");
  EXPECT_EQ(a->country, "US");
  EXPECT_EQ(a->purpose, "");
  EXPECT_TRUE(a->guid.is_nil());
}

TEST(ValidationAddress, ParsesSixPartSpecAndTrimsSpaces) {
  Result<Address> a = parse_address_spec("  1 Main St ; Springfield;  ; ;USA ; delivery ");
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->street, "1 Main St");
  EXPECT_EQ(a->city, "Springfield");
  EXPECT_EQ(a->state, "");
  EXPECT_EQ(a->zip, "");
  EXPECT_EQ(a->country, "USA");
  EXPECT_EQ(a->purpose, "delivery");
}

TEST(ValidationAddress, WrongPartCountShowsTheExpectedForm) {
  for (std::string_view spec : {"", "1 Main St", "a;b;c;d", "a;b;c;d;US;home;extra"}) {
    Result<Address> a = parse_address_spec(spec, "--address");
    ASSERT_FALSE(a.ok()) << spec;
    EXPECT_TRUE(IsInvalid(a.status(), "--address")) << spec;
    EXPECT_NE(a.status().message().find("street;city;state;zip;country[;purpose]"),
              std::string::npos)
        << a.status().message();
  }
  Result<Address> a = parse_address_spec("a;b;c;d");
  EXPECT_NE(a.status().message().find("got 4 parts"), std::string::npos) << a.status().message();
}

TEST(ValidationAddress, ParsedSpecIsValidatedWithTheFieldAsPrefix) {
  EXPECT_TRUE(IsInvalid(parse_address_spec(";Springfield;;;US").status(), "address.street"));
  EXPECT_TRUE(IsInvalid(parse_address_spec("1 Main;  ;;;US").status(), "address.city"));
  EXPECT_TRUE(IsInvalid(parse_address_spec("1 Main;Springfield;;;U5").status(), "address.country"));
  EXPECT_TRUE(IsInvalid(parse_address_spec("1 Main;Springfield;;;", "addresses[2]").status(),
                        "addresses[2].country"));
  EXPECT_TRUE(IsInvalid(parse_address_spec("1 Main;Springfield;;;US;" + repeat("p", 201)).status(),
                        "address.purpose"));
}

// ---------------------------------------------------------------------------------
// Normal forms.

TEST(ValidationNormalize, EmailIsTrimmedAndLowerCased) {
  EXPECT_EQ(normalize_email("  Ada.Lovelace@Example.COM \t"), "ada.lovelace@example.com");
  EXPECT_EQ(normalize_email("x@y.z"), "x@y.z");
  EXPECT_EQ(normalize_email(""), "");
  EXPECT_EQ(normalize_email("   "), "");
  // Only ASCII is folded; other bytes pass through untouched.
  EXPECT_EQ(normalize_email("\u00C4@B.DE"), "\u00C4@b.de");
}

TEST(ValidationNormalize, PhoneKeepsDigitsAndALeadingPlus) {
  EXPECT_EQ(normalize_phone("+1 (555) 010-0000"), "+15550100000");
  EXPECT_EQ(normalize_phone("  +44 20 7946.0958 "), "+442079460958");
  EXPECT_EQ(normalize_phone("(555) 010-0000"), "5550100000");
  EXPECT_EQ(normalize_phone("555+1"), "5551");
  EXPECT_EQ(normalize_phone(""), "");
  EXPECT_EQ(normalize_phone("+"), "");
  EXPECT_EQ(normalize_phone("+1 555"), normalize_phone(" +1-555 "));
}

}  // namespace
}  // namespace tillsync

namespace tillsync {
namespace {

// Issue 15, item 6: addresses and contacts are rows keyed by their GUIDs; a nil or
// repeated child GUID is refused before anything is stored, naming the field.
// D13: invisible format characters (Unicode Cf) are refused in every text, so a name
// cannot read otherwise than it is stored ("Trojan Source" bidirectional overrides,
// zero-width spaces that make two names look alike); the joiners scripts need pass.
TEST(ValidationD13, RejectsInvisibleFormatCharactersButNotTheJoiners) {
  struct Case {
    const char* text;
    const char* code;
  };
  const Case refused[] = {
      {"Ann\u202Eeno", "U+202E"},  // RIGHT-TO-LEFT OVERRIDE
      {"Ann\u202Aa", "U+202A"},    // LEFT-TO-RIGHT EMBEDDING
      {"Ann\u2066a\u2069", "U+2066"},  // LEFT-TO-RIGHT ISOLATE
      {"Ann\u200Ba", "U+200B"},    // ZERO WIDTH SPACE
      {"Ann\u200Fa", "U+200F"},    // RIGHT-TO-LEFT MARK
      {"Ann\u2060a", "U+2060"},    // WORD JOINER
      {"Ann\uFEFFa", "U+FEFF"},    // ZERO WIDTH NO-BREAK SPACE (BOM)
      {"Ann\u00ADa", "U+00AD"},    // SOFT HYPHEN
      {"Ann\u061Ca", "U+061C"},    // ARABIC LETTER MARK
      {"Ann\U000E0001", "U+E0001"},  // LANGUAGE TAG
  };
  for (const Case& c : refused) {
    Status s = validate_field(Field::last_name, c.text);
    EXPECT_TRUE(IsInvalid(s, "last_name")) << c.code;
    EXPECT_NE(s.message().find(c.code), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("invisible format character"), std::string::npos) << s.message();
  }
  // In every kind of text: addresses, contacts, affiliations.
  Address a{{}, "home", "Main\u202ESt 1", "Springfield", "IL", "62701", "US"};
  EXPECT_TRUE(IsInvalid(validate_address(a), "address.street"));
  EXPECT_TRUE(IsInvalid(validate_affiliation("VIP\u200B"), "affiliation"));
  // ZWNJ in Persian, ZWJ in Sinhala and in an emoji sequence; names in other scripts.
  for (const char* fine : {"\u0645\u06CC\u200C\u062E\u0648\u0627\u0647\u0645", "\u0DC1\u0DCA\u200D\u0DBB\u0DD3",
                           "Ann \U0001F469\u200D\U0001F4BB", "Zo\u00EB \u00D1\u00FA\u00F1ez", "\u5C71\u7530",
                           "\u0141\u00F3d\u017A", "\u015Eahin"}) {
    EXPECT_TRUE(validate_field(Field::last_name, fine).ok()) << validate_field(Field::last_name, fine).to_string();
  }
}

// D13: at most 50 addresses, contacts, affiliations and loyalty cards per customer, a
// limit_exceeded error naming the list.
TEST(ValidationD13, AtMostFiftyOfEachChildPerCustomer) {
  GuidGenerator g(21);
  Customer c = valid_person();
  c.addresses.clear();
  c.contacts.clear();
  c.affiliations.clear();
  for (std::size_t i = 0; i < kMaxChildrenPerCustomer; ++i) {
    c.addresses.push_back({g.next(), "home", "Street " + std::to_string(i), "Town", "", "", "FR"});
    c.contacts.push_back({g.next(), ContactKind::phone, "555 " + std::to_string(1000 + i)});
    c.affiliations.push_back("Club " + std::to_string(i));
    c.loyalty_cards.push_back({"L" + std::to_string(i), 0});
  }
  ASSERT_TRUE(validate_customer(c).ok()) << validate_customer(c).to_string();
  auto one_more = [&](auto add, const char* field) {
    Customer more = c;
    add(more);
    Status s = validate_customer(more);
    EXPECT_EQ(s.code(), Code::limit_exceeded) << field << ": " << s.to_string();
    EXPECT_EQ(s.field(), field);
    EXPECT_NE(s.message().find("at most 50"), std::string::npos) << s.message();
  };
  one_more([&](Customer& m) { m.addresses.push_back({g.next(), "home", "Last St", "Town", "", "", "FR"}); }, "addresses");
  one_more([&](Customer& m) { m.contacts.push_back({g.next(), ContactKind::phone, "555 9999"}); }, "contacts");
  one_more([](Customer& m) { m.affiliations.push_back("Club 50"); }, "affiliations");
  one_more([](Customer& m) { m.loyalty_cards.push_back({"L50", 0}); }, "loyalty_cards");
}

TEST(ValidationChildren, NilAndRepeatedChildGuidsAreRefused) {
  GuidGenerator g(11);
  Customer c;
  c.guid = g.next();
  c.first_name = "Ada";
  c.last_name = "Lovelace";
  c.language = "en-us";
  c.currency = "USD";
  c.customer_group = "RETAIL";
  c.receipt_option = "print";
  c.addresses.push_back({g.next(), "home", "1 Main St", "Springfield", "", "", "US"});
  c.contacts.push_back({g.next(), ContactKind::phone, "555 0100"});
  ASSERT_TRUE(validate_customer(c).ok()) << validate_customer(c).to_string();

  Customer nil_address = c;
  nil_address.addresses[0].guid = Guid{};
  Status s = validate_customer(nil_address);
  EXPECT_EQ(s.code(), Code::invalid_input);
  EXPECT_EQ(s.field(), "addresses[0].guid");

  Customer repeated = c;
  repeated.contacts[0].guid = repeated.addresses[0].guid;
  s = validate_customer(repeated);
  EXPECT_EQ(s.code(), Code::invalid_input);
  EXPECT_EQ(s.field(), "contacts[0].guid");
  EXPECT_NE(s.message().find("used twice"), std::string::npos) << s.message();

  Customer own = c;
  own.contacts[0].guid = own.guid;
  EXPECT_EQ(validate_customer(own).code(), Code::invalid_input);
}

}  // namespace
}  // namespace tillsync
