// Shared by the fuzz targets: reporting a violated invariant, and the `-write_seeds=DIR`
// flag with which a target writes its own seed corpus and exits instead of fuzzing.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace tillsync::fuzz {

// Aborts with `what`: libFuzzer reports the input as a crash.
[[noreturn]] inline void fail(const char* target, const std::string& what) {
  std::fprintf(stderr, "%s: invariant violated: %s\n", target, what.c_str());
  std::fflush(stderr);
  std::abort();
}

inline void write_seeds_if_asked(int argc, char** argv, void (*write)(const std::string& dir)) {
  constexpr std::string_view kFlag = "-write_seeds=";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg(argv[i]);
    if (arg.starts_with(kFlag)) {
      write(std::string(arg.substr(kFlag.size())));
      std::exit(0);
    }
  }
}

}  // namespace tillsync::fuzz
