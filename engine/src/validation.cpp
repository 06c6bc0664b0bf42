#include "tillsync/validation.h"

#include <algorithm>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tillsync {
namespace {

// One decoded code point; length 0 means the bytes there are not valid UTF-8.
struct Decoded {
  char32_t cp = 0;
  std::size_t length = 0;  // bytes consumed; 0 on error
};

// Decodes the code point starting at `i`. Rejects everything RFC 3629 forbids: stray
// continuation bytes, truncated sequences, overlong forms (they would let a control
// character hide behind a longer encoding), UTF-16 surrogates and values > U+10FFFF.
Decoded decode_at(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return {b0, 1};

  // Lead byte: sequence length, its payload bits, and the smallest code point that
  // needs that many bytes.
  struct Lead {
    unsigned char mask, tag;
    std::size_t length;
    char32_t min;
  };
  static constexpr Lead kLeads[] = {
      {0xE0, 0xC0, 2, 0x80}, {0xF0, 0xE0, 3, 0x800}, {0xF8, 0xF0, 4, 0x10000}};
  const Lead* lead = nullptr;
  for (const Lead& l : kLeads) {
    if ((b0 & l.mask) == l.tag) lead = &l;
  }
  if (lead == nullptr) return {};
  const std::size_t len = lead->length;
  const char32_t min = lead->min;
  char32_t cp = b0 & static_cast<unsigned char>(~lead->mask);
  if (i + len > s.size()) return {};
  for (std::size_t k = 1; k < len; ++k) {
    const unsigned char b = byte(i + k);
    if ((b & 0xC0) != 0x80) return {};
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {};
  return {cp, len};
}

bool is_control(char32_t cp) { return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F); }

// Unicode general category Cf (format characters, Unicode 15): invisible, and the
// bidirectional ones make a name read otherwise than it is stored. The zero-width
// joiners (U+200C, U+200D) are left out: Persian, Indic scripts and emoji need them.
bool is_format(char32_t cp) {
  struct Range {
    char32_t first, last;
  };
  static constexpr Range kCf[] = {
      {0x00AD, 0x00AD},   {0x0600, 0x0605},   {0x061C, 0x061C},   {0x06DD, 0x06DD},
      {0x070F, 0x070F},   {0x0890, 0x0891},   {0x08E2, 0x08E2},   {0x180E, 0x180E},
      {0x200B, 0x200B},   {0x200E, 0x200F},   {0x202A, 0x202E},   {0x2060, 0x2064},
      {0x2066, 0x206F},   {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},   {0x110BD, 0x110BD},
      {0x110CD, 0x110CD}, {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A},
      {0xE0001, 0xE0001}, {0xE0020, 0xE007F}};
  for (const Range& r : kCf) {
    if (cp >= r.first && cp <= r.last) return true;
  }
  return false;
}

// Characters that leave a name visually empty: ASCII and Unicode spaces plus the
// zero-width ones, so "\u00A0" or "\u200B" cannot pass as a required name.
bool is_blank_code_point(char32_t cp) {
  switch (cp) {
    case 0x20:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
    case 0x200B:
    case 0x200C:
    case 0x200D:
    case 0xFEFF: return true;
    default: return cp >= 0x2000 && cp <= 0x200A;
  }
}

std::string hex_byte(unsigned char b) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  return {'0', 'x', kDigits[b >> 4], kDigits[b & 0x0F]};
}

std::string code_point_name(char32_t cp) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out = "U+";
  const int top = cp > 0xFFFFF ? 20 : cp > 0xFFFF ? 16 : 12;  // at least four digits
  for (int shift = top; shift >= 0; shift -= 4) out += kDigits[(cp >> shift) & 0x0F];
  return out;
}

// The value as shown inside an error message. Only called on text that passed
// validate_text(), so it is printable; long values are shortened so a message stays
// one readable line.
std::string quoted(std::string_view value) {
  constexpr std::size_t kShown = 40;
  std::string out = "'";
  std::size_t shown = 0;
  std::size_t i = 0;
  for (; i < value.size() && shown < kShown; ++shown) {
    std::size_t len = decode_at(value, i).length;
    if (len == 0) len = 1;
    out.append(value.substr(i, len));
    i += len;
  }
  if (i < value.size()) out += "...";
  out += "'";
  return out;
}

