// Content digest: a stable hash over customers ordered by GUID with their fields,
// addresses, contacts and affiliations. Account numbers, loyalty cards, versions and
// local bookkeeping are excluded, so HQ, terminals and replays can be compared.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "tillsync/domain.h"

namespace tillsync {

struct ContentDigest {
  std::string hex;  // lower-case SHA-1 hex, 40 characters
  std::size_t customers = 0;
  bool operator==(const ContentDigest&) const = default;
};

// Feed customers in ascending GUID order (add() checks it and throws std::logic_error
// otherwise: a caller bug, not an input error). Addresses, contacts and affiliations
// are ordered inside the digest, so their order in the vectors does not matter.
class DigestBuilder {
 public:
  DigestBuilder();
  ~DigestBuilder();
  DigestBuilder(const DigestBuilder&) = delete;
  DigestBuilder& operator=(const DigestBuilder&) = delete;

  void add(const Customer& customer);
  ContentDigest finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::size_t count_ = 0;
  Guid last_{};
};

ContentDigest content_digest(std::vector<Customer> customers);

}  // namespace tillsync
