// The operation payload format, pinned by checked-in samples.
//
// tests/data/payload_v<N>.txt holds encoded samples of every operation kind for each
// payload format version N from 1 to kPayloadFormatVersion. Every file's samples must
// decode to the values expected_samples(N) builds below; the current version's samples
// must also be exactly what encode_payload() gives today. So changing the encoding
// (engine/src/codec.h, a body() in engine/src/operations.cpp, the customer field table
// in engine/src/domain.cpp) without a new format version fails here, and so does a build
// that can no longer read what an older one wrote to its change log.
//
// A deliberate format change: bump kPayloadFormatVersion, keep decode_payload() reading
// the older versions, add `case N` to expected_samples() and the field table to
// recorded_field_tables(), then write tests/data/payload_vN.txt with
//   TILLSYNC_WRITE_PAYLOAD_SAMPLES=1 ./unit_tests --gtest_filter='PayloadFormat*'
// (with that variable set the current version's file is written from expected_samples()
// instead of being checked; older versions' files are never rewritten). The same command
// adds the sample of a new operation kind to the current version's file; in its diff only
// added lines may appear.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tillsync/operations.h"

#ifndef TILLSYNC_TEST_DATA_DIR
#error "TILLSYNC_TEST_DATA_DIR must name tests/data (a compile definition in tests/CMakeLists.txt)"
#endif