Status invalid(std::string_view field, std::string_view problem) {
  std::string message(field);
  message += ": ";
  message += problem;
  return Status::InvalidInput(std::string(field), std::move(message));
}

bool is_blank(std::string_view value) {
  for (std::size_t i = 0; i < value.size();) {
    const Decoded d = decode_at(value, i);
    if (d.length == 0 || !is_blank_code_point(d.cp)) return false;
    i += d.length;
  }
  return true;
}

bool is_ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_ascii_digit(char c) { return c >= '0' && c <= '9'; }

// RFC 5322 "atext": what an unquoted local part may contain besides dots.
bool is_atext(char c) {
  if (is_ascii_letter(c) || is_ascii_digit(c)) return true;
  static constexpr std::string_view kSpecials = "!#$%&'*+-/=?^_`{|}~";
  return kSpecials.find(c) != std::string_view::npos;
}

// The structural e-mail rule: local@domain.tld. The local part is a dot-atom (no
// quoted strings: a till has no business storing those), the domain is DNS labels of
// letters, digits and inner hyphens, and the last label is an alphabetic TLD.
bool is_email_form(std::string_view value) {
  const std::size_t at = value.find('@');
  if (at == std::string_view::npos || value.find('@', at + 1) != std::string_view::npos) {
    return false;
  }
  const std::string_view local = value.substr(0, at);
  const std::string_view domain = value.substr(at + 1);
  if (local.empty() || local.front() == '.' || local.back() == '.' ||
      local.find("..") != std::string_view::npos) {
    return false;
  }
  for (char c : local) {
    if (c != '.' && !is_atext(c)) return false;
  }

  std::vector<std::string_view> labels;
  for (std::size_t start = 0;;) {
    const std::size_t dot = domain.find('.', start);
    labels.push_back(domain.substr(start, dot == std::string_view::npos ? dot : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (labels.size() < 2) return false;
  for (std::string_view label : labels) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!is_ascii_letter(c) && !is_ascii_digit(c) && c != '-') return false;
    }
  }
  const std::string_view tld = labels.back();
  if (tld.size() < 2) return false;
  for (char c : tld) {
    if (!is_ascii_letter(c)) return false;
  }
  return true;
}

Status validate_email(std::string_view field, std::string_view value) {
  TS_RETURN_IF_ERROR(validate_text(field, value, kMaxEmailLength));
  if (!is_email_form(value)) {
    return invalid(field,
                   quoted(value) + " is not a valid e-mail address (expected local@domain.tld)");
  }
  return Status::Ok();
}

Status validate_phone(std::string_view field, std::string_view value) {
  TS_RETURN_IF_ERROR(validate_text(field, value, kMaxPhoneLength));
  bool has_digit = false;
  for (char c : value) {
    if (is_ascii_digit(c)) {
      has_digit = true;
    } else if (std::string_view(" +-().").find(c) == std::string_view::npos) {
      return invalid(field, quoted(value) +
                                " is not a valid phone number (only digits, spaces and +-(). "
                                "are allowed)");
    }
  }
  if (!has_digit) {
    return invalid(field, quoted(value) + " is not a valid phone number (it has no digits)");
  }
  return Status::Ok();
}

Status validate_country(std::string_view field, std::string_view value) {
  TS_RETURN_IF_ERROR(validate_text(field, value, kMaxTextLength));
  bool letters = value.size() == 2 || value.size() == 3;
  for (char c : value) letters = letters && is_ascii_letter(c);
  if (!letters) {
    return invalid(field, quoted(value) +
                              " is not a valid country code (expected 2 or 3 letters, e.g. US "
                              "or USA)");
  }
  return Status::Ok();
}

// A value that must be present and not just blanks, then the usual text rules.
Status validate_required_text(std::string_view field, std::string_view value,
                              std::size_t max_length, std::string_view why) {
  if (is_blank(value)) {
    std::string problem = "is required";
    problem += why;
    return invalid(field, problem);
  }
  return validate_text(field, value, max_length);
}

std::string join(std::string_view prefix, std::string_view name) {
  std::string out(prefix);
  out += '.';
  out += name;
  return out;
}

std::string indexed(std::string_view base, std::size_t index) {
  return std::string(base) + "[" + std::to_string(index) + "]";
}

bool is_required_name(CustomerType type, Field field) {
  if (type == CustomerType::organization) return field == Field::org_name;
  return field == Field::first_name || field == Field::last_name;
}

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

