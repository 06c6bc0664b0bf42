// Input validation (DESIGN.md D13). Every function returns Code::invalid_input with
// the offending field's contract name in Status::field() and a readable message that
// names it; nothing here has side effects.
//
// Limits: first/middle/last name and organization name 1-100 characters (required ones
// must be non-blank), e-mail <= 254 characters of the form local@domain.tld, phone <= 32
// characters of digits, spaces and "+-().", country a 2- or 3-letter code, every other
// text <= 200 characters. Lengths count Unicode code points; text must be valid UTF-8;
// control characters (C0, DEL, C1) are rejected in every field.
#pragma once

#include <string>
#include <string_view>

#include "tillsync/domain.h"
#include "tillsync/status.h"

namespace tillsync {

inline constexpr std::size_t kMaxNameLength = 100;
inline constexpr std::size_t kMaxEmailLength = 254;
inline constexpr std::size_t kMaxPhoneLength = 32;
inline constexpr std::size_t kMaxTextLength = 200;
// At most this many addresses, contacts, affiliations and loyalty cards per customer
// (D13); more is Code::limit_exceeded.
inline constexpr std::size_t kMaxChildrenPerCustomer = 50;
// Code::limit_exceeded (field `list`) when a customer would hold `count` > 50 of a list.
Status check_child_count(std::string_view list, std::size_t count);

// A store or terminal id: 1-32 ASCII letters, digits, '-' or '_'.
bool is_valid_id(std::string_view id);
// A node id "STORE/TERMINAL" of two valid ids; otherwise invalid_input (field "node")
// with a message that does not repeat the bytes given (they may be hostile).
Status validate_node_id(std::string_view node);

// Validates one scalar field value. Empty values are accepted for optional fields;
// required-name rules are checked by validate_customer().
Status validate_field(Field field, std::string_view value);

// The whole customer: its type's required names, every field, every address, contact
// and affiliation. `field()` of the error names e.g. "email", "addresses[1].country",
// "contacts[0].value", "affiliations[2]".
Status validate_customer(const Customer& customer);
// Part of validate_customer(): every address and contact has a GUID of its own (not
// nil, not repeated, not the customer's).
Status validate_child_guids(const Customer& customer);

// `prefix` names the address in errors, e.g. "addresses[0]"; fields become
// "addresses[0].city". street, city and country are required.
Status validate_address(const Address& address, std::string_view prefix = "address");
Status validate_contact(const Contact& contact, std::string_view prefix = "contact");
Status validate_affiliation(std::string_view affiliation, std::string_view field = "affiliation");

// Checks the text rules shared by every field: valid UTF-8, no control characters,
// at most `max_length` code points.
Status validate_text(std::string_view field, std::string_view value, std::size_t max_length);

// Parses the CLI address form "street;city;state;zip;country[;purpose]". The purpose
// stays empty when omitted (the node applies the D11 default). No GUID is assigned.
// Errors name `field` (e.g. "address").
Result<Address> parse_address_spec(std::string_view spec, std::string_view field = "address");

// Normal forms used for search and duplicate detection: e-mail trimmed and lower-cased;
// phone reduced to its digits (a leading '+' kept).
std::string normalize_email(std::string_view email);
std::string normalize_phone(std::string_view phone);

}  // namespace tillsync
