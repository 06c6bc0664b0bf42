// The customer domain: customers (persons or organizations), their addresses,
// secondary contacts, affiliations and loyalty cards, the functionality profile that
// switches the head-office features (DESIGN.md D2, D5, D8-D10) and the store's
// default-customer template (D11). Plain values; no I/O.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tillsync/guid.h"

namespace tillsync {

enum class CustomerType { person, organization };
std::string_view to_string(CustomerType t);
std::optional<CustomerType> parse_customer_type(std::string_view s);

// The editable scalar fields of a customer, by their contract names (DESIGN.md §5).
enum class Field : std::uint8_t {
  first_name,
  middle_name,
  last_name,
  org_name,
  title,
  email,
  phone,
  language,
  currency,
  customer_group,
  receipt_option,
  receipt_email,
};
inline constexpr std::size_t kFieldCount = 12;
std::string_view field_name(Field f);
std::optional<Field> parse_field(std::string_view name);
const std::array<Field, kFieldCount>& all_fields();

struct Address {
  Guid guid;
  std::string purpose;  // "home", "business", "delivery", "invoice", ... (D11 default)
  std::string street;
  std::string city;
  std::string state;
  std::string zip;
  std::string country;  // 2- or 3-letter code

  bool operator==(const Address&) const = default;
};

enum class ContactKind { email, phone };
std::string_view to_string(ContactKind k);

// A secondary e-mail address or phone number (D9).
struct Contact {
  Guid guid;
  ContactKind kind = ContactKind::email;
  std::string value;

  bool operator==(const Contact&) const = default;
};

struct LoyaltyCard {
  std::string card_number;
  std::int64_t issued_at_ms = 0;

  bool operator==(const LoyaltyCard&) const = default;
};

struct Customer {
  Guid guid;
  // HQ-assigned account number (<prefix><9 digits>); nullopt while `Pending sync`.
  std::optional<std::string> account_number;
  CustomerType type = CustomerType::person;
  std::string first_name, middle_name, last_name, org_name, title, email, phone;
  std::string language, currency, customer_group, receipt_option, receipt_email;
  std::vector<Address> addresses;
  std::vector<Contact> contacts;
  std::vector<std::string> affiliations;
  std::vector<LoyaltyCard> loyalty_cards;
  // At HQ: incremented by every applied change. On a terminal: the HQ version it last
  // saw (local edits waiting for HQ leave it alone). Edits carry it as base_version.
  std::int64_t version = 1;

  const std::string& get(Field f) const;
  std::string& get(Field f);
  bool synced() const { return account_number.has_value(); }
  // What terminal users see as the account id (D3): the number, or "Pending sync".
  std::string account_id() const;
  std::string display_name() const;

  bool operator==(const Customer&) const = default;
};

inline constexpr std::string_view kPendingSync = "Pending sync";

struct FieldChange {
  Field field;
  std::string value;
  bool operator==(const FieldChange&) const = default;
};

// The functionality-profile and channel-database options of a terminal.
struct FunctionalityProfile {
  bool async_customer_creation = false;        // D2
  bool filter_shared_customer_tables = false;  // D5
  bool enhanced_async_customer = false;        // D9
  bool async_customer_addresses = false;       // D10
  bool async_customer_edits = false;           // D8

  bool operator==(const FunctionalityProfile&) const = default;
};

// The store's default customer (D11): new customers copy these values.
struct DefaultCustomer {
  CustomerType type = CustomerType::person;
  std::string customer_group = "RETAIL";
  std::string receipt_option = "print";
  std::string receipt_email;
  std::string currency = "USD";
  std::string language = "en-us";
  std::vector<std::string> affiliations;

  bool operator==(const DefaultCustomer&) const = default;
};

}  // namespace tillsync