namespace tillsync {
namespace {

constexpr std::string_view kBumpAdvice =
    "The operation payload format changed. If that is deliberate: bump kPayloadFormatVersion "
    "(engine/include/tillsync/operations.h), add a tests/data/payload_vN.txt for the new "
    "version (its values in expected_samples() of tests/payload_format_test.cpp, then run "
    "the test with TILLSYNC_WRITE_PAYLOAD_SAMPLES=1), and keep decoding the older versions "
    "(their files stay as they are). Otherwise undo the change.";

// ---------------------------------------------------------------------------------------
// Expected values, per payload format version.

struct Sample {
  std::string note;  // one line, written above the sample in the data file
  Payload value;
};

Guid id(std::string_view text) { return Guid::parse(text).value(); }

// Version 1. Every scalar field gets a distinct non-empty value in the first customer,
// so moving any field of the table moves bytes; the other samples cover empty strings,
// an account number, both contact kinds, every Field and AddressField number, and
// versions wider than 32 bits.
std::vector<Sample> samples_v1() {
  const Guid zoe = id("c0ffee00-0000-4000-8000-000000000001");
  const Guid contoso = id("c0ffee00-0000-4000-8000-000000000002");
  const Guid blank = id("c0ffee00-0000-4000-8000-000000000003");

  Customer person;
  person.guid = zoe;
  person.type = CustomerType::person;
  person.first_name = "Zoë";
  person.middle_name = "Ágnes";
  person.last_name = "Łukasiewicz-Müller";
  person.org_name = "Piekarnia Łódź";
  person.title = "Dr.";
  person.email = "zoe@example.com";
  person.phone = "+48 12 345 67 89";
  person.language = "pl-pl";
  person.currency = "PLN";
  person.customer_group = "RETAIL";
  person.receipt_option = "email";
  person.receipt_email = "paragony+zoë@example.com";
  person.addresses = {
      {id("add7e550-0000-4000-8000-000000000001"), "home", "ul. Floriańska 3", "Kraków",
       "Małopolskie", "31-019", "PL"},
      {id("add7e550-0000-4000-8000-000000000002"), "delivery", "銀座1-2-3", "東京", "",
       "104-0061", "JPN"},
  };
  person.contacts = {
      {id("c0a7ac70-0000-4000-8000-000000000001"), ContactKind::email, "zoe.work@example.org"},
      {id("c0a7ac70-0000-4000-8000-000000000002"), ContactKind::phone, "+48 600 700 800"},
  };
  person.affiliations = {"Staff", "Stały klient ☕"};
  person.loyalty_cards = {{"LC-0001-2345", 1717171717171}, {"ŁK-99", 0}};
  person.version = 7;

  Customer org;
  org.guid = contoso;
  org.account_number = "S001000000042";
  org.type = CustomerType::organization;
  org.org_name = "Contoso Ltd";
  org.email = "buyer@contoso.example";
  org.currency = "USD";
  org.receipt_option = "print";
  org.addresses = {{id("add7e550-0000-4000-8000-000000000003"), "business", "1 Harbour Rd",
                    "Seattle", "WA", "98101", "US"}};
  org.affiliations = {"Wholesale", ""};
  org.version = (std::int64_t{1} << 40) + 5;

  Customer nothing;  // only its GUID: pending, every text empty, every list empty
  nothing.guid = blank;

  const Guid home = id("add7e550-0000-4000-8000-000000000001");
  const Guid work_mail = id("c0a7ac70-0000-4000-8000-000000000001");
  return {
      {"a person, pending, every scalar field set, two addresses, both contact kinds, "
       "affiliations, loyalty cards",
       CustomerCreated{person}},
      {"an organization with its account number, empty scalar fields and an empty "
       "affiliation, a version above 2^40",
       CustomerCreated{org}},
      {"a customer with nothing but its GUID", CustomerCreated{nothing}},
      {"every Field in enum order, one of them cleared",
       CustomerUpdated{zoe,
                       7,
                       {{Field::first_name, "Zoé"},
                        {Field::middle_name, ""},
                        {Field::last_name, "Nowak"},
                        {Field::org_name, "Cukiernia"},
                        {Field::title, "Prof."},
                        {Field::email, "zoe@example.net"},
                        {Field::phone, "+48 600 000 001"},
                        {Field::language, "de-de"},
                        {Field::currency, "EUR"},
                        {Field::customer_group, "VIP"},
                        {Field::receipt_option, "both"},
                        {Field::receipt_email, "r@example.net"}}}},
      {"no changes, a version above 2^40",
       CustomerUpdated{contoso, (std::int64_t{1} << 40) + 6, {}}},
      {"an invoice address with an empty state",
       AddressAdded{zoe, {id("add7e550-0000-4000-8000-000000000004"), "invoice",
                          "Rynek Główny 1", "Kraków", "", "31-042", "PL"}}},
      {"base_version 8", AddressRemoved{zoe, id("add7e550-0000-4000-8000-000000000002"), 8}},
      {"a secondary e-mail", ContactAdded{zoe, {id("c0a7ac70-0000-4000-8000-000000000003"),
                                                ContactKind::email, "zoë@example.pl"}}},
      {"a secondary phone", ContactAdded{contoso, {id("c0a7ac70-0000-4000-8000-000000000004"),
                                                   ContactKind::phone, "+1 425 555 0101"}}},
      {"base_version 9", ContactRemoved{zoe, id("c0a7ac70-0000-4000-8000-000000000002"), 9}},
      {"every AddressField in enum order, one of them cleared",
       AddressUpdated{zoe,
                      10,
                      home,
                      {{AddressField::purpose, "business"},
                       {AddressField::street, "ul. Floriańska 5"},
                       {AddressField::city, "Kraków"},
                       {AddressField::state, ""},
                       {AddressField::zip, "31-021"},
                       {AddressField::country, "POL"}}}},
      {"a new value", ContactUpdated{zoe, 11, work_mail, "zoë.praca@example.org"}},
      {"an empty value", ContactUpdated{zoe, 12, work_mail, ""}},
      // Added with kind 9 (a new kind, not a new format: the other samples' bytes stay).
      {"a card HQ issued", LoyaltyCardIssued{zoe, {"L000000042-1", 1733140800000}}},
  };
}

// The expected values of every version that has a data file. Add `case N` when
// introducing payload format version N; never change an existing case.
std::optional<std::vector<Sample>> expected_samples(std::uint16_t version) {
  switch (version) {
    case 1: return samples_v1();
    default: return std::nullopt;
  }
}

// The customer field table (field_name() of all_fields(), in order) of each version:
// customers encode their scalar fields in this order and FieldChange stores a field's
// index, so the table is part of the format.
const std::map<std::uint16_t, std::vector<std::string>>& recorded_field_tables() {
  static const std::map<std::uint16_t, std::vector<std::string>> tables{
      {1,
       {"first_name", "middle_name", "last_name", "org_name", "title", "email", "phone",
        "language", "currency", "customer_group", "receipt_option", "receipt_email"}},
  };
  return tables;
}

// ---------------------------------------------------------------------------------------
// Readable renderings, so a failing comparison names the member that differs. Written
// from the struct members directly, not through the field table under test.

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

void describe(std::ostream& out, const Address& a) {
  out << "address " << a.guid.to_string() << " purpose=" << quoted(a.purpose)
      << " street=" << quoted(a.street) << " city=" << quoted(a.city)
      << " state=" << quoted(a.state) << " zip=" << quoted(a.zip)
      << " country=" << quoted(a.country) << "\n";
}

void describe(std::ostream& out, const Contact& c) {
  out << "contact " << c.guid.to_string() << " " << to_string(c.kind) << " "
      << quoted(c.value) << "\n";
}

void describe(std::ostream& out, const Customer& c) {
  out << "guid " << c.guid.to_string() << "\n"
      << "account_number " << (c.account_number ? quoted(*c.account_number) : "(none)") << "\n"
      << "type " << to_string(c.type) << "\n"
      << "first_name " << quoted(c.first_name) << "\n"
      << "middle_name " << quoted(c.middle_name) << "\n"
      << "last_name " << quoted(c.last_name) << "\n"
      << "org_name " << quoted(c.org_name) << "\n"
      << "title " << quoted(c.title) << "\n"
      << "email " << quoted(c.email) << "\n"
      << "phone " << quoted(c.phone) << "\n"
      << "language " << quoted(c.language) << "\n"
      << "currency " << quoted(c.currency) << "\n"
      << "customer_group " << quoted(c.customer_group) << "\n"
      << "receipt_option " << quoted(c.receipt_option) << "\n"
      << "receipt_email " << quoted(c.receipt_email) << "\n";
  for (const Address& a : c.addresses) describe(out, a);
  for (const Contact& k : c.contacts) describe(out, k);
  for (const std::string& s : c.affiliations) out << "affiliation " << quoted(s) << "\n";
  for (const LoyaltyCard& l : c.loyalty_cards)
    out << "loyalty_card " << quoted(l.card_number) << " issued_at_ms " << l.issued_at_ms << "\n";
  out << "version " << c.version << "\n";
}

void describe(std::ostream& out, const CustomerCreated& p) { describe(out, p.customer); }
void describe(std::ostream& out, const CustomerUpdated& p) {
  out << "customer " << p.customer.to_string() << " base_version " << p.base_version << "\n";
  for (const FieldChange& f : p.changes)
    out << "change field#" << static_cast<int>(f.field) << " " << quoted(f.value) << "\n";
}
void describe(std::ostream& out, const AddressAdded& p) {
  out << "customer " << p.customer.to_string() << "\n";
  describe(out, p.address);
}
void describe(std::ostream& out, const AddressRemoved& p) {
  out << "customer " << p.customer.to_string() << " address " << p.address.to_string()
      << " base_version " << p.base_version << "\n";
}
void describe(std::ostream& out, const ContactAdded& p) {
  out << "customer " << p.customer.to_string() << "\n";
  describe(out, p.contact);
}
void describe(std::ostream& out, const ContactRemoved& p) {
  out << "customer " << p.customer.to_string() << " contact " << p.contact.to_string()
      << " base_version " << p.base_version << "\n";
}
void describe(std::ostream& out, const AddressUpdated& p) {
  out << "customer " << p.customer.to_string() << " base_version " << p.base_version
      << " address " << p.address.to_string() << "\n";
  for (const AddressFieldChange& f : p.changes)
    out << "change " << to_string(f.field) << " " << quoted(f.value) << "\n";
}
void describe(std::ostream& out, const ContactUpdated& p) {
  out << "customer " << p.customer.to_string() << " base_version " << p.base_version
      << " contact " << p.contact.to_string() << " value " << quoted(p.value) << "\n";
}
void describe(std::ostream& out, const LoyaltyCardIssued& p) {
  out << "customer " << p.customer.to_string() << " card " << quoted(p.card.card_number)
      << " issued_at_ms " << p.card.issued_at_ms << "\n";
}
// A kind added after this file was written: compared by operator== only.
template <class T>
void describe(std::ostream& out, const T&) {
  out << "(not rendered; add a describe() overload in tests/payload_format_test.cpp)\n";
}

std::string describe(const Payload& p) {
  std::ostringstream out;
  out << to_string(kind_of(p)) << "\n";
  std::visit([&](const auto& v) { describe(out, v); }, p);
  return out.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The lines in which two renderings differ, for a failure message.
std::string differing_lines(const std::string& decoded, const std::string& expected) {
  const auto a = lines_of(decoded);
  const auto b = lines_of(expected);
  std::ostringstream out;
  for (std::size_t i = 0; i < a.size() || i < b.size(); ++i) {
    const std::string x = i < a.size() ? a[i] : "(nothing)";
    const std::string y = i < b.size() ? b[i] : "(nothing)";
    if (x != y) out << "  decoded:  " << x << "\n  expected: " << y << "\n";
  }
  if (out.str().empty()) out << "  (the renderings agree; compare the members)\n";
  return out.str();
}

// ---------------------------------------------------------------------------------------
// The data files.

// Every operation kind this build knows, by number.
std::vector<OpKind> all_kinds() {
  std::vector<OpKind> out;
  for (int k = 1; k < 256; ++k) {
    if (auto kind = op_kind_from_int(k)) out.push_back(*kind);
  }
  return out;
}

std::optional<OpKind> kind_named(std::string_view name) {
  for (OpKind k : all_kinds()) {
    if (to_string(k) == name) return k;
  }
  return std::nullopt;
}

std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char ch : bytes) {
    const auto b = static_cast<unsigned char>(ch);
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0x0f]);
  }
  return out;
}

