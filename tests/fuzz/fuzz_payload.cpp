// libFuzzer target: the log payload decoder, for every operation kind. The first byte
// picks the kind (also out of range), the rest is the payload.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tillsync/operations.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (auto kind = tillsync::op_kind_from_int(data[0] % 10)) {
    (void)tillsync::decode_payload(*kind, bytes);
  }
  return 0;
}
