#include "tillsync/guid.h"

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <boost/uuid/random_generator.hpp>
#include <boost/uuid/uuid.hpp>
#include <boost/uuid/uuid_io.hpp>

namespace tillsync {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool Guid::is_nil() const noexcept {
  return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t b) { return b == 0; });
}

std::string Guid::to_string() const {
  boost::uuids::uuid u{};
  std::copy(bytes.begin(), bytes.end(), u.begin());
  return boost::uuids::to_string(u);
}

std::optional<Guid> Guid::parse(std::string_view text) {
  if (text.size() != 36) return std::nullopt;
  Guid g;
  std::size_t out = 0;
  for (std::size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    int hi = hex_value(text[i]);
    int lo = hex_value(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    g.bytes[out++] = static_cast<std::uint8_t>(hi * 16 + lo);
    i += 2;
  }
  return g;
}

std::optional<Guid> Guid::from_raw(std::string_view raw) {
  if (raw.size() != 16) return std::nullopt;
  Guid g;
  std::copy(raw.begin(), raw.end(), g.bytes.begin());
  return g;
}

namespace {

// 256 bits from the kernel's random source (getrandom(2), which blocks only until the
// kernel's pool is initialised at boot), spread over the generator's whole state.
std::mt19937_64 seeded_from_os() {
  std::array<std::uint32_t, 8> words{};
  std::size_t got = 0;
  auto* bytes = reinterpret_cast<unsigned char*>(words.data());
  while (got < sizeof words) {
    const ssize_t n = ::getrandom(bytes + got, sizeof words - got, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      // No getrandom (a very old kernel): std::random_device reads /dev/urandom.
      std::random_device device("/dev/urandom");
      for (auto& w : words) w = device();
      break;
    }
  }
  std::seed_seq seq(words.begin(), words.end());
  return std::mt19937_64(seq);
}

}  // namespace

GuidGenerator::GuidGenerator(std::optional<std::uint64_t> seed)
    : rng_(seed ? std::mt19937_64(*seed) : seeded_from_os()) {}

Guid GuidGenerator::next() {
  boost::uuids::basic_random_generator<std::mt19937_64> gen(&rng_);
  boost::uuids::uuid u = gen();
  Guid g;
  std::copy(u.begin(), u.end(), g.bytes.begin());
  return g;
}

Guid GuidGenerator::next_time_ordered(std::int64_t unix_ms) {
  constexpr std::uint64_t kMax48 = (std::uint64_t{1} << 48) - 1;
  const std::uint64_t ms = unix_ms < 0 ? 0 : std::min(static_cast<std::uint64_t>(unix_ms), kMax48);
  const std::uint64_t hi = rng_();
  const std::uint64_t lo = rng_();
  Guid g;
  for (int i = 0; i < 6; ++i) g.bytes[i] = static_cast<std::uint8_t>(ms >> (8 * (5 - i)));
  for (int i = 6; i < 8; ++i) g.bytes[i] = static_cast<std::uint8_t>(hi >> (8 * (i - 6)));
  for (int i = 8; i < 16; ++i) g.bytes[i] = static_cast<std::uint8_t>(lo >> (8 * (i - 8)));
  g.bytes[6] = static_cast<std::uint8_t>(0x70 | (g.bytes[6] & 0x0F));  // version 7
  g.bytes[8] = static_cast<std::uint8_t>(0x80 | (g.bytes[8] & 0x3F));  // variant 10xx
  return g;
}

}  // namespace tillsync