int hex_digit(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

// Hex digits to bytes; whitespace between digits is ignored.
std::optional<std::string> from_hex(std::string_view text) {
  std::string digits;
  for (char ch : text) {
    if (ch == ' ' || ch == '\t' || ch == '\r') continue;
    if (hex_digit(ch) < 0) return std::nullopt;
    digits.push_back(ch);
  }
  if (digits.size() % 2 != 0) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < digits.size(); i += 2)
    out.push_back(static_cast<char>(hex_digit(digits[i]) * 16 + hex_digit(digits[i + 1])));
  return out;
}

std::string sample_path(std::uint16_t version) {
  return std::string(TILLSYNC_TEST_DATA_DIR) + "/payload_v" + std::to_string(version) + ".txt";
}

struct FileSample {
  int line = 0;
  OpKind kind = OpKind::customer_create;
  std::string bytes;
};

struct SampleFile {
  std::uint16_t version = 0;
  std::string path;
  bool found = false;
  std::vector<FileSample> samples;
  std::vector<std::string> errors;  // lines that are not samples
};

SampleFile read_sample_file(std::uint16_t version) {
  SampleFile file;
  file.version = version;
  file.path = sample_path(version);
  std::ifstream in(file.path, std::ios::binary);
  if (!in) return file;
  file.found = true;
  std::string text;
  for (int line_no = 1; std::getline(in, text); ++line_no) {
    const auto start = text.find_first_not_of(" \t\r");
    if (start == std::string::npos || text[start] == '#') continue;
    const std::string where = file.path + ":" + std::to_string(line_no) + ": ";
    const auto name_end = text.find_first_of(" \t", start);
    if (name_end == std::string::npos) {
      file.errors.push_back(where + "expected `<kind name> <hex>`");
      continue;
    }
    const std::string name = text.substr(start, name_end - start);
    const auto kind = kind_named(name);
    if (!kind) {
      file.errors.push_back(where + "unknown operation kind `" + name + "`");
      continue;
    }
    auto bytes = from_hex(std::string_view(text).substr(name_end));
    if (!bytes) {
      file.errors.push_back(where + "not an even number of hex digits");
      continue;
    }
    file.samples.push_back({line_no, *kind, std::move(*bytes)});
  }
  return file;
}

