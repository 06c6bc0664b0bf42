#include "tillsync/operations.h"

#include <sstream>

#include "codec.h"

namespace tillsync {
namespace {

template <class Ar>
void body(Ar& ar, CustomerCreated& p) {
  codec::customer(ar, p.customer);
}
template <class Ar>
void body(Ar& ar, CustomerUpdated& p) {
  codec::guid(ar, p.customer);
  codec::integer(ar, p.base_version);
  codec::list(ar, p.changes, [](Ar& a, FieldChange& c) { codec::field_change(a, c); });
}
template <class Ar>
void body(Ar& ar, AddressAdded& p) {
  codec::guid(ar, p.customer);
  codec::address(ar, p.address);
}
template <class Ar>
void body(Ar& ar, AddressRemoved& p) {
  codec::guid(ar, p.customer);
  codec::guid(ar, p.address);
  codec::integer(ar, p.base_version);
}
template <class Ar>
void body(Ar& ar, AddressUpdated& p) {
  codec::guid(ar, p.customer);
  codec::integer(ar, p.base_version);
  codec::guid(ar, p.address);
  codec::list(ar, p.changes, [](Ar& a, AddressFieldChange& c) {
    codec::enumeration(a, c.field, AddressField::country);
    codec::text(a, c.value);
  });
}
template <class Ar>
void body(Ar& ar, ContactUpdated& p) {
  codec::guid(ar, p.customer);
  codec::integer(ar, p.base_version);
  codec::guid(ar, p.contact);
  codec::text(ar, p.value);
}
template <class Ar>
void body(Ar& ar, ContactAdded& p) {
  codec::guid(ar, p.customer);
  codec::contact(ar, p.contact);
}
template <class Ar>
void body(Ar& ar, ContactRemoved& p) {
  codec::guid(ar, p.customer);
  codec::guid(ar, p.contact);
  codec::integer(ar, p.base_version);
}

template <class Ar>
void body(Ar& ar, LoyaltyCardIssued& p) {
  codec::guid(ar, p.customer);
  codec::loyalty_card(ar, p.card);
}

// The Payload alternative for each kind (variant index = kind - 1).
static_assert(std::variant_size_v<Payload> == 9);

Payload empty_payload(OpKind kind) {
  switch (kind) {
    case OpKind::customer_create: return CustomerCreated{};
    case OpKind::customer_update: return CustomerUpdated{};
    case OpKind::address_add: return AddressAdded{};
    case OpKind::address_remove: return AddressRemoved{};
    case OpKind::contact_add: return ContactAdded{};
    case OpKind::contact_remove: return ContactRemoved{};
    case OpKind::address_update: return AddressUpdated{};
    case OpKind::contact_update: return ContactUpdated{};
    case OpKind::loyalty_card_issued: return LoyaltyCardIssued{};
  }
  return CustomerCreated{};
}

}  // namespace

std::string_view to_string(OpKind k) {
  switch (k) {
    case OpKind::customer_create: return "customer_create";
    case OpKind::customer_update: return "customer_update";
    case OpKind::address_add: return "address_add";
    case OpKind::address_remove: return "address_remove";
    case OpKind::contact_add: return "contact_add";
    case OpKind::contact_remove: return "contact_remove";
    case OpKind::address_update: return "address_update";
    case OpKind::contact_update: return "contact_update";
    case OpKind::loyalty_card_issued: return "loyalty_card_issued";
  }
  return "unknown";
}

std::optional<OpKind> op_kind_from_int(int value) {
  if (value < 1 || value > 9) return std::nullopt;
  return static_cast<OpKind>(value);
}

OpKind kind_of(const Payload& p) { return static_cast<OpKind>(p.index() + 1); }

Guid entity_of(const Payload& p) {
  return std::visit(
      [](const auto& v) -> Guid {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, CustomerCreated>) {
          return v.customer.guid;
        } else {
          return v.customer;
        }
      },
      p);
}

std::string encode_payload(const Payload& p) {
  std::ostringstream os(std::ios::binary);
  os.put(static_cast<char>(kPayloadFormatVersion & 0xff));
  os.put(static_cast<char>(kPayloadFormatVersion >> 8));
  {
    cereal::PortableBinaryOutputArchive ar(os);
    Payload copy = p;  // the field helpers take mutable references for both directions
    std::visit([&](auto& v) { body(ar, v); }, copy);
  }
  return std::move(os).str();
}

Result<Payload> decode_payload(OpKind kind, std::string_view bytes) {
  if (bytes.size() < 2) return Status::CorruptLog("payload shorter than its version header");
  const auto version = static_cast<std::uint16_t>(static_cast<unsigned char>(bytes[0]) |
                                                  (static_cast<unsigned char>(bytes[1]) << 8));
  if (version != kPayloadFormatVersion) {
    return Status::UnsupportedVersion("payload format version " + std::to_string(version) +
                                      " is not supported (this build reads " +
                                      std::to_string(kPayloadFormatVersion) + ")");
  }
  Payload p = empty_payload(kind);
  std::istringstream is(std::string(bytes.substr(2)), std::ios::binary);
  try {
    cereal::PortableBinaryInputArchive ar(is);
    std::visit([&](auto& v) { body(ar, v); }, p);
  } catch (const std::exception& e) {
    return Status::CorruptLog(std::string("malformed ") + std::string(to_string(kind)) +
                              " payload: " + e.what());
  }
  if (is.peek() != std::char_traits<char>::eof())
    return Status::CorruptLog(std::string("trailing bytes after ") +
                              std::string(to_string(kind)) + " payload");
  return p;
}

std::string_view to_string(AddressField f) {
  switch (f) {
    case AddressField::purpose: return "purpose";
    case AddressField::street: return "street";
    case AddressField::city: return "city";
    case AddressField::state: return "state";
    case AddressField::zip: return "zip";
    case AddressField::country: return "country";
  }
  return "street";
}

std::optional<AddressField> parse_address_field(std::string_view s) {
  for (auto f : {AddressField::purpose, AddressField::street, AddressField::city,
                 AddressField::state, AddressField::zip, AddressField::country}) {
    if (to_string(f) == s) return f;
  }
  return std::nullopt;
}

std::string& address_field(Address& a, AddressField f) {
  switch (f) {
    case AddressField::purpose: return a.purpose;
    case AddressField::street: return a.street;
    case AddressField::city: return a.city;
    case AddressField::state: return a.state;
    case AddressField::zip: return a.zip;
    case AddressField::country: return a.country;
  }
  return a.street;
}

std::string encode_customer(const Customer& c) { return encode_payload(CustomerCreated{c}); }

Result<Customer> decode_customer(std::string_view bytes) {
  TS_ASSIGN_OR_RETURN(Payload p, decode_payload(OpKind::customer_create, bytes));
  return std::get<CustomerCreated>(std::move(p)).customer;
}

}  // namespace tillsync
