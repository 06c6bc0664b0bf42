#include "tillsync/clock.h"

#include <algorithm>
#include <chrono>

namespace tillsync {

std::int64_t SystemClock::now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

SystemClock& SystemClock::instance() {
  static SystemClock clock;
  return clock;
}

std::string Hlc::to_string() const {
  return std::to_string(millis()) + "." + std::to_string(counter());
}

Hlc bounded(Hlc remote, std::int64_t now_ms, std::int64_t max_ahead_ms) {
  const std::int64_t limit = std::max<std::int64_t>(0, now_ms) + std::max<std::int64_t>(0, max_ahead_ms);
  const auto cap = static_cast<std::uint64_t>(std::min<std::int64_t>(limit, static_cast<std::int64_t>(Hlc::kMaxMillis) - 1));
  if (remote.millis() <= cap) return remote;
  return Hlc::make(cap, 0);
}

Hlc HybridLogicalClock::advance_to(std::uint64_t millis) {
  millis = std::min(millis, Hlc::kMaxMillis);
  if (millis > last_.millis()) {
    last_ = Hlc::make(millis, 0);
  } else if (last_.counter() < Hlc::kCounterMask) {
    last_ = Hlc{last_.value + 1};
  } else if (last_.millis() < Hlc::kMaxMillis) {
    // Counter exhausted within one millisecond: borrow the next millisecond. Physical
    // time catches up; order is what matters.
    last_ = Hlc::make(last_.millis() + 1, 0);
  }
  // Otherwise last_ is the largest HLC there is (only a corrupt or hostile peer gets us
  // here): stay on it. Wrapping to zero would order every later event before older ones.
  return last_;
}

Hlc HybridLogicalClock::now() {
  auto pt = static_cast<std::uint64_t>(std::max<std::int64_t>(0, clock_->now_ms()));
  return advance_to(pt);
}

Hlc HybridLogicalClock::update(Hlc remote) {
  auto pt = static_cast<std::uint64_t>(std::max<std::int64_t>(0, clock_->now_ms()));
  if (remote > last_) {
    // Adopt the remote reading, then tick past it.
    if (pt <= remote.millis()) {
      last_ = remote;
      return advance_to(remote.millis());
    }
  }
  return advance_to(pt);
}

}  // namespace tillsync
