#include "tillsync/digest.h"

#include <algorithm>
#include <boost/uuid/detail/sha1.hpp>
#include <cstdio>
#include <stdexcept>

namespace tillsync {

struct DigestBuilder::Impl {
  boost::uuids::detail::sha1 sha;

  void bytes(std::string_view s) {
    // Length-prefixed so that field boundaries are part of the hash.
    const auto n = static_cast<std::uint32_t>(s.size());
    const unsigned char len[4] = {static_cast<unsigned char>(n), static_cast<unsigned char>(n >> 8),
                                  static_cast<unsigned char>(n >> 16),
                                  static_cast<unsigned char>(n >> 24)};
    sha.process_bytes(len, sizeof len);
    sha.process_bytes(s.data(), s.size());
  }
  void tag(char t) { sha.process_byte(static_cast<unsigned char>(t)); }
};

DigestBuilder::DigestBuilder() : impl_(std::make_unique<Impl>()) {}
DigestBuilder::~DigestBuilder() = default;

void DigestBuilder::add(const Customer& c) {
  if (count_ > 0 && !(last_ < c.guid))
    throw std::logic_error("DigestBuilder: customers must be added in ascending GUID order");
  last_ = c.guid;
  ++count_;

  Impl& d = *impl_;
  d.tag('C');
  d.bytes(c.guid.raw());
  d.bytes(to_string(c.type));
  for (Field f : all_fields()) d.bytes(c.get(f));

  std::vector<const Address*> addresses;
  for (const auto& a : c.addresses) addresses.push_back(&a);
  std::sort(addresses.begin(), addresses.end(),
            [](const Address* x, const Address* y) { return x->guid < y->guid; });
  for (const Address* a : addresses) {
    d.tag('A');
    d.bytes(a->guid.raw());
    for (const std::string* s : {&a->purpose, &a->street, &a->city, &a->state, &a->zip, &a->country})
      d.bytes(*s);
  }

  std::vector<const Contact*> contacts;
  for (const auto& k : c.contacts) contacts.push_back(&k);
  std::sort(contacts.begin(), contacts.end(),
            [](const Contact* x, const Contact* y) { return x->guid < y->guid; });
  for (const Contact* k : contacts) {
    d.tag('K');
    d.bytes(k->guid.raw());
    d.bytes(to_string(k->kind));
    d.bytes(k->value);
  }

  std::vector<std::string> affiliations = c.affiliations;
  std::sort(affiliations.begin(), affiliations.end());
  for (const auto& a : affiliations) {
    d.tag('F');
    d.bytes(a);
  }
  d.tag('.');
}

ContentDigest DigestBuilder::finish() {
  boost::uuids::detail::sha1::digest_type words;
  impl_->sha.get_digest(words);
  ContentDigest out;
  out.customers = count_;
  char buf[9];
  for (unsigned int w : words) {
    std::snprintf(buf, sizeof buf, "%08x", w);
    out.hex += buf;
  }
  return out;
}

ContentDigest content_digest(std::vector<Customer> customers) {
  std::sort(customers.begin(), customers.end(),
            [](const Customer& a, const Customer& b) { return a.guid < b.guid; });
  DigestBuilder b;
  for (const auto& c : customers) b.add(c);
  return b.finish();
}

}  // namespace tillsync