std::string file_header(std::uint16_t version) {
  const std::string v = std::to_string(version);
  return "# Payload format version " + v +
         ": encoded samples of every operation kind.\n"
         "#\n"
         "# Purpose: to make the operation payload format impossible to change by accident.\n"
         "# Change logs and HQ keep these bytes, so every build must go on reading every\n"
         "# version ever written. tests/payload_format_test.cpp checks that each sample here\n"
         "# decodes to the value expected_samples(" + v + ") builds, and, while " + v +
         " is\n"
         "# kPayloadFormatVersion, that encoding those values gives exactly these bytes.\n"
         "#\n"
         "# Format: one sample per line, `<kind name> <hex of the encode_payload() bytes>` (they\n"
         "# begin with the 2-byte little-endian format version); lines starting with '#' and\n"
         "# blank lines are ignored. The samples of a kind are matched, in order, with that\n"
         "# kind's expected values.\n"
         "#\n"
         "# Not edited by hand: the test writes the current version's file instead of checking\n"
         "# it when the environment variable TILLSYNC_WRITE_PAYLOAD_SAMPLES=1 is set:\n"
         "#   TILLSYNC_WRITE_PAYLOAD_SAMPLES=1 ./build/dev/tests/unit_tests --gtest_filter='PayloadFormat*'\n"
         "# Rewrite an existing version's file only to add samples (a new operation kind). If\n"
         "# lines already here would change, the format changed: bump kPayloadFormatVersion,\n"
         "# write payload_v<N>.txt for the new version this way, and keep decoding this file.\n";
}