std::string_view trim_ascii_whitespace(std::string_view s) {
  constexpr std::string_view kWhitespace = " \t\r\n\f\v";
  const std::size_t first = s.find_first_not_of(kWhitespace);
  if (first == std::string_view::npos) return {};
  const std::size_t last = s.find_last_not_of(kWhitespace);
  return s.substr(first, last - first + 1);
}

}  // namespace

Status validate_text(std::string_view field, std::string_view value, std::size_t max_length) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < value.size(); ++count) {
    const Decoded d = decode_at(value, i);
    if (d.length == 0) {
      return invalid(field, "is not valid UTF-8 (bad byte " +
                                hex_byte(static_cast<unsigned char>(value[i])) +
                                " at byte offset " + std::to_string(i) + ")");
    }
    if (is_control(d.cp)) {
      return invalid(field, "contains the control character " + code_point_name(d.cp) +
                                " at position " + std::to_string(count + 1));
    }
    if (is_format(d.cp)) {
      return invalid(field, "contains the invisible format character " + code_point_name(d.cp) +
                                " at position " + std::to_string(count + 1) +
                                " (bidirectional overrides, zero-width spaces and the like are refused)");
    }
    i += d.length;
  }
  if (count > max_length) {
    return invalid(field, "is " + std::to_string(count) + " characters long (at most " +
                              std::to_string(max_length) + " allowed)");
  }
  return Status::Ok();
}

Status validate_field(Field field, std::string_view value) {
  const std::string_view name = field_name(field);
  switch (field) {
    case Field::first_name:
    case Field::middle_name:
    case Field::last_name:
    case Field::org_name: return validate_text(name, value, kMaxNameLength);
    case Field::email:
    case Field::receipt_email: return value.empty() ? Status::Ok() : validate_email(name, value);
    case Field::phone: return value.empty() ? Status::Ok() : validate_phone(name, value);
    case Field::title:
    case Field::language:
    case Field::currency:
    case Field::customer_group:
    case Field::receipt_option: return validate_text(name, value, kMaxTextLength);
  }
  return invalid(name, "is not a known field");
}

