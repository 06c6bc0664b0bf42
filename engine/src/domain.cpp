#include "tillsync/domain.h"

#include <cstddef>

namespace tillsync {
namespace {

// Contract names and the Customer member each Field maps to, in enum order.
struct FieldInfo {
  std::string_view name;
  std::string Customer::*member;
};

constexpr std::array<FieldInfo, kFieldCount> kFields{{
    {"first_name", &Customer::first_name},
    {"middle_name", &Customer::middle_name},
    {"last_name", &Customer::last_name},
    {"org_name", &Customer::org_name},
    {"title", &Customer::title},
    {"email", &Customer::email},
    {"phone", &Customer::phone},
    {"language", &Customer::language},
    {"currency", &Customer::currency},
    {"customer_group", &Customer::customer_group},
    {"receipt_option", &Customer::receipt_option},
    {"receipt_email", &Customer::receipt_email},
}};

const FieldInfo& info(Field f) { return kFields[static_cast<std::size_t>(f)]; }

}  // namespace

std::string_view to_string(CustomerType t) {
  return t == CustomerType::person ? "person" : "organization";
}

std::optional<CustomerType> parse_customer_type(std::string_view s) {
  if (s == "person") return CustomerType::person;
  if (s == "organization") return CustomerType::organization;
  return std::nullopt;
}

std::string_view field_name(Field f) { return info(f).name; }

std::optional<Field> parse_field(std::string_view name) {
  for (std::size_t i = 0; i < kFields.size(); ++i) {
    if (kFields[i].name == name) return static_cast<Field>(i);
  }
  return std::nullopt;
}

const std::array<Field, kFieldCount>& all_fields() {
  static const std::array<Field, kFieldCount> fields = [] {
    std::array<Field, kFieldCount> out{};
    for (std::size_t i = 0; i < kFieldCount; ++i) out[i] = static_cast<Field>(i);
    return out;
  }();
  return fields;
}

std::string_view to_string(ContactKind k) { return k == ContactKind::email ? "email" : "phone"; }

const std::string& Customer::get(Field f) const { return this->*(info(f).member); }
std::string& Customer::get(Field f) { return this->*(info(f).member); }

std::string Customer::account_id() const {
  return account_number ? *account_number : std::string(kPendingSync);
}

std::string Customer::display_name() const {
  if (type == CustomerType::organization) return org_name;
  std::string name = first_name;
  if (!middle_name.empty()) name += " " + middle_name;
  if (!last_name.empty()) name += " " + last_name;
  return name;
}

}  // namespace tillsync
