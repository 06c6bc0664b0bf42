// Named crash points, for crash tests with real processes (tests/crash_process_test.cpp,
// docs/testing.md). When the environment variable TILLSYNC_CRASH_AT names a point, the
// process kills itself with SIGKILL the moment it reaches it: no destructor runs, nothing
// is flushed, exactly as a `kill -9` landing on that instruction. Just before, it writes
// one line, "tillsync: crash point NAME", to stderr (unbuffered), so a test knows which
// phase the kill hit instead of guessing from timing.
//
//   TILLSYNC_CRASH_AT=hq.push.after_commit     the first time the point is reached
//   TILLSYNC_CRASH_AT=hq.push.after_commit:3   the third time
//
// The points are listed in docs/testing.md ("Named crash points"). Unset, as in
// production, a crash point costs a test of a flag read once per process. Thread-safe.
#pragma once

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

namespace tillsync {

namespace detail {

struct CrashTarget {
  std::string name;  // empty: no crash point armed
  long nth = 1;
  std::atomic<long> hits{0};

  CrashTarget() {
    const char* v = std::getenv("TILLSYNC_CRASH_AT");
    if (v == nullptr || *v == '\0') return;
    name = v;
    if (auto colon = name.rfind(':'); colon != std::string::npos) {
      nth = std::max(1L, std::strtol(name.c_str() + colon + 1, nullptr, 10));
      name.resize(colon);
    }
  }
};

inline CrashTarget& crash_target() {
  static CrashTarget target;  // initialised once, thread-safe
  return target;
}

}  // namespace detail

// Kills the process here if TILLSYNC_CRASH_AT names `name` (and this is its nth pass).
inline void crash_point(const char* name) noexcept {
  detail::CrashTarget& t = detail::crash_target();
  if (t.name.empty() || t.name != name) return;
  if (t.hits.fetch_add(1) + 1 != t.nth) return;
  const std::string line = "tillsync: crash point " + t.name + "\n";
  (void)!::write(STDERR_FILENO, line.data(), line.size());
  ::raise(SIGKILL);
}

}  // namespace tillsync
