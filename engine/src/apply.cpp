#include "apply.h"

#include <algorithm>

#include "tillsync/validation.h"

namespace tillsync {
namespace {

template <class T>
bool has_guid(const std::vector<T>& items, const Guid& g) {
  return std::any_of(items.begin(), items.end(), [&](const T& x) { return x.guid == g; });
}

}  // namespace

Status apply_to_customer(Customer& c, const Payload& p, const std::vector<FieldChange>& extra,
                         bool bump_version) {
  bool changed = false;
  if (const auto* upd = std::get_if<CustomerUpdated>(&p)) {
    for (const FieldChange& ch : upd->changes) c.get(ch.field) = ch.value;
    changed = !upd->changes.empty();
  } else if (const auto* added = std::get_if<AddressAdded>(&p)) {
    TS_RETURN_IF_ERROR(validate_address(added->address, "address"));
    if (!has_guid(c.addresses, added->address.guid)) {
      c.addresses.push_back(added->address);
      changed = true;
    }
  } else if (const auto* removed = std::get_if<AddressRemoved>(&p)) {
    changed = std::erase_if(c.addresses, [&](const Address& a) { return a.guid == removed->address; }) > 0;
  } else if (const auto* contact = std::get_if<ContactAdded>(&p)) {
    TS_RETURN_IF_ERROR(validate_contact(contact->contact, "contact"));
    if (!has_guid(c.contacts, contact->contact.guid)) {
      c.contacts.push_back(contact->contact);
      changed = true;
    }
  } else if (const auto* gone = std::get_if<ContactRemoved>(&p)) {
    changed = std::erase_if(c.contacts, [&](const Contact& k) { return k.guid == gone->contact; }) > 0;
  } else if (const auto* au = std::get_if<AddressUpdated>(&p)) {
    // An edit of an address that is gone (removed) changes nothing: removal wins.
    for (Address& a : c.addresses) {
      if (a.guid != au->address) continue;
      for (const AddressFieldChange& ch : au->changes) address_field(a, ch.field) = ch.value;
      changed = !au->changes.empty();
    }
  } else if (const auto* card = std::get_if<LoyaltyCardIssued>(&p)) {
    const bool held = std::any_of(c.loyalty_cards.begin(), c.loyalty_cards.end(),
                                  [&](const LoyaltyCard& l) { return l.card_number == card->card.card_number; });
    if (card->card.card_number.empty() || card->card.card_number.size() > kMaxTextLength)
      return Status::InvalidInput("card_number", "card_number: must be 1-200 characters");
    if (!held) {
      c.loyalty_cards.push_back(card->card);
      changed = true;
    }
  } else if (const auto* cu = std::get_if<ContactUpdated>(&p)) {
    for (Contact& k : c.contacts) {
      if (k.guid != cu->contact) continue;
      k.value = cu->value;
      changed = true;
    }
  }
  for (const FieldChange& ch : extra) c.get(ch.field) = ch.value;
  changed = changed || !extra.empty();
  TS_RETURN_IF_ERROR(validate_customer(c));
  if (changed && bump_version) ++c.version;
  return Status::Ok();
}

}  // namespace tillsync
