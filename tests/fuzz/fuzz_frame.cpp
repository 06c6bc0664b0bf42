// libFuzzer target: the wire frame decoder must reject garbage without crashing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tillsync/transport/frame.h"
#include "tillsync/transport/socket.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  tillsync::transport::Frame header;
  auto frame = tillsync::transport::decode_frame(bytes, &header);
  if (frame.ok() && frame->body.size() > size) __builtin_trap();  // never more than the input
  (void)tillsync::transport::decode_error(bytes);
  return 0;
}