bool is_valid_id(std::string_view id) {
  if (id.empty() || id.size() > 32) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

Status validate_node_id(std::string_view node) {
  const std::size_t slash = node.find('/');
  if (slash != std::string_view::npos && is_valid_id(node.substr(0, slash)) && is_valid_id(node.substr(slash + 1)))
    return Status::Ok();
  return Status::InvalidInput("node", "node: not a STORE/TERMINAL node id (" + std::to_string(node.size()) +
                                          " bytes given; each part 1-32 letters, digits, '-' or '_')");
}

Status check_child_count(std::string_view list, std::size_t count) {
  if (count <= kMaxChildrenPerCustomer) return Status::Ok();
  return Status(Code::limit_exceeded,
                std::string(list) + ": a customer has at most " + std::to_string(kMaxChildrenPerCustomer) + " (" +
                    std::to_string(count) + " given)",
                std::string(list));
}

Status validate_customer(const Customer& customer) {
  TS_RETURN_IF_ERROR(check_child_count("addresses", customer.addresses.size()));
  TS_RETURN_IF_ERROR(check_child_count("contacts", customer.contacts.size()));
  TS_RETURN_IF_ERROR(check_child_count("affiliations", customer.affiliations.size()));
  TS_RETURN_IF_ERROR(check_child_count("loyalty_cards", customer.loyalty_cards.size()));
  for (Field field : all_fields()) {
    const std::string& value = customer.get(field);
    if (is_required_name(customer.type, field) && is_blank(value)) {
      return invalid(field_name(field), customer.type == CustomerType::person
                                            ? "is required for a person customer"
                                            : "is required for an organization customer");
    }
    TS_RETURN_IF_ERROR(validate_field(field, value));
  }
  for (std::size_t i = 0; i < customer.addresses.size(); ++i) {
    TS_RETURN_IF_ERROR(validate_address(customer.addresses[i], indexed("addresses", i)));
  }
  for (std::size_t i = 0; i < customer.contacts.size(); ++i) {
    TS_RETURN_IF_ERROR(validate_contact(customer.contacts[i], indexed("contacts", i)));
  }
  for (std::size_t i = 0; i < customer.affiliations.size(); ++i) {
    TS_RETURN_IF_ERROR(validate_affiliation(customer.affiliations[i], indexed("affiliations", i)));
  }
  return validate_child_guids(customer);
}

Status validate_child_guids(const Customer& customer) {
  // Addresses and contacts are rows keyed by their GUIDs wherever they are stored: a nil
  // or repeated GUID could only come from a damaged or hostile writer.
  std::vector<Guid> seen;
  seen.reserve(customer.addresses.size() + customer.contacts.size());
  auto check = [&](const Guid& g, const std::string& field) -> Status {
    if (g.is_nil()) return invalid(field, "a child record needs a GUID (nil given)");
    if (g == customer.guid || std::find(seen.begin(), seen.end(), g) != seen.end())
      return invalid(field, "GUID " + g.to_string() + " is used twice in one customer");
    seen.push_back(g);
    return Status::Ok();
  };
  for (std::size_t i = 0; i < customer.addresses.size(); ++i)
    TS_RETURN_IF_ERROR(check(customer.addresses[i].guid, indexed("addresses", i) + ".guid"));
  for (std::size_t i = 0; i < customer.contacts.size(); ++i)
    TS_RETURN_IF_ERROR(check(customer.contacts[i].guid, indexed("contacts", i) + ".guid"));
  return Status::Ok();
}

Status validate_address(const Address& address, std::string_view prefix) {
  constexpr std::string_view kWhy = " for an address";
  TS_RETURN_IF_ERROR(
      validate_required_text(join(prefix, "street"), address.street, kMaxTextLength, kWhy));
  TS_RETURN_IF_ERROR(
      validate_required_text(join(prefix, "city"), address.city, kMaxTextLength, kWhy));
  TS_RETURN_IF_ERROR(validate_text(join(prefix, "state"), address.state, kMaxTextLength));
  TS_RETURN_IF_ERROR(validate_text(join(prefix, "zip"), address.zip, kMaxTextLength));
  const std::string country = join(prefix, "country");
  if (is_blank(address.country)) return invalid(country, "is required for an address");
  TS_RETURN_IF_ERROR(validate_country(country, address.country));
  return validate_text(join(prefix, "purpose"), address.purpose, kMaxTextLength);
}

Status validate_contact(const Contact& contact, std::string_view prefix) {
  const std::string field = join(prefix, "value");
  if (contact.value.empty()) {
    return invalid(field, contact.kind == ContactKind::email ? "an e-mail address is required"
                                                             : "a phone number is required");
  }
  return contact.kind == ContactKind::email ? validate_email(field, contact.value)
                                            : validate_phone(field, contact.value);
}

Status validate_affiliation(std::string_view affiliation, std::string_view field) {
  return validate_required_text(field, affiliation, kMaxTextLength, "");
}

Result<Address> parse_address_spec(std::string_view spec, std::string_view field) {
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    const std::size_t semi = spec.find(';', start);
    parts.push_back(
        trim_spaces(spec.substr(start, semi == std::string_view::npos ? semi : semi - start)));
    if (semi == std::string_view::npos) break;
    start = semi + 1;
  }
  if (parts.size() != 5 && parts.size() != 6) {
    return invalid(field,
                   "expected \"street;city;state;zip;country[;purpose]\" (5 or 6 parts "
                   "separated by ';'), got " +
                       std::to_string(parts.size()) + (parts.size() == 1 ? " part" : " parts"));
  }
  Address address;
  address.street = parts[0];
  address.city = parts[1];
  address.state = parts[2];
  address.zip = parts[3];
  address.country = parts[4];
  if (parts.size() == 6) address.purpose = parts[5];
  TS_RETURN_IF_ERROR(validate_address(address, field));
  return address;
}

std::string normalize_email(std::string_view email) {
  std::string out(trim_ascii_whitespace(email));
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string normalize_phone(std::string_view phone) {
  const std::string_view trimmed = trim_ascii_whitespace(phone);
  std::string digits;
  for (char c : trimmed) {
    if (is_ascii_digit(c)) digits += c;
  }
  // A lone "+" is not a number; keeping it would make unrelated junk compare equal.
  if (digits.empty()) return digits;
  if (trimmed.front() == '+') digits.insert(digits.begin(), '+');
  return digits;
}

}  // namespace tillsync
