// Field-by-field (de)serialization of domain values with a cereal portable-binary
// archive. Shared by payload encoding and, later, wire messages.
//
// Every length read from input is checked against a cap before anything is allocated,
// and lists grow one element at a time, so a hostile input can never make a decoder
// allocate more than a small multiple of its own size. Decoding errors throw
// DecodeError (or cereal::Exception at end of input); callers turn both into
// Code::corrupt_log.
#pragma once

#include <cereal/archives/portable_binary.hpp>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "tillsync/domain.h"
#include "tillsync/guid.h"

namespace tillsync::codec {

struct DecodeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline constexpr std::uint64_t kMaxTextBytes = 64 * 1024;
inline constexpr std::uint64_t kMaxListItems = 100'000;

template <class Ar>
constexpr bool loading() {
  return Ar::is_loading::value;
}

template <class Ar, class Int>
void integer(Ar& ar, Int& v) {
  static_assert(std::is_integral_v<Int>);
  ar(v);
}

template <class Ar>
void boolean(Ar& ar, bool& b) {
  std::uint8_t v = b ? 1 : 0;
  ar(v);
  if constexpr (loading<Ar>()) {
    if (v > 1) throw DecodeError("boolean out of range");
    b = v == 1;
  }
}

// An enum stored as one byte; `max` is its highest valid value.
template <class Ar, class Enum>
void enumeration(Ar& ar, Enum& e, Enum max) {
  auto v = static_cast<std::uint8_t>(e);
  ar(v);
  if constexpr (loading<Ar>()) {
    if (v > static_cast<std::uint8_t>(max)) throw DecodeError("enum value out of range");
    e = static_cast<Enum>(v);
  }
}

template <class Ar>
void size(Ar& ar, std::uint64_t& n, std::uint64_t cap) {
  ar(n);
  if constexpr (loading<Ar>()) {
    if (n > cap) throw DecodeError("length " + std::to_string(n) + " exceeds limit");
  }
}

template <class Ar>
void text(Ar& ar, std::string& s) {
  std::uint64_t n = s.size();
  size(ar, n, kMaxTextBytes);
  if constexpr (loading<Ar>()) s.resize(static_cast<std::size_t>(n));
  if (n > 0) ar(cereal::binary_data(s.data(), static_cast<std::size_t>(n)));
}

template <class Ar>
void guid(Ar& ar, Guid& g) {
  ar(cereal::binary_data(g.bytes.data(), g.bytes.size()));
}

template <class Ar, class T, class Fn>
void list(Ar& ar, std::vector<T>& items, Fn&& item) {
  std::uint64_t n = items.size();
  size(ar, n, kMaxListItems);
  if constexpr (loading<Ar>()) {
    items.clear();
    for (std::uint64_t i = 0; i < n; ++i) {
      T value{};
      item(ar, value);
      items.push_back(std::move(value));
    }
  } else {
    for (auto& value : items) item(ar, value);
  }
}

template <class Ar>
void address(Ar& ar, Address& a) {
  guid(ar, a.guid);
  text(ar, a.purpose);
  text(ar, a.street);
  text(ar, a.city);
  text(ar, a.state);
  text(ar, a.zip);
  text(ar, a.country);
}

template <class Ar>
void contact(Ar& ar, Contact& c) {
  guid(ar, c.guid);
  enumeration(ar, c.kind, ContactKind::phone);
  text(ar, c.value);
}

template <class Ar>
void loyalty_card(Ar& ar, LoyaltyCard& l) {
  text(ar, l.card_number);
  integer(ar, l.issued_at_ms);
}

template <class Ar>
void field_change(Ar& ar, FieldChange& f) {
  enumeration(ar, f.field, Field::receipt_email);
  text(ar, f.value);
}

template <class Ar>
void customer(Ar& ar, Customer& c) {
  guid(ar, c.guid);
  bool has_account = c.account_number.has_value();
  boolean(ar, has_account);
  if (has_account) {
    if constexpr (loading<Ar>()) c.account_number.emplace();
    text(ar, *c.account_number);
  }
  enumeration(ar, c.type, CustomerType::organization);
  for (Field f : all_fields()) text(ar, c.get(f));
  list(ar, c.addresses, [](Ar& a, Address& v) { address(a, v); });
  list(ar, c.contacts, [](Ar& a, Contact& v) { contact(a, v); });
  list(ar, c.affiliations, [](Ar& a, std::string& v) { text(a, v); });
  list(ar, c.loyalty_cards, [](Ar& a, LoyaltyCard& v) { loyalty_card(a, v); });
  integer(ar, c.version);
}

}  // namespace tillsync::codec