void write_sample_file(std::uint16_t version, const std::vector<Sample>& samples) {
  std::ostringstream out;
  out << file_header(version);
  for (const Sample& s : samples) {
    const OpKind kind = kind_of(s.value);
    out << "\n# " << to_string(kind) << (s.note.empty() ? "" : ": ") << s.note << "\n"
        << to_string(kind) << " " << to_hex(encode_payload(s.value)) << "\n";
  }
  const std::string path = sample_path(version);
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << out.str();
  file.close();
  if (!file) {
    ADD_FAILURE() << "could not write " << path;
    return;
  }
  std::cerr << "TILLSYNC_WRITE_PAYLOAD_SAMPLES=1: wrote " << samples.size() << " samples to "
            << path << "\n";
}

bool writing_samples() {
  const char* v = std::getenv("TILLSYNC_WRITE_PAYLOAD_SAMPLES");
  return v != nullptr && std::string_view(v) == "1";
}

// The data file of `version`, read once. With TILLSYNC_WRITE_PAYLOAD_SAMPLES=1, the
// current version's file is first written from expected_samples().
const SampleFile& sample_file(std::uint16_t version) {
  static std::map<std::uint16_t, SampleFile> files;
  if (auto it = files.find(version); it != files.end()) return it->second;
  if (version == kPayloadFormatVersion && writing_samples()) {
    if (auto expected = expected_samples(version)) write_sample_file(version, *expected);
  }
  return files.emplace(version, read_sample_file(version)).first->second;
}

// One file sample with the value it must decode to.
struct Pair {
  const FileSample* file = nullptr;
  const Sample* expected = nullptr;
  int index = 0;  // among the samples of its kind, from 1
};

