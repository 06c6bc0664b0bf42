// Time sources and the hybrid logical clock (HLC).
//
// An Hlc packs 48 bits of physical milliseconds and a 16-bit logical counter into one
// 64-bit value, so HLCs compare as integers. Operations are totally ordered by
// (hlc, node_id). A HybridLogicalClock never goes backwards: not when the wall clock
// jumps back, and not across restarts (its owner persists last() and passes it back to
// the constructor).
//
// Thread-safety: PhysicalClock implementations must be callable from any thread;
// HybridLogicalClock is not synchronized: one owner.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace tillsync {

class PhysicalClock {
 public:
  virtual ~PhysicalClock() = default;
  // Milliseconds since the Unix epoch.
  virtual std::int64_t now_ms() = 0;
};

// The system's wall clock.
class SystemClock final : public PhysicalClock {
 public:
  std::int64_t now_ms() override;
  static SystemClock& instance();
};

// A clock tests set by hand.
class ManualClock final : public PhysicalClock {
 public:
  explicit ManualClock(std::int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  std::int64_t now_ms() override { return now_.load(); }
  void set(std::int64_t ms) { now_.store(ms); }
  void advance(std::int64_t ms) { now_.fetch_add(ms); }

 private:
  std::atomic<std::int64_t> now_;
};

struct Hlc {
  std::uint64_t value = 0;

  static constexpr int kCounterBits = 16;
  static constexpr std::uint64_t kCounterMask = (std::uint64_t{1} << kCounterBits) - 1;
  static constexpr std::uint64_t kMaxMillis = (std::uint64_t{1} << 48) - 1;

  static Hlc make(std::uint64_t millis, std::uint16_t counter) {
    return {(millis << kCounterBits) | counter};
  }
  std::uint64_t millis() const { return value >> kCounterBits; }
  std::uint16_t counter() const { return static_cast<std::uint16_t>(value & kCounterMask); }
  // "<millis>.<counter>" for logs and JSON.
  std::string to_string() const;

  auto operator<=>(const Hlc&) const = default;
};

// `remote`, or, when it reads more than `max_ahead_ms` past `now_ms`, the reading at
// now + max_ahead (counter 0): a message from a node with a wrong (or hostile) clock
// moves no clock further ahead of its owner's wall clock than that, and none to the
// 48-bit limit.
Hlc bounded(Hlc remote, std::int64_t now_ms, std::int64_t max_ahead_ms);

// The latest reading a terminal takes from HQ's clock: 9999-12-31T23:59:59.999Z, far
// below the 48-bit limit. A terminal follows HQ's clock whatever its own says (a till
// whose clock is days behind, or reset to 1970, still orders its writes after what it
// saw); HQ's clock is itself bounded by HQ's wall clock (HqOptions::max_clock_offset_ms).
inline constexpr std::int64_t kLatestSaneHlcMs = 253'402'300'799'999;

class HybridLogicalClock {
 public:
  // `last` is the highest HLC this node has ever issued or seen (persisted by the owner).
  HybridLogicalClock(PhysicalClock& clock, Hlc last = {}) : clock_(&clock), last_(last) {}

  // A new timestamp for a local event: greater than every earlier one.
  Hlc now();
  // Merges a timestamp received from another node; the result is greater than both.
  Hlc update(Hlc remote);
  Hlc last() const { return last_; }

 private:
  Hlc advance_to(std::uint64_t millis);
  PhysicalClock* clock_;
  Hlc last_;
};

}  // namespace tillsync
