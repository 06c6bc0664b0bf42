// 128-bit identifiers of customers, addresses, contacts and operations.
//
// Generated from an injected, seedable source so tests are deterministic: random
// (version 4) UUIDs, or time-ordered ones (version 7, RFC 9562) whose first 48 bits are
// a Unix time in milliseconds. Customers, addresses and contacts get version 4 GUIDs
// (DESIGN.md §3); terminals give their operations version 7 ids: ids made one after
// another sort together, so HQ's op_id index grows at its right edge instead of
// touching a random page per staged operation.
// A Guid is a plain value, safe to copy between threads.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

namespace tillsync {

struct Guid {
  std::array<std::uint8_t, 16> bytes{};

  bool is_nil() const noexcept;
  // Canonical lower-case 8-4-4-4-12 form.
  std::string to_string() const;
  // Accepts the canonical form in any case; nullopt otherwise.
  static std::optional<Guid> parse(std::string_view text);
  // The 16 raw bytes, as stored in databases and payloads.
  std::string_view raw() const noexcept {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }
  static std::optional<Guid> from_raw(std::string_view raw);

  auto operator<=>(const Guid&) const = default;
};

// Produces GUIDs. Not thread-safe: one generator per thread/owner.
class GuidGenerator {
 public:
  // seed == nullopt (production): seeded with 256 bits of the OS's random source
  // (getrandom(2)); a seed is for tests and simulations only.
  explicit GuidGenerator(std::optional<std::uint64_t> seed = std::nullopt);
  // Version 4: 122 random bits (Boost.Uuid).
  Guid next();
  // Version 7: `unix_ms` (clamped to 48 bits) then 74 random bits.
  Guid next_time_ordered(std::int64_t unix_ms);

 private:
  std::mt19937_64 rng_;
};

}  // namespace tillsync

template <>
struct std::hash<tillsync::Guid> {
  std::size_t operator()(const tillsync::Guid& g) const noexcept {
    std::size_t h = 0;
    for (auto b : g.bytes) h = h * 131 + b;
    return h;
  }
};
