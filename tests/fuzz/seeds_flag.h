// Shared by the fuzz targets that can write their own seed corpus: a target run with
// `-write_seeds=DIR` calls `write(DIR)` and exits instead of fuzzing.
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>

namespace tillsync::fuzz {

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