// Matches the samples of a file with the expected values, kind by kind, in order.
// What cannot be matched goes to `problems`.
std::vector<Pair> pair_up(const SampleFile& file, const std::vector<Sample>& expected,
                          std::vector<std::string>* problems) {
  std::vector<Pair> pairs;
  for (OpKind kind : all_kinds()) {
    std::vector<const FileSample*> in_file;
    for (const FileSample& s : file.samples)
      if (s.kind == kind) in_file.push_back(&s);
    std::vector<const Sample*> built;
    for (const Sample& s : expected)
      if (kind_of(s.value) == kind) built.push_back(&s);
    for (std::size_t i = 0; i < in_file.size() && i < built.size(); ++i)
      pairs.push_back({in_file[i], built[i], static_cast<int>(i + 1)});
    if (problems != nullptr && in_file.size() != built.size()) {
      problems->push_back(file.path + ": " + std::to_string(in_file.size()) + " " +
                          std::string(to_string(kind)) + " sample(s), but expected_samples(" +
                          std::to_string(file.version) + ") builds " +
                          std::to_string(built.size()) +
                          " (the samples of a kind are matched in order; for the current "
                          "version, write the file with TILLSYNC_WRITE_PAYLOAD_SAMPLES=1)");
    }
  }
  return pairs;
}

std::string missing_file_message(std::uint16_t version) {
  return sample_path(version) + " is missing: every payload format version from 1 to "
         "kPayloadFormatVersion (" + std::to_string(kPayloadFormatVersion) +
         ") keeps its samples; the current version's file is written by running this test "
         "with TILLSYNC_WRITE_PAYLOAD_SAMPLES=1";
}

std::string missing_values_message(std::uint16_t version) {
  return "expected_samples() in tests/payload_format_test.cpp builds no values for payload "
         "format version " + std::to_string(version) + ": add a `case " +
         std::to_string(version) + "`";
}

// ---------------------------------------------------------------------------------------

TEST(PayloadFormat, FieldTableIsTheOneRecordedForTheCurrentVersion) {
  std::vector<std::string> table;
  for (Field f : all_fields()) table.emplace_back(field_name(f));
  const auto& recorded = recorded_field_tables();
  const auto it = recorded.find(kPayloadFormatVersion);
  ASSERT_NE(it, recorded.end()) << "recorded_field_tables() in tests/payload_format_test.cpp "
                                   "has no field table for payload format version "
                                << kPayloadFormatVersion << ": record the current one there";
  EXPECT_EQ(table, it->second)
      << "The customer field table (kFields in engine/src/domain.cpp, read through "
         "all_fields() and field_name()) is not the one recorded for payload format version "
      << kPayloadFormatVersion
      << ". Customers encode their scalar fields in table order and a FieldChange stores "
         "the field's index, so adding, reordering or removing an entry changes the payload "
         "format. "
      << kBumpAdvice << " Then record the new table in recorded_field_tables().";
}

TEST(PayloadFormat, EveryVersionHasItsSamplesAndEveryKindIsCovered) {
  for (std::uint16_t v = 1; v <= kPayloadFormatVersion; ++v) {
    SCOPED_TRACE("payload format version " + std::to_string(v));
    const SampleFile& file = sample_file(v);
    if (!file.found) {
      ADD_FAILURE() << missing_file_message(v);
      continue;
    }
    for (const std::string& e : file.errors) ADD_FAILURE() << e;
    const auto expected = expected_samples(v);
    if (!expected) {
      ADD_FAILURE() << missing_values_message(v);
      continue;
    }
    std::vector<std::string> problems;
    pair_up(file, *expected, &problems);
    for (const std::string& p : problems) ADD_FAILURE() << p;
  }
  // The current version covers every operation kind this build knows.
  const SampleFile& current = sample_file(kPayloadFormatVersion);
  const auto expected = expected_samples(kPayloadFormatVersion);
  for (OpKind kind : all_kinds()) {
    const bool built = expected && std::any_of(expected->begin(), expected->end(),
                                               [&](const Sample& s) {
                                                 return kind_of(s.value) == kind;
                                               });
    const bool in_file = std::any_of(current.samples.begin(), current.samples.end(),
                                     [&](const FileSample& s) { return s.kind == kind; });
    EXPECT_TRUE(built && in_file)
        << "operation kind " << static_cast<int>(kind) << " (" << to_string(kind)
        << ") has no sample in " << current.path
        << (built ? "" : " and no value in expected_samples()")
        << ": build one in expected_samples(" << kPayloadFormatVersion
        << ") of tests/payload_format_test.cpp (exercising all its fields), then write the "
           "file with TILLSYNC_WRITE_PAYLOAD_SAMPLES=1 (only added lines may show in its diff)";
  }
}

