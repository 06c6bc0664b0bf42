// Operations: what a node records in its append-only change log and replicates.
//
// A payload is encoded with cereal's portable binary archive behind a 2-byte
// little-endian format version (kPayloadFormatVersion). decode_payload() rejects
// unknown versions with Code::unsupported_version and malformed bytes with
// Code::corrupt_log; it never trusts lengths inside the bytes beyond their size.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tillsync/clock.h"
#include "tillsync/domain.h"
#include "tillsync/guid.h"
#include "tillsync/status.h"

namespace tillsync {

// Stored as integers in logs and on the wire: never renumber.
enum class OpKind : std::uint8_t {
  customer_create = 1,
  customer_update = 2,
  address_add = 3,
  address_remove = 4,
  contact_add = 5,
  contact_remove = 6,
  address_update = 7,
  contact_update = 8,
  loyalty_card_issued = 9,
};
std::string_view to_string(OpKind k);
std::optional<OpKind> op_kind_from_int(int value);

inline constexpr std::uint16_t kPayloadFormatVersion = 1;

// A customer created on the terminal (account_number always empty).
struct CustomerCreated {
  Customer customer;
  bool operator==(const CustomerCreated&) const = default;
};
// Scalar field changes; base_version is the customer version the editor had seen.
struct CustomerUpdated {
  Guid customer;
  std::int64_t base_version = 0;
  std::vector<FieldChange> changes;
  bool operator==(const CustomerUpdated&) const = default;
};
struct AddressAdded {
  Guid customer;
  Address address;
  bool operator==(const AddressAdded&) const = default;
};
struct AddressRemoved {
  Guid customer;
  Guid address;
  std::int64_t base_version = 0;  // customer version the remover had seen
  bool operator==(const AddressRemoved&) const = default;
};
struct ContactAdded {
  Guid customer;
  Contact contact;
  bool operator==(const ContactAdded&) const = default;
};
struct ContactRemoved {
  Guid customer;
  Guid contact;
  std::int64_t base_version = 0;
  bool operator==(const ContactRemoved&) const = default;
};

enum class AddressField : std::uint8_t { purpose, street, city, state, zip, country };
std::string_view to_string(AddressField f);
std::optional<AddressField> parse_address_field(std::string_view s);
std::string& address_field(Address& a, AddressField f);

struct AddressFieldChange {
  AddressField field = AddressField::street;
  std::string value;
  bool operator==(const AddressFieldChange&) const = default;
};
// Edits of an existing address, field by field.
struct AddressUpdated {
  Guid customer;
  std::int64_t base_version = 0;
  Guid address;
  std::vector<AddressFieldChange> changes;
  bool operator==(const AddressUpdated&) const = default;
};
// A new value for a secondary e-mail or phone.
struct ContactUpdated {
  Guid customer;
  std::int64_t base_version = 0;
  Guid contact;
  std::string value;
  bool operator==(const ContactUpdated&) const = default;
};

// A loyalty card HQ issued through the real-time service (D7), logged by the terminal
// like every HQ-answered write, so that a new HQ database gets it back.
struct LoyaltyCardIssued {
  Guid customer;
  LoyaltyCard card;
  bool operator==(const LoyaltyCardIssued&) const = default;
};

// Alternatives in OpKind order (index = kind - 1).
using Payload = std::variant<CustomerCreated, CustomerUpdated, AddressAdded, AddressRemoved,
                             ContactAdded, ContactRemoved, AddressUpdated, ContactUpdated,
                             LoyaltyCardIssued>;

OpKind kind_of(const Payload& p);
// The customer an operation is about (the log's `entity` column).
Guid entity_of(const Payload& p);

std::string encode_payload(const Payload& p);
Result<Payload> decode_payload(OpKind kind, std::string_view bytes);

// A whole customer (with its account number) in the same versioned encoding: used
// for HQ's outbound feed and replies.
std::string encode_customer(const Customer& c);
Result<Customer> decode_customer(std::string_view bytes);

// One row of a node's change log.
struct LogRecord {
  std::int64_t seq = 0;  // dense, increasing per node, from 1
  Guid op_id;
  Guid entity;
  OpKind kind = OpKind::customer_create;
  Hlc hlc;
  std::string node_id;
  std::string payload;  // encode_payload() bytes

  bool operator==(const LogRecord&) const = default;
};

}  // namespace tillsync
