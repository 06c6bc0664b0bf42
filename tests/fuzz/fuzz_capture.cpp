// libFuzzer target: the capture (.tslog) reader on a file holding the input.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "tillsync/capture.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/tmp/tillsync_fuzz_capture_" + std::to_string(::getpid()) + ".tslog";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto reader = tillsync::CaptureReader::open(path);
  if (reader.ok()) {
    for (int i = 0; i < 100000; ++i) {
      auto record = reader->next();
      if (!record.ok() || !*record) break;
    }
  }
  return 0;
}