TEST(PayloadFormat, CurrentVersionSamplesAreExactlyWhatTheEncoderWrites) {
  const SampleFile& file = sample_file(kPayloadFormatVersion);
  ASSERT_TRUE(file.found) << missing_file_message(kPayloadFormatVersion);
  const auto expected = expected_samples(kPayloadFormatVersion);
  ASSERT_TRUE(expected) << missing_values_message(kPayloadFormatVersion);
  const std::vector<Pair> pairs = pair_up(file, *expected, nullptr);
  ASSERT_FALSE(pairs.empty()) << file.path << " has no sample matching expected_samples()";
  for (const Pair& p : pairs) {
    const std::string bytes = encode_payload(p.expected->value);
    if (bytes == p.file->bytes) continue;
    std::size_t at = 0;
    while (at < bytes.size() && at < p.file->bytes.size() && bytes[at] == p.file->bytes[at])
      ++at;
    auto byte_at = [](const std::string& b, std::size_t i) {
      return i < b.size() ? to_hex(b.substr(i, 1)) : std::string("(end)");
    };
    ADD_FAILURE() << file.path << ":" << p.file->line << ": encoding "
                  << to_string(p.file->kind) << " sample #" << p.index << " ("
                  << p.expected->note << ") no longer gives the checked-in bytes; first "
                  << "difference at byte " << at << " (file " << byte_at(p.file->bytes, at)
                  << ", encoder " << byte_at(bytes, at) << ").\n"
                  << "  file:    " << to_hex(p.file->bytes) << "\n"
                  << "  encoder: " << to_hex(bytes) << "\n"
                  << kBumpAdvice;
  }
}

TEST(PayloadFormat, SamplesOfEveryVersionDecodeToTheirValues) {
  for (std::uint16_t v = 1; v <= kPayloadFormatVersion; ++v) {
    SCOPED_TRACE("payload format version " + std::to_string(v));
    const SampleFile& file = sample_file(v);
    const auto expected = expected_samples(v);
    if (!file.found || !expected) {
      ADD_FAILURE() << (file.found ? missing_values_message(v) : missing_file_message(v));
      continue;
    }
    const std::vector<Pair> pairs = pair_up(file, *expected, nullptr);
    EXPECT_FALSE(pairs.empty()) << file.path << " has no sample matching expected_samples()";
    for (const Pair& p : pairs) {
      const std::string where = file.path + ":" + std::to_string(p.file->line) + ": " +
                                std::string(to_string(p.file->kind)) + " sample #" +
                                std::to_string(p.index);
      const std::string& bytes = p.file->bytes;
      ASSERT_GE(bytes.size(), 2u) << where;
      EXPECT_EQ(static_cast<unsigned char>(bytes[0]) | (static_cast<unsigned char>(bytes[1]) << 8),
                v)
          << where << " does not start with its file's format version";
      auto decoded = decode_payload(p.file->kind, bytes);
      if (!decoded.ok()) {
        ADD_FAILURE() << where << " no longer decodes: " << decoded.status().to_string()
                      << ". Every payload format version ever written must stay readable. "
                      << kBumpAdvice;
        continue;
      }
      if (!(*decoded == p.expected->value)) {
        ADD_FAILURE() << where << " decodes to other values than expected_samples(" << v
                      << ") builds:\n"
                      << differing_lines(describe(*decoded), describe(p.expected->value))
                      << kBumpAdvice;
      }
    }
  }
}

}  // namespace
}  // namespace tillsync
